"""How messages move through a backend: `Producer`, `Consumer` and what they exchange.

A `Producer` queues batches with `send()` and confirms them with `flush()`, which
returns a `DeliveryReport` (delivered, `DeliveryFailure`s, still pending). A `Consumer`
reads batches for a `ReadSpec` (a position range, or a consumer group); `batches()` is
the one read loop every command uses, leaving why it stopped in `stop_reason`.
`GroupReader` is the group consumer of backends whose acks and claims are the backend's
own calls (Redis, local, NATS).

Part of the adapter interface: import these names from `evrelay.backends.base`.
"""

from __future__ import annotations

import enum
import os
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar

from evrelay.envelope import Headers, Message
from evrelay.errors import BackendUnavailable, EvrelayError, ProducerTimeout, UnsupportedError
from evrelay.positions import Beginning, StreamPosition

if TYPE_CHECKING:
    from evrelay.backends.base import Backend


def default_consumer_name() -> str:
    """This process's consumer name within a group, unless the user gives one: unique per
    process (host, pid and a random tag), so two readers on one host never take each
    other's pending messages for their own. A restarted reader gets a new name and
    recovers a dead predecessor's messages by claiming those idle past a bound."""
    global _CONSUMER_NAME
    if _CONSUMER_NAME is None:
        import secrets  # with socket: 8 ms of CPU at every start, for readers of groups only
        import socket

        _CONSUMER_NAME = f"evrelay-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"
    return _CONSUMER_NAME


_CONSUMER_NAME: str | None = None


def _close_keeping_the_first_error(close: Callable[[], None], leaving: type[BaseException] | None) -> None:
    """Close; but when an error is already on its way out, a backend's complaint while
    closing (a late XACK answer on a destroyed group, a connection already gone) must not
    replace it: the first error says why the command stopped. Nothing is lost by dropping
    the second: a message is acked only after its sink confirmed it, and what was not
    acked stays pending at its source."""
    if leaving is None:
        close()
        return
    try:
        close()
    except EvrelayError:
        pass


@dataclass(slots=True)
class ReadSpec:
    """What a consumer should read.

    Without `group`: messages from `start` up to `stop` (inclusive), then `exhausted`,
    unless `follow`. With `group`: the group's own position; `start` only places a group
    that does not exist yet, and the consumer first re-reads its own pending messages
    where the backend keeps them.
    """

    stream: str
    start: StreamPosition = field(default_factory=Beginning)
    stop: StreamPosition | None = None
    follow: bool = False
    group: str | None = None
    consumer_name: str | None = None
    partitions: tuple[int, ...] | None = None
    finish_group: bool = False
    """Group reads: idle (for --idle-timeout) only once the whole group is finished, other
    consumers' pending messages included, which are claimed once idle past the bound (a
    bridge after a crash); False: once nothing is left undelivered (tail)."""
    release_on_close: bool = True
    """Group reads: hand back, on a clean close, what this consumer took and did not ack,
    so the next reader gets it at once; False keeps it pending (`tail -g --no-ack`)."""
    values_only: bool = False
    """The caller uses nothing but the values (`tail -o raw`): a consumer may then return
    each message's value alone from read(), as bytes (None for a tombstone), in the same
    order and number, sparing a Message and a Position per message. Consumers that do not
    offer it, and reads that need more themselves (the last N, merged by timestamp),
    return Messages as usual."""


class StopReason(enum.Enum):
    END_OF_DATA = "end of data"
    LIMIT = "count reached"
    DEADLINE = "timeout"
    IDLE = "idle timeout"
    STOPPED = "stopped"


@dataclass(slots=True)
class DeliveryFailure:
    message: Message
    reason: str
    permanent: bool
    """True when sending again cannot help (too large, refused); False for outages."""
    unfit: bool = False
    """The message cannot be written in the sink's format (a Redis layout, a CloudEvents
    content mode): the input is at fault, nothing of it was sent. Always permanent."""


@dataclass(slots=True)
class DeliveryReport:
    """The outcome of one `flush()`: every message sent since the previous flush is either
    delivered, failed, or (only when the timeout ran out) still pending."""

    delivered: int = 0
    failures: list[DeliveryFailure] = field(default_factory=list)
    pending: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures and not self.pending


