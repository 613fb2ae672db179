"""--filter, --map, --match-key and --match-header: the Selection itself, its place in the
relay's ack rules (fake backend), and tail/bridge/replay on real Kafka and Redis servers."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from evrelay.envelope import Message, Position
from evrelay.errors import DeliveryFailed, UsageError
from evrelay.relay import ERROR_HEADER, SOURCE_ADDRESS_HEADER, Backoff, Relay
from evrelay.selection import Selection
from tests.conftest import evrelay
from tests.fakes import FakeLog, FakeSink
from tests.test_contract_kafka import create_topic

ORDERS = [
    {"value": {"id": 1, "total": 10}, "key": "customer-1", "headers": [["region", "eu"]]},
    {"value": {"id": 2, "total": 200}, "key": "customer-2", "headers": [["region", "us"]]},
    {"value": "not json", "key": "other-3", "headers": []},
    {"value": {"id": 4, "total": 400}, "key": "customer-1", "headers": [["region", "eu-west"]]},
]
ORDERS_JSONL = "".join(json.dumps(order) + "\n" for order in ORDERS)


def batch() -> list[Message]:
    return [
        Message(b'{"id": 1,  "total": 10}', b"customer-1", [("region", b"eu")], None, Position("fake", "src", 0)),
        Message(b'{"id": 2, "total": 200}', b"customer-2", [("region", b"us")], None, Position("fake", "src", 1)),
        Message(b"not json", None, [], None, Position("fake", "src", 2)),
        Message(b'{"id": 4, "total": 400}', b"customer-1", [("region", b"eu-west")], None, Position("fake", "src", 3)),
    ]


# --- the Selection ---------------------------------------------------------------------------


def test_match_key_and_header_globs():
    result = Selection(match_keys=["customer-*"], match_headers=["region=eu*"]).select(batch())
    assert result.origins == [0, 3]
    assert Selection(match_keys=["*-2", "*-4"]).select(batch()).origins == [1]
    assert Selection(match_headers=["region=eu*", "region=*west"]).select(batch()).origins == [3]


def test_filter_sees_the_parsed_value_and_reports_errors_per_message():
    result = Selection(filter_expr=".value.total > 100").select(batch())
    assert result.origins == [1, 3]
    assert result.errors == [(2, '--filter: Cannot index string with string ("total")')]
    assert Selection(filter_expr='.key == null or (.headers | map(.[0]) | index("region") != null)').select(batch()).origins == [0, 1, 2, 3]


def test_map_rewrites_drops_and_splits_keeping_untouched_values_byte_exact():
    result = Selection(map_expr='.key = "k"').select(batch())
    assert [m.value for m in result.kept] == [m.value for m in batch()]  # spacing of message 0 kept
    assert {m.key for m in result.kept} == {b"k"}
    split = Selection(map_expr="select(.value | type == \"object\") | (.value = .value.id), (.value = .value.total)").select(batch())
    assert [m.value for m in split.kept] == [b"1", b"10", b"2", b"200", b"4", b"400"]
    assert split.origins == [0, 0, 1, 1, 3, 3]
    assert [m.position.id for m in split.kept] == [0, 0, 1, 1, 3, 3]
    not_envelope = Selection(map_expr=".value").select(batch())
    assert not not_envelope.kept
    assert [reason for _, reason in not_envelope.errors] == [
        "--map: the result has neither 'value' nor 'value_b64'",
        "--map: the result has neither 'value' nor 'value_b64'",
        "--map: the result must be an envelope object (change its fields, e.g. `.value = .value.id`), got str",
        "--map: the result has neither 'value' nor 'value_b64'",
    ]


def test_a_jq_syntax_error_is_a_usage_error():
    with pytest.raises(UsageError, match=r"--filter '\.value \|\|' is not a valid jq expression"):
        Selection(filter_expr=".value ||")
    with pytest.raises(UsageError, match=r"--match-header expects NAME=GLOB"):
        Selection(match_headers=["region"])


# --- the relay's ack rules with a selection ----------------------------------------------------


def test_filtered_out_messages_are_acked_only_after_what_was_kept_before_them():
    sink = FakeSink()

    def check(acked):
        confirmed = {m.value for m in sink.confirmed}
        kept_before = [m for m in log.source[: max(m.position.id for m in acked) + 1] if int(m.value[1:]) % 2 == 0]
        assert all(m.value in confirmed for m in kept_before), "a filtered message was acked before an earlier kept one was delivered"

    log = FakeLog([Message(f"m{i}".encode(), None, [], None, Position("fake", "src", i)) for i in range(100)], on_ack=check)
    relay = Relay(log, sink, sink_label="fake:sink", selection=Selection(filter_expr='.value[1:] | tonumber % 2 == 0'))
    stats = relay.run(window=16)
    assert sink.values == [f"m{i}".encode() for i in range(0, 100, 2)]
    assert log.acked == list(range(100)) and not log.pending
    assert (stats.delivered, stats.filtered, stats.acked) == (50, 50, 100)


def test_a_filter_error_goes_to_the_dead_letter_address_with_its_reason_and_source():
    sink, dead = FakeSink(), FakeSink()
    log = FakeLog(batch())
    relay = Relay(log, sink, sink_label="fake:sink", dead_letter=dead, source_label="fake:src",
                  selection=Selection(filter_expr=".value.total > 100"), backoff=Backoff(0.001, 0.002))
    relay.run(window=10)
    assert sink.values == [b'{"id": 2, "total": 200}', b'{"id": 4, "total": 400}']
    [letter] = dead.confirmed
    assert letter.value == b"not json"
    assert (ERROR_HEADER, b'--filter: Cannot index string with string ("total")') in letter.headers
    assert (SOURCE_ADDRESS_HEADER, b"fake:src") in letter.headers
    assert log.acked == [0, 1, 2, 3]


def test_a_filter_error_without_dead_letter_stops_acking_only_what_came_before():
    sink = FakeSink()
    log = FakeLog(batch())
    relay = Relay(log, sink, sink_label="fake:sink", selection=Selection(filter_expr=".value.total > 100"))
    with pytest.raises(DeliveryFailed, match="fake/src/2 could not be selected"):
        relay.run(window=10)
    assert log.acked == [0, 1]
    assert 2 in log.pending


# --- the commands, against real servers ------------------------------------------------------------


def test_jq_syntax_error_exits_2_before_connecting():
    started = time.monotonic()
    run = evrelay("tail", "kafka://127.0.0.1:1/orders", "--filter", ".value |||", "--timeout", "20s")
    assert run.returncode == 2, run.err
    assert time.monotonic() - started < 15
    assert run.err == ("evrelay: error: --filter '.value |||' is not a valid jq expression: syntax error, unexpected '|' at <top-level>, line 1, column 9\n")
    assert "Traceback" not in run.err


@pytest.mark.kafka
def test_tail_and_bridge_kafka_to_redis_with_filters(kafka_server, redis_server):
    topic = create_topic(kafka_server.bootstrap, f"sel-{uuid.uuid4().hex[:6]}")
    source = f"kafka://{kafka_server.bootstrap}/{topic}"
    assert evrelay("publish", source, "--input", "json", input=ORDERS_JSONL).returncode == 0

    run = evrelay("tail", source, "--from", "beginning", "--filter", ".value.total > 100", "-o", "raw")
    assert run.returncode == 0, run.err
    assert run.lines() == [b'{"id":2,"total":200}', b'{"id":4,"total":400}']
    assert f"kafka/{topic}/0/2: --filter: Cannot index string with string (\"total\") (not shown)" in run.err

    run = evrelay("tail", source, "--match-key", "customer-1", "-o", "raw")  # no --from: the last 10 matches
    assert run.lines() == [b'{"id":1,"total":10}', b'{"id":4,"total":400}']
    run = evrelay("tail", source, "--from", "beginning", "-n", "1", "--match-header", "region=us", "--map", ".value = .value.id", "-o", "raw")
    assert run.lines() == [b"2"]

    stream = f"big-{uuid.uuid4().hex[:6]}"
    sink = f"redis://127.0.0.1:{redis_server.port}/0/{stream}"
    run = evrelay("bridge", source, sink, "-g", "big", "--match-key", "customer-*", "--filter", ".value.total > 100", "-n", "4")
    assert run.returncode == 0, run.err
    assert "bridged 2 message(s)" in run.err and "2 filtered out" in run.err and "4 acked" in run.err
    run = evrelay("tail", sink, "--from", "beginning", "-o", "json")
    assert [json.loads(line)["value"] for line in run.lines()] == ['{"id":2,"total":200}', '{"id":4,"total":400}']
    lag = evrelay("lag", source, "-g", "big", "-o", "json")
    assert sum(json.loads(line)["lag"] for line in lag.lines()) == 0, "filtered-out messages must be acked too"


@pytest.mark.redis
def test_group_tail_acks_filtered_messages_and_replay_selects(redis_server):
    stream = f"sel-{uuid.uuid4().hex[:6]}"
    source = f"redis://127.0.0.1:{redis_server.port}/0/{stream}"
    assert evrelay("publish", source, "--input", "json", input=ORDERS_JSONL).returncode == 0
    run = evrelay("tail", source, "-g", "eu", "--match-header", "region=eu*", "-o", "raw")
    assert run.lines() == [b'{"id":1,"total":10}', b'{"id":4,"total":400}']
    pending = evrelay("ack", source, "-g", "eu", "--list", "-o", "json")
    assert pending.lines() == [], "filtered-out messages are acked on a group read"
    assert evrelay("tail", source, "-g", "eu", "-o", "raw").lines() == []

    copy = f"redis://127.0.0.1:{redis_server.port}/0/{stream}-copy"
    run = evrelay("replay", source, copy, "--from", "beginning", "--match-key", "*-2")
    assert run.returncode == 0, run.err
    assert "replayed 1 message(s); 3 filtered out" in run.err
    assert evrelay("tail", copy, "-o", "raw").lines() == [b'{"id":2,"total":200}']


@pytest.mark.parametrize(
    "expression",
    [
        ".value.total > 100",
        '.key == "customer-1" and .value.id',
        '.headers[] | select(.[0] == "region") | .[1] | startswith("eu")',
        "(keys | length) > 3",
        '"\\(.key)" | test("^c")',
        ".id != null or .offset != null",
        '. as $m | $m.value | type == "object"',
        '.value?.id > 2 or (.key | . != null and startswith("other"))',
        '.value.total as $t | $t > 100 and .id == null',
        "0",
    ],
)
def test_a_filter_given_only_the_fields_it_names_decides_as_with_the_whole_envelope(expression):
    from evrelay.selection import envelope_fields_used

    trimmed = Selection(filter_expr=expression)
    whole = Selection(filter_expr=expression)
    whole.filter_program.fields = None
    assert (trimmed.filter_program.fields is None) == (envelope_fields_used(expression) is None)
    for messages in (batch(), [Message(b"\xff\x00", b"\xfe", [("h", b"\xff")], 1, Position("fake", "s", "1-0"))]):
        a, b = trimmed.select(messages), whole.select(messages)
        assert (a.origins, a.errors) == (b.origins, b.errors)
