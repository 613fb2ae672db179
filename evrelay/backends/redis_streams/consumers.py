"""Redis consumers: XRANGE/XREAD for plain reads, XREADGROUP for consumer groups."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from evrelay.backends.base import (
    Consumer,
    GroupReader,
    Message,
    ReadSpec,
    default_consumer_name,
)
from evrelay.backends.stream_ids import (
    MAX_SEQ,
    format_stream_id,
    id_before,
    parse_stream_id,
)
from evrelay.errors import (
    NotFoundError,
)
from evrelay.positions import (
    End,
    Last,
)

RELEASED_IDLE_MS = 365 * 24 * 3600 * 1000
"""The idle time a handed-back entry gets: past any claim bound a user would set."""

if TYPE_CHECKING:
    from evrelay.backends.redis_streams import RedisStreamsBackend


class RedisConsumer(Consumer):
    """A plain read: XRANGE pages up to the stop ID, then (with -f) blocking XREAD."""

    def __init__(self, backend: RedisStreamsBackend, spec: ReadSpec) -> None:
        self.backend = backend
        self.stream = spec.stream
        self.follow = spec.follow
        self.backlog: list[Message] = []
        if isinstance(spec.start, Last):
            rows = backend.command("XREVRANGE", self.stream, "+", "-", "COUNT", max(spec.start.count, 0)) if spec.start.count else []
            self.backlog = [backend.to_message(self.stream, row) for row in reversed(rows)]
            last = backend.last_id(self.stream)
            self.cursor, self.inclusive = (format_stream_id(*last) if last else "0-0"), False
        else:
            self.cursor, self.inclusive = backend.start_id(self.stream, spec.start)
        stop = spec.stop if spec.stop is not None else (None if spec.follow else End())
        self.stop = backend.stop_id(self.stream, stop) if stop is not None else None
        if self.stop is not None:
            bound = parse_stream_id(self.stop) if "-" in self.stop else (int(self.stop), MAX_SEQ)
            self.stop_key: tuple[int, int] | None = bound
            self.backlog = [m for m in self.backlog if parse_stream_id(str(m.position.id)) <= bound]  # type: ignore[union-attr]
        else:
            self.stop_key = None

    def read(self, max_messages: int, timeout: float) -> list[Message]:
        if self.backlog:
            out, self.backlog = self.backlog[:max_messages], self.backlog[max_messages:]
            return out
        if self.exhausted:
            return []
        rows = self._range(max_messages)
        if not rows and self.follow and (self.stop_key is None or parse_stream_id(self._cursor_id()) < self.stop_key):
            rows = self._block(max_messages, timeout)
        messages = self.backend.to_messages(self.stream, rows)
        # XRANGE already stops at the stop ID; XREAD does not: check the last one first.
        if self.stop_key is not None and messages and parse_stream_id(str(messages[-1].position.id)) > self.stop_key:  # type: ignore[union-attr]
            kept = [m for m in messages if parse_stream_id(str(m.position.id)) <= self.stop_key]  # type: ignore[union-attr]
            if len(kept) < len(messages):
                self.exhausted = True
            messages = kept
        if rows:
            self.cursor, self.inclusive = rows[-1][0].decode(), False
        if not rows and not self.follow:
            self.exhausted = True
        return messages

    def _cursor_id(self) -> str:
        return self.cursor if self.cursor != "-" else "0-0"

    def _range(self, count: int) -> list[Any]:
        start = self.cursor if self.inclusive else f"({self.cursor}"
        end = self.stop if self.stop is not None else "+"
        if self.cursor == "-":
            start = "-"
        return self.backend.command("XRANGE", self.stream, start, end, "COUNT", count)

    def _block(self, count: int, timeout: float) -> list[Any]:
        cursor = self._cursor_id() if not self.inclusive else id_before(*parse_stream_id(self._cursor_id()))
        reply = self.backend.command(
            "XREAD", "COUNT", count, "BLOCK", max(int(timeout * 1000), 1), "STREAMS", self.stream, cursor
        )
        if not reply:
            return []
        return reply[0][1]


class RedisGroupConsumer(GroupReader):
    """XREADGROUP: own pending entries first (from 0), then new ones (`>`); XACK on ack."""

    def __init__(self, backend: RedisStreamsBackend, spec: ReadSpec) -> None:
        self.backend = backend
        self.stream = spec.stream
        self.group = spec.group or ""
        self.consumer = spec.consumer_name or default_consumer_name()
        self.release_on_close = spec.release_on_close
        self.finish_group = spec.finish_group
        self.follow = spec.follow
        self.created = backend.create_group(self.stream, self.group, spec.start)
        self.pending_cursor: str | None = "0-0"
        self._claimed: set[str] = set()
        """IDs claimed while this consumer's own pending entries were still being read:
        a claim puts them in its pending list, where that read would hand them out again."""
        self._ack_conn: Any = None
        self._unsettled = 0
        """IDs in the XACK written last whose answer is not read yet."""
        self._ack_prefix = b"".join(b"$%d\r\n%s\r\n" % (len(part), part) for part in (self.stream.encode(), self.group.encode()))

    def _xreadgroup(self, cursor: str, count: int, block_ms: int | None) -> list[Any]:
        args: list[Any] = ["XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", count]
        if block_ms is not None:
            args += ["BLOCK", block_ms]
        args += ["STREAMS", self.stream, cursor]
        try:
            reply = self.backend.command(*args, what=f"reading as group {self.group!r}")
        except NotFoundError:
            raise self._vanished() from None
        return reply[0][1] if reply else []

    def _vanished(self) -> NotFoundError:
        """The group this reader reads as is gone: the same words whether a read or an ack
        found out (which one does depends on timing alone)."""
        return NotFoundError(
            f"consumer group {self.group!r} on Redis stream {self.stream!r} no longer exists "
            f"(was the server restarted without persistence, or the stream deleted?); "
            "not recreating it, which could skip data: create it again with `evrelay tail -g GROUP --from ...`"
        )

    def read(self, max_messages: int, timeout: float) -> list[Message]:
        self.settle_acks()
        if self.exhausted:
            return []
        # Own pending entries first, to their end: a batch that yields nothing to hand out
        # (claimed, or trimmed away) must not end this part early, or the next read would
        # go on from the cursor and hand out again what `>` delivered meanwhile.
        while self.pending_cursor is not None:
            rows = self._xreadgroup(self.pending_cursor, max_messages, None)
            if not rows:
                self.pending_cursor = None
                self._claimed = set()
                break
            self.pending_cursor = rows[-1][0].decode()
            gone = [row[0].decode() for row in rows if row[1] is None]
            if gone:
                # Trimmed away while pending: nothing left to deliver, so clear them.
                self.backend.settings.warn(
                    f"redis: {len(gone)} pending entr(ies) of group {self.group!r} were deleted from the stream; acking them"
                )
                self.backend.command("XACK", self.stream, self.group, *gone)
            claimed = self._claimed
            messages = [
                self.backend.to_message(self.stream, row, self)
                for row in rows
                if row[1] is not None and row[0].decode() not in claimed
            ]
            if messages:
                return messages
        rows = self._xreadgroup(">", max_messages, max(int(timeout * 1000), 1) if self.follow else None)
        if not rows and not self.follow:
            self.exhausted = True
        return self.backend.to_messages(self.stream, rows, self)

    def ack(self, messages: Sequence[Message]) -> None:
        """XACK written on a connection of its own, its answer read on the next call (the
        next ack, read or close): a bridge acks every window, and waiting for each answer
        (with an XINFO beside it) was a sixth of a Redis->Kafka bridge. An ack whose
        answer is lost leaves its entries pending, to be read again: never a loss.

        XACK answers 0 for a group that no longer exists, as for entries already acked:
        only when it acked fewer than asked is the group looked up, to say it is missing."""
        ids = [str(m.position.id).encode() for m in messages if m.position is not None]
        if not ids:
            return
        self.settle_acks()
        import redis

        command = b"*%d\r\n$4\r\nXACK\r\n%s%s" % (len(ids) + 3, self._ack_prefix, b"".join([b"$%d\r\n%s\r\n" % (len(i), i) for i in ids]))
        connection = self._ack_connection()
        try:
            connection.send_packed_command([command])
        except redis.RedisError as exc:
            self._drop_ack_connection()
            raise self.backend.translate(exc, f"acking for group {self.group!r}") from None
        self._unsettled = len(ids)

    def settle_acks(self) -> None:
        """Read the answer to the XACK written last, if any."""
        if not self._unsettled:
            return
        import redis

        expected, self._unsettled = self._unsettled, 0
        try:
            acked = self._ack_conn.read_response()
        except redis.RedisError as exc:
            self._drop_ack_connection()
            raise self.backend.translate(exc, f"acking for group {self.group!r}") from None
        if isinstance(acked, Exception):
            raise self.backend.translate(acked, f"acking for group {self.group!r}")
        if int(acked) < expected:
            try:
                self.backend.group_last_delivered(self.stream, self.group)
            except NotFoundError:
                raise self._vanished() from None

    def _ack_connection(self) -> Any:
        if self._ack_conn is None:
            self._ack_conn = self.backend.dedicated_connection("XACK")
        return self._ack_conn

    def _drop_ack_connection(self) -> None:
        self._unsettled = 0
        if self._ack_conn is not None:
            self.backend.release_connection(self._ack_conn, broken=True)
            self._ack_conn = None

    def close(self) -> None:
        try:
            self.settle_acks()  # before handing back what is still pending
        finally:
            try:
                super().close()
            finally:
                if self._ack_conn is not None:
                    self.backend.release_connection(self._ack_conn)
                    self._ack_conn = None

    def claim_idle(self, min_idle_ms: int, count: int) -> list[Message]:
        claimed = super().claim_idle(min_idle_ms, count)
        if self.pending_cursor is not None:
            self._claimed.update(str(m.position.id) for m in claimed if m.position is not None)
        return claimed

    def refresh_pending(self) -> None:
        self._reclaim_own(None)

    def release_pending(self) -> None:
        """Redis has no negative ack: mark this consumer's pending entries as idle for a
        year (XCLAIM ... IDLE), so the next reader's claim (any bound under a year) takes
        them at once."""
        self._reclaim_own(RELEASED_IDLE_MS)

    def _reclaim_own(self, idle_ms: int | None) -> None:
        """XCLAIM this consumer's own pending entries back to itself (JUSTID: no data, no
        delivery count): their idle time becomes `idle_ms`, or 0."""
        cursor = "-"
        while True:
            rows = self.backend.command(
                "XPENDING", self.stream, self.group, cursor, "+", 1000, self.consumer,
                what=f"pending entries of group {self.group!r}",
            )
            if rows:
                self.backend.command(
                    "XCLAIM", self.stream, self.group, self.consumer, 0, *[row[0] for row in rows],
                    *(("IDLE", idle_ms) if idle_ms is not None else ()), "JUSTID",
                    what=f"pending entries of group {self.group!r}",
                )
            if len(rows) < 1000:
                return
            cursor = "(" + rows[-1][0].decode()

    def reject(self, messages: Sequence[Message]) -> None:
        """Redis has no negative ack: the entries stay pending for this consumer, which
        re-reads them on its next start, or another consumer claims them (XAUTOCLAIM)."""
