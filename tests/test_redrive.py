"""`evrelay redrive DLQ`: dead letters go back where they came from, acked only once delivered."""

from __future__ import annotations

import json
import uuid

import pytest

from evrelay.envelope import Message, Position
from evrelay.redrive import Redrive, original_message
from evrelay.relay import ERROR_HEADER, PROVENANCE_HEADER, SINK_HEADER, SOURCE_ADDRESS_HEADER
from evrelay.selection import Selection
from tests.conftest import evrelay
from tests.fakes import FakeLog, FakeSink
from tests.test_contract_kafka import create_topic


def letter(i: int, source: str | None = "src", value: bytes | None = None) -> Message:
    headers = [("trace", b"t1"), (PROVENANCE_HEADER, f"kafka/orders/0/{i}".encode()), (ERROR_HEADER, b"too large"), (SINK_HEADER, b"redis:out")]
    if source is not None:
        headers.append((SOURCE_ADDRESS_HEADER, source.encode()))
    return Message(value or f"m{i}".encode(), b"k", headers, 1700000000000, Position("fake", "dlq", i))


def test_the_original_message_is_restored():
    original = original_message(letter(0))
    assert (original.value, original.key, original.headers) == (b"m0", b"k", [("trace", b"t1")])


def test_only_delivered_letters_are_acked_and_a_missing_source_stays():
    sinks: dict[str, FakeSink] = {"src": FakeSink(refuse={b"m2": "permanent"}), "other": FakeSink()}
    log = FakeLog([letter(0), letter(1, source=None), letter(2), letter(3, source="other")])
    engine = Redrive(log, sinks.__getitem__)
    engine.handle(log.read(10, 0))
    assert sinks["src"].values == [b"m0"] and sinks["other"].values == [b"m3"]
    assert log.acked == [0, 3] and sorted(log.pending) == [1, 2]
    assert len(engine.stats.problems) == 2 and "records no source address" in engine.stats.problems[0]


def test_cumulative_acks_never_pass_a_letter_left_behind():
    sink = FakeSink()
    log = FakeLog([letter(i) for i in range(5)])
    log.cumulative_acks = True
    engine = Redrive(log, lambda _: sink, selection=Selection(match_keys=["k"], filter_expr='.value != "m2"'))
    engine.handle(log.read(10, 0))
    assert sink.values == [b"m0", b"m1", b"m3", b"m4"]
    assert log.acked == [0, 1], "acking m3 on Kafka would commit past m2, which was left in the DLQ"


@pytest.mark.kafka
def test_redrive_sends_dead_letters_back_to_their_kafka_source(kafka_server, redis_server):
    topic = create_topic(kafka_server.bootstrap, f"rd-{uuid.uuid4().hex[:6]}")
    source = f"kafka://{kafka_server.bootstrap}/{topic}"
    redis = f"redis://127.0.0.1:{redis_server.port}/0"
    sink, dlq = f"{redis}/rd-out-{topic}", f"{redis}/rd-dlq-{topic}"
    lines = [{"value": {"total": 5}}, {"value": "plain-1", "key": "a", "headers": [["trace", "x"]]}, {"value": "plain-2", "key": "b"}]
    assert evrelay("publish", source, "--input", "json", input="".join(json.dumps(x) + "\n" for x in lines)).returncode == 0
    run = evrelay("bridge", source, sink, "--filter", ".value.total > 0", "--dead-letter", dlq, "-n", "3")
    assert run.returncode == 0 and "2 dead-lettered" in run.err, run.err

    dry = evrelay("redrive", dlq, "--dry-run", "-o", "raw")
    assert dry.returncode == 0, dry.err
    assert dry.lines() == [b"plain-1", b"plain-2"]
    assert f"would send 2 message(s) to {source}" in dry.err

    run = evrelay("redrive", dlq, "--match-key", "a")
    assert run.returncode == 0, run.err
    assert f"re-drove 1 of 2 dead letter(s) from {dlq} (1 to {source}); 1 acked, 1 left in place" in run.err
    back = [json.loads(line) for line in evrelay("tail", source, "--from", "beginning", "-o", "json").lines()]
    assert len(back) == 4
    assert (back[-1]["value"], back[-1]["key"], back[-1]["headers"]) == ("plain-1", "a", [["trace", "x"]])

    run = evrelay("redrive", dlq)
    assert run.returncode == 0, run.err
    assert "re-drove 1 of 1 dead letter(s)" in run.err and "1 acked, 0 left in place" in run.err
    assert [json.loads(line)["value"] for line in evrelay("tail", source, "-n", "1", "-o", "json").lines()] == ["plain-2"]
    again = evrelay("redrive", dlq)
    assert "re-drove 0 of 0" in again.err


@pytest.mark.redis
def test_a_letter_without_a_source_needs_to(redis_server):
    redis = f"redis://127.0.0.1:{redis_server.port}/0"
    dlq = f"{redis}/bare-dlq-{uuid.uuid4().hex[:6]}"
    assert evrelay("publish", dlq, "hello", "-H", "evrelay-error=refused").returncode == 0
    run = evrelay("redrive", dlq)
    assert run.returncode == 1
    assert "records no source address" in run.err and "re-drove 0 of 1" in run.err and "Traceback" not in run.err
    target = f"{redis}/bare-target-{uuid.uuid4().hex[:6]}"
    run = evrelay("redrive", dlq, "--to", target)
    assert run.returncode == 0, run.err
    assert evrelay("tail", target, "-o", "json").lines()[0].startswith(b'{"value":"hello","headers":[]')
