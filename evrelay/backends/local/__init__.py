"""`local`: an embedded event store in SQLite (standard library), no server needed.

Features
    Streams of entries with Redis-style IDs `MILLISECONDS-SEQUENCE`, strictly increasing
    per stream even when the clock steps back; message timestamps kept as given. Consumer
    groups with a last-delivered ID, pending entries (consumer, delivery time, delivery
    count), ack, reject, claim of idle entries and group seeks. Several processes can
    write and read one store at once (WAL mode; writers take turns in IMMEDIATE
    transactions, so IDs and group deliveries never collide). `-f` waits by watching
    SQLite's `data_version`, so a follower wakes within ~20 ms of a commit by another
    process while using next to no CPU.

Connection string
    None: a profile `backend = "local"` (the built-in default profile) is enough.

Options
    path     the database file (default `$XDG_DATA_HOME/evrelay/local.db`)
    max_len  keep at most this many entries per stream, trimming the oldest on publish

Time positions map to entry IDs (the append time), exactly as on Redis.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from evrelay.backends.base import (
    Backend,
    Capability,
    Consumer,
    GroupInfo,
    GroupLag,
    GroupSeekPlan,
    GroupSeekStep,
    Health,
    Message,
    PartitionInfo,
    PendingEntry,
    Position,
    Producer,
    ReadSpec,
    StreamInfo,
)
from evrelay.backends.local.store import (
    BEFORE_ALL,
    LOCAL_MAX_SEQ,
    SCHEMA,
    Transaction,
    ensure_stream,
    foreign_tables,
    format_id,
    id_before,
    migrate,
    parse_id,
    show_cursor,
    touch_consumer,
    unpack_headers,
)
from evrelay.config import xdg_data_home
from evrelay.errors import BackendUnavailable, ConfigError, EvrelayError, NotFoundError, UnsupportedError, UsageError
from evrelay.positions import (
    AtTime,
    Beginning,
    End,
    EntryId,
    Last,
    Offset,
    PartitionOffsets,
    Stored,
    StreamPosition,
)
from evrelay.timestamps import now_ms


class LocalBackend(Backend):
    name = "local"
    stream_noun = "stream"
    target_option = "path"
    option_names = frozenset({"path", "max_len"})
    capabilities = frozenset(
        {
            Capability.PUBLISH,
            Capability.READ,
            Capability.FOLLOW,
            Capability.GROUPS,
            Capability.PENDING,
            Capability.CLAIM,
            Capability.SEEK_POSITION,
            Capability.SEEK_TIME,
            Capability.GROUP_SEEK,
            Capability.GROUP_DELETE,
            Capability.KEEP_TIMESTAMP,
            Capability.INSPECT,
        }
    )

    def __init__(self, options: dict[str, Any], settings: Any = None) -> None:
        super().__init__(options, settings)
        raw_path = self.options.get("path")
        if raw_path is not None and not isinstance(raw_path, str):
            raise ConfigError(f"local option path must be a file path (a string), not {raw_path!r}")
        self.path = Path(os.path.expanduser(raw_path)) if raw_path else xdg_data_home() / "evrelay" / "local.db"
        self.max_len = self.positive_int_option("max_len")
        self._db: sqlite3.Connection | None = None

    def describe(self) -> str:
        return f"local store {self.path}"

    def location(self) -> tuple[Any, ...]:
        # The database file, however its path is spelled; not max_len, which only trims.
        return (self.name, os.path.realpath(self.path))

    # --- life cycle ----------------------------------------------------------------------

    def open(self) -> None:
        if self._db is not None:
            return
        timeout = max(self.settings.timeout, 30.0)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, timeout=timeout, isolation_level=None, check_same_thread=False)
        except (sqlite3.Error, OSError) as exc:
            raise BackendUnavailable(f"cannot open the local store {self.path}: {exc}") from None
        # Several processes may create the store at the same moment; switching to WAL and
        # creating tables can then report "locked" without waiting, so retry until timeout.
        deadline = time.monotonic() + timeout
        while True:
            try:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute("BEGIN IMMEDIATE")
                for statement in SCHEMA.split(";"):
                    if statement.strip():
                        db.execute(statement)
                migrate(db)
                foreign = foreign_tables(db)
                if foreign is not None:
                    db.execute("ROLLBACK")
                    db.close()
                    raise EvrelayError(
                        f"the local store {self.path} is not an evrelay store: {foreign}",
                        hint="point the profile's path at another file, or move this one aside; evrelay then starts a new store there",
                    )
                db.execute("COMMIT")
                break
            except sqlite3.OperationalError as exc:
                if db.in_transaction:
                    db.execute("ROLLBACK")
                contended = "locked" in str(exc) or "busy" in str(exc)
                if not contended or time.monotonic() > deadline:
                    db.close()
                    raise BackendUnavailable(f"cannot open the local store {self.path}: {exc}") from None
                time.sleep(0.05)
            except sqlite3.DatabaseError as exc:
                db.close()
                raise self.damaged(exc) from None
        self._db = db

    def __exit__(self, exc_type: object, exc: object, traceback: object) -> None:
        self.close()
        # Damage deep in the file shows only when a query reaches the broken page, in
        # any of the queries: every command holds the store open as a context manager,
        # so the one translation is here.
        if isinstance(exc, sqlite3.DatabaseError) and not isinstance(exc, sqlite3.OperationalError):
            raise self.damaged(exc) from None

    def damaged(self, exc: sqlite3.DatabaseError) -> EvrelayError:
        """A store SQLite cannot read (overwritten, truncated, not a database at all):
        say which file, and that moving it aside starts a new one."""
        return EvrelayError(
            f"the local store {self.path} is damaged or is not an SQLite database ({exc})",
            hint=f"move it aside (mv {self.path} {self.path}.damaged) and evrelay starts a new, empty store there",
        )

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    @property
    def db(self) -> sqlite3.Connection:
        if self._db is None:
            self.open()
        assert self._db is not None
        return self._db

    def transaction(self) -> Transaction:
        return Transaction(self.db)

    def data_version(self) -> int:
        return self.db.execute("PRAGMA data_version").fetchone()[0]

    def health_check(self) -> Health:
        started = time.perf_counter()
        try:
            self.db.execute("SELECT count(*) FROM streams").fetchone()
        except sqlite3.Error as exc:
            return Health(False, f"{self.path}: {exc}")
        return Health(True, str(self.path), (time.perf_counter() - started) * 1000)

    # --- streams -------------------------------------------------------------------------

    def stream_exists(self, stream: str) -> bool:
        return self.db.execute("SELECT 1 FROM streams WHERE name = ?", (stream,)).fetchone() is not None

    def last_id(self, stream: str) -> tuple[int, int]:
        row = self.db.execute("SELECT ms, seq FROM entries WHERE stream = ? ORDER BY ms DESC, seq DESC LIMIT 1", (stream,)).fetchone()
        return (row[0], row[1]) if row else BEFORE_ALL

    def first_id(self, stream: str) -> tuple[int, int] | None:
        row = self.db.execute("SELECT ms, seq FROM entries WHERE stream = ? ORDER BY ms, seq LIMIT 1", (stream,)).fetchone()
        return (row[0], row[1]) if row else None

    def count_between(self, stream: str, after: tuple[int, int], upto: tuple[int, int] | None = None) -> int:
        if upto is None:
            sql = "SELECT count(*) FROM entries WHERE stream = ? AND (ms, seq) > (?, ?)"
            return self.db.execute(sql, (stream, *after)).fetchone()[0]
        sql = "SELECT count(*) FROM entries WHERE stream = ? AND (ms, seq) > (?, ?) AND (ms, seq) <= (?, ?)"
        return self.db.execute(sql, (stream, *after, *upto)).fetchone()[0]

    def cursor_for(self, stream: str, position: StreamPosition) -> tuple[int, int]:
        """The exclusive start cursor for a position: reading 'after' it starts there."""
        if isinstance(position, Beginning):
            return BEFORE_ALL
        if isinstance(position, End):
            return self.last_id(stream)
        if isinstance(position, (EntryId, Offset)):
            ms, seq = position.parts if isinstance(position, EntryId) else (position.offset, 0)
            return id_before(ms, seq)
        if isinstance(position, AtTime):
            # A time after the last entry (a future one) starts where the stream ends, as
            # Kafka's offsets_for_times answers; as an ID it would skip every entry written
            # before that time (a group moved to 2099 would see nothing new until then).
            last = self.last_id(stream)
            return last if last[0] < position.ms else id_before(position.ms, 0)
        if isinstance(position, Last):
            if position.count <= 0:
                return self.last_id(stream)
            row = self.db.execute(
                "SELECT ms, seq FROM entries WHERE stream = ? ORDER BY ms DESC, seq DESC LIMIT 1 OFFSET ?",
                (stream, position.count - 1),
            ).fetchone()
            return id_before(row[0], row[1]) if row else BEFORE_ALL
        if isinstance(position, Stored):
            raise UsageError("--from stored needs a consumer group (-g GROUP)")
        if isinstance(position, PartitionOffsets):
            raise UnsupportedError("local streams have no partitions; use an entry ID such as 1700000000000-0")
        raise UsageError(f"position {position} does not apply to local streams")

    def bound_for(self, stream: str, position: StreamPosition) -> tuple[int, int]:
        """The inclusive upper bound for `--to`."""
        if isinstance(position, End):
            return self.last_id(stream)
        if isinstance(position, (EntryId, Offset)):
            return position.parts if isinstance(position, EntryId) else (position.offset, LOCAL_MAX_SEQ)
        if isinstance(position, AtTime):
            return (position.ms, LOCAL_MAX_SEQ)
        raise UsageError(f"--to {position} does not apply; use end, an entry ID or a time")

    def rows_to_messages(self, stream: str, rows: Iterable[tuple[Any, ...]], receipt: Consumer | None = None) -> list[Message]:
        return [
            Message(
                value=value,
                key=key,
                headers=unpack_headers(headers),
                timestamp=timestamp,
                position=Position("local", stream, format_id(ms, seq)),
                receipt=receipt,
            )
            for ms, seq, timestamp, key, value, headers in rows
        ]

    def fetch(self, stream: str, entry_ids: Sequence[tuple[int, int]]) -> list[tuple[Any, ...]]:
        rows = []
        for ms, seq in entry_ids:
            row = self.db.execute(
                "SELECT ms, seq, timestamp, key, value, headers FROM entries WHERE stream = ? AND ms = ? AND seq = ?",
                (stream, ms, seq),
            ).fetchone()
            if row is not None:
                rows.append(row)
        return rows

    # --- producing and consuming -------------------------------------------------------------

    def producer(self, stream: str) -> Producer:
        from evrelay.backends.local.producer import LocalProducer

        return LocalProducer(self, stream)

    def consumer(self, spec: ReadSpec) -> Consumer:
        from evrelay.backends.local.consumers import LocalConsumer, LocalGroupConsumer

        if spec.group:
            return LocalGroupConsumer(self, spec)
        if not spec.follow and not self.stream_exists(spec.stream):
            raise NotFoundError(f"local stream {spec.stream!r} does not exist in {self.path}")
        return LocalConsumer(self, spec)

    # --- groups --------------------------------------------------------------------------

    def group_cursor(self, stream: str, group: str) -> tuple[int, int] | None:
        row = self.db.execute("SELECT last_ms, last_seq FROM groups WHERE stream = ? AND name = ?", (stream, group)).fetchone()
        return (row[0], row[1]) if row else None

    def ensure_group(self, stream: str, group: str, start: StreamPosition) -> bool:
        """Create the group at `start` unless it exists; returns True when it was created."""
        with self.transaction() as db:
            if db.execute("SELECT 1 FROM groups WHERE stream = ? AND name = ?", (stream, group)).fetchone():
                return False
            cursor = self.cursor_for(stream, Beginning() if isinstance(start, Stored) else start)
            ensure_stream(db, stream)
            db.execute("INSERT INTO groups VALUES (?, ?, ?, ?)", (stream, group, *cursor))
            return True

    def group_infos(self, stream: str) -> list[GroupInfo]:
        infos = []
        for name, last_ms, last_seq in self.db.execute(
            "SELECT name, last_ms, last_seq FROM groups WHERE stream = ? ORDER BY name", (stream,)
        ).fetchall():
            pending = self.db.execute("SELECT count(*) FROM pending WHERE stream = ? AND grp = ?", (stream, name)).fetchone()[0]
            consumers = self.db.execute("SELECT count(*) FROM consumers WHERE stream = ? AND grp = ?", (stream, name)).fetchone()[0]
            lag = self.count_between(stream, (last_ms, last_seq))
            position = format_id(last_ms, last_seq) if last_ms >= 0 else "0-0"
            infos.append(GroupInfo(name, consumers, pending, lag, position))
        return infos

    def group_lag(self, stream: str, group: str) -> list[GroupLag]:
        cursor = self._require_group(stream, group)
        last = self.last_id(stream)
        pending = self.db.execute("SELECT count(*) FROM pending WHERE stream = ? AND grp = ?", (stream, group)).fetchone()[0]
        end = format_id(*last) if last != BEFORE_ALL else None
        oldest = self.db.execute("SELECT min(ms) FROM pending WHERE stream = ? AND grp = ?", (stream, group)).fetchone()[0]
        if oldest is None:
            row = self.db.execute(
                "SELECT ms FROM entries WHERE stream = ? AND (ms, seq) > (?, ?) ORDER BY ms, seq LIMIT 1", (stream, *cursor)
            ).fetchone()
            oldest = row[0] if row else None
        return [GroupLag(None, show_cursor(cursor), end, self.count_between(stream, cursor), pending, oldest)]

    def group_backlog(self, stream: str, group: str, *, excluding_consumer: str | None = None) -> int:
        cursor = self._require_group(stream, group)
        others = self.db.execute(
            "SELECT count(*) FROM pending WHERE stream = ? AND grp = ? AND consumer IS NOT ?", (stream, group, excluding_consumer)
        ).fetchone()[0]
        return others + self.count_between(stream, cursor)

    def pending(self, stream: str, group: str, *, consumer: str | None = None, count: int = 100) -> list[PendingEntry]:
        self._require_group(stream, group)
        now = now_ms()
        sql = "SELECT ms, seq, consumer, delivered_ms, deliveries FROM pending WHERE stream = ? AND grp = ?"
        params: list[Any] = [stream, group]
        if consumer is not None:
            sql += " AND consumer = ?"
            params.append(consumer)
        sql += " ORDER BY ms, seq LIMIT ?"
        params.append(count)
        return [
            PendingEntry(Position("local", stream, format_id(ms, seq)), owner, max(now - delivered, 0), deliveries)
            for ms, seq, owner, delivered, deliveries in self.db.execute(sql, params).fetchall()
        ]

    def claim(self, stream: str, group: str, consumer: str, *, min_idle_ms: int, count: int = 100) -> list[Message]:
        self._require_group(stream, group)
        now = now_ms()
        with self.transaction() as db:
            ids = db.execute(
                "SELECT ms, seq FROM pending WHERE stream = ? AND grp = ? AND delivered_ms <= ? ORDER BY ms, seq LIMIT ?",
                (stream, group, now - min_idle_ms, count),
            ).fetchall()
            db.executemany(
                "UPDATE pending SET consumer = ?, delivered_ms = ?, deliveries = deliveries + 1 "
                "WHERE stream = ? AND grp = ? AND ms = ? AND seq = ?",
                [(consumer, now, stream, group, ms, seq) for ms, seq in ids],
            )
            touch_consumer(db, stream, group, consumer, now)
        return self.rows_to_messages(stream, self.fetch(stream, ids))

    def ack(self, stream: str, group: str, positions: Sequence[Position], *, force: bool = False) -> int:
        self._require_group(stream, group)
        keys = [(stream, group, *parse_id(p.id)) for p in positions]
        with self.transaction() as db:
            before = db.total_changes
            db.executemany("DELETE FROM pending WHERE stream = ? AND grp = ? AND ms = ? AND seq = ?", keys)
            return db.total_changes - before

    def plan_group_seek(self, stream: str, group: str, target: StreamPosition) -> GroupSeekPlan:
        current = self._require_group(stream, group)
        new = self.cursor_for(stream, target)
        if new < current:
            affected = self.count_between(stream, new, current)
        else:
            affected = -self.count_between(stream, current, new)
        step = GroupSeekStep(None, show_cursor(current), show_cursor(new), affected)
        return GroupSeekPlan(stream, group, target, [step], native=new)

    def apply_group_seek(self, plan: GroupSeekPlan) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE groups SET last_ms = ?, last_seq = ? WHERE stream = ? AND name = ?",
                (*plan.native, plan.stream, plan.group),
            )

    def group_delete_scope(self, stream: str, group: str) -> str:
        cursor = self._require_group(stream, group)
        pending = self.db.execute("SELECT count(*) FROM pending WHERE stream = ? AND grp = ?", (stream, group)).fetchone()[0]
        return f"consumer group {group!r} of local stream {stream!r}: its position ({show_cursor(cursor)}) and {pending} pending entries"

    def delete_group(self, stream: str, group: str) -> None:
        with self.transaction() as db:
            if not db.execute("DELETE FROM groups WHERE stream = ? AND name = ?", (stream, group)).rowcount:
                raise NotFoundError(f"group {group!r} does not exist on local stream {stream!r}")
            db.execute("DELETE FROM pending WHERE stream = ? AND grp = ?", (stream, group))
            db.execute("DELETE FROM consumers WHERE stream = ? AND grp = ?", (stream, group))

    def _require_group(self, stream: str, group: str) -> tuple[int, int]:
        cursor = self.group_cursor(stream, group)
        if cursor is None:
            raise NotFoundError(f"group {group!r} does not exist on local stream {stream!r}")
        return cursor

    # --- inspection --------------------------------------------------------------------

    def list_streams(self) -> list[StreamInfo]:
        return [self._summary(name) for name in self.stream_names()]

    def stream_names(self) -> list[str]:
        return [row[0] for row in self.db.execute("SELECT name FROM streams ORDER BY name").fetchall()]

    def stream_info(self, stream: str) -> StreamInfo:
        if not self.stream_exists(stream):
            raise NotFoundError(f"local stream {stream!r} does not exist in {self.path}")
        info = self._summary(stream)
        info.groups = self.group_infos(stream)
        return info

    def _summary(self, stream: str) -> StreamInfo:
        length = self.db.execute("SELECT count(*) FROM entries WHERE stream = ?", (stream,)).fetchone()[0]
        first = self.first_id(stream)
        last = self.last_id(stream) if first else None
        part = PartitionInfo(
            None,
            length,
            format_id(*first) if first else None,
            format_id(*last) if last else None,
            first[0] if first else None,
            last[0] if last else None,
        )
        return StreamInfo(stream, length, [part])
