"""An in-process fake backend that fails on demand, for fast tests of the relay engine.

kombu's memory transport and taskiq's InMemoryBroker show the idea: the bridge's ordering
rules (ack only what the sink confirmed, never two windows in flight, retry outages,
dead-letter or stop on rejections) are checked in milliseconds, deterministically, without
a server. The real-server tests in test_bridge.py keep checking the same rules end to end.

`FakeLog` is a consumer-group log: messages are handed out once, stay pending until
acked, and a rejected or unacked message is handed out again by a new reader.
`FakeSink` records what it has confirmed and can be told to be unreachable, to leave a
flush unconfirmed, or to refuse chosen messages transiently or for good.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from evrelay.backends.base import Consumer, DeliveryFailure, DeliveryReport, Message, Position, Producer
from evrelay.errors import BackendUnavailable


def messages(count: int, stream: str = "src") -> list[Message]:
    return [Message(f"m{i}".encode(), None, [], None, Position("fake", stream, i)) for i in range(count)]


@dataclass
class FakeLog(Consumer):
    """A group reader over a fixed list of messages (positions are list indexes)."""

    source: list[Message]
    follow: bool = False
    fail_reads: set[int] = field(default_factory=set)
    """Read calls (1-based) that raise BackendUnavailable: the source dying mid-read."""
    on_ack: Callable[[Sequence[Message]], None] | None = None
    next_index: int = 0
    pending: dict[int, Message] = field(default_factory=dict)
    acked: list[int] = field(default_factory=list)
    reads: int = 0
    keepalives: int = 0

    def read(self, max_messages: int, timeout: float) -> list[Message]:
        self.reads += 1
        if self.reads in self.fail_reads:
            raise BackendUnavailable("fake source: connection reset")
        batch = self.source[self.next_index : self.next_index + max_messages]
        self.next_index += len(batch)
        for message in batch:
            self.pending[message.position.id] = message  # type: ignore[union-attr]
        if not batch and not self.follow and not self.pending:
            self.exhausted = True
        if self.next_index >= len(self.source) and not self.follow:
            self.exhausted = True
        return [Message(m.value, m.key, list(m.headers), m.timestamp, m.position) for m in batch]

    def ack(self, batch: Sequence[Message]) -> None:
        if self.on_ack is not None:
            self.on_ack(batch)
        for message in batch:
            index = message.position.id  # type: ignore[union-attr]
            assert index in self.pending, f"acked {index}, which is not pending"
            del self.pending[index]
            self.acked.append(index)

    def keepalive(self) -> None:
        self.keepalives += 1


@dataclass
class FakeSink(Producer):
    """Confirms what it is sent, unless told otherwise.

    `down_flushes`: that many flush() calls raise BackendUnavailable (an outage).
    `unconfirmed_flushes`: that many flush() calls leave everything pending (slow acks).
    `refuse`: value -> "transient" or "permanent", reported as a failure for that message
    (a transient refusal is reported once per value, then accepted)."""

    down_flushes: int = 0
    unconfirmed_flushes: int = 0
    refuse: dict[bytes, str] = field(default_factory=dict)
    confirmed: list[Message] = field(default_factory=list)
    queued: list[Message] = field(default_factory=list)
    sends: int = 0
    max_unconfirmed_batches: int = 0
    _unconfirmed_batches: int = 0

    def send(self, batch: Sequence[Message]) -> None:
        self.sends += 1
        self.queued.extend(batch)
        self._unconfirmed_batches += 1
        self.max_unconfirmed_batches = max(self.max_unconfirmed_batches, self._unconfirmed_batches)

    def flush(self, timeout: float | None = None) -> DeliveryReport:
        if self.down_flushes > 0:
            self.down_flushes -= 1
            self.queued.clear()
            self._unconfirmed_batches = 0
            raise BackendUnavailable("fake sink: unreachable")
        if self.unconfirmed_flushes > 0:
            self.unconfirmed_flushes -= 1
            return DeliveryReport(pending=len(self.queued))
        report = DeliveryReport()
        for message in self.queued:
            verdict = self.refuse.get(message.value)
            if verdict == "transient":
                del self.refuse[message.value]
                report.failures.append(DeliveryFailure(message, "fake: try again", permanent=False))
            elif verdict == "permanent":
                report.failures.append(DeliveryFailure(message, "fake: too large", permanent=True))
            else:
                self.confirmed.append(message)
                report.delivered += 1
        self.queued.clear()
        self._unconfirmed_batches = 0
        return report

    @property
    def values(self) -> list[bytes]:
        return [m.value for m in self.confirmed]
