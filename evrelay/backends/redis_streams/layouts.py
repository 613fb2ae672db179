"""Redis field layouts: how a message's value, key and headers map onto stream fields.

A layout is chosen per profile (`layout = "taskiq"`) or per address
(`redis:tasks?layout=taskiq`); one small class per layout, each with `encode` (message ->
the flat field list XADD takes) and `decode` (an entry's fields -> value, key, headers).

    evrelay              `value`, then `key`, then `h:NAME` per header (the default)
    fields               the value is a JSON object, one stream field per member
    value_field=N[,key_field=K]   field N holds the value, K the key, every other
                         field is a header of the same name (Dispytch's `payload`, ...)
    taskiq               taskiq-redis: the task's JSON in field `data`
    faststream           FastStream: field `__data__` in its binary format (headers + body)
    cloudevents          django-broadcaster: event_id, event_type, source, timestamp,
                         cloud_event (the structured CloudEvent as JSON), its extra fields

`encode` raises `LayoutError` for a message the layout cannot represent (the caller
reports it as a permanent delivery failure: nothing of it is written). `decode` never
drops an entry: one that does not fit comes back as the JSON object of its fields with a
`problem` the reader shows as a warning. Every message read also carries the raw fields
(`Message.fields`), so entries of any shape are re-published exactly.
"""

from __future__ import annotations

import base64
import struct
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import orjson

from evrelay.envelope import Fields, Headers, Message
from evrelay.errors import ConfigError

VALUE_FIELD = b"value"
KEY_FIELD = b"key"
HEADER_PREFIX = b"h:"


class LayoutError(ValueError):
    """The message cannot be written in this layout; the text says why."""


@dataclass(slots=True)
class Decoded:
    value: bytes
    key: bytes | None = None
    headers: Headers = field(default_factory=list)
    problem: str | None = None
    """Set when the entry does not fit the layout (it is then shown as its fields)."""


def pairs(flat: list[bytes]) -> Fields:
    """[name, value, name, value, ...] -> [(name, value), ...]."""
    return list(zip(flat[0::2], flat[1::2], strict=False))


def _json_text(value: bytes) -> object:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(value).decode("ascii")}


def fields_as_json(fields: Fields) -> bytes:
    """An entry's fields as one JSON value: an object, or [name, value] pairs when a name
    repeats (so nothing is hidden); binary values as {"b64": ...}."""
    named = [(name.decode("utf-8", "replace"), _json_text(value)) for name, value in fields]
    if len({name for name, _ in named}) == len(named):
        return orjson.dumps(dict(named))
    return orjson.dumps([list(pair) for pair in named])


def _utf8(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise LayoutError(f"{what} is not UTF-8 text") from None


class Layout(ABC):
    name: str

    @abstractmethod
    def encode(self, message: Message) -> list[bytes]:
        """The flat field list for XADD; LayoutError when the message does not fit."""

    @abstractmethod
    def decode(self, fields: Fields) -> Decoded:
        """Value, key and headers of an entry (never fails: see Decoded.problem)."""

    def faithful(self, message: Message) -> bool:
        """True when the message's raw fields still say what its value, key and headers
        say in this layout: then they are written back exactly, whatever their shape."""
        if message.fields is None:
            return False
        decoded = self.decode(message.fields)
        return decoded.value == message.value and decoded.key == message.key and decoded.headers == message.headers

    def __str__(self) -> str:
        return self.name


class EvrelayLayout(Layout):
    """`value`, `key` (when there is one), one `h:NAME` per header, in order. The Redis
    producer has a fast path for exactly this layout."""

    name = "evrelay"

    def encode(self, message: Message) -> list[bytes]:
        flat = [VALUE_FIELD, message.value]
        if message.key is not None:
            flat += [KEY_FIELD, message.key]
        for name, value in message.headers:
            flat += [HEADER_PREFIX + name.encode("utf-8"), value]
        return flat

    def decode(self, fields: Fields) -> Decoded:
        if fields and fields[0][0] == VALUE_FIELD:
            key: bytes | None = None
            headers: Headers = []
            for index, (name, value) in enumerate(fields[1:], 1):
                if name == KEY_FIELD and index == 1:
                    key = value
                elif name.startswith(HEADER_PREFIX):
                    try:
                        headers.append((name[2:].decode("utf-8"), value))
                    except UnicodeDecodeError:
                        break
                else:
                    break
            else:
                return Decoded(fields[0][1], key, headers)
        # Written by another program: all its fields, readably, as JSON. Not a problem:
        # this layout is the catch-all.
        return Decoded(fields_as_json(fields))


class FieldsLayout(Layout):
    """The value is a JSON object; each member is one stream field, both ways: strings
    as they are, {"b64": ...} as those bytes, any other JSON value as its JSON text. There
    is no place for a key or headers: they are not written."""

    name = "fields"

    def encode(self, message: Message) -> list[bytes]:
        try:
            obj = orjson.loads(message.value)
        except orjson.JSONDecodeError:
            obj = None
        if not isinstance(obj, dict):
            shown = message.value[:40].decode("utf-8", "replace")
            raise LayoutError(f"layout 'fields' needs a JSON object as the value (one stream field per member), got {shown!r}")
        if not obj:
            raise LayoutError("layout 'fields' needs at least one member: Redis entries cannot be empty")
        flat: list[bytes] = []
        for name, value in obj.items():
            flat.append(name.encode("utf-8"))
            if isinstance(value, str):
                flat.append(value.encode("utf-8"))
            elif isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str):
                flat.append(base64.b64decode(value["b64"]))
            else:
                flat.append(orjson.dumps(value))
        return flat

    def decode(self, fields: Fields) -> Decoded:
        obj = {name.decode("utf-8", "replace"): _json_text(value) for name, value in fields}
        return Decoded(orjson.dumps(obj))


