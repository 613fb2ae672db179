"""`--cloudevents` conversion and provenance on the relay path, with the in-process fakes:
a message the conversion refuses is a permanent rejection (dead-lettered unconverted, or
stopping the relay), a sink's own transient refusal of a converted message is retried, and
the provenance header is replaced, never stacked."""

from __future__ import annotations

import json

import pytest

from evrelay import cloudevents
from evrelay.envelope import Message, Position
from evrelay.errors import DeliveryFailed
from evrelay.relay import PROVENANCE_HEADER, Backoff, Relay
from evrelay.transforms import TransformingProducer
from tests.fakes import FakeLog, FakeSink


def event(number: int) -> Message:
    value = json.dumps({"specversion": "1.0", "type": "t", "source": "/s", "id": f"e{number}", "data": {"n": number}})
    return Message(value.encode(), None, [], None, Position("fake", "src", number))


def run(source: list[Message], sink: FakeSink, dead: FakeSink | None = None) -> tuple[FakeLog, Relay]:
    log = FakeLog(source)
    relay = Relay(
        log,
        TransformingProducer(sink, cloudevents.to_binary),
        sink_label="fake:sink",
        dead_letter=dead,
        provenance=False,
        backoff=Backoff(initial=0.001, cap=0.002),
    )
    relay.run(window=10)
    return log, relay


def test_messages_that_are_not_cloudevents_are_dead_lettered_unconverted():
    plain = Message(b"plain", None, [], None, Position("fake", "src", 1))
    sink, dead = FakeSink(refuse={b'{"n":2}': "transient"}), FakeSink()
    log, relay = run([event(0), plain, event(2)], sink, dead)
    assert [dict(m.headers)["ce_id"] for m in sink.confirmed] == [b"e0", b"e2"]
    assert sink.values == [b'{"n":0}', b'{"n":2}']
    assert dead.values == [b"plain"]
    assert "not a CloudEvent" in dict(dead.confirmed[0].headers)["evrelay-error"].decode()
    assert log.acked == [0, 1, 2]
    assert relay.stats.retries == 1


def test_without_a_dead_letter_sink_a_refused_conversion_stops_the_relay():
    plain = Message(b"plain", None, [], None, Position("fake", "src", 1))
    sink = FakeSink()
    with pytest.raises(DeliveryFailed, match="not a CloudEvent"):
        run([event(0), plain, event(2)], sink)
    # Both events reached the sink in that window; only e0, before the refused one, is acked
    # (the rest is read again), as for any permanent rejection.
    assert sink.values == [b'{"n":0}', b'{"n":2}']


def test_binary_and_structured_conversions_invert_each_other():
    original = Message(b'{"n": 1}', b"k", [("ce_specversion", b"1.0"), ("ce_type", b"t"), ("ce_source", b"/s"),
                                            ("ce_id", b"e1"), ("content-type", b"application/json"), ("trace", b"x")])  # fmt: skip
    structured = cloudevents.to_structured(original)
    assert dict(structured.headers) == {"content-type": b"application/cloudevents+json", "trace": b"x"}
    assert json.loads(structured.value)["data"] == {"n": 1}
    back = cloudevents.to_binary(structured)
    assert back.key == b"k"
    assert sorted(back.headers) == sorted([*original.headers])
    assert json.loads(back.value) == {"n": 1}
    text = cloudevents.to_binary(cloudevents.to_structured(Message(b"\xff\x00", None, [("ce_specversion", b"1.0"), ("ce_id", b"b"), ("ce_type", b"t"), ("ce_source", b"/s"), ("content-type", b"application/octet-stream")])))
    assert text.value == b"\xff\x00"


def test_the_provenance_header_is_replaced_not_stacked():
    stale = Message(b"v", None, [("a", b"1"), (PROVENANCE_HEADER, b"kafka/x/0/1"), ("b", b"2")], None, Position("fake", "src", 0))
    sink = FakeSink()
    Relay(FakeLog([stale]), sink, sink_label="fake:sink").run()
    assert sink.confirmed[0].headers == [("a", b"1"), ("b", b"2"), (PROVENANCE_HEADER, b"fake/src/0")]


def test_a_dry_run_shows_the_converted_messages(tmp_path):
    from tests.conftest import evrelay

    source = tmp_path / "in.jsonl"
    envelopes = [{"value": event(1).value.decode()}, {"value": "plain"}]
    source.write_text("".join(json.dumps(e) + "\n" for e in envelopes))
    run = evrelay("bridge", f"file:{source}", "file:out.jsonl", "--dry-run", "--cloudevents", "binary", "-o", "json")
    assert run.returncode == 0, run.err
    (shown,) = [json.loads(line) for line in run.lines()]
    assert shown["value"] == '{"n":1}' and ["ce_id", "e1"] in shown["headers"]
    assert "would be refused: not a CloudEvent" in run.err
