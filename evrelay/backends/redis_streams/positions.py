"""Where a Redis stream read starts and stops, and where a consumer group is placed: the
position forms of the contract (`--from`/`--to`: beginning, end, an entry ID, an offset,
a time, the last N) mapped onto stream IDs, as a mix-in of the Redis backend (it needs the
backend's `last_id` and `command`)."""

from __future__ import annotations

from typing import Any

from evrelay.backends.stream_ids import format_stream_id, id_before, parse_stream_id
from evrelay.errors import UnsupportedError, UsageError
from evrelay.positions import AtTime, Beginning, End, EntryId, Last, Offset, PartitionOffsets, Stored, StreamPosition


class StreamPositions:
    """Position forms to stream IDs for RedisStreamsBackend."""

    def last_id(self, stream: str) -> tuple[int, int] | None:  # provided by the backend
        raise NotImplementedError

    def command(self, *args: Any, what: str = "") -> Any:  # provided by the backend
        raise NotImplementedError

    def start_id(self, stream: str, position: StreamPosition) -> tuple[str, bool]:
        """(ID, inclusive) where a plain read starts."""
        if isinstance(position, Beginning):
            return "-", True
        if isinstance(position, End):
            last = self.last_id(stream)
            return (format_stream_id(*last) if last else "0-0"), False
        if isinstance(position, EntryId):
            return position.entry_id, True
        if isinstance(position, AtTime) and self._after_the_last(stream, position):
            return self.start_id(stream, End())
        if isinstance(position, (Offset, AtTime)):
            return str(position.offset if isinstance(position, Offset) else position.ms), True
        if isinstance(position, Stored):
            raise UsageError("--from stored needs a consumer group (-g GROUP)")
        if isinstance(position, PartitionOffsets):
            raise UnsupportedError("Redis streams have no partitions; use an entry ID such as 1700000000000-0")
        raise UsageError(f"--from {position} does not apply to Redis streams")

    def stop_id(self, stream: str, position: StreamPosition) -> str:
        if isinstance(position, End):
            last = self.last_id(stream)
            return format_stream_id(*last) if last else "0-0"
        if isinstance(position, EntryId):
            return position.entry_id
        if isinstance(position, (Offset, AtTime)):
            return str(position.offset if isinstance(position, Offset) else position.ms)
        raise UsageError(f"--to {position} does not apply; use end, an entry ID or a time")

    def _after_the_last(self, stream: str, position: AtTime) -> bool:
        """A time later than the stream's last entry (a future one, say) starts where the
        stream ends, as Kafka's offsets_for_times answers: taken as an entry ID it would
        place a reader past every entry written before that time, so a group moved to
        2099 would skip all new entries (its lag saying 0) until then."""
        last = self.last_id(stream)
        return last is None or position.ms > last[0]

    def group_start_id(self, stream: str, position: StreamPosition) -> str:
        """XGROUP CREATE's ID (the last delivered one) for a group that should start at position."""
        if isinstance(position, (Beginning, Stored)):
            return "0"
        if isinstance(position, End):
            return "$"
        if isinstance(position, EntryId):
            return id_before(*position.parts)
        if isinstance(position, AtTime) and self._after_the_last(stream, position):
            return "$"
        if isinstance(position, (Offset, AtTime)):
            return id_before(position.offset if isinstance(position, Offset) else position.ms, 0)
        if isinstance(position, Last):
            rows = self.command("XREVRANGE", stream, "+", "-", "COUNT", max(position.count, 1))
            return id_before(*parse_stream_id(rows[-1][0])) if rows and position.count > 0 else "$"
        raise UsageError(f"--from {position} cannot place a Redis consumer group")
