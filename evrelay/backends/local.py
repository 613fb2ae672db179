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
import struct
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from evrelay.backends.base import (
    Backend,
    Capability,
    Consumer,
    DeliveryReport,
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
from evrelay.config import xdg_data_home
from evrelay.errors import BackendUnavailable, ConfigError, NotFoundError, UnsupportedError, UsageError
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

SCHEMA = """
CREATE TABLE IF NOT EXISTS streams (
    name TEXT PRIMARY KEY,
    last_ms INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS entries (
    stream TEXT NOT NULL,
    ms INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    timestamp INTEGER NOT NULL,
    key BLOB,
    value BLOB NOT NULL,
    headers BLOB,
    PRIMARY KEY (stream, ms, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS groups (
    stream TEXT NOT NULL,
    name TEXT NOT NULL,
    last_ms INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    PRIMARY KEY (stream, name)
);
CREATE TABLE IF NOT EXISTS pending (
    stream TEXT NOT NULL,
    grp TEXT NOT NULL,
    ms INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    consumer TEXT NOT NULL,
    delivered_ms INTEGER NOT NULL,
    deliveries INTEGER NOT NULL,
    PRIMARY KEY (stream, grp, ms, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS consumers (
    stream TEXT NOT NULL,
    grp TEXT NOT NULL,
    name TEXT NOT NULL,
    seen_ms INTEGER NOT NULL,
    PRIMARY KEY (stream, grp, name)
);
"""

BEFORE_ALL = (-1, 0)
"""A cursor before every entry (IDs are >= 0-0): reads start strictly after the cursor."""
RELEASED = ""
"""The owner of a rejected pending entry: the next group read by any consumer takes it."""
_FOLLOW_POLL = 0.02
_HEADER = struct.Struct(">HI")


def pack_headers(headers: Sequence[tuple[str, bytes]]) -> bytes | None:
    if not headers:
        return None
    out = bytearray()
    for name, value in headers:
        encoded = name.encode("utf-8")
        out += _HEADER.pack(len(encoded), len(value))
        out += encoded
        out += value
    return bytes(out)


def unpack_headers(blob: bytes | None) -> list[tuple[str, bytes]]:
    headers: list[tuple[str, bytes]] = []
    if not blob:
        return headers
    offset, size = 0, len(blob)
    while offset < size:
        name_len, value_len = _HEADER.unpack_from(blob, offset)
        offset += _HEADER.size
        name = blob[offset : offset + name_len].decode("utf-8")
        offset += name_len
        headers.append((name, blob[offset : offset + value_len]))
        offset += value_len
    return headers


def format_id(ms: int, seq: int) -> str:
    return f"{ms}-{seq}"


def parse_id(text: str | int) -> tuple[int, int]:
    if isinstance(text, int):
        return text, 0
    ms, _, seq = text.partition("-")
    try:
        return int(ms), int(seq or 0)
    except ValueError:
        raise UsageError(f"{text!r} is not a local entry ID (MILLISECONDS-SEQUENCE, e.g. 1700000000000-0)") from None


def _before(ms: int, seq: int) -> tuple[int, int]:
    """The cursor just before ID ms-seq (so that a read 'after' it includes ms-seq)."""
    return (ms, seq - 1) if seq > 0 else (ms - 1, 2**62)


class LocalBackend(Backend):
    name = "local"
    stream_noun = "stream"
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
            Capability.KEEP_TIMESTAMP,
            Capability.INSPECT,
        }
    )

    def __init__(self, options: dict[str, Any], settings: Any = None) -> None:
        super().__init__(options, settings)
        raw_path = self.options.get("path")
        self.path = Path(os.path.expanduser(raw_path)) if raw_path else xdg_data_home() / "evrelay" / "local.db"
        max_len = self.options.get("max_len")
        if max_len is not None and (not isinstance(max_len, int) or isinstance(max_len, bool) or max_len < 1):
            raise ConfigError(f"local option max_len must be a positive integer, not {max_len!r}")
        self.max_len: int | None = max_len
        self._db: sqlite3.Connection | None = None

    def describe(self) -> str:
        return f"local store {self.path}"

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
        self._db = db

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

    def transaction(self) -> _Transaction:
        return _Transaction(self.db)

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
            return _before(ms, seq)
        if isinstance(position, AtTime):
            return _before(position.ms, 0)
        if isinstance(position, Last):
            if position.count <= 0:
                return self.last_id(stream)
            row = self.db.execute(
                "SELECT ms, seq FROM entries WHERE stream = ? ORDER BY ms DESC, seq DESC LIMIT 1 OFFSET ?",
                (stream, position.count - 1),
            ).fetchone()
            return _before(row[0], row[1]) if row else BEFORE_ALL
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
            return position.parts if isinstance(position, EntryId) else (position.offset, 2**62)
        if isinstance(position, AtTime):
            return (position.ms, 2**62)
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
        return LocalProducer(self, stream)

    def consumer(self, spec: ReadSpec) -> Consumer:
        if spec.partitions:
            raise UnsupportedError("local streams have no partitions (--partition)")
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
            _ensure_stream(db, stream)
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
        return [GroupLag(None, _show_cursor(cursor), end, self.count_between(stream, cursor), pending)]

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
            _touch_consumer(db, stream, group, consumer, now)
        return self.rows_to_messages(stream, self.fetch(stream, ids))

    def ack(self, stream: str, group: str, positions: Sequence[Position]) -> int:
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
        step = GroupSeekStep(None, _show_cursor(current), _show_cursor(new), affected)
        return GroupSeekPlan(stream, group, target, [step], native=new)

    def apply_group_seek(self, plan: GroupSeekPlan) -> None:
        with self.transaction() as db:
            db.execute(
                "UPDATE groups SET last_ms = ?, last_seq = ? WHERE stream = ? AND name = ?",
                (*plan.native, plan.stream, plan.group),
            )

    def _require_group(self, stream: str, group: str) -> tuple[int, int]:
        cursor = self.group_cursor(stream, group)
        if cursor is None:
            raise NotFoundError(f"group {group!r} does not exist on local stream {stream!r}")
        return cursor

    # --- inspection --------------------------------------------------------------------

    def list_streams(self) -> list[StreamInfo]:
        names = [row[0] for row in self.db.execute("SELECT name FROM streams ORDER BY name").fetchall()]
        return [self._summary(name) for name in names]

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


