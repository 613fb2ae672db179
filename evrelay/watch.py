"""Watching a running bridge or replay: Prometheus metrics and the live line on stderr.

Both read the relay's `RelayStats` from its progress callback, which the relay calls in
its own thread between windows, so nothing here touches the relay's state concurrently.
The group lag (messages, and the age of the oldest unconsumed message) is sampled the
same way, at most every `LAG_EVERY` seconds, through the adapter's `group_lag`.

`--metrics ADDR:PORT` serves, from prometheus-client's own HTTP server thread:

    evrelay_messages_in_total, evrelay_messages_out_total, evrelay_bytes_in_total,
    evrelay_bytes_out_total, evrelay_filtered_total, evrelay_dead_lettered_total,
    evrelay_acked_total, evrelay_errors_total{kind}, evrelay_window_seconds (histogram:
    send-to-confirmed time per window), evrelay_lag_messages, evrelay_lag_seconds

each labelled with `source` and `sink` (addresses as printed, secrets masked).
prometheus-client is an optional extra: `pip install 'evrelay[metrics]'`.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import IO, Any

from evrelay.errors import EvrelayError, UsageError

METRICS_INSTALL_HINT = "pip install 'evrelay[metrics]' (or: pip install prometheus-client)"
LAG_EVERY = 5.0


def parse_listen_address(text: str) -> tuple[str, int]:
    """`ADDR:PORT`, `:PORT` or `PORT` (all interfaces: 0.0.0.0)."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host, port_text = "", text
    host = host.strip("[]") or "0.0.0.0"
    try:
        port = int(port_text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise UsageError(f"--metrics expects ADDR:PORT (e.g. 127.0.0.1:9464 or :9464), got {text!r}")
    return host, port


def check_metrics_option(text: str) -> None:
    """Refuse a `--metrics` that cannot work, before anything connects (a consumer group
    would otherwise be created first): a bad ADDR:PORT or a missing prometheus-client (exit
    2), or a port another process holds (exit 1). The port is released again at once; the
    metrics server binds it once the bridge runs."""
    import socket

    host, port = parse_listen_address(text)
    try:
        import prometheus_client  # noqa: F401 - imported here only to know it can be
    except ImportError:
        raise UsageError("--metrics needs prometheus-client, which is not installed", hint=METRICS_INSTALL_HINT) from None
    try:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            probe.bind((host, port))
    except OSError as exc:
        raise EvrelayError(f"--metrics: cannot listen on {host}:{port}: {exc.strerror or exc}") from None


class LagSampler:
    """The source group's lag, refreshed at most every `every` seconds; None until known
    (or when it cannot be read: a failed sample is not an error of the relay)."""

    def __init__(self, sample: Callable[[], tuple[int, float | None]], every: float = LAG_EVERY) -> None:
        self.sample = sample
        self.every = every
        self.next_at = 0.0
        self.messages: int | None = None
        self.seconds: float | None = None

    def refresh(self) -> None:
        if time.monotonic() < self.next_at:
            return
        self.next_at = time.monotonic() + self.every
        try:
            self.messages, self.seconds = self.sample()
        except EvrelayError:
            pass


def group_lag_sampler(backend: Any, stream: str, group: str) -> Callable[[], tuple[int, float | None]]:
    from evrelay.timestamps import now_ms

    def sample() -> tuple[int, float | None]:
        rows = backend.group_lag(stream, group)
        oldest = [row.oldest_time for row in rows if row.oldest_time is not None]
        age = max(now_ms() - min(oldest), 0) / 1000 if oldest else 0.0
        return sum(row.lag + (row.pending or 0) for row in rows), age

    return sample


class MetricsServer:
    """Prometheus metrics for one relay, served on ADDR:PORT until `close()`."""

    COUNTERS = (
        ("read", "evrelay_messages_in_total", "Messages read from the source."),
        ("delivered", "evrelay_messages_out_total", "Messages confirmed by the sink."),
        ("bytes_read", "evrelay_bytes_in_total", "Value bytes read from the source."),
        ("bytes_sent", "evrelay_bytes_out_total", "Value bytes sent to the sink."),
        ("filtered", "evrelay_filtered_total", "Messages dropped by --filter/--match-*/--map (acked)."),
        ("dead_lettered", "evrelay_dead_lettered_total", "Messages sent to the dead-letter address."),
        ("acked", "evrelay_acked_total", "Messages acked at the source."),
    )

    def __init__(self, listen: str, *, source: str, sink: str) -> None:
        try:
            import prometheus_client
        except ImportError:
            raise UsageError("--metrics needs prometheus-client, which is not installed", hint=METRICS_INSTALL_HINT) from None
        host, port = parse_listen_address(listen)
        self.registry = prometheus_client.CollectorRegistry()
        labels = ("source", "sink")
        values = (source, sink)
        self.counters = {
            attr: prometheus_client.Counter(name.removesuffix("_total"), doc, labels, registry=self.registry).labels(*values)
            for attr, name, doc in self.COUNTERS
        }
        self.errors = prometheus_client.Counter("evrelay_errors", "Errors by kind (outages are retried).", (*labels, "kind"), registry=self.registry)
        self.labels = values
        self.window = prometheus_client.Histogram(
            "evrelay_window_seconds", "Time from sending a window to the sink to its confirmation.", labels, registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
        ).labels(*values)
        self.lag = prometheus_client.Gauge("evrelay_lag_messages", "Messages the source group has not finished.", labels, registry=self.registry).labels(*values)
        self.lag_age = prometheus_client.Gauge("evrelay_lag_seconds", "Age of the oldest message the source group has not finished.", labels, registry=self.registry).labels(*values)
        self.seen: dict[str, int] = {attr: 0 for attr, _, _ in self.COUNTERS}
        self.seen_errors: dict[str, int] = {}
        try:
            self.server, self.thread = prometheus_client.start_http_server(port, host, registry=self.registry)
        except OSError as exc:
            raise EvrelayError(f"--metrics: cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        self.port = self.server.server_port

    def update(self, stats: Any, lag: LagSampler | None) -> None:
        for attr, counter in self.counters.items():
            value = getattr(stats, attr)
            if value > self.seen[attr]:
                counter.inc(value - self.seen[attr])
                self.seen[attr] = value
        for kind, value in stats.errors.items():
            seen = self.seen_errors.get(kind, 0)
            if value > seen:
                self.errors.labels(*self.labels, kind).inc(value - seen)
                self.seen_errors[kind] = value
        while stats.window_seconds:
            self.window.observe(stats.window_seconds.popleft())
        if lag is not None and lag.messages is not None:
            self.lag.set(lag.messages)
            if lag.seconds is not None:
                self.lag_age.set(lag.seconds)

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class ProgressLine:
    """A self-overwriting line on stderr, at most twice a second, only on a terminal:
    messages moved, the rate, the group's lag where known, retries. `clear()` removes it."""

    def __init__(self, enabled: bool, verb: str = "bridged", *, err: IO[str] | None = None) -> None:
        self.enabled = enabled
        self.err = err if err is not None else sys.stderr
        self.verb = verb
        self.next_draw = 0.0
        self.drawn = False

    def draw(self, stats: Any, lag: LagSampler | None) -> None:
        if not self.enabled or time.monotonic() < self.next_draw:
            return
        self.next_draw = time.monotonic() + 0.5
        lag_text = f", lag {lag.messages:,}" if lag is not None and lag.messages is not None else ""
        self.err.write(f"\r\x1b[K{self.verb} {stats.delivered:,} message(s), {stats.rate:,.0f}/s{lag_text}, {stats.retries} retries")
        self.err.flush()
        self.drawn = True

    def clear(self) -> None:
        if self.drawn:
            self.err.write("\r\x1b[K")
            self.err.flush()


class Watch:
    """The relay's progress callback: refreshes the lag sample, the metrics and the line."""

    def __init__(self, line: ProgressLine, metrics: MetricsServer | None = None, lag: LagSampler | None = None) -> None:
        self.line = line
        self.metrics = metrics
        self.lag = lag

    def __call__(self, stats: Any) -> None:
        if self.lag is not None and (self.metrics is not None or self.line.enabled):
            self.lag.refresh()
        if self.metrics is not None:
            self.metrics.update(stats, self.lag)
        self.line.draw(stats, self.lag)

    def close(self) -> None:
        self.line.clear()
        if self.metrics is not None:
            self.metrics.close()