class ValueFieldLayout(Layout):
    """One named field holds the value (`key_field` the key); every other field is a
    header of the same name, both ways. Without `key_field` a key is not written."""

    def __init__(self, value_field: str, key_field: str | None = None, name: str | None = None) -> None:
        self.value_field = value_field.encode("utf-8")
        self.key_field = key_field.encode("utf-8") if key_field else None
        self.name = name or f"value_field={value_field}" + (f",key_field={key_field}" if key_field else "")

    def encode(self, message: Message) -> list[bytes]:
        flat = [self.value_field, message.value]
        if self.key_field is not None and message.key is not None:
            flat += [self.key_field, message.key]
        for name, value in message.headers:
            flat += [name.encode("utf-8"), value]
        return flat

    def decode(self, fields: Fields) -> Decoded:
        value: bytes | None = None
        key: bytes | None = None
        headers: Headers = []
        for name, data in fields:
            if name == self.value_field and value is None:
                value = data
            elif name == self.key_field and key is None:
                key = data
            else:
                headers.append((name.decode("utf-8", "replace"), data))
        if value is None:
            return Decoded(fields_as_json(fields), problem=f"has no field {self.value_field.decode()!r} (layout {self.name})")
        return Decoded(value, key, headers)


class TaskiqLayout(ValueFieldLayout):
    """taskiq-redis's stream broker: the task message (taskiq's JSON: task_id, task_name,
    labels, args, kwargs) in field `data`, which is all its workers read."""

    def __init__(self) -> None:
        super().__init__("data", name="taskiq")


class FaststreamLayout(Layout):
    """FastStream's Redis stream messages: field `__data__` in its binary message format
    (faststream.redis.parser.BinaryMessageFormatV1): an identity header, version 1, the
    offsets of the headers and of the body, a header count, length-prefixed UTF-8 header
    names and values, then the body. Its older JSON form {"data", "headers"} is read too.
    A key goes into a field `key` beside it (FastStream reads only `__data__`)."""

    name = "faststream"
    DATA_FIELD = b"__data__"
    IDENTITY = b"\x89BIN\x0d\x0a\x1a\x0a"
    VERSION = 1

    def encode(self, message: Message) -> list[bytes]:
        seen: dict[str, str] = {}
        for name, value in message.headers:
            # FastStream keeps headers in a dict and decodes every value as UTF-8.
            seen[name] = _utf8(value, f"header {name!r}")
        header_bytes = bytearray()
        for name, text in seen.items():
            for part in (name.encode("utf-8"), text.encode("utf-8")):
                if len(part) > 0xFFFF:
                    raise LayoutError(f"layout 'faststream': header {name!r} is longer than 65535 bytes")
                header_bytes += struct.pack(">H", len(part)) + part
        headers_start = len(self.IDENTITY) + 2 + 8
        data_start = headers_start + 2 + len(header_bytes)
        data = b"".join(
            [
                self.IDENTITY,
                struct.pack(">HIIH", self.VERSION, headers_start, data_start, len(seen)),
                bytes(header_bytes),
                message.value,
            ]
        )
        flat = [self.DATA_FIELD, data]
        if message.key is not None:
            flat += [KEY_FIELD, message.key]
        return flat

    def decode(self, fields: Fields) -> Decoded:
        data = next((value for name, value in fields if name == self.DATA_FIELD), None)
        key = next((value for name, value in fields if name == KEY_FIELD), None)
        if data is None:
            return Decoded(fields_as_json(fields), problem="has no field '__data__' (layout faststream)")
        try:
            body, headers = self.parse(data)
        except (ValueError, struct.error, UnicodeDecodeError, KeyError, TypeError) as exc:
            return Decoded(fields_as_json(fields), problem=f"field '__data__' does not decode as a FastStream message ({exc})")
        return Decoded(body, key, headers)

    def parse(self, data: bytes) -> tuple[bytes, Headers]:
        if data.startswith(self.IDENTITY):
            version, headers_start, data_start = struct.unpack_from(">HII", data, len(self.IDENTITY))
            if version != self.VERSION:
                raise ValueError(f"unknown format version {version}")
            if not (headers_start <= data_start <= len(data)):
                raise ValueError("offsets beyond the end of the data")
            (count,) = struct.unpack_from(">H", data, headers_start)
            offset = headers_start + 2
            headers: Headers = []
            for _ in range(count):
                texts = []
                for _part in range(2):
                    (length,) = struct.unpack_from(">H", data, offset)
                    offset += 2
                    if offset + length > data_start:
                        raise ValueError("a header runs past the body")
                    texts.append(data[offset : offset + length])
                    offset += length
                headers.append((texts[0].decode("utf-8"), texts[1]))
            return data[data_start:], headers
        obj = orjson.loads(data)
        if not isinstance(obj, dict) or not isinstance(obj.get("data"), str):
            raise ValueError("neither the binary format nor the JSON form {\"data\", \"headers\"}")
        raw_headers = obj.get("headers") or {}
        if not isinstance(raw_headers, dict):
            raise ValueError("'headers' is not an object")
        return obj["data"].encode("utf-8"), [
            (str(name), (value if isinstance(value, str) else orjson.dumps(value).decode()).encode("utf-8"))
            for name, value in raw_headers.items()
        ]


