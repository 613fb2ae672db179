"""kcat's line formats, so kcat pipelines move to evrelay by changing one word.

* kcat `-J`: one JSON object per message,
  `{"topic","partition","offset","tstype","ts","broker","headers","key","payload"}`, with
  headers as a flat `[name, value, name, value…]` array (left out when there are none) and
  `key` null when there is none. kcat writes key and payload bytes as they are, so its
  output is not always valid UTF-8; these codecs keep such bytes exactly (surrogateescape)
  instead of refusing them. Written by `tail -J` / `-o kcat`, read by `publish -J` /
  `--input kcat`.
* kcat `-K DELIM`: `KEY<DELIM>VALUE` lines. A line without the delimiter is a value
  with no key (as kcat reads it); a message without a key is written with an empty key.
  `tail -K DELIM` / `-o keyed`, `publish -K DELIM` / `--input keyed`.

Backends without partitions (Redis, local) are written with `"partition": null` and the
entry ID as `"offset"`; `"broker"` is -1, since evrelay does not track broker ids.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import IO, Any

from evrelay.envelope import EnvelopeError, Message
from evrelay.output import MessageWriter


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogateescape")


def _json_string(data: bytes | None) -> str:
    return "null" if data is None else json.dumps(_text(data), ensure_ascii=False)


def encode_kcat_json(message: Message) -> bytes:
    """One kcat `-J` line (with its newline)."""
    position = message.position
    if position is None:
        where = '"topic":null,"partition":null,"offset":null'
    else:
        offset = position.id if position.partition is not None else json.dumps(str(position.id))
        partition = "null" if position.partition is None else str(position.partition)
        where = f'"topic":{json.dumps(position.stream, ensure_ascii=False)},"partition":{partition},"offset":{offset}'
    ts = message.timestamp
    stamp = f'"tstype":"create","ts":{ts}' if ts is not None else '"tstype":"notavailable","ts":-1'
    parts = [where, stamp, '"broker":-1']
    if message.headers:
        flat = ",".join(f"{json.dumps(name, ensure_ascii=False)},{_json_string(value)}" for name, value in message.headers)
        parts.append(f'"headers":[{flat}]')
    parts.append(f'"key":{_json_string(message.key)}')
    parts.append(f'"payload":{_json_string(message.value)}')
    return _bytes("{" + ",".join(parts) + "}\n")


def decode_kcat_json(line: bytes) -> Message:
    """A Message from one kcat `-J` line; raises EnvelopeError naming what is wrong."""
    try:
        obj: Any = json.loads(_text(line))
    except ValueError as exc:
        raise EnvelopeError(f"not a kcat -J line ({exc})") from None
    if not isinstance(obj, dict) or "payload" not in obj:
        raise EnvelopeError("not a kcat -J line: needs a JSON object with 'payload'")
    payload, key, raw_headers = obj.get("payload"), obj.get("key"), obj.get("headers") or []
    if payload is not None and not isinstance(payload, str):
        raise EnvelopeError("'payload' must be a string or null")
    if key is not None and not isinstance(key, str):
        raise EnvelopeError("'key' must be a string or null")
    if not isinstance(raw_headers, list) or len(raw_headers) % 2 or not all(isinstance(h, (str, type(None))) for h in raw_headers):
        raise EnvelopeError("'headers' must be a flat [name, value, …] array of strings")
    headers = [(raw_headers[i] or "", _bytes(raw_headers[i + 1] or "")) for i in range(0, len(raw_headers), 2)]
    ts = obj.get("ts")
    timestamp = ts if isinstance(ts, int) and not isinstance(ts, bool) and ts >= 0 else None
    return Message(_bytes(payload) if payload is not None else b"", _bytes(key) if key is not None else None, headers, timestamp)


def encode_keyed(message: Message, delimiter: bytes) -> bytes:
    return (message.key or b"") + delimiter + message.value + b"\n"


def decode_keyed(line: bytes, delimiter: bytes) -> Message:
    key, found, value = line.partition(delimiter)
    if not found:
        return Message(line, None)
    return Message(value, key)


class KcatJsonWriter(MessageWriter):
    def render(self, messages: Sequence[Message]) -> bytes:
        return b"".join([encode_kcat_json(m) for m in messages])


class KeyedWriter(MessageWriter):
    def __init__(self, delimiter: bytes, out: IO[bytes] | None = None) -> None:
        super().__init__(out)
        self.delimiter = delimiter

    def render(self, messages: Sequence[Message]) -> bytes:
        delimiter = self.delimiter
        return b"".join([encode_keyed(m, delimiter) for m in messages])
