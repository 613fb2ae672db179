"""How an evrelay message maps onto a NATS message, and back, byte for byte.

A NATS message has a subject, a payload and headers; headers are text lines (`Name: value`)
that clients parse into a map, so one value per name, trimmed, no line breaks, UTF-8.
The mapping:

    value    -> the payload, exactly
    key      -> header `Evrelay-Key` (when it is header-safe text), else `Evrelay-Key-B64`
    headers  -> native NATS headers, in order, when every one is header-safe (a token name
                not starting with `Evrelay-`, a unique name, a UTF-8 value with no line
                break and no surrounding white space); otherwise the exact list goes into
                one header `Evrelay-Headers` as JSON `[[name, base64 value], ...]`, and the
                header-safe ones are written natively as well for other NATS clients.

Reading is the reverse; a message from another program has its headers read as they are
(every name except the `Evrelay-*` ones, values as UTF-8).
"""

from __future__ import annotations

import base64
import binascii
import re
from typing import Any

import orjson

from evrelay.envelope import Headers, Message, Position

KEY_HEADER = "Evrelay-Key"
KEY_B64_HEADER = "Evrelay-Key-B64"
HEADERS_HEADER = "Evrelay-Headers"
RESERVED_PREFIX = "evrelay-"

# The header names nats-py (and the NATS protocol) accept.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


def header_text(value: bytes) -> str | None:
    """The value as header text that every NATS client carries unchanged, or None."""
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return None
    if text != text.strip() or "\r" in text or "\n" in text or "\0" in text:
        return None
    return text


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def encode_headers(key: bytes | None, headers: Headers) -> dict[str, str] | None:
    """The NATS headers carrying a message's key and headers (None when there are none)."""
    if key is None and not headers:
        return None
    out: dict[str, str] = {}
    if key is not None:
        text = header_text(key)
        if text:
            out[KEY_HEADER] = text
        else:
            out[KEY_B64_HEADER] = _b64(key)
    native: dict[str, str] = {}
    exact = True
    for name, value in headers:
        text = header_text(value)
        safe = text is not None and _TOKEN.fullmatch(name) is not None and not name.lower().startswith(RESERVED_PREFIX)
        if not safe or name in native:
            exact = False
        if safe and name not in native:
            native[name] = text  # type: ignore[assignment]
    if not exact:
        out[HEADERS_HEADER] = orjson.dumps([[name, _b64(value)] for name, value in headers]).decode("utf-8")
    out.update(native)
    return out


def header_block_size(headers: dict[str, str]) -> int:
    """The bytes of the NATS header block nats-py writes for these headers
    (`NATS/1.0\r\n`, `Name: value\r\n` each, a blank line): the server counts them
    against max_payload together with the payload."""
    return 12 + sum(len(name) + len(value.encode("utf-8")) + 4 for name, value in headers.items())


def _exact_headers(text: str) -> Headers | None:
    try:
        pairs = orjson.loads(text)
        return [(str(name), base64.b64decode(value, validate=True)) for name, value in pairs]
    except (orjson.JSONDecodeError, binascii.Error, TypeError, ValueError):
        return None


def decode_headers(headers: dict[str, str] | None) -> tuple[bytes | None, Headers]:
    """(key, headers) from a received message's NATS headers."""
    if not headers:
        return None, []
    key: bytes | None = None
    if KEY_B64_HEADER in headers:
        try:
            key = base64.b64decode(headers[KEY_B64_HEADER], validate=True)
        except (binascii.Error, ValueError):
            key = headers[KEY_B64_HEADER].encode("utf-8")
    elif KEY_HEADER in headers:
        key = headers[KEY_HEADER].encode("utf-8")
    if HEADERS_HEADER in headers:
        exact = _exact_headers(headers[HEADERS_HEADER])
        if exact is not None:
            return key, exact
    return key, [
        (name, value.encode("utf-8")) for name, value in headers.items() if not name.lower().startswith(RESERVED_PREFIX)
    ]


def reply_metadata(reply: str) -> tuple[int, int, int, int]:
    """(stream sequence, timestamp in ns, deliveries, messages still pending) of a JetStream
    delivery, from its ack subject: `$JS.ACK.<stream>.<consumer>.<deliveries>.<stream seq>.
    <consumer seq>.<ns>.<pending>`, or the newer form with a domain and an account hash
    after `$JS.ACK` (and a random token at the end)."""
    tokens = reply.split(".")
    base = 2 if len(tokens) == 9 else 4
    return int(tokens[base + 3]), int(tokens[base + 5]), int(tokens[base + 2]), int(tokens[base + 6])


def delivery_to_message(msg: Any, stream: str) -> Message:
    """A JetStream delivery (a nats-py message with its ack subject) as an evrelay message:
    the stream sequence for its position, the server's timestamp. Called for every message
    read, so the ack subject is parsed here rather than through reply_metadata."""
    tokens = msg.reply.split(".")
    base = 2 if len(tokens) == 9 else 4
    key, headers = decode_headers(msg.headers) if msg.headers else (None, [])
    return Message(msg.data, key, headers, int(tokens[base + 5]) // 1_000_000, Position("nats", stream, int(tokens[base + 3])))
