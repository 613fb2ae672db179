"""Stream-ID arithmetic (how a message maps onto fields is in layouts.py)."""

from __future__ import annotations

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