class Producer(ABC):
    """Sends messages to one topic/stream. `send` queues, `flush` confirms.

    An exactly-once producer (`transactional` True) sends inside a transaction opened by
    `begin()`; `commit(source, acked)` then makes the messages and the source's acks of `acked`
    visible atomically (the relay does not ack them at the source itself), and `abort()`
    discards both, after which the source must re-read the window.
    """

    transactional: ClassVar[bool] = False
    copies_for_relay: bool = False
    """True where `send()` takes a relay's source messages uncopied and makes the relayed
    copies (provenance header, `origin`) itself, off the relay's core (a sink in a child
    process, evrelay/subprocess_producer.py); its failures still name the messages given."""

    @abstractmethod
    def send(self, messages: Sequence[Message]) -> None:
        """Queue messages for delivery (it may start sending at once)."""

    def send_values(self, values: Sequence[bytes], key: bytes | None = None, headers: Headers | None = None) -> None:
        """Queue plain values sharing one key and header set (publish's line input),
        confirmed by flush() like send(); a failure then names the value, not a source
        message. Backends override it to skip building a Message per value."""
        self.send([Message(value, key, list(headers or ())) for value in values])

    @abstractmethod
    def flush(self, timeout: float | None = None) -> DeliveryReport:
        """Wait until everything queued since the last flush is confirmed or failed."""

    def close(self) -> None:
        """Release resources; anything not flushed is abandoned."""

    def ready(self) -> None:
        """Raise BackendUnavailable (exit 3) when the sink cannot be reached. A relay asks
        before its first read, so that a sink unreachable from the start ends the run
        instead of being retried as an outage; a producer that checks reachability in
        the background (Kafka) waits here for the verdict."""

    def begin(self) -> None:
        """Open a transaction (exactly-once producers only)."""
        raise UnsupportedError("this producer has no transactions")

    def commit(self, source: Consumer, acked: Sequence[Message]) -> None:
        """Commit the open transaction together with `source`'s acks of `acked`.
        Raises TransactionAborted when the transaction had to be aborted instead."""
        raise UnsupportedError("this producer has no transactions")

    def abort(self) -> None:
        """Discard the open transaction: none of its messages become visible."""

    def publish(self, messages: Sequence[Message], timeout: float | None = None) -> DeliveryReport:
        """Send and confirm; raises ProducerTimeout when confirmations did not all arrive."""
        self.send(messages)
        report = self.flush(timeout)
        if report.pending:
            raise ProducerTimeout(
                f"{report.pending} message(s) not confirmed within the timeout", undelivered=report.pending
            )
        return report

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        _close_keeping_the_first_error(self.close, exc_type)


class Consumer(ABC):
    """Reads batches of messages for one ReadSpec."""

    exhausted: bool = False
    """Set once a non-follow read has delivered everything up to its end."""
    stop_reason: StopReason | None = None
    created: bool | None = None
    """Group reads: True when this consumer created the group, False when it existed."""
    cumulative_acks: bool = False
    """True where acking a message also acks every earlier one of its partition (a Kafka
    commit): a caller that leaves a message unacked must not ack past it."""

    @property
    def caught_up(self) -> bool:
        """True while the source is assigned to us, reachable and has nothing more for us
        right now: only then does `--idle-timeout` count (a Kafka group join, a partition
        not yet read to its end, or an outage is not idleness). Default: always."""
        return True

    @abstractmethod
    def read(self, max_messages: int, timeout: float) -> list[Message]:
        """Up to `max_messages`, waiting at most `timeout` seconds for the first one."""

    def ack(self, messages: Sequence[Message]) -> None:
        """Mark messages processed for the group; a no-op for non-group reads."""

    def reject(self, messages: Sequence[Message]) -> None:
        """Give messages back: they stay pending / uncommitted and will be delivered again."""

    def keepalive(self) -> None:
        """Called while the caller cannot take messages (its sink is down): keep the group
        membership alive without fetching more. Default: nothing to do."""

    def claim_idle(self, min_idle_ms: int, count: int) -> list[Message]:
        """Take over group messages other consumers left pending for `min_idle_ms`
        (dead readers), ackable through this consumer. Default: none (no such thing)."""
        return []

    def close(self) -> None:
        pass

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        _close_keeping_the_first_error(self.close, exc_type)

    def batches(
        self,
        *,
        limit: int | None = None,
        deadline: float | None = None,
        idle_timeout: float | None = None,
        batch_size: int = 1000,
        should_stop: Callable[[], bool] | None = None,
        poll_interval: float = 0.5,
        claim_idle_ms: int | None = None,
        claim_every: float = 5.0,
        warn_outage: Callable[[str], None] | None = None,
    ) -> Iterator[list[Message]]:
        """Batches until the data ends (non-follow), `limit` messages, the monotonic
        `deadline`, `idle_timeout` seconds without a message, or `should_stop()`.
        With `claim_idle_ms`, a group reader first (and every `claim_every` seconds)
        takes over messages other consumers left pending that long (dead readers).
        With `warn_outage`, a source that becomes unreachable is waited out as the relay
        does (a warning per retry, backing off from 0.5 s to 30 s) instead of ending the read.

        Why it stopped is left in `stop_reason`. Never reads more than `limit`, so a
        group reader does not take messages it will not process.
        """
        received = 0
        retry_in = 0.0
        last_arrival = time.monotonic()
        next_claim = last_arrival if claim_idle_ms is not None else None
        self.stop_reason = None
        while True:
            if should_stop is not None and should_stop():
                self.stop_reason = StopReason.STOPPED
                return
            if idle_timeout is not None and not self.caught_up:
                last_arrival = time.monotonic()
            if limit is not None and received >= limit:
                self.stop_reason = StopReason.LIMIT
                return
            if self.exhausted:
                self.stop_reason = StopReason.END_OF_DATA
                return
            now = time.monotonic()
            wait = poll_interval
            if deadline is not None:
                if now >= deadline:
                    self.stop_reason = StopReason.DEADLINE
                    return
                wait = min(wait, deadline - now)
            if idle_timeout is not None:
                idle_left = last_arrival + idle_timeout - now
                if idle_left <= 0:
                    self.stop_reason = StopReason.IDLE
                    return
                wait = min(wait, idle_left)
            want = batch_size if limit is None else min(batch_size, limit - received)
            batch: list[Message] = []
            if next_claim is not None and claim_idle_ms is not None and now >= next_claim:
                next_claim = now + claim_every
                batch = self.claim_idle(claim_idle_ms, want)
            if not batch:
                try:
                    batch = self.read(want, max(wait, 0.0))
                except BackendUnavailable as exc:
                    if warn_outage is None:
                        raise
                    retry_in = min(retry_in * 2, 30.0) if retry_in else 0.5
                    warn_outage(f"source: {exc.message}; retrying in {retry_in:g}s")
                    until = time.monotonic() + retry_in
                    while time.monotonic() < until and not (should_stop is not None and should_stop()):
                        self.keepalive()
                        time.sleep(min(0.2, max(until - time.monotonic(), 0)))
                    last_arrival = time.monotonic()  # an outage is not idleness
                    continue
                retry_in = 0.0
            if batch:
                received += len(batch)
                yield batch
                # Only now: time the caller spent writing and acking is not idleness.
                last_arrival = time.monotonic()


