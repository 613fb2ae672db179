"""Sink names as templates over the message: `bridge SRC 'redis:events-{headers[region]}'`."""

from __future__ import annotations

import json
import uuid

import pytest

from evrelay.envelope import Message, Position
from evrelay.errors import UsageError
from evrelay.relay import ERROR_HEADER, Relay
from evrelay.routing import RoutedProducer, RouteError, RouteTemplate
from tests.conftest import evrelay
from tests.fakes import FakeLog, FakeSink
from tests.test_contract_kafka import create_topic


def message(value: bytes, key: bytes | None = None, headers=(), i: int = 0) -> Message:
    return Message(value, key, list(headers), None, Position("kafka", "events", i, 2))


def test_templates_fill_from_key_headers_value_and_source():
    route = RouteTemplate("{topic}-{partition}-{key}-{headers[region]}-{value[customer][tier]}")
    m = message(b'{"customer": {"tier": "gold"}}', b"k1", [("region", b"eu"), ("region", b"us")])
    assert route.render(m) == "events-2-k1-us-gold"
    for template, expected in [("{key}", "no key"), ("{headers[zone]}", "no header 'zone'"), ("{value[nope]}", "value has no field 'nope'")]:
        with pytest.raises(RouteError, match=expected):
            RouteTemplate(template).render(message(b"{}"))
    with pytest.raises(UsageError, match=r"unknown field \{nope\}"):
        RouteTemplate("x-{nope}")


def test_unroutable_messages_are_dead_lettered_with_the_reason_and_the_rest_delivered():
    sinks: dict[str, FakeSink] = {}
    routed = RoutedProducer("out-{headers[region]}", lambda name: sinks.setdefault(name, FakeSink()))
    dead = FakeSink()
    source = [message(b"a", None, [("region", b"eu")], 0), message(b"b", None, [], 1), message(b"c", None, [("region", b"us")], 2)]
    log = FakeLog(source)
    Relay(log, routed, sink_label="out-{headers[region]}", dead_letter=dead).run(window=10)
    assert {name: sink.values for name, sink in sinks.items()} == {"out-eu": [b"a"], "out-us": [b"c"]}
    [letter] = dead.confirmed
    assert letter.value == b"b" and (ERROR_HEADER, b"route 'out-{headers[region]}': no header 'region'") in letter.headers
    assert log.acked == [0, 1, 2]


@pytest.mark.kafka
def test_bridge_routes_kafka_messages_to_redis_streams_by_header(kafka_server, redis_server):
    topic = create_topic(kafka_server.bootstrap, f"route-{uuid.uuid4().hex[:6]}")
    source = f"kafka://{kafka_server.bootstrap}/{topic}"
    lines = [{"value": "e1", "headers": [["region", "eu"]]}, {"value": "u1", "headers": [["region", "us"]]},
             {"value": "none"}, {"value": "e2", "headers": [["region", "eu"]]}]
    assert evrelay("publish", source, "--input", "json", input="".join(json.dumps(x) + "\n" for x in lines)).returncode == 0
    redis = f"redis://127.0.0.1:{redis_server.port}/0"
    run = evrelay("bridge", source, f"{redis}/{topic}-{{headers[region]}}", "--dead-letter", f"{redis}/{topic}-dlq", "-n", "4")
    assert run.returncode == 0, run.err
    assert "bridged 3 message(s)" in run.err and "1 dead-lettered" in run.err

    def values(stream: str) -> list[bytes]:
        return evrelay("tail", f"{redis}/{stream}", "-o", "raw").lines()

    assert values(f"{topic}-eu") == [b"e1", b"e2"]
    assert values(f"{topic}-us") == [b"u1"]
    [letter] = [json.loads(line) for line in evrelay("tail", f"{redis}/{topic}-dlq", "-o", "json").lines()]
    assert letter["value"] == "none"
    assert ["evrelay-error", f"route '{topic}-{{headers[region]}}': no header 'region'"] in letter["headers"]
