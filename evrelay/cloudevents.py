"""CloudEvents on any backend: recognising an event in a message and converting it between
the two content modes of the Kafka protocol binding (CloudEvents spec, kafka-protocol-binding):

    binary      the event's attributes in `ce_NAME` headers (`datacontenttype` as
                `content-type`), its data as the value
    structured  the whole event as JSON in the value, content-type
                `application/cloudevents+json`

`publish`, `bridge` and `replay` apply `converter(mode)` to every outgoing message (through
`evrelay.transforms.TransformingProducer`); the Redis `cloudevents` layout builds its
fields from `structured_event`. Backend-neutral: nothing here knows a client library.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable
from typing import Any

import orjson

from evrelay.envelope import Headers, Message

CONTENT_MODES = ("binary", "structured")
STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"
CE_PREFIX = "ce_"
_JSON_TYPE = re.compile(r"^(application|text)/([a-zA-Z0-9.+-]+\+)?json(;.*)?$", re.IGNORECASE)


class NotACloudEvent(ValueError):
    """The message is neither a structured nor a binary-mode CloudEvent."""


def _header(headers: Headers, name: str) -> bytes | None:
    for header, value in reversed(headers):
        if header.lower() == name:
            return value
    return None


def _is_json_type(content_type: str | None) -> bool:
    return content_type is None or bool(_JSON_TYPE.match(content_type))


def _structured_value(message: Message) -> dict[str, Any] | None:
    content_type = _header(message.headers, "content-type")
    declared = content_type is not None and content_type.split(b";")[0].strip().lower() == STRUCTURED_CONTENT_TYPE.encode()
    if not declared and not message.value.lstrip().startswith(b"{"):
        return None
    try:
        event = orjson.loads(message.value)
    except orjson.JSONDecodeError:
        if declared:
            raise NotACloudEvent("content-type says structured CloudEvent, but the value is not JSON") from None
        return None
    if isinstance(event, dict) and isinstance(event.get("specversion"), str):
        return event
    if declared:
        raise NotACloudEvent("content-type says structured CloudEvent, but the value has no specversion")
    return None


def structured_event(message: Message) -> tuple[dict[str, Any], Headers]:
    """(the event as a structured-mode JSON object, the headers that are not part of it)."""
    if message.value is None:  # a Kafka tombstone
        raise NotACloudEvent("a null value (tombstone) is not a CloudEvent")
    event = _structured_value(message)
    if event is not None:
        return _checked(event), [(n, v) for n, v in message.headers if n.lower() != "content-type"]
    if _header(message.headers, "ce_specversion") is None:
        raise NotACloudEvent(
            "not a CloudEvent: no ce_specversion header (binary mode) and the value is not a JSON "
            "object with specversion (structured mode)"
        )
    event = {}
    extra: Headers = []
    content_type: str | None = None
    for name, raw in message.headers:
        lowered = name.lower()
        if lowered.startswith(CE_PREFIX):
            event[lowered[len(CE_PREFIX) :]] = raw.decode("utf-8", "replace")
        elif lowered == "content-type":
            content_type = raw.decode("utf-8", "replace")
        else:
            extra.append((name, raw))
    if content_type is not None:
        event["datacontenttype"] = content_type
    if message.value:
        if _is_json_type(content_type):
            try:
                event["data"] = orjson.loads(message.value)
            except orjson.JSONDecodeError:
                pass
        if "data" not in event:
            try:
                event["data"] = message.value.decode("utf-8")
            except UnicodeDecodeError:
                event["data_base64"] = base64.b64encode(message.value).decode("ascii")
    return _checked(event), extra


REQUIRED_ATTRIBUTES = ("id", "source", "type")
"""Besides specversion: what every CloudEvent has (the SDKs refuse an event without them)."""


def _checked(event: dict[str, Any]) -> dict[str, Any]:
    missing = [name for name in REQUIRED_ATTRIBUTES if event.get(name) in (None, "")]
    if missing:
        raise NotACloudEvent(f"not a valid CloudEvent: it has no {', '.join(missing)} (required with specversion)")
    if "data_base64" in event:
        try:
            base64.b64decode(event["data_base64"], validate=True)
        except (TypeError, ValueError):
            raise NotACloudEvent("not a valid CloudEvent: data_base64 is not base64") from None
    return event


def is_cloudevent(message: Message) -> bool:
    try:
        structured_event(message)
    except NotACloudEvent:
        return False
    return True


def to_structured(message: Message) -> Message:
    event, extra = structured_event(message)
    headers = [("content-type", STRUCTURED_CONTENT_TYPE.encode()), *extra]
    return Message(orjson.dumps(event), message.key, headers, message.timestamp, message.position)


def _attribute_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    return orjson.dumps(value).decode() if isinstance(value, (dict, list)) else str(value)


def to_binary(message: Message) -> Message:
    event, extra = structured_event(message)
    headers: Headers = []
    value = b""
    for name, attribute in event.items():
        if name == "data":
            if isinstance(attribute, str):  # as the SDK writes text data, whatever its type
                value = attribute.encode("utf-8")
            elif attribute is not None:
                value = orjson.dumps(attribute)
        elif name == "data_base64":
            value = base64.b64decode(attribute)
        elif name == "datacontenttype":
            headers.append(("content-type", str(attribute).encode("utf-8")))
        else:
            headers.append((CE_PREFIX + name, _attribute_text(attribute).encode("utf-8")))
    return Message(value, message.key, [*headers, *extra], message.timestamp, message.position)


def converter(mode: str) -> Callable[[Message], Message]:
    """The conversion for `--cloudevents MODE`; ValueError for an unknown mode."""
    if mode == "binary":
        return to_binary
    if mode == "structured":
        return to_structured
    raise ValueError(f"--cloudevents must be one of {', '.join(CONTENT_MODES)}, not {mode!r}")


def summary(message: Message) -> str | None:
    """`CloudEvent type=... source=... id=... subject=... time=...`, or None if not one."""
    try:
        event, _ = structured_event(message)
    except NotACloudEvent:
        return None
    parts = [f"{name}={event[name]}" for name in ("type", "source", "id", "subject", "time") if event.get(name) is not None]
    return "CloudEvent " + " ".join(parts)
