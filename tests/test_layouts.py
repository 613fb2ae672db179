"""Redis field layouts, address query strings, the raw `fields` envelope member and
provenance, through the real CLI against a real redis-server (and the local store)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from evrelay.backends.redis_streams.layouts import (
    FaststreamLayout,
    FieldsLayout,
    LayoutError,
    ValueFieldLayout,
    parse_layout,
)
from evrelay.envelope import Message, decode_envelope, encode_envelope
from evrelay.errors import ConfigError
from tests.conftest import evrelay


@pytest.fixture
def stream():
    return f"s-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def raw(redis_server):
    import redis

    client = redis.Redis.from_url(redis_server.url, protocol=2)
    client.set_response_callback("XRANGE", lambda response, **_: response)
    yield client
    client.close()


@pytest.fixture
def profile(redis_server):
    Path("evrelay.toml").write_text(f'[profiles.r]\nbackend = "redis"\nurl = "{redis_server.url}"\n')
    return "r"


def envelopes(run) -> list[dict]:
    assert run.returncode == 0, run.err
    return [json.loads(line) for line in run.lines()]


# --- layouts on their own ------------------------------------------------------------------


def test_unknown_layouts_are_refused_with_the_names_that_exist():
    with pytest.raises(ConfigError, match=r"unknown redis layout 'taskiqq'; did you mean 'taskiq'\?"):
        parse_layout("taskiqq")
    with pytest.raises(ConfigError, match="value_field=NAME"):
        parse_layout("value_field=a,bogus=b")
    assert parse_layout("value_field=payload,key_field=id").name == "value_field=payload,key_field=id"


def test_the_fields_layout_maps_members_to_fields_both_ways():
    layout = FieldsLayout()
    flat = layout.encode(Message(b'{"sku": "A-1", "qty": 2, "raw": {"b64": "/wA="}, "tags": ["x"]}'))
    assert flat == [b"sku", b"A-1", b"qty", b"2", b"raw", b"\xff\x00", b"tags", b'["x"]']
    decoded = layout.decode(list(zip(flat[0::2], flat[1::2], strict=True)))
    assert json.loads(decoded.value) == {"sku": "A-1", "qty": "2", "raw": {"b64": "/wA="}, "tags": '["x"]'}
    with pytest.raises(LayoutError, match="needs a JSON object"):
        layout.encode(Message(b"hello"))


def test_value_field_layout_keeps_other_fields_as_headers():
    layout = ValueFieldLayout("payload", "id")
    message = Message(b'{"n": 1}', b"k1", [("trace", b"t-1")])
    flat = layout.encode(message)
    assert flat == [b"payload", b'{"n": 1}', b"id", b"k1", b"trace", b"t-1"]
    decoded = layout.decode(list(zip(flat[0::2], flat[1::2], strict=True)))
    assert (decoded.value, decoded.key, decoded.headers, decoded.problem) == (b'{"n": 1}', b"k1", [("trace", b"t-1")], None)
    missing = layout.decode([(b"other", b"x")])
    assert missing.problem and "has no field 'payload'" in missing.problem
    assert json.loads(missing.value) == {"other": "x"}


def test_faststream_binary_format_agrees_with_faststream_itself():
    """Our encoder read by FastStream's own parser, and FastStream's encoder read by ours."""
    import asyncio

    from faststream.redis.parser import BinaryMessageFormatV1

    layout = FaststreamLayout()
    message = Message(b'{"order": 7}', None, [("content-type", b"application/json"), ("correlation_id", b"c-1"), ("x-trace", b"t")])
    data = layout.encode(message)[1]
    body, headers = BinaryMessageFormatV1.parse(data)
    assert body == b'{"order": 7}'
    assert headers == {"content-type": "application/json", "correlation_id": "c-1", "x-trace": "t"}

    theirs = asyncio.run(
        BinaryMessageFormatV1.encode(message={"order": 8}, reply_to="replies", headers={"x-trace": "t2"}, correlation_id="c-2")
    )
    decoded = layout.decode([(b"__data__", theirs)])
    assert decoded.problem is None
    assert json.loads(decoded.value) == {"order": 8}
    assert dict(decoded.headers) == {"correlation_id": b"c-2", "content-type": b"application/json", "reply_to": b"replies", "x-trace": b"t2"}

    older = layout.decode([(b"__data__", b'{"data": "{\\"order\\": 9}", "headers": {"correlation_id": "c-3"}}')])
    assert (older.value, older.headers, older.problem) == (b'{"order": 9}', [("correlation_id", b"c-3")], None)
    assert BinaryMessageFormatV1.parse(b'{"data": "{\\"order\\": 9}", "headers": {"correlation_id": "c-3"}}') == (
        b'{"order": 9}', {"correlation_id": "c-3"},
    )  # fmt: skip

    broken = layout.decode([(b"__data__", FaststreamLayout.IDENTITY + b"\x00\x01\xff\xff\xff\xff")])
    assert broken.problem and "does not decode" in broken.problem
    with pytest.raises(LayoutError, match="not UTF-8"):
        layout.encode(Message(b"x", None, [("bin", b"\xff")]))


def test_the_fields_envelope_member_round_trips_binary_names_and_values():
    message = Message(b"v", fields=[(b"a", b"1"), (b"\xff", b"\x00\xfe"), (b"a", b"2")])
    line = encode_envelope(message)
    assert json.loads(line)["fields"] == [["a", "1"], [{"b64": "/w=="}, {"b64": "AP4="}], ["a", "2"]]
    assert decode_envelope(line).fields == message.fields


# --- addresses -------------------------------------------------------------------------------


def test_a_query_string_sets_the_layout_on_every_address_form(redis_server, raw, profile, stream):
    port_url = redis_server.url  # redis://127.0.0.1:PORT/0
    for address in (f"{port_url}/{stream}?layout=fields", f"r:{stream}?layout=fields"):
        run = evrelay("publish", address, '{"sku": "A-1", "qty": 2}')
        assert run.returncode == 0, run.err
    assert [fields for _, fields in raw.xrange(stream)] == [[b"sku", b"A-1", b"qty", b"2"]] * 2
    Path("evrelay.toml").write_text(f'default_profile = "r"\n[profiles.r]\nbackend = "redis"\nurl = "{redis_server.url}"\n')
    shown = envelopes(evrelay("tail", f"{stream}?layout=value_field=sku", "-o", "json"))
    assert [(e["value"], e["headers"]) for e in shown] == [("A-1", [["qty", "2"]])] * 2
    assert shown[0]["fields"] == [["sku", "A-1"], ["qty", "2"]]


def test_bad_query_options_are_usage_errors_and_nothing_is_written(redis_server, raw, profile, stream):
    for address, expected in (
        (f"r:{stream}?layout=taskik", "unknown redis layout 'taskik'; did you mean 'taskiq'?"),
        (f"{redis_server.url}/{stream}?layout=nope", "unknown redis layout 'nope'"),
        (f"r:{stream}?layot=fields", "unknown redis option 'layot'; did you mean 'layout'?"),
        (f"r:{stream}?layout", "NAME=VALUE"),
    ):
        run = evrelay("publish", address, "x")
        assert run.returncode == 2, (address, run.err)
        assert expected in run.err, run.err
        assert "Traceback" not in run.err
    run = evrelay("bridge", f"r:{stream}?layout=bad", f"r:{stream}-copy", "--idle-timeout", "1s")
    assert run.returncode == 2 and "unknown redis layout 'bad'" in run.err
    assert raw.exists(stream, f"{stream}-copy") == 0


def test_layout_is_refused_on_a_kafka_address():
    run = evrelay("publish", "kafka://127.0.0.1:1/t?layout=taskiq", "x", "--timeout", "1s")
    assert run.returncode == 2, run.err
    assert "layout is a Redis option" in run.err


def test_a_value_the_fields_layout_cannot_hold_is_refused_before_anything_is_written(raw, profile, stream):
    run = evrelay("publish", f"r:{stream}?layout=fields", "not json")
    assert run.returncode == 2, run.err
    assert "needs a JSON object as the value" in run.err and "Traceback" not in run.err
    assert raw.exists(stream) == 0


def test_an_entry_without_the_layouts_field_is_shown_with_a_warning(raw, profile, stream):
    raw.xadd(stream, {"payload": "p1"})
    raw.xadd(stream, {"other": "x"})
    run = evrelay("tail", f"r:{stream}?layout=value_field=payload", "-o", "json")
    shown = envelopes(run)
    assert [e["value"] for e in shown] == ["p1", '{"other":"x"}']
    assert shown[1]["fields"] == [["other", "x"]]
    assert "has no field 'payload'" in run.err and "shown as its fields" in run.err


# --- raw fields: nothing lost ------------------------------------------------------------------


def test_tail_json_into_publish_copies_any_entry_exactly(raw, profile, stream):
    """Entries no layout describes (binary, repeated names, a `value` field among others)
    come back field for field, in every layout."""
    entries = [
        [b"sku", b"A-1", b"qty", b"2"],
        [b"bin", b"\xff\x00\x80", b"bin", b"dup"],
        [b"value", b"v", b"extra", b"e"],
        [b"value", b"v2", b"key", b"k", b"h:trace", b"\xfe"],
    ]
    for fields in entries:
        raw.execute_command("XADD", stream, "*", *fields)
    for layout in ("evrelay", "fields", "taskiq", "faststream", "cloudevents", "value_field=sku"):
        copy = f"{stream}-{layout.replace('=', '-')}"
        out = evrelay("tail", f"r:{stream}?layout={layout}", "-o", "json", "-q")
        assert out.returncode == 0, out.err
        run = evrelay("publish", f"r:{copy}?layout={layout}", "--input", "json", input=out.stdout)
        assert run.returncode == 0, (layout, run.err)
        assert [f for _, f in raw.xrange(copy)] == entries, layout


def test_replay_between_streams_keeps_foreign_entries_as_they_are(raw, profile, stream):
    raw.execute_command("XADD", stream, "*", "sku", "A-1", "qty", "2")
    run = evrelay("replay", f"r:{stream}", f"r:{stream}-copy", "--from", "beginning")
    assert run.returncode == 0, run.err
    assert [f for _, f in raw.xrange(f"{stream}-copy")] == [[b"sku", b"A-1", b"qty", b"2"]]


# --- provenance ------------------------------------------------------------------------------


def test_provenance_is_replaced_at_each_hop_and_can_be_left_out():
    assert evrelay("publish", "a", "hello").returncode == 0
    for source, sink in (("a", "b"), ("b", "c"), ("c", "a2")):
        run = evrelay("bridge", source, sink, "--idle-timeout", "1s", "-q")
        assert run.returncode == 0, run.err
    headers = json.loads(evrelay("tail", "a2", "-o", "json").stdout)["headers"]
    assert [name for name, _ in headers] == ["evrelay-source"]
    assert headers[0][1].startswith("local/c/")
    run = evrelay("bridge", "a", "plain", "--idle-timeout", "1s", "-q", "--no-provenance")
    assert run.returncode == 0, run.err
    assert json.loads(evrelay("tail", "plain", "-o", "json").stdout)["headers"] == []


@pytest.mark.kafka
def test_format_specs_on_numeric_position_fields(kafka_server):
    topic = f"fmt-{uuid.uuid4().hex[:8]}"
    address = f"kafka://{kafka_server.bootstrap}/{topic}?partitioner=murmur2"
    assert evrelay("publish", address, "-k", "same", "a", "b").returncode == 0
    run = evrelay("tail", address, "--format", "{partition:>3}|{offset:08d}|{value}")
    assert run.returncode == 0, run.err
    partition = run.out.split("|")[0]
    assert run.out == f"{partition}|00000000|a\n{partition}|00000001|b\n"
    bad = evrelay("tail", address, "--format", "{value:08d}")
    assert bad.returncode == 2 and "--format: bad template" in bad.err


def test_a_bridge_into_the_same_stream_with_another_layout_is_refused(profile, stream):
    run = evrelay("bridge", f"r:{stream}?layout=taskiq", f"r:{stream}", "--idle-timeout", "1s")
    assert run.returncode == 2, run.err
    assert "that would relay into itself" in run.err


def test_secret_query_options_are_masked_wherever_the_address_is_printed():
    run = evrelay("publish", "kafka://127.0.0.1:1/t?sasl.password=hunter2&client.id=me", "x", "--timeout", "1s", "-v")
    assert run.returncode != 0
    assert "hunter2" not in run.out + run.err
    run = evrelay("tail", "nope:x?sasl.password=hunter2")
    assert run.returncode == 2 and "hunter2" not in run.err, run.err


@pytest.mark.parametrize(
    ("layout", "written"),
    [
        ("fields", {b"sku": b"A-1", b"qty": b"2", b"raw": b"\xff\x00"}),
        ("value_field=payload,key_field=id", {b"payload": b'{"job": 1}', b"id": b"k-1", b"trace": b"t-1"}),
    ],
)
def test_plain_field_layouts_round_trip_through_their_own_encoding(raw, profile, stream, layout, written):
    """redis-py writes -> tail -o json -> publish (raw fields removed, so the layout encodes)
    -> redis-py reads the same fields."""
    raw.xadd(stream, written)
    tail = evrelay("tail", f"r:{stream}?layout={layout}", "-o", "json")
    (envelope,) = envelopes(tail)
    del envelope["fields"]
    run = evrelay("publish", f"r:{stream}-copy?layout={layout}", "--input", "json", input=json.dumps(envelope))
    assert run.returncode == 0, run.err
    (_, copied), = raw.xrange(f"{stream}-copy")
    assert dict(zip(copied[0::2], copied[1::2], strict=True)) == written


def test_query_values_are_typed_like_config_values(raw, profile, stream):
    from evrelay.addresses import open_backend, resolve_address
    from evrelay.backends.base import BackendSettings
    from evrelay.config import load_config

    address = resolve_address(f"r:{stream}?max_len=5&layout=taskiq", load_config())
    backend = open_backend(address, BackendSettings())
    assert (backend.max_len, backend.layout.name, address.stream) == (5, "taskiq", stream)
    assert evrelay("publish", "local:demo?max_len=3", "x").returncode == 0
    bad = evrelay("publish", f"r:{stream}?max_len=lots", "x")
    assert bad.returncode == 2 and "max_len must be a positive integer, not 'lots'" in bad.err