def _show_cursor(cursor: tuple[int, int]) -> str:
    """A group cursor as the user sees it: the last delivered ID (0-0 before everything)."""
    ms, seq = cursor
    if ms < 0:
        return "0-0"
    if seq >= 2**62:
        return f"{ms}-*"
    return format_id(ms, seq)


class _Transaction:
    """`with backend.transaction() as db:` — BEGIN IMMEDIATE ... COMMIT, rollback on error.

    IMMEDIATE takes the write lock up front, so two processes appending or handing out
    group entries at once queue up (busy timeout) instead of deadlocking on lock upgrade.
    """

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        try:
            self.db.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise BackendUnavailable(f"the local store is busy: {exc}") from None
        return self.db

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            try:
                self.db.execute("COMMIT")
                return
            except sqlite3.Error:
                self.db.execute("ROLLBACK")
                raise
        self.db.execute("ROLLBACK")


def _ensure_stream(db: sqlite3.Connection, stream: str) -> tuple[int, int]:
    row = db.execute("SELECT last_ms, last_seq FROM streams WHERE name = ?", (stream,)).fetchone()
    if row is None:
        db.execute("INSERT INTO streams VALUES (?, -1, 0, ?)", (stream, now_ms()))
        return BEFORE_ALL
    return row[0], row[1]


def _touch_consumer(db: sqlite3.Connection, stream: str, group: str, consumer: str, now: int) -> None:
    db.execute(
        "INSERT INTO consumers VALUES (?, ?, ?, ?) ON CONFLICT (stream, grp, name) DO UPDATE SET seen_ms = excluded.seen_ms",
        (stream, group, consumer, now),
    )


