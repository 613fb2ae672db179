"""The local producer: one IMMEDIATE transaction per batch, committed means delivered."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import TYPE_CHECKING

from evrelay.backends.base import (
    DeliveryReport,
    Message,
    Producer,
)
from evrelay.backends.local.store import (
    ensure_stream,
    pack_headers,
)
from evrelay.errors import BackendUnavailable
from evrelay.timestamps import now_ms

if TYPE_CHECKING:
    from evrelay.backends.local import LocalBackend


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
                last_ms, last_seq = ensure_stream(db, self.stream)
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
