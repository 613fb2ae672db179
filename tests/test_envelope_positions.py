"""The envelope codec and the position syntax, as pure functions."""

from __future__ import annotations

import pytest

from evrelay.envelope import EnvelopeError, Message, Position, decode_envelope, encode_envelope, envelope_dict
from evrelay.positions import AtTime, Beginning, End, EntryId, Offset, PartitionOffsets, Stored, parse_position
from evrelay.timestamps import format_ms, parse_duration_ms, parse_rfc3339


def test_envelope_round_trip_binary_and_text():
    message = Message(b"\xff\x00", "ключ".encode(), [("a", b"1"), ("a", b"\x80"), ("b", b"")], 1_700_000_000_123,
                      Position("kafka", "orders", 42, 3))
    line = encode_envelope(message)
    assert line.endswith(b"\n")
    data = envelope_dict(message)
    assert data["value_b64"] == "/wA=" and data["key"] == "ключ"
    assert data["headers"] == [["a", "1"], ["a", {"b64": "gA=="}], ["b", ""]]
    assert data["timestamp"] == "2023-11-14T22:13:20.123Z"
    assert (data["topic"], data["partition"], data["offset"]) == ("orders", 3, 42)
    back = decode_envelope(line)
    assert (back.value, back.key, back.headers) == (message.value, message.key, message.headers)
    assert back.timestamp == message.timestamp and back.position == message.position


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        ("[1]", "expected a JSON object"),
        ("{}", "neither 'value' nor 'value_b64'"),
        ('{"value_b64": "!!"}', "not valid base64"),
        ('{"value": "x", "headers": [["a"]]}', "headers[0]"),
        ('{"value": "x", "headers": "h"}', "array of [name, value] pairs"),
        ('{"value": "x", "timestamp": "yesterday"}', "RFC 3339"),
        ('{"value": "x"', "not valid JSON"),
    ],
)
def test_envelope_errors_explain_themselves(line, reason):
    with pytest.raises(EnvelopeError, match=reason.replace("[", r"\[").replace("]", r"\]")):
        decode_envelope(line)


def test_envelope_conveniences():
    assert decode_envelope('{"value": {"a": 1}}').value == b'{"a":1}'
    assert decode_envelope('{"value": "x", "headers": {"h": "1"}}').headers == [("h", b"1")]
    assert decode_envelope('{"value": "x", "timestamp": 5}').timestamp == 5


def test_positions():
    assert parse_position("beginning") == Beginning() and parse_position("earliest") == Beginning()
    assert parse_position("end") == End() and parse_position("stored") == Stored()
    assert parse_position("42") == Offset(42)
    assert parse_position("1700000000000-3") == EntryId("1700000000000-3")
    assert parse_position("0:5,2:7") == PartitionOffsets(((0, 5), (2, 7)))
    assert parse_position("2026-11-22T10:00:00Z") == AtTime(parse_rfc3339("2026-11-22T10:00:00Z"), "2026-11-22T10:00:00Z")
    assert parse_position("-15m", now=1_000_000_000).ms == 1_000_000_000 - 900_000
    assert parse_position("-1d", now=100_000_000).ms == 100_000_000 - 86_400_000
    for bad in ("tomorrow", "0:1,0:2", "-5", "1:2:3"):
        with pytest.raises(ValueError):
            parse_position(bad)


def test_time_helpers():
    assert format_ms(0) == "1970-01-01T00:00:00.000Z"
    assert parse_rfc3339("2026-11-22T10:00:00+01:00") == parse_rfc3339("2026-11-22T09:00:00Z")
    assert parse_rfc3339("2026-11-22T10:00:00") == parse_rfc3339("2026-11-22T10:00:00Z")
    assert parse_duration_ms("1.5s") == 1500 and parse_duration_ms("2") == 2000 and parse_duration_ms("250ms") == 250


