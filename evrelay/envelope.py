"""The message model every backend and command shares, and its JSONL envelope codec.

A `Message` holds the payload exactly as bytes: value and key are never decoded on the way
through, headers are an ordered list of `(name, bytes)` pairs with duplicates kept. Text
appears only when a message is written as a JSON envelope (CONTRACT.md §3): valid UTF-8
goes out as a string, anything else as base64, so `tail -o json | publish --input json`
reproduces every byte.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass, field
from typing import Any

import orjson

from evrelay.timestamps import format_ms, parse_rfc3339

Headers = list[tuple[str, bytes]]
Fields = list[tuple[bytes, bytes]]


@dataclass(slots=True)
class Position:
    """Where a message lives in its backend.

    Kafka: `stream` is the topic, `partition` the partition and `id` the offset (int).
    Redis, local and file: `stream` is the stream (or file), `id` the entry ID, no partition.
    Not frozen: a frozen dataclass costs ~4x more to create, and one is made per message.
    """

    backend: str
    stream: str
    id: str | int
    partition: int | None = None

    def __str__(self) -> str:
        if self.partition is not None:
            return f"{self.partition}:{self.id}"
        return str(self.id)

    @property
    def coordinates(self) -> str:
        """`kafka/orders/2/1234` or `redis/orders/1700000000000-0`: the provenance form."""
        if self.partition is not None:
            return f"{self.backend}/{self.stream}/{self.partition}/{self.id}"
        return f"{self.backend}/{self.stream}/{self.id}"


@dataclass(slots=True, eq=False)
class Message:
    """One message: raw bytes plus where it came from."""

    value: bytes | None
    """None is a null value (a Kafka tombstone), distinct from an empty one."""
    key: bytes | None = None
    headers: Headers = field(default_factory=list)
    timestamp: int | None = None
    position: Position | None = None
    receipt: object | None = field(default=None, repr=False)
    """The consumer that delivered it, where a reader of several streams must route its
    ack back to it (evrelay/multi.py); acks themselves go through `Consumer.ack`."""
    fields: Fields | None = None
    """Redis: the entry's raw fields, in order. A Redis sink writes them back exactly when
    they still say what value, key and headers say in its layout."""
    origin: Position | None = field(default=None, repr=False)
    """On a relayed copy: the source position it was made from (for sink-name templates);
    not part of its envelope."""


class EnvelopeError(ValueError):
    """A JSON envelope is malformed; the text says which field and why."""


# --- encoding ----------------------------------------------------------------------------


def _text_or_b64(data: bytes, text_field: str, b64_field: str, out: dict[str, Any]) -> None:
    try:
        out[text_field] = data.decode("utf-8")
    except UnicodeDecodeError:
        out[b64_field] = base64.b64encode(data).decode("ascii")


def _bytes_json(data: bytes) -> Any:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(data).decode("ascii")}


def _fields_json(fields: Fields) -> list[list[Any]]:
    try:  # the common case, all text, in one pass
        return [[name.decode("utf-8"), value.decode("utf-8")] for name, value in fields]
    except UnicodeDecodeError:
        return [[_bytes_json(name), _bytes_json(value)] for name, value in fields]


def envelope_dict(message: Message) -> dict[str, Any]:
    """The CONTRACT §3 envelope of a message, as a dict ready for JSON."""
    out: dict[str, Any] = {}
    value = message.value
    text: str | None = None
    if value is None:  # a tombstone
        out["value"] = None
    else:
        try:
            text = value.decode("utf-8")
            out["value"] = text
        except UnicodeDecodeError:
            out["value_b64"] = base64.b64encode(value).decode("ascii")
    if message.key is not None:
        _text_or_b64(message.key, "key", "key_b64", out)
    headers = []
    for name, header in message.headers:
        try:
            headers.append([name, header.decode("utf-8")])
        except UnicodeDecodeError:
            headers.append([name, {"b64": base64.b64encode(header).decode("ascii")}])
    out["headers"] = headers
    if message.timestamp is not None:
        out["timestamp"] = format_ms(message.timestamp)
    position = message.position
    if position is not None:
        out["backend"] = position.backend
    fields = message.fields
    if fields is not None:
        if text is not None and len(fields) == 1 and fields[0][1] is value and fields[0][0] == b"value":
            # The commonest Redis entry, a lone `value` field: its text is decoded already.
            out["fields"] = [["value", text]]
        else:
            out["fields"] = _fields_json(fields)
    if position is not None:
        if position.partition is not None:
            out["topic"] = position.stream
            out["partition"] = position.partition
            out["offset"] = position.id
        else:
            out["stream"] = position.stream
            out["id"] = position.id
    return out


def encode_envelope(message: Message) -> bytes:
    """One JSONL line (with its newline) for the message."""
    if message.key is None and not message.headers:
        fields = message.fields
        if fields is None or len(fields) == 1:
            line = _plain_stream_line(message, fields[0] if fields else None)
            if line is not None:
                return line
    return orjson.dumps(envelope_dict(message), option=orjson.OPT_APPEND_NEWLINE)


def _plain_stream_line(message: Message, field: tuple[bytes, bytes] | None) -> bytes | None:
    """The commonest stream message (text, no key or headers, a stream position and a
    timestamp: a NATS message, or a Redis entry whose one field is `value`) spliced from
    pieces, a Redis value escaped once for both places it appears: byte for byte what
    envelope_dict + orjson give (tests hold them together), in a third to 60% of the
    time, which `tail redis:`/`tail nats: -o json` need to stay near a plain read."""
    position = message.position
    value = message.value
    if value is None or position is None or position.partition is not None or message.timestamp is None:
        return None
    if field is not None and (field[1] is not value or field[0] != b"value"):
        return None
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return None
    global _last_pieces
    ms, backend, stream, lone_field = message.timestamp, position.backend, position.stream, field is not None
    last = _last_pieces
    if last[0] != ms or last[1] != backend or last[2] != stream or last[3] != lone_field:
        # Consecutive messages share their millisecond (hundreds per ms when written in
        # bulk) and always their stream: those pieces are made once per run of them.
        last = _last_pieces = (
            ms,
            backend,
            stream,
            lone_field,
            b',"headers":[],"timestamp":"' + format_ms(ms).encode() + b'","backend":' + orjson.dumps(backend)
            + (b',"fields":[["value",' if lone_field else b""),
            (b"]]" if lone_field else b"") + b',"stream":' + orjson.dumps(stream) + b',"id":',
        )
    literal = orjson.dumps(text)
    if lone_field:
        return b"".join((b'{"value":', literal, last[4], literal, last[5], orjson.dumps(position.id), b"}\n"))
    return b"".join((b'{"value":', literal, last[4], last[5], orjson.dumps(position.id), b"}\n"))


_last_pieces: tuple = (None, None, None, None, b"", b"")


# --- decoding ----------------------------------------------------------------------------


def _payload(obj: dict[str, Any], text_field: str, b64_field: str, required: bool) -> bytes | None:
    if text_field in obj and b64_field in obj:
        raise EnvelopeError(f"has both {text_field!r} and {b64_field!r}; give one")
    if b64_field in obj:
        encoded = obj[b64_field]
        if not isinstance(encoded, str):
            raise EnvelopeError(f"{b64_field!r} must be a base64 string")
        try:
            return base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise EnvelopeError(f"{b64_field!r} is not valid base64") from None
    if text_field in obj:
        text = obj[text_field]
        if text is None:
            return None
        if isinstance(text, str):
            return text.encode("utf-8")
        # A JSON object or number as the value is sent as its compact JSON text: handy for
        # hand-written input like {"value": {"id": 1}}.
        return compact_json(text, text_field)
    if required:
        raise EnvelopeError(f"has neither {text_field!r} nor {b64_field!r}")
    return None


def compact_json(value: Any, what: str = "value") -> bytes:
    """`value` as compact JSON text. orjson cannot write an integer beyond 64 bits (jq
    hands them over exactly, and so does decode_envelope); the standard library can."""
    try:
        return orjson.dumps(value)
    except TypeError:
        import json

        try:
            return json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise EnvelopeError(f"{what!r} cannot be written as JSON ({exc})") from None


def _headers(raw: Any) -> Headers:
    if raw is None:
        return []
    if isinstance(raw, dict):
        raw = list(raw.items())
    if not isinstance(raw, list):
        raise EnvelopeError("'headers' must be an array of [name, value] pairs")
    headers: Headers = []
    for index, pair in enumerate(raw):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and isinstance(pair[0], str)):
            raise EnvelopeError(f"headers[{index}] must be a [name, value] pair with a string name")
        name, value = pair
        if isinstance(value, str):
            headers.append((name, value.encode("utf-8")))
        elif isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
            try:
                headers.append((name, base64.b64decode(value["b64"], validate=True)))
            except (binascii.Error, ValueError):
                raise EnvelopeError(f"headers[{index}] is not valid base64") from None
        elif value is None:
            headers.append((name, b""))
        else:
            raise EnvelopeError(f"headers[{index}] value must be a string or {{\"b64\": ...}}")
    return headers


MAX_TIMESTAMP_MS = 253_402_300_799_999
"""9999-12-31T23:59:59.999Z: the last instant RFC 3339 (four-digit years) can write, so
the last one an envelope can carry and be read back."""
def _field_bytes(raw: Any, what: str) -> bytes:
    if isinstance(raw, str):
        return raw.encode("utf-8")
    if isinstance(raw, dict) and set(raw) == {"b64"} and isinstance(raw["b64"], str):
        try:
            return base64.b64decode(raw["b64"], validate=True)
        except (binascii.Error, ValueError):
            raise EnvelopeError(f"{what} is not valid base64") from None
    raise EnvelopeError(f"{what} must be a string or {{\"b64\": ...}}")


def _fields(raw: Any) -> Fields | None:
    if raw is None:
        return None
    if not isinstance(raw, list):
        raise EnvelopeError("'fields' must be an array of [name, value] pairs")
    fields: Fields = []
    for index, pair in enumerate(raw):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2):
            raise EnvelopeError(f"fields[{index}] must be a [name, value] pair")
        fields.append((_field_bytes(pair[0], f"fields[{index}] name"), _field_bytes(pair[1], f"fields[{index}] value")))
    return fields


def _timestamp(raw: Any) -> int | None:
    if raw is None:
        return None
    if isinstance(raw, bool):
        raise EnvelopeError("'timestamp' must be RFC 3339 text or epoch milliseconds")
    if isinstance(raw, int):
        ms = raw
    elif isinstance(raw, str):
        try:
            ms = parse_rfc3339(raw)
        except ValueError as exc:
            raise EnvelopeError(f"'timestamp': {exc}") from None
    else:
        raise EnvelopeError("'timestamp' must be RFC 3339 text or epoch milliseconds")
    if not 0 <= ms <= MAX_TIMESTAMP_MS:
        raise EnvelopeError(
            f"'timestamp' {raw!r} is out of range: it must lie between 1970-01-01T00:00:00Z and "
            f"9999-12-31T23:59:59.999Z (epoch milliseconds 0..{MAX_TIMESTAMP_MS})"
        )
    return ms


def _position(obj: dict[str, Any]) -> Position | None:
    backend = obj.get("backend")
    if not isinstance(backend, str):
        return None
    if "partition" in obj and "offset" in obj and isinstance(obj.get("topic"), str):
        partition, offset = obj["partition"], obj["offset"]
        if isinstance(partition, int) and isinstance(offset, int):
            return Position(backend, obj["topic"], offset, partition)
        raise EnvelopeError("'partition' and 'offset' must be integers")
    if "id" in obj and isinstance(obj.get("stream"), str):
        entry_id = obj["id"]
        if isinstance(entry_id, (str, int)) and not isinstance(entry_id, bool):
            return Position(backend, obj["stream"], entry_id)
        raise EnvelopeError("'id' must be a string or an integer")
    return None


def message_from_envelope(obj: Any) -> Message:
    """Build a Message from a decoded envelope object; raises EnvelopeError."""
    if not isinstance(obj, dict):
        raise EnvelopeError(f"expected a JSON object, got {type(obj).__name__}")
    value = _payload(obj, "value", "value_b64", required=True)
    return Message(
        value=value,
        key=_payload(obj, "key", "key_b64", required=False),
        headers=_headers(obj.get("headers")),
        timestamp=_timestamp(obj.get("timestamp")),
        position=_position(obj),
        fields=_fields(obj.get("fields")),
    )


def decode_envelope(line: bytes | str) -> Message:
    """Parse one JSONL line into a Message; raises EnvelopeError naming the problem."""
    try:
        obj = orjson.loads(line)
    except orjson.JSONDecodeError as exc:
        raise EnvelopeError(f"not valid JSON ({exc})") from None
    if isinstance(obj, dict) and _holds_json(obj):
        # orjson reads an integer beyond 64 bits as a float, which would change the number
        # in the value written; the standard library keeps it exact (rare, hand-written input).
        import json

        obj = json.loads(line)
    return message_from_envelope(obj)


def _holds_json(obj: dict[str, Any]) -> bool:
    """Whether the value or key is given as JSON (an object, array or number), not text."""
    return any(not isinstance(obj.get(name), (str, bool)) and obj.get(name) is not None for name in ("value", "key"))