class CloudEventsLayout(Layout):
    """django-broadcaster's RedisStreamBackend: `event_id`, `event_type`, `source`,
    `timestamp` and `cloud_event` (the structured CloudEvent as JSON), then its extra
    fields. Read: the structured CloudEvent as the value (content-type
    application/cloudevents+json), extra fields as headers. Written from a structured
    value or from binary-mode `ce_` headers."""

    name = "cloudevents"
    STANDARD = (b"event_id", b"event_type", b"source", b"timestamp", b"cloud_event")

    def encode(self, message: Message) -> list[bytes]:
        import json

        from evrelay import cloudevents

        try:
            event, extra = cloudevents.structured_event(message)
        except cloudevents.NotACloudEvent as exc:
            raise LayoutError(f"layout 'cloudevents': {exc}") from None
        flat = [
            b"event_id", str(event.get("id", "")).encode("utf-8"),
            b"event_type", str(event.get("type", "")).encode("utf-8"),
            b"source", str(event.get("source", "")).encode("utf-8"),
            b"timestamp", str(event.get("time", "")).encode("utf-8"),
            # json.dumps, as django-broadcaster writes it.
            b"cloud_event", json.dumps(event).encode("utf-8"),
        ]  # fmt: skip
        for name, value in extra:
            if name.lower() == "content-type":
                continue
            flat += [name.encode("utf-8"), value]
        return flat

    def decode(self, fields: Fields) -> Decoded:
        from evrelay import cloudevents

        event = next((value for name, value in fields if name == b"cloud_event"), None)
        if event is None:
            return Decoded(fields_as_json(fields), problem="has no field 'cloud_event' (layout cloudevents)")
        headers: Headers = [("content-type", cloudevents.STRUCTURED_CONTENT_TYPE.encode())]
        headers += [(name.decode("utf-8", "replace"), value) for name, value in fields if name not in self.STANDARD]
        return Decoded(event, None, headers)


LAYOUT_NAMES = ("evrelay", "fields", "value_field=NAME[,key_field=NAME]", "taskiq", "faststream", "cloudevents")


def parse_layout(text: object) -> Layout:
    """The layout a profile's `layout` option (or `?layout=`) names; ConfigError if none."""
    if text is None or text == "evrelay":
        return EvrelayLayout()
    if not isinstance(text, str):
        raise ConfigError(f"redis option layout must be text, one of {', '.join(LAYOUT_NAMES)}")
    simple = {"fields": FieldsLayout, "taskiq": TaskiqLayout, "faststream": FaststreamLayout, "cloudevents": CloudEventsLayout}
    if text in simple:
        return simple[text]()
    if text.startswith("value_field="):
        settings: dict[str, str] = {}
        for part in text.split(","):
            name, equals, value = part.partition("=")
            if not equals or not value or name not in ("value_field", "key_field") or name in settings:
                raise ConfigError(f"redis layout {text!r}: expected value_field=NAME or value_field=NAME,key_field=NAME")
            settings[name] = value
        if settings.get("key_field") == settings["value_field"]:
            raise ConfigError(f"redis layout {text!r}: the value and the key need different fields")
        return ValueFieldLayout(settings["value_field"], settings.get("key_field"))
    import difflib

    close = difflib.get_close_matches(text, [*simple, "evrelay", "value_field="], n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    raise ConfigError(f"unknown redis layout {text!r}{hint} (layouts: {', '.join(LAYOUT_NAMES)})")
