"""The backend contract suite: every backend must pass these, written once.

A backend's test module subclasses `BackendContract` and provides two fixtures:
`backend` (an opened Backend) and `stream` (a fresh topic/stream name on it). Tests that
need a capability the backend does not declare are skipped for that backend only; a
backend that declares a capability must honour it.
"""

from __future__ import annotations

import threading
import time

import pytest

from evrelay.backends.base import Backend, Capability, Message, ReadSpec
from evrelay.errors import NotFoundError
from evrelay.positions import AtTime, Beginning, End, Last, parse_position

AWKWARD = [
    Message(b"plain text", None, []),
    Message(b"\xff\x00\xfe binary \x80", b"\xfe\xff", [("a", b"1"), ("a", b"2"), ("bin", b"\x80\x81"), ("a", b"3")]),
    Message(b"", b"empty-value", [("empty", b"")]),
    Message("héllo ✓ 漢字".encode(), "ключ".encode(), [("trace-id", b"abc")]),
    Message(b'{"id": 1, "nested": {"x": [1, 2]}}', b"k", []),
]


def publish(backend: Backend, stream: str, messages: list[Message]) -> None:
    with backend.producer(stream) as producer:
        report = producer.publish(messages, timeout=30)
    assert report.ok, report
    assert report.delivered == len(messages)


def read_all(backend: Backend, spec: ReadSpec, *, batch: int = 1000, timeout: float = 10.0) -> list[Message]:
    out: list[Message] = []
    deadline = time.monotonic() + timeout
    with backend.consumer(spec) as consumer:
        while not consumer.exhausted and time.monotonic() < deadline:
            got = consumer.read(batch, 0.5)
            assert len(got) <= batch
            out.extend(got)
        assert consumer.exhausted, "a non-follow read must reach end of data"
    return out


def read_n(consumer, n: int, *, timeout: float = 15.0, batch: int = 1000) -> list[Message]:
    out: list[Message] = []
    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        out.extend(consumer.read(min(batch, n - len(out)), 0.5))
    return out


def values(messages: list[Message]) -> list[bytes]:
    return [m.value for m in messages]


def numbered(prefix: str, count: int) -> list[Message]:
    return [Message(f"{prefix}-{i}".encode(), f"k{i % 7}".encode(), [("n", str(i).encode())]) for i in range(count)]


