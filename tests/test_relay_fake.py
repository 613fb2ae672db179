"""The relay engine's rules, driven by the in-process fake backend (no server, milliseconds).

Each test names one rule of evrelay/relay.py: a message is acked at its source only after
the sink confirmed it; at most one window is sent and unconfirmed; outages of the sink or
the source are waited out without loss; a message refused for good goes to the dead-letter
sink or stops the relay, acking only what came before it.
"""

from __future__ import annotations

import pytest

from evrelay.backends.base import StopReason
from evrelay.errors import DeliveryFailed
from evrelay.relay import ERROR_HEADER, PROVENANCE_HEADER, SINK_HEADER, Backoff, Relay
from tests.fakes import FakeLog, FakeSink, messages


def relay(log: FakeLog, sink: FakeSink, **kwargs) -> Relay:
    kwargs.setdefault("backoff", Backoff(initial=0.001, cap=0.002))
    return Relay(log, sink, sink_label="fake:sink", **kwargs)


def test_acks_only_what_the_sink_has_confirmed():
    sink = FakeSink()

    def check(batch):
        confirmed = {m.value for m in sink.confirmed}
        assert all(m.value in confirmed for m in batch), "acked before the sink confirmed it"

    log = FakeLog(messages(2500), on_ack=check)
    stats = relay(log, sink).run(window=100)
    assert sink.values == [f"m{i}".encode() for i in range(2500)]
    assert log.acked == list(range(2500))
    assert not log.pending
    assert stats.delivered == stats.acked == 2500
    assert stats.stop_reason is StopReason.END_OF_DATA


def test_never_more_than_one_window_sent_and_unconfirmed():
    sink = FakeSink()
    relay(FakeLog(messages(1000)), sink).run(window=50)
    assert sink.max_unconfirmed_batches == 1
    assert sink.sends == 20


def test_provenance_header_names_the_source_position():
    sink = FakeSink()
    relay(FakeLog(messages(3)), sink).run(window=10)
    assert [m.headers for m in sink.confirmed] == [[(PROVENANCE_HEADER, f"fake/src/{i}".encode())] for i in range(3)]


def test_provenance_header_is_the_coordinates_for_every_partition_and_replaces_an_old_one():
    """The relay builds the header from a per-partition prefix: it must equal
    Position.coordinates whatever the backend, partition or ID, and replace a provenance
    header from an earlier hop while keeping the other headers in order."""
    from evrelay.backends.base import Message, Position

    source = [
        Message(b"a", None, [], None, Position("kafka", "orders", 7, 2)),
        Message(b"b", None, [("x", b"1"), (PROVENANCE_HEADER, b"redis/old/1-0"), ("y", b"2")], None, Position("kafka", "orders", 12, 0)),
        Message(b"c", None, [], None, Position("kafka", "orders", 8, 2)),
        Message(b"d", None, [], None, Position("redis", "s", "1700000000000-3")),
        Message(b"e", None, [("z", b"")], None, Position("local", "s", "5-0")),
    ]
    sink = FakeSink()
    stats = relay(FakeLog(source), sink).run(window=10)
    expected = [[*(h for h in m.headers if h[0] != PROVENANCE_HEADER), (PROVENANCE_HEADER, m.position.coordinates.encode())] for m in source]
    assert [m.headers for m in sink.confirmed] == expected
    assert expected[1] == [("x", b"1"), ("y", b"2"), (PROVENANCE_HEADER, b"kafka/orders/0/12")]
    assert stats.delivered == 5
    assert stats.last_positions == {("orders", 2): "kafka/orders/2/8", ("orders", 0): "kafka/orders/0/12", ("s", None): "local/s/5-0"}


def test_sink_outage_is_waited_out_without_loss_or_early_ack():
    sink = FakeSink(down_flushes=3)
    acked_during_outage = []
    log = FakeLog(messages(300), on_ack=lambda batch: acked_during_outage.append(sink.down_flushes))
    warnings: list[str] = []
    stats = relay(log, sink, warn=warnings.append).run(window=100)
    assert sink.values == [f"m{i}".encode() for i in range(300)]
    assert set(acked_during_outage) == {0}, "nothing may be acked while the sink is down"
    assert stats.retries == 3
    assert len(warnings) == 3 and all("nothing is acked meanwhile" in w for w in warnings)
    assert log.keepalives > 0, "the source session is kept alive while waiting"