class LocalProducer(Producer):
    """Appends each `send()` batch in one transaction: committed means delivered."""

    def __init__(self, backend: LocalBackend, stream: str) -> None:
        self.backend = backend
        self.stream = stream
        self._report = DeliveryReport()

    def send(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
        now = now_ms()
        try:
            with self.backend.transaction() as db:
                last_ms, last_seq = _ensure_stream(db, self.stream)
                rows = []
                for message in messages:
                    if now > last_ms:
                        last_ms, last_seq = now, 0
                    else:
                        last_seq += 1
                    rows.append(
                        (
                            self.stream,
                            last_ms,
                            last_seq,
                            message.timestamp if message.timestamp is not None else now,
                            message.key,
                            message.value,
                            pack_headers(message.headers),
                        )
                    )
                db.executemany("INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
                db.execute("UPDATE streams SET last_ms = ?, last_seq = ? WHERE name = ?", (last_ms, last_seq, self.stream))
                if self.backend.max_len is not None:
                    self._trim(db)
        except sqlite3.Error as exc:
            raise BackendUnavailable(f"writing to the local store {self.backend.path} failed: {exc}") from None
        self._report.delivered += len(messages)

    def _trim(self, db: sqlite3.Connection) -> None:
        row = db.execute(
            "SELECT ms, seq FROM entries WHERE stream = ? ORDER BY ms DESC, seq DESC LIMIT 1 OFFSET ?",
            (self.stream, self.backend.max_len),
        ).fetchone()
        if row is not None:
            db.execute("DELETE FROM entries WHERE stream = ? AND (ms, seq) <= (?, ?)", (self.stream, *row))

    def flush(self, timeout: float | None = None) -> DeliveryReport:
        report, self._report = self._report, DeliveryReport()
        return report


class _Follower:
    """Waits for another process's commit without spinning: polls SQLite's data_version."""

    def __init__(self, backend: LocalBackend) -> None:
        self.backend = backend
        self.version = backend.data_version()

    def wait(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            version = self.backend.data_version()
            if version != self.version:
                self.version = version
                return
            left = deadline - time.monotonic()
            if left <= 0:
                return
            time.sleep(min(_FOLLOW_POLL, left))


class LocalConsumer(Consumer):
    """A plain (non-group) read: a cursor moving through the stream."""

    def __init__(self, backend: LocalBackend, spec: ReadSpec) -> None:
        self.backend = backend
        self.spec = spec
        self.stream = spec.stream
        self.cursor = backend.cursor_for(self.stream, spec.start)
        stop = spec.stop if spec.stop is not None else (None if spec.follow else End())
        self.bound = backend.bound_for(self.stream, stop) if stop is not None else None
        self.follower = _Follower(backend) if spec.follow else None

    def read(self, max_messages: int, timeout: float) -> list[Message]:
        rows = self._fetch(max_messages)
        if not rows and self.follower is not None and not self.exhausted:
            self.follower.wait(timeout)
            rows = self._fetch(max_messages)
        if rows:
            self.cursor = (rows[-1][0], rows[-1][1])
        return self.backend.rows_to_messages(self.stream, rows)

    def _fetch(self, limit: int) -> list[tuple[Any, ...]]:
        if self.bound is not None and self.cursor >= self.bound:
            self.exhausted = True
            return []
        sql = "SELECT ms, seq, timestamp, key, value, headers FROM entries WHERE stream = ? AND (ms, seq) > (?, ?)"
        params: list[Any] = [self.stream, *self.cursor]
        if self.bound is not None:
            sql += " AND (ms, seq) <= (?, ?)"
            params += self.bound
        sql += " ORDER BY ms, seq LIMIT ?"
        params.append(limit)
        rows = self.backend.db.execute(sql, params).fetchall()
        if len(rows) < limit and not self.spec.follow:
            self.exhausted = True
        return rows


class LocalGroupConsumer(Consumer):
    """A consumer-group read: own pending entries first, then new ones, each handed out once."""

    def __init__(self, backend: LocalBackend, spec: ReadSpec) -> None:
        self.backend = backend
        self.spec = spec
        self.stream = spec.stream
        self.group = spec.group or ""
        self.consumer = spec.consumer_name or "evrelay"
        self.created = backend.ensure_group(self.stream, self.group, spec.start)
        self.bound = backend.bound_for(self.stream, spec.stop) if spec.stop is not None else None
        self.follower = _Follower(backend) if spec.follow else None
        # Entries this consumer had taken before it (re)started are delivered again first.
        self.recovering = True
        self.recovery_cursor: tuple[int, int] = BEFORE_ALL

    def read(self, max_messages: int, timeout: float) -> list[Message]:
        messages = self._take(max_messages)
        if not messages and self.follower is not None and not self.exhausted:
            self.follower.wait(timeout)
            messages = self._take(max_messages)
        return messages

    def _take(self, limit: int) -> list[Message]:
        now = now_ms()
        with self.backend.transaction() as db:
            ids: list[tuple[int, int]] = []
            if self.recovering:
                # Walk this consumer's own pending entries in ID order (as XREADGROUP
                # from 0 does); new entries are taken only once the walk is done.
                ids = db.execute(
                    "SELECT ms, seq FROM pending WHERE stream = ? AND grp = ? AND consumer = ? AND (ms, seq) > (?, ?) "
                    "ORDER BY ms, seq LIMIT ?",
                    (self.stream, self.group, self.consumer, *self.recovery_cursor, limit),
                ).fetchall()
                if ids:
                    self.recovery_cursor = ids[-1]
                if len(ids) < limit:
                    self.recovering = False
            if len(ids) < limit:
                ids += db.execute(
                    "SELECT ms, seq FROM pending WHERE stream = ? AND grp = ? AND consumer = ? ORDER BY ms, seq LIMIT ?",
                    (self.stream, self.group, RELEASED, limit - len(ids)),
                ).fetchall()
            if ids:
                db.executemany(
                    "UPDATE pending SET consumer = ?, delivered_ms = ?, deliveries = deliveries + 1 "
                    "WHERE stream = ? AND grp = ? AND ms = ? AND seq = ?",
                    [(self.consumer, now, self.stream, self.group, ms, seq) for ms, seq in ids],
                )
            rows = self.backend.fetch(self.stream, ids)
            if len(rows) < limit:
                rows += self._take_new(db, limit - len(rows), now)
            _touch_consumer(db, self.stream, self.group, self.consumer, now)
        return self.backend.rows_to_messages(self.stream, rows, receipt=self)

    def _take_new(self, db: sqlite3.Connection, limit: int, now: int) -> list[tuple[Any, ...]]:
        row = db.execute("SELECT last_ms, last_seq FROM groups WHERE stream = ? AND name = ?", (self.stream, self.group)).fetchone()
        if row is None:
            raise NotFoundError(
                f"group {self.group!r} on local stream {self.stream!r} vanished while reading; not recreating it"
            )
        sql = "SELECT ms, seq, timestamp, key, value, headers FROM entries WHERE stream = ? AND (ms, seq) > (?, ?)"
        params: list[Any] = [self.stream, row[0], row[1]]
        if self.bound is not None:
            sql += " AND (ms, seq) <= (?, ?)"
            params += self.bound
        sql += " ORDER BY ms, seq LIMIT ?"
        params.append(limit)
        rows = db.execute(sql, params).fetchall()
        if rows:
            db.executemany(
                "INSERT OR REPLACE INTO pending VALUES (?, ?, ?, ?, ?, ?, 1)",
                [(self.stream, self.group, r[0], r[1], self.consumer, now) for r in rows],
            )
            db.execute(
                "UPDATE groups SET last_ms = ?, last_seq = ? WHERE stream = ? AND name = ?",
                (rows[-1][0], rows[-1][1], self.stream, self.group),
            )
        if len(rows) < limit and not self.spec.follow and not self.recovering:
            self.exhausted = True
        return rows

    def ack(self, messages: Sequence[Message]) -> None:
        if messages:
            self.backend.ack(self.stream, self.group, [m.position for m in messages if m.position is not None])

    def claim_idle(self, min_idle_ms: int, count: int) -> list[Message]:
        claimed = self.backend.claim(self.stream, self.group, self.consumer, min_idle_ms=min_idle_ms, count=count)
        for message in claimed:
            message.receipt = self
        return claimed

    def reject(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
        keys = [(RELEASED, self.stream, self.group, *parse_id(m.position.id)) for m in messages if m.position]
        with self.backend.transaction() as db:
            db.executemany(
                "UPDATE pending SET consumer = ? WHERE stream = ? AND grp = ? AND ms = ? AND seq = ?",
                keys,
            )