class BackendContract:
    """Subclass me with `backend` and `stream` fixtures."""

    # Backends whose reads by time are approximate at batch granularity set a smaller pause.
    time_gap = 0.05

    @staticmethod
    def needs(backend: Backend, *capabilities: Capability) -> None:
        missing = [c for c in capabilities if not backend.supports(c)]
        if missing:
            pytest.skip(f"{backend.name} does not declare {', '.join(c.value for c in missing)}")

    def spec(self, stream: str, **kwargs) -> ReadSpec:
        return ReadSpec(stream=stream, **kwargs)

    # --- round trip ----------------------------------------------------------------------

    def test_round_trip_is_byte_exact(self, backend, stream):
        publish(backend, stream, AWKWARD)
        got = read_all(backend, self.spec(stream, start=Beginning()))
        assert [(m.value, m.key, m.headers) for m in got] == [(m.value, m.key, m.headers) for m in AWKWARD]
        for message in got:
            assert message.position is not None
            assert message.position.backend == backend.name
            assert message.timestamp is not None

    def test_timestamps_are_kept_when_given(self, backend, stream):
        self.needs(backend, Capability.KEEP_TIMESTAMP)
        sent = [Message(b"old", None, [], 1_700_000_000_123), Message(b"older", None, [], 1_600_000_000_456)]
        publish(backend, stream, sent)
        got = read_all(backend, self.spec(stream, start=Beginning()))
        assert [m.timestamp for m in got] == [1_700_000_000_123, 1_600_000_000_456]

    def test_batches_keep_order_and_read_respects_max(self, backend, stream):
        sent = numbered("m", 2500)
        with backend.producer(stream) as producer:
            for start in range(0, len(sent), 1000):
                producer.send(sent[start : start + 1000])
            report = producer.flush(30)
        assert report.ok and report.delivered == 2500
        got = read_all(backend, self.spec(stream, start=Beginning()), batch=100)
        assert values(got) == values(sent)

    # --- positions and end of data ---------------------------------------------------------

    def test_end_of_data_without_follow(self, backend, stream):
        publish(backend, stream, numbered("e", 5))
        with backend.consumer(self.spec(stream, start=Beginning())) as consumer:
            got = read_n(consumer, 5)
            deadline = time.monotonic() + 10
            while not consumer.exhausted and time.monotonic() < deadline:
                assert consumer.read(10, 0.5) == []
            assert consumer.exhausted
        assert values(got) == values(numbered("e", 5))

    def test_last_n(self, backend, stream):
        publish(backend, stream, numbered("l", 15))
        got = read_all(backend, self.spec(stream, start=Last(5)))
        assert values(got) == values(numbered("l", 15)[-5:])

    def test_native_position_start_and_inclusive_stop(self, backend, stream):
        self.needs(backend, Capability.SEEK_POSITION)
        sent = numbered("p", 8)
        publish(backend, stream, sent)
        everything = read_all(backend, self.spec(stream, start=Beginning()))
        start = parse_position(str(everything[2].position))
        stop = parse_position(str(everything[5].position))
        got = read_all(backend, self.spec(stream, start=start, stop=stop))
        assert values(got) == values(sent[2:6])

    def test_start_at_time(self, backend, stream):
        self.needs(backend, Capability.SEEK_TIME)
        publish(backend, stream, numbered("before", 3))
        time.sleep(self.time_gap + 0.01)
        cut = int(time.time() * 1000)
        time.sleep(self.time_gap)
        publish(backend, stream, numbered("after", 3))
        got = read_all(backend, self.spec(stream, start=AtTime(cut, "cut")))
        assert values(got) == values(numbered("after", 3))
        until = read_all(backend, self.spec(stream, start=Beginning(), stop=AtTime(cut, "cut")))
        assert values(until) == values(numbered("before", 3))

    def test_follow_from_end_sees_only_new_messages_promptly(self, backend, stream):
        self.needs(backend, Capability.FOLLOW)
        publish(backend, stream, numbered("old", 3))
        with backend.consumer(self.spec(stream, start=End(), follow=True)) as consumer:
            assert consumer.read(10, 1.0) == []
            writer = threading.Timer(0.3, publish, args=(self.second_handle(backend), stream, numbered("new", 2)))
            writer.start()
            started = time.monotonic()
            got = read_n(consumer, 2, timeout=10)
            waited = time.monotonic() - started
            writer.join()
        assert values(got) == values(numbered("new", 2))
        assert waited < 5.0

    def second_handle(self, backend: Backend) -> Backend:
        """A separate connection for a concurrent writer (defaults to the same one)."""
        return backend

    def test_missing_stream_is_reported(self, backend, stream):
        with pytest.raises(NotFoundError):
            read_all(backend, self.spec(stream + "-missing", start=Beginning()))

    # --- consumer groups -------------------------------------------------------------------

    def test_group_members_share_without_overlap_and_ack(self, backend, stream):
        self.needs(backend, Capability.GROUPS)
        sent = numbered("g", 60)
        publish(backend, stream, sent)
        seen: list[bytes] = []
        c1 = backend.consumer(self.spec(stream, group="g1", consumer_name="c1", start=Beginning()))
        c2 = backend.consumer(self.spec(stream, group="g1", consumer_name="c2", start=Beginning()))
        with c1, c2:
            for _ in range(200):
                if len(seen) >= len(sent):
                    break
                for consumer in (c1, c2):
                    batch = consumer.read(7, 0.2)
                    seen.extend(values(batch))
                    consumer.ack(batch)
        assert sorted(seen) == sorted(values(sent))
        assert len(seen) == len(set(seen))

    def test_group_redelivers_unacked_to_the_same_consumer_after_restart(self, backend, stream):
        self.needs(backend, Capability.GROUPS)
        sent = numbered("r", 6)
        publish(backend, stream, sent)
        spec = self.spec(stream, group="g2", consumer_name="worker", start=Beginning())
        with backend.consumer(spec) as first:
            batch = read_n(first, 4)
            assert values(batch) == values(sent[:4])
            first.ack(batch[:2])
        with backend.consumer(spec) as second:
            again = read_n(second, 4)
            second.ack(again)
        assert values(again) == values(sent[2:6])

    def test_group_is_created_at_start_and_then_keeps_its_position(self, backend, stream):
        self.needs(backend, Capability.GROUPS)
        publish(backend, stream, numbered("x", 3))
        with backend.consumer(self.spec(stream, group="late", consumer_name="c", start=End())) as consumer:
            assert consumer.created is True
            assert consumer.read(10, 0.5) == []
        publish(backend, stream, numbered("y", 2))
        with backend.consumer(self.spec(stream, group="late", consumer_name="c", start=Beginning())) as consumer:
            assert consumer.created is False
            got = read_n(consumer, 2)
            consumer.ack(got)
        assert values(got) == values(numbered("y", 2))

    def test_group_read_without_follow_ends(self, backend, stream):
        self.needs(backend, Capability.GROUPS)
        publish(backend, stream, numbered("z", 4))
        spec = self.spec(stream, group="ends", consumer_name="c", start=Beginning())
        got = read_all(backend, spec)
        assert values(got) == values(numbered("z", 4))

    def test_reject_gives_messages_back(self, backend, stream):
        self.needs(backend, Capability.GROUPS)
        publish(backend, stream, numbered("j", 3))
        spec = self.spec(stream, group="rej", consumer_name="c", start=Beginning())
        with backend.consumer(spec) as consumer:
            got = read_n(consumer, 3)
            consumer.ack(got[:1])
            consumer.reject(got[1:])
        with backend.consumer(spec) as consumer:
            again = read_n(consumer, 2)
            consumer.ack(again)
        assert values(again) == values(numbered("j", 3)[1:])

    def test_pending_claim_and_ack_by_position(self, backend, stream):
        self.needs(backend, Capability.PENDING, Capability.CLAIM)
        publish(backend, stream, numbered("q", 3))
        # release_on_close=False: this reader dies (a clean close would hand its messages back).
        dead = self.spec(stream, group="pq", consumer_name="dead", start=Beginning(), release_on_close=False)
        with backend.consumer(dead) as consumer:
            taken = read_n(consumer, 3)
        pending = backend.pending(stream, "pq")
        assert [str(p.position) for p in pending] == [str(m.position) for m in taken]
        assert {p.consumer for p in pending} == {"dead"}
        assert all(p.deliveries == 1 for p in pending)
        claimed = backend.claim(stream, "pq", "alive", min_idle_ms=0)
        assert values(claimed) == values(taken)
        pending = backend.pending(stream, "pq")
        assert {p.consumer for p in pending} == {"alive"}
        assert all(p.deliveries == 2 for p in pending)
        assert backend.ack(stream, "pq", [m.position for m in claimed[:2]]) == 2
        assert [str(p.position) for p in backend.pending(stream, "pq")] == [str(claimed[2].position)]

    def test_group_seek_rewinds(self, backend, stream):
        self.needs(backend, Capability.GROUP_SEEK)
        sent = numbered("s", 5)
        publish(backend, stream, sent)
        spec = self.spec(stream, group="rw", consumer_name="c", start=Beginning())
        got = read_all(backend, spec)
        backend.ack(stream, "rw", [m.position for m in got])
        plan = backend.plan_group_seek(stream, "rw", Beginning())
        assert sum(step.affected or 0 for step in plan.steps) == 5
        backend.apply_group_seek(plan)
        again = read_all(backend, spec)
        assert values(again) == values(sent)
