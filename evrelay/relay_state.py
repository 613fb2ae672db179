"""What the relay engine (evrelay/relay.py) keeps between windows: the capped backoff
of an outage, the counters that progress lines, --metrics and the summary read, and the
window in flight from its send to its confirmation."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass, field

from evrelay.backends.base import Message, StopReason


@dataclass(slots=True)
class Backoff:
    """Capped exponential backoff: 0.5s, 1s, 2s, ... up to `cap`, reset after a success."""

    initial: float = 0.5
    cap: float = 30.0
    current: float = 0.0

    def next(self) -> float:
        self.current = self.initial if self.current == 0 else min(self.current * 2, self.cap)
        return self.current

    def reset(self) -> None:
        self.current = 0.0


MIN_RATED_MESSAGES = 100
"""Below this, a bridge's summary prints no rate (see RelayStats.timing)."""


@dataclass(slots=True)
class RelayStats:
    started: float = field(default_factory=time.monotonic)
    read: int = 0
    delivered: int = 0
    dead_lettered: int = 0
    filtered: int = 0
    """Read but not passed on: dropped by --filter/--match-*/--map (acked with the window)."""
    acked: int = 0
    retries: int = 0
    bytes_read: int = 0
    bytes_sent: int = 0
    """Value bytes read from the source / sent to the sink (what --metrics reports)."""
    errors: dict[str, int] = field(default_factory=dict)
    """Errors by kind: source/sink/dead-letter unavailable, rejected, selection."""
    window_seconds: deque[float] = field(default_factory=lambda: deque(maxlen=1000))
    """Send-to-confirmed time of recent windows, drained by --metrics."""
    last_positions: dict[tuple[str, int | None], str] = field(default_factory=dict)
    stop_reason: StopReason | None = None
    first_read_at: float | None = None
    last_done_at: float | None = None

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.started

    @property
    def moving_seconds(self) -> float:
        """From the first read to the last delivery: the part of `elapsed` spent moving
        messages (not connecting, joining a group, or waiting for data or --idle-timeout)."""
        if self.first_read_at is None or self.last_done_at is None:
            return 0.0
        return max(self.last_done_at - self.first_read_at, 0.0)

    def timing(self) -> str:
        """The summary's figures: `in 4.3s, 1.3s of it moving messages (38,716 msg/s)`.
        The rate is over the moving time, and says so; it is left out for a run too small
        for one to mean anything (2 messages moved in 2 ms are not "922 msg/s"). Under a
        second, the moving time has two decimals, so that it never reads 0.0s."""
        text = f"in {self.elapsed:.1f}s"
        handled = self.delivered + self.filtered
        moving = self.moving_seconds
        if handled >= MIN_RATED_MESSAGES and moving > 0:
            text += f", {moving:.{1 if moving >= 1 else 2}f}s of it moving messages ({self.rate:,.0f} msg/s)"
        return text

    @property
    def rate(self) -> float:
        """Messages handled (delivered or filtered out) per second while there was work:
        from the first read to the last delivery (waiting for data, or for
        --idle-timeout, does not dilute it)."""
        if self.first_read_at is None or self.last_done_at is None or self.last_done_at <= self.first_read_at:
            return 0.0
        return (self.delivered + self.filtered) / (self.last_done_at - self.first_read_at)


@dataclass(slots=True)
class InFlight:
    """A window on its way: the source messages, what goes to the sink, the source index
    each outgoing message came from, and the selection errors (source index, why)."""

    batch: list[Message]
    outgoing: list[Message]
    origins: list[int]
    errors: list[tuple[int, str]]
    sent: bool = False
    started: float = field(default_factory=time.monotonic)
