"""Local consumers: a cursor for plain reads, pending-aware group reads, cheap following."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from evrelay.backends.base import (
    Consumer,
    GroupReader,
    Message,
    ReadSpec,
    default_consumer_name,
)
from evrelay.backends.local.store import (
    BEFORE_ALL,
    FOLLOW_POLL,
    RELEASED,
    parse_id,
    touch_consumer,
)
from evrelay.errors import NotFoundError
from evrelay.positions import (
    End,
)
from evrelay.timestamps import now_ms

if TYPE_CHECKING:
    from evrelay.backends.local import LocalBackend


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
            time.sleep(min(FOLLOW_POLL, left))


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


class LocalGroupConsumer(GroupReader):
    """A consumer-group read: own pending entries first, then new ones, each handed out once."""

    def __init__(self, backend: LocalBackend, spec: ReadSpec) -> None:
        self.backend = backend
        self.spec = spec
        self.stream = spec.stream
        self.group = spec.group or ""
        self.consumer = spec.consumer_name or default_consumer_name()
        self.release_on_close = spec.release_on_close
        self.finish_group = spec.finish_group
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
            touch_consumer(db, self.stream, self.group, self.consumer, now)
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

    def refresh_pending(self) -> None:
        now = now_ms()
        with self.backend.transaction() as db:
            db.execute(
                "UPDATE pending SET delivered_ms = ? WHERE stream = ? AND grp = ? AND consumer = ?",
                (now, self.stream, self.group, self.consumer),
            )
            touch_consumer(db, self.stream, self.group, self.consumer, now)

    def release_pending(self) -> None:
        with self.backend.transaction() as db:
            db.execute(
                "UPDATE pending SET consumer = ? WHERE stream = ? AND grp = ? AND consumer = ?",
                (RELEASED, self.stream, self.group, self.consumer),
            )

    def reject(self, messages: Sequence[Message]) -> None:
        if not messages:
            return
        keys = [(RELEASED, self.stream, self.group, *parse_id(m.position.id)) for m in messages if m.position]
        with self.backend.transaction() as db:
            db.executemany(
                "UPDATE pending SET consumer = ? WHERE stream = ? AND grp = ? AND ms = ? AND seq = ?",
                keys,
            )
