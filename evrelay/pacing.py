"""Pacing for `replay --pace`: messages sent at their original spacing (or N times
faster), and a bounded read served in timestamp order across partitions so that the
pace follows the clock. Used by the relay engine (evrelay/relay.py)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator

from evrelay.backends.base import Consumer, Message


class Abandoned(Exception):
    """Stopping was requested while a window could not be delivered: it is not acked."""


class Pacer:
    """Replays at the original spacing of the messages' timestamps, `speed` times faster;
    `speed` None is as fast as possible. Splits batches where it has to wait."""

    def __init__(self, speed: float | None, stop: Callable[[], bool] = lambda: False) -> None:
        self.speed = speed
        self.stop = stop
        self.first_ts: int | None = None
        self.first_wall = 0.0

    def chunks(self, batch: list[Message]) -> Iterator[list[Message]]:
        if self.speed is None:
            yield batch
            return
        chunk: list[Message] = []
        for message in batch:
            if message.timestamp is not None:
                if self.first_ts is None:
                    self.first_ts, self.first_wall = message.timestamp, time.monotonic()
                due = self.first_wall + (message.timestamp - self.first_ts) / 1000 / self.speed
                if due > time.monotonic():
                    if chunk:
                        yield chunk
                        chunk = []
                    while not self.stop() and time.monotonic() < due:
                        time.sleep(min(0.2, max(due - time.monotonic(), 0.0)))
                    if self.stop():
                        raise Abandoned
            chunk.append(message)
        if chunk:
            yield chunk


def parse_pace(text: str) -> float | None:
    """`max` -> None, `original` -> 1.0, `10x` / `0.5x` -> 10.0 / 0.5."""
    lowered = text.strip().lower()
    if lowered == "max":
        return None
    if lowered == "original":
        return 1.0
    if lowered.endswith("x"):
        try:
            speed = float(lowered[:-1])
        except ValueError:
            speed = 0.0
        if speed > 0:
            return speed
    raise ValueError(f"{text!r} is not a pace: use max, original or Nx (e.g. 10x, 0.5x)")


class TimeOrdered(Consumer):
    """A bounded read served in timestamp order across partitions, for `--pace`: Kafka
    hands partitions out interleaved as fetched, while a replay at the original pace must
    follow the clock. The range is read whole first (it is bounded, and at the original
    pace it takes far longer to send than to hold)."""

    def __init__(self, inner: Consumer) -> None:
        self.inner = inner
        self.sorted: list[Message] | None = None
        self.next = 0

    def read(self, max_messages: int, timeout: float) -> list[Message]:
        if self.sorted is None:
            gathered: list[Message] = []
            while not self.inner.exhausted:
                gathered += self.inner.read(10000, timeout)
            gathered.sort(
                key=lambda m: (
                    m.timestamp if m.timestamp is not None else 0,
                    m.position.partition if m.position is not None and m.position.partition is not None else -1,
                    m.position.id if m.position is not None and isinstance(m.position.id, int) else 0,
                )
            )
            self.sorted = gathered
        out = self.sorted[self.next : self.next + max_messages]
        self.next += len(out)
        if self.next >= len(self.sorted):
            self.exhausted = True
        return out

    def close(self) -> None:
        self.inner.close()