def test_one_stream_id_model_for_redis_and_local():
    from evrelay.backends.local import store
    from evrelay.backends.redis_streams import consumers as redis_consumers
    from evrelay.backends.stream_ids import MAX_SEQ, StreamId, id_before

    assert StreamId.parse("1700000000000-5") == (1700000000000, 5)
    assert StreamId.parse(b"1700000000000") == (1700000000000, 0)
    assert StreamId.parse(42) == (42, 0)
    assert str(StreamId(1, 2)) == "1-2"
    assert StreamId.parse("1-10") > StreamId.parse("1-9") > StreamId.parse("0-99")
    assert id_before(5, 0) == f"4-{MAX_SEQ}"
    assert id_before(5, 3) == "5-2"
    assert id_before(0, 0) == "0-0"
    for bad in ("x-1", "1-y", "-1-0", ""):
        with pytest.raises(ValueError, match="not a stream entry ID"):
            StreamId.parse(bad)
    # Both backends use this model, not copies of it.
    from evrelay.backends import stream_ids

    assert redis_consumers.parse_stream_id is stream_ids.parse_stream_id
    assert store.StreamId is stream_ids.StreamId
    assert store.parse_id("7-1") == (7, 1)
    assert store.show_cursor(store.id_before(7, 0)) == "6-*"
    assert store.show_cursor(store.BEFORE_ALL) == "0-0"


@pytest.mark.parametrize("value", [b'{"id": 1}', b"", b"\xff\xfe binary"])
def test_lone_value_field_fast_path_matches_the_general_encoding(value):
    """A Redis entry whose only field is `value` is encoded without decoding it twice;
    the result must be what the general path gives (value_b64 and {"b64"} when binary)."""
    position = Position("redis", "s", "1-0")
    fast = Message(value, None, [], 1, position, fields=[(b"value", value)])
    general = Message(value, None, [], 1, position, fields=[(b"value", bytes(bytearray(value)))])
    assert fast.fields[0][1] is fast.value
    assert encode_envelope(fast) == encode_envelope(general)
    assert decode_envelope(encode_envelope(fast)).fields == [(b"value", value)]


def test_lone_value_field_lines_follow_changing_streams_and_milliseconds():
    """The spliced encoding reuses its pieces across consecutive entries: a change of
    millisecond, stream or backend must show in the very next line."""
    import orjson

    messages = []
    for i, (stream, ms) in enumerate([("a", 1), ("a", 1), ("a", 2), ("b", 2), ("a", 2), ("b\"x", 1700000000999), ("b\"x", 1)]):
        value = f'{{"n": {i}, "q": "\\" é"}}'.encode()
        messages.append(Message(value, None, [], ms, Position("local" if i == 4 else "redis", stream, f"{ms}-{i}"), fields=[(b"value", value)]))
    for message in messages:
        assert encode_envelope(message) == orjson.dumps(envelope_dict(message), option=orjson.OPT_APPEND_NEWLINE)


@pytest.mark.parametrize("value", [b'{"id": 1}', b"", b"\xff\xfe binary", None])
def test_plain_stream_message_fast_path_matches_the_general_encoding(value):
    """A stream message without fields, key or headers (every NATS message another program
    wrote, most evrelay wrote) is spliced from pieces too, shared with the lone-field Redis
    form: interleaved, each line must be what the general path gives."""
    import orjson

    messages = [
        Message(value, None, [], 1700000000123, Position("nats", "orders", 7)),
        Message(value, None, [], 1700000000123, Position("redis", "orders", "1-0"), fields=[(b"value", value)]),
        Message(value, None, [], 1700000000123, Position("nats", "orders", 8)),
        Message(value, None, [], 1700000000124, Position("nats", "orders", 9)),
        Message(value, None, [], 1700000000124, Position("nats", 'or"d', 10)),
        Message(value, b"k", [], 1700000000124, Position("nats", "orders", 11)),
        Message(value, None, [("h", b"v")], 1700000000124, Position("nats", "orders", 12)),
        Message(value, None, [], None, Position("nats", "orders", 13)),
        Message(value, None, [], 1700000000124, Position("kafka", "orders", 14, partition=0)),
        Message(value, None, [], 1700000000124, None),
    ]
    for message in messages:
        if value is None and message.fields:
            continue  # a stream entry's field always has a value
        assert encode_envelope(message) == orjson.dumps(envelope_dict(message), option=orjson.OPT_APPEND_NEWLINE), message
        assert decode_envelope(encode_envelope(message)).value == value
