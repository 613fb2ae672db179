"""Millisecond timestamps: RFC 3339 formatting and parsing, durations like `15m` or `1.5s`.

Every timestamp inside evrelay is an `int` of milliseconds since the Unix epoch (UTC), the
unit Kafka records and Redis stream IDs already use. Text forms exist only at the edges.
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_MS = {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}

# Formatting a datetime per message is a measurable cost when printing a million envelopes;
# consecutive messages usually share their second, so the second's prefix is cached.
_last_second: int = -1
_last_prefix: str = ""


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def format_ms(ms: int) -> str:
    """`1700000000123` -> `2023-11-14T22:13:20.123Z` (UTC, millisecond precision)."""
    global _last_second, _last_prefix
    second, millis = divmod(ms, 1000)
    if second != _last_second:
        t = time.gmtime(second)
        _last_prefix = (
            f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}"
        )
        _last_second = second
    return f"{_last_prefix}.{millis:03d}Z"


def parse_rfc3339(text: str) -> int:
    """RFC 3339 / ISO 8601 text to epoch milliseconds; a time without an offset is UTC.

    Raises ValueError with a readable reason.
    """
    candidate = text.strip()
    if candidate.endswith(("z", "Z")):
        candidate = candidate[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(candidate)
    except ValueError:
        raise ValueError(f"{text!r} is not an RFC 3339 time (e.g. 2026-11-22T10:00:00Z)") from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return int(parsed.timestamp() * 1000)


def parse_duration_ms(text: str) -> int:
    """`500ms`, `10s`, `15m`, `2h`, `1d`, `1w`, or a bare number of seconds, to milliseconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration (e.g. 500ms, 10s, 15m, 2h, 1d)")
    number, unit = match.groups()
    return int(float(number) * _UNIT_MS[unit or "s"])


def parse_duration_seconds(text: str) -> float:
    return parse_duration_ms(text) / 1000.0


def format_duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 120:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    if minutes < 120:
        return f"{minutes}m{secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"