class GroupReader(Consumer):
    """A group consumer whose acks and claims are the backend's own `ack` and `claim`
    (Redis, local): subclasses set backend, stream, group and consumer."""

    backend: Backend
    stream: str
    group: str
    consumer: str

    def ack(self, messages: Sequence[Message]) -> None:
        positions = [m.position for m in messages if m.position is not None]
        if positions:
            self.backend.ack(self.stream, self.group, positions)

    release_on_close: bool = True
    REFRESH_EVERY = 5.0
    """Seconds between refreshes of this reader's in-flight messages while it waits (see
    keepalive): far below any claim bound, so a live reader's work is never taken over."""
    _refreshed_at: float = 0.0

    finish_group: bool = False

    @property
    def caught_up(self) -> bool:
        """Nothing is left undelivered for the group; with `finish_group`, nothing pending
        for another consumer either (a dead one's messages are claimed once idle past the
        bound, so an idle timeout waits for them)."""
        try:
            if self.finish_group:
                return self.backend.group_backlog(self.stream, self.group, excluding_consumer=self.consumer) == 0
            return sum(row.lag for row in self.backend.group_lag(self.stream, self.group)) == 0
        except BackendUnavailable:
            return False  # the server is down: the next read reports it (an outage, waited out), this is not idleness

    def keepalive(self) -> None:
        """While the sink is down: mark this reader's pending messages as just delivered,
        so no other reader mistakes them for a dead reader's and claims them."""
        now = time.monotonic()
        if now - self._refreshed_at >= self.REFRESH_EVERY:
            self._refreshed_at = now
            try:
                self.refresh_pending()
            except BackendUnavailable:
                # Keepalive runs while an outage is waited out, the source's own included:
                # with the server down there is nothing to refresh, and nobody to claim.
                pass

    def refresh_pending(self) -> None:
        """Reset the idle time of every message pending for this consumer."""

    def release_pending(self) -> None:
        """Hand back every message still pending for this consumer (its name is unique
        per process unless the user chose one), making it available to other readers."""

    def close(self) -> None:
        if self.release_on_close:
            try:
                self.release_pending()
            except EvrelayError as exc:  # the server went away: they stay pending, claimable later
                self.backend.settings.warn(f"could not hand back unacked messages of group {self.group!r}: {exc}")

    def claim_idle(self, min_idle_ms: int, count: int) -> list[Message]:
        claimed = self.backend.claim(self.stream, self.group, self.consumer, min_idle_ms=min_idle_ms, count=count)
        for message in claimed:
            message.receipt = self
        return claimed
