"""The local store's SQLite layer: schema, IDs, header packing, transactions."""

from __future__ import annotations

import contextlib
import re
import sqlite3
import struct
from collections.abc import Sequence

from evrelay.backends.stream_ids import StreamId
from evrelay.errors import BackendUnavailable, UsageError
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
    value BLOB,
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

SCHEMA_COLUMNS = {
    table: [line.split()[0] for line in body.strip().splitlines() if not line.strip().startswith("PRIMARY KEY")]
    for table, body in re.findall(r"CREATE TABLE IF NOT EXISTS (\w+) \((.*?)\n\)", SCHEMA, re.S)
}
"""Each table's columns, as SCHEMA declares them."""


def foreign_tables(db: sqlite3.Connection) -> str | None:
    """What in the file is not evrelay's (another program's tables under the names evrelay
    uses: CREATE TABLE IF NOT EXISTS keeps them, and every query would then fail on a
    missing column), or None."""
    for table, columns in SCHEMA_COLUMNS.items():
        found = [row[1] for row in db.execute(f"PRAGMA table_info({table})")]
        if not set(columns) <= set(found):
            return f"its table {table!r} has the columns ({', '.join(found)}), not evrelay's ({', '.join(columns)})"
    return None


def migrate(db: sqlite3.Connection) -> None:
    """Bring a store made by an older evrelay up to SCHEMA (inside the caller's transaction).

    Stores made before null values (tombstones) were kept declared `value NOT NULL`;
    SQLite cannot relax that in place, so the table is copied once."""
    columns = {row[1]: row for row in db.execute("PRAGMA table_info(entries)")}
    if columns.get("value", (None, None, None, 0))[3]:
        create = SCHEMA.split("CREATE TABLE IF NOT EXISTS entries")[1].split(";")[0]
        db.execute("CREATE TABLE entries_nullable" + create)
        db.execute("INSERT INTO entries_nullable SELECT stream, ms, seq, timestamp, key, value, headers FROM entries")
        db.execute("DROP TABLE entries")
        db.execute("ALTER TABLE entries_nullable RENAME TO entries")


BEFORE_ALL = StreamId(-1, 0)
"""A cursor before every entry (IDs are >= 0-0): reads start strictly after the cursor."""
RELEASED = ""
"""The owner of a rejected pending entry: the next group read by any consumer takes it."""
FOLLOW_POLL = 0.02
HEADER_STRUCT = struct.Struct(">HI")


def pack_headers(headers: Sequence[tuple[str, bytes]]) -> bytes | None:
    if not headers:
        return None
    out = bytearray()
    for name, value in headers:
        encoded = name.encode("utf-8")
        out += HEADER_STRUCT.pack(len(encoded), len(value))
        out += encoded
        out += value
    return bytes(out)


def unpack_headers(blob: bytes | None) -> list[tuple[str, bytes]]:
    headers: list[tuple[str, bytes]] = []
    if not blob:
        return headers
    offset, size = 0, len(blob)
    while offset < size:
        name_len, value_len = HEADER_STRUCT.unpack_from(blob, offset)
        offset += HEADER_STRUCT.size
        name = blob[offset : offset + name_len].decode("utf-8")
        offset += name_len
        headers.append((name, blob[offset : offset + value_len]))
        offset += value_len
    return headers


def format_id(ms: int, seq: int) -> str:
    return str(StreamId(ms, seq))


def parse_id(text: str | int) -> tuple[int, int]:
    try:
        return StreamId.parse(text)
    except ValueError as exc:
        raise UsageError(f"local store: {exc}") from None


LOCAL_MAX_SEQ = 2**62
"""The largest sequence number a cursor holds: SQLite integers are signed 64 bits."""


def id_before(ms: int, seq: int) -> tuple[int, int]:
    """The cursor just before ID ms-seq (so that a read 'after' it includes ms-seq)."""
    return StreamId(ms, seq).before(LOCAL_MAX_SEQ)


def show_cursor(cursor: tuple[int, int]) -> str:
    """A group cursor as the user sees it: the last delivered ID (0-0 before everything)."""
    ms, seq = cursor
    if ms >= 0 and seq >= LOCAL_MAX_SEQ:
        return f"{ms}-*"
    return str(StreamId(ms, seq))


class Transaction:
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
                self._rollback()
                raise
        self._rollback()

    def _rollback(self) -> None:
        # A full disk or an I/O error has SQLite roll the transaction back itself; a
        # ROLLBACK then fails ("no transaction is active") and would hide the real error.
        if self.db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("ROLLBACK")


def ensure_stream(db: sqlite3.Connection, stream: str) -> tuple[int, int]:
    row = db.execute("SELECT last_ms, last_seq FROM streams WHERE name = ?", (stream,)).fetchone()
    if row is None:
        db.execute("INSERT INTO streams VALUES (?, -1, 0, ?)", (stream, now_ms()))
        return BEFORE_ALL
    return row[0], row[1]


def touch_consumer(db: sqlite3.Connection, stream: str, group: str, consumer: str, now: int) -> None:
    db.execute(
        "INSERT INTO consumers VALUES (?, ?, ?, ?) ON CONFLICT (stream, grp, name) DO UPDATE SET seen_ms = excluded.seen_ms",
        (stream, group, consumer, now),
    )
