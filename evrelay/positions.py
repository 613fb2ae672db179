"""The one position syntax for `--from`/`--to` on every backend (CONTRACT.md §2).

`parse_position` turns text into one of the small value types below; each backend then
maps them onto its own coordinates (Kafka offsets per partition, stream IDs, ...) and
refuses, with a clear message, the forms that mean nothing to it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from evrelay.timestamps import now_ms, parse_duration_ms, parse_rfc3339


@dataclass(frozen=True, slots=True)
class Beginning:
    def __str__(self) -> str:
        return "beginning"


@dataclass(frozen=True, slots=True)
class End:
    def __str__(self) -> str:
        return "end"


@dataclass(frozen=True, slots=True)
class Stored:
    """The consumer group's committed position."""

    def __str__(self) -> str:
        return "stored"


@dataclass(frozen=True, slots=True)
class Offset:
    """A bare number: a Kafka offset in every partition, or a stream ID's millisecond part."""

    offset: int

    def __str__(self) -> str:
        return str(self.offset)


@dataclass(frozen=True, slots=True)
class PartitionOffsets:
    """`PARTITION:OFFSET[,...]`: Kafka offsets for the named partitions only."""

    offsets: tuple[tuple[int, int], ...]

    def __str__(self) -> str:
        return ",".join(f"{p}:{o}" for p, o in self.offsets)

    def as_dict(self) -> dict[int, int]:
        return dict(self.offsets)


@dataclass(frozen=True, slots=True)
class EntryId:
    """A Redis/local stream entry ID `MILLISECONDS-SEQUENCE`."""

    entry_id: str

    def __str__(self) -> str:
        return self.entry_id

    @property
    def parts(self) -> tuple[int, int]:
        from evrelay.backends.stream_ids import StreamId

        return StreamId.parse(self.entry_id)


@dataclass(frozen=True, slots=True)
class AtTime:
    """An absolute or relative time, resolved to epoch milliseconds when parsed."""

    ms: int
    text: str

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True, slots=True)
class Last:
    """The last `count` messages: tail's default start (not user syntax)."""

    count: int

    def __str__(self) -> str:
        return f"last {self.count}"


StreamPosition = Beginning | End | Stored | Offset | PartitionOffsets | EntryId | AtTime | Last

MAX_POSITION = 2**63 - 1
"""Offsets, IDs and counts are 64-bit signed integers in Kafka, Redis and SQLite."""

_ALIASES: dict[str, StreamPosition] = {
    "beginning": Beginning(),
    "earliest": Beginning(),
    "start": Beginning(),
    "oldest": Beginning(),
    "end": End(),
    "latest": End(),
    "newest": End(),
    "stored": Stored(),
    "committed": Stored(),
}
_RELATIVE = re.compile(r"^-(\d+(?:\.\d+)?(?:ms|s|m|h|d|w))$")
_ENTRY_ID = re.compile(r"^\d+-\d+$")
_PARTITION_OFFSETS = re.compile(r"^\d+:\d+(?:,\d+:\d+)*$")

POSITION_FORMS = (
    "beginning, end, stored, an offset (42), PARTITION:OFFSET[,...] (0:42,1:7), "
    "a stream ID (1700000000000-0), an RFC 3339 time (2026-11-22T10:00:00Z) "
    "or a relative time (-15m, -2h, -1d)"
)


def parse_position(text: str, *, now: int | None = None) -> StreamPosition:
    """Parse `--from`/`--to` text; raises ValueError naming the accepted forms."""
    candidate = text.strip()
    lowered = candidate.lower()
    if lowered in _ALIASES:
        return _ALIASES[lowered]
    if candidate.isdigit():
        if int(candidate) > MAX_POSITION:
            raise ValueError(f"{text!r} is too large for a position (at most {MAX_POSITION})")
        return Offset(int(candidate))
    if _ENTRY_ID.match(candidate):
        if any(int(part) > MAX_POSITION for part in candidate.split("-")):
            raise ValueError(f"{text!r} is too large for a stream ID (each part at most {MAX_POSITION})")
        return EntryId(candidate)
    if _PARTITION_OFFSETS.match(candidate):
        pairs = tuple((int(p), int(o)) for p, o in (item.split(":") for item in candidate.split(",")))
        if any(p > 2**31 - 1 or o > MAX_POSITION for p, o in pairs):
            raise ValueError(f"{text!r} is too large (partitions are 32-bit, offsets 64-bit)")
        if len({p for p, _ in pairs}) != len(pairs):
            raise ValueError(f"{text!r} names a partition twice")
        return PartitionOffsets(pairs)
    relative = _RELATIVE.match(candidate)
    if relative:
        base = now_ms() if now is None else now
        # Further back than 1970 is the beginning of time: no stream holds older messages,
        # and a negative time is no time at all to a broker (JetStream: "invalid JSON").
        return AtTime(max(base - parse_duration_ms(relative.group(1)), 0), candidate)
    if re.match(r"^\d{4}-\d{2}-\d{2}", candidate):
        try:
            return AtTime(parse_rfc3339(candidate), candidate)
        except ValueError as exc:
            raise ValueError(str(exc)) from None
    raise ValueError(f"{text!r} is not a position; use {POSITION_FORMS}")



def reversed_range(start: StreamPosition | None, stop: StreamPosition | None) -> bool:
    """True when `stop` is certainly before `start` (same kind of position), so the range
    `--from start --to stop` is empty: almost always the two were swapped."""
    if start is None or stop is None:
        return False
    if isinstance(start, AtTime) and isinstance(stop, AtTime):
        return stop.ms < start.ms
    if isinstance(start, EntryId) and isinstance(stop, EntryId):
        return stop.parts < start.parts
    if isinstance(start, Offset) and isinstance(stop, Offset):
        return stop.offset < start.offset
    if isinstance(start, PartitionOffsets) and isinstance(stop, PartitionOffsets):
        starts = start.as_dict()
        return any(p in starts and offset < starts[p] for p, offset in stop.offsets)
    return isinstance(start, End) and isinstance(stop, Beginning)
