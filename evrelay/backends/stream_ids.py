"""The millisecond-sequence ID model of stream logs (Redis Streams, the local store, and any
backend whose IDs are `MILLISECONDS-SEQUENCE`): parse, format, the ID just before one, and
order (a `StreamId` is a tuple, so `<` compares IDs).

One copy for every such backend, so an ID means the same thing everywhere: `1700000000000-0`
is read and printed alike, a bare `1700000000000` is its `-0`, and "just before" rolls over
to the previous millisecond's largest sequence number.
"""

from __future__ import annotations

from typing import NamedTuple

MAX_SEQ = 18446744073709551615
"""Redis's largest sequence number (unsigned 64 bits); stores with signed 64-bit integers
(SQLite) pass their own bound to `before()`."""


class StreamId(NamedTuple):
    ms: int
    seq: int

    @classmethod
    def parse(cls, raw: bytes | str | int) -> StreamId:
        """`1700000000000-5`, `1700000000000` (sequence 0), or an int of milliseconds;
        ValueError naming the text otherwise."""
        if isinstance(raw, int) and not isinstance(raw, bool):
            return cls(raw, 0)
        text = raw.decode() if isinstance(raw, bytes) else str(raw)
        ms, _, seq = text.partition("-")
        try:
            parsed = cls(int(ms), int(seq or 0))
        except ValueError:
            raise ValueError(f"{text!r} is not a stream entry ID (MILLISECONDS-SEQUENCE, e.g. 1700000000000-0)") from None
        if parsed.ms < 0 or parsed.seq < 0:
            raise ValueError(f"{text!r} is not a stream entry ID (MILLISECONDS-SEQUENCE, e.g. 1700000000000-0)")
        return parsed

    def __str__(self) -> str:
        # Before the first possible ID (ms -1) is shown the way Redis names it: 0-0.
        return "0-0" if self.ms < 0 else f"{self.ms}-{self.seq}"

    def before(self, max_seq: int = MAX_SEQ) -> StreamId:
        """The ID just before this one (a group's last-delivered ID that makes the next
        read start here); before `0-0` it is `(-1, max_seq)`, shown as `0-0`."""
        if self.seq > 0:
            return StreamId(self.ms, self.seq - 1)
        return StreamId(self.ms - 1, max_seq)


def parse_stream_id(raw: bytes | str | int) -> tuple[int, int]:
    return StreamId.parse(raw)


def format_stream_id(ms: int, seq: int) -> str:
    return str(StreamId(ms, seq))


def id_before(ms: int, seq: int) -> str:
    """The ID just before ms-seq, as text: XGROUP CREATE/SETID name the last *delivered* ID."""
    return str(StreamId(ms, seq).before())
