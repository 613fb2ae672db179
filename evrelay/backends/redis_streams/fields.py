"""How a message maps onto Redis stream fields (and back), and stream-ID arithmetic."""

from __future__ import annotations

from typing import Any

import orjson

from evrelay.backends.base import (
    Message,
)

VALUE_FIELD = b"value"
KEY_FIELD = b"key"
HEADER_PREFIX = b"h:"
MAX_SEQ = 18446744073709551615


def parse_stream_id(raw: bytes | str) -> tuple[int, int]:
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def format_stream_id(ms: int, seq: int) -> str:
    return f"{ms}-{seq}"


def id_before(ms: int, seq: int) -> str:
    """The ID just before ms-seq: XGROUP CREATE/SETID name the last *delivered* ID."""
    if seq > 0:
        return f"{ms}-{seq - 1}"
    if ms > 0:
        return f"{ms - 1}-{MAX_SEQ}"
    return "0-0"


def encode_fields(message: Message) -> list[bytes | str]:
    fields: list[bytes | str] = [VALUE_FIELD, message.value]
    if message.key is not None:
        fields += [KEY_FIELD, message.key]
    for name, value in message.headers:
        fields += [HEADER_PREFIX + name.encode("utf-8"), value]
    return fields


def json_text(value: bytes) -> Any:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        import base64

        return {"b64": base64.b64encode(value).decode("ascii")}


def decode_fields(fields: list[bytes]) -> tuple[bytes, bytes | None, list[tuple[str, bytes]]]:
    """(value, key, headers) from an entry's flat [name, value, ...] field list."""
    names = fields[0::2]
    if names and names[0] == VALUE_FIELD:
        key: bytes | None = None
        headers: list[tuple[str, bytes]] = []
        ours = True
        for index in range(2, len(fields), 2):
            name = fields[index]
            if name == KEY_FIELD and index == 2:
                key = fields[index + 1]
            elif name.startswith(HEADER_PREFIX):
                try:
                    headers.append((name[2:].decode("utf-8"), fields[index + 1]))
                except UnicodeDecodeError:
                    ours = False
                    break
            else:
                ours = False
                break
        if ours:
            return fields[1], key, headers
    # Written by another program: all its fields, readably, as JSON.
    pairs = [(fields[i].decode("utf-8", "replace"), json_text(fields[i + 1])) for i in range(0, len(fields) - 1, 2)]
    if len({name for name, _ in pairs}) == len(pairs):
        return orjson.dumps(dict(pairs)), None, []
    return orjson.dumps([list(pair) for pair in pairs]), None, []
