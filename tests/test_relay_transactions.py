"""The relay's exactly-once rules, driven by an in-process transactional fake (milliseconds).

A window is one transaction carrying the source's acks: what a reader of committed data
sees is exactly the committed windows; an aborted window is given back to the source and
sent again in a new transaction; a replay (no acks) is a single transaction, all or nothing.
The real-broker tests in test_exactly_once.py check the same rules through kill -9.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import pytest

from evrelay.backends.base import Consumer, Message, StopReason
from evrelay.errors import DeliveryFailed, TransactionAborted
from evrelay.relay import Backoff, Relay
from tests.fakes import FakeLog, FakeSink, messages


@dataclass
class RewindingLog(FakeLog):
    """A FakeLog whose reject() hands the messages out again (a Kafka consumer's seek)."""

    def reject(self, batch: Sequence[Message]) -> None:
        indexes = [m.position.id for m in batch]  # type: ignore[union-attr]
        for index in indexes:
            self.pending.pop(index, None)
        self.next_index = min(self.next_index, *indexes)
        self.exhausted = False


@dataclass
class TransactionalSink(FakeSink):
    """Confirms into an open transaction; commit() makes it visible and acks the source
    (the offsets inside the transaction); `abort_commits` commit calls abort instead."""

    abort_commits: set[int] = field(default_factory=set)
    visible: list[bytes] = field(default_factory=list)
    commits: int = 0
    aborts: int = 0
    open: bool = False
    transactional = True

    def begin(self) -> None:
        assert not self.open, "a transaction was begun inside another"
        self.open = True
        self.confirmed = []

    def commit(self, source: Consumer, acked: Sequence[Message]) -> None:
        assert self.open
        self.commits += 1
        if self.commits in self.abort_commits:
            self.abort()
            raise TransactionAborted("fake: the coordinator aborted it")
        self.visible += [m.value for m in self.confirmed]
        if acked:
            source.ack(acked)
        self.open = False

    def abort(self) -> None:
        self.aborts += 1
        self.confirmed = []
        self.open = False


def relay(log: FakeLog, sink: FakeSink, **kwargs) -> Relay:
    kwargs.setdefault("backoff", Backoff(initial=0.001, cap=0.002))
    return Relay(log, sink, sink_label="fake:sink", provenance=False, **kwargs)


def test_each_window_commits_with_its_acks_and_an_aborted_window_is_sent_again():
    log = RewindingLog(messages(1000))
    sink = TransactionalSink(abort_commits={3, 7})
    stats = relay(log, sink).run(window=100)
    assert sink.visible == [f"m{i}".encode() for i in range(1000)], "each message committed once, in order"
    assert sorted(log.acked) == list(range(1000)) and not log.pending
    assert sink.aborts == 2 and stats.retries == 2
    assert stats.delivered == stats.acked == 1000
    assert sink.max_unconfirmed_batches == 1 and not sink.open


def test_a_message_refused_for_good_aborts_its_window_and_acks_nothing_of_it():
    log = RewindingLog(messages(300))
    sink = TransactionalSink(refuse={b"m150": "permanent"})
    with pytest.raises(DeliveryFailed, match="transaction was aborted"):
        relay(log, sink).run(window=100)
    assert sink.visible == [f"m{i}".encode() for i in range(100)]
    assert sorted(log.acked) == list(range(100))


def test_a_replay_is_one_transaction_committed_at_the_end():
    log = RewindingLog(messages(500))
    sink = TransactionalSink()
    stats = relay(log, sink, ack=False).run(window=100)
    assert sink.commits == 1 and sink.visible == [f"m{i}".encode() for i in range(500)]
    assert stats.delivered == 500 and stats.stop_reason is StopReason.END_OF_DATA
    assert not log.acked, "a replay acks nothing at its source"


def test_a_replay_that_fails_or_stops_leaves_nothing_visible():
    sink = TransactionalSink(refuse={b"m250": "transient"})
    with pytest.raises(DeliveryFailed, match="nothing of it is visible"):
        relay(RewindingLog(messages(500)), sink, ack=False).run(window=100)
    assert sink.visible == [] and sink.aborts == 1

    stopped = TransactionalSink()
    calls = iter(range(10**6))
    stats = relay(RewindingLog(messages(500)), stopped, ack=False, stop=lambda: next(calls) > 3).run(window=100)
    assert stats.stop_reason is StopReason.STOPPED
    assert stopped.visible == [] and stopped.aborts == 1 and stats.delivered == 0