def test_unconfirmed_flush_is_waited_for_never_sent_twice():
    sink = FakeSink(unconfirmed_flushes=4)
    relay(FakeLog(messages(100)), sink).run(window=100)
    assert sink.sends == 1
    assert sink.values == [f"m{i}".encode() for i in range(100)]


def test_transient_refusal_is_retried_and_delivered_once():
    sink = FakeSink(refuse={b"m7": "transient", b"m42": "transient"})
    log = FakeLog(messages(60))
    stats = relay(log, sink).run(window=20)
    assert sorted(sink.values) == sorted(f"m{i}".encode() for i in range(60))
    assert len(sink.values) == 60
    assert log.acked == list(range(60))
    assert stats.retries == 2


def test_permanent_refusal_goes_to_the_dead_letter_sink_and_the_rest_flows():
    sink = FakeSink(refuse={b"m5": "permanent"})
    dead = FakeSink()
    log = FakeLog(messages(10))
    stats = relay(log, sink, dead_letter=dead).run(window=4)
    assert b"m5" not in sink.values and len(sink.values) == 9
    assert dead.values == [b"m5"]
    headers = dict(dead.confirmed[0].headers)
    assert headers[ERROR_HEADER] == b"fake: too large"
    assert headers[SINK_HEADER] == b"fake:sink"
    assert log.acked == list(range(10)), "a dead-lettered message is handled: acked"
    assert stats.dead_lettered == 1


def test_permanent_refusal_without_dead_letter_stops_acking_only_what_came_before():
    sink = FakeSink(refuse={b"m5": "permanent"})
    log = FakeLog(messages(10))
    with pytest.raises(DeliveryFailed, match="fake/src/5 was rejected by fake:sink for good"):
        relay(log, sink).run(window=4)
    assert log.acked == [0, 1, 2, 3, 4]
    assert 5 in log.pending, "the refused message stays unacked, to be read again"


def test_source_dying_mid_read_is_waited_out_and_nothing_is_lost():
    sink = FakeSink()
    log = FakeLog(messages(500), fail_reads={2, 3})
    stats = relay(log, sink).run(window=100)
    assert sink.values == [f"m{i}".encode() for i in range(500)]
    assert log.acked == list(range(500))
    assert stats.retries == 0  # source outages back off without counting sink retries


def test_limit_reads_no_more_than_it_relays():
    sink = FakeSink()
    log = FakeLog(messages(1000))
    stats = relay(log, sink).run(limit=250, window=100)
    assert stats.delivered == 250
    assert log.next_index == 250, "a group reader must not take messages it will not relay"
    assert log.acked == list(range(250))
    assert stats.stop_reason is StopReason.LIMIT


def test_stop_request_finishes_and_acks_the_window_in_flight():
    sink = FakeSink()
    log = FakeLog(messages(10_000), follow=True)
    calls = {"n": 0}

    def stop() -> bool:
        calls["n"] += 1
        return calls["n"] > 3

    stats = relay(log, sink, stop=stop).run(window=100)
    assert stats.stop_reason is StopReason.STOPPED
    assert stats.delivered == stats.acked > 0
    assert not [i for i in log.pending if i < stats.acked], "everything delivered was acked"
    assert sink.values == [f"m{i}".encode() for i in range(stats.delivered)]


class _CloseFails(FakeLog):
    def close(self) -> None:
        from evrelay.errors import NotFoundError

        raise NotFoundError("fake source: acking for group 'g': no such group")


def test_a_failing_close_does_not_replace_the_error_that_stopped_the_relay():
    # What the user must see is why the relay stopped (here: a message refused for good,
    # no dead-letter sink), not the source's complaint while it was being closed on the
    # way out (e.g. a Redis reader's late XACK answer on a destroyed group).
    with pytest.raises(DeliveryFailed) as raised, _CloseFails(messages(3)) as log:
        relay(log, FakeSink(refuse={b"m1": "permanent"})).run(window=10)
    assert "too large" in str(raised.value)
