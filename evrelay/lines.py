"""Reading lines from a file or stdin without blocking longer than asked.

Shared by `publish` (stdin, so a slow pipe still gets each line sent promptly) and the
JSONL backend (files that may grow, `-f`). Lines come one at a time so a caller never takes
more than it will use.
"""

from __future__ import annotations

import collections
import os
import select
import sys
import time

from evrelay.errors import BackendUnavailable

STDIO = "-"
_CHUNK = 1 << 16
_FOLLOW_POLL = 0.1


class LineReader:
    """Lines from a file or a pipe, one at a time, never blocking longer than asked.

    A regular file is read with plain reads (EOF only means "nothing more yet" when
    following); stdin may be a pipe or a terminal, so its descriptor is polled with
    select() and its EOF is final.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        if path == STDIO:
            self.fd = sys.stdin.fileno()
            self.closes = False
        else:
            try:
                self.fd = os.open(path, os.O_RDONLY)
            except OSError as exc:
                raise BackendUnavailable(f"cannot open {path}: {exc.strerror}") from None
            self.closes = True
        self.pollable = path == STDIO
        self.pending: collections.deque[bytes] = collections.deque()
        self.partial = b""
        self.eof = False
        self.line_no = 0

    @property
    def drained(self) -> bool:
        """Nothing buffered and the end of the input reached."""
        return self.eof and not self.pending and not self.partial

    def next_line(self, timeout: float, follow: bool) -> tuple[int, bytes] | None:
        if not self.pending:
            self._fill(timeout, follow)
        if not self.pending:
            return None
        self.line_no += 1
        return self.line_no, self.pending.popleft()

    def _fill(self, timeout: float, follow: bool) -> None:
        if self.eof and (self.pollable or not follow):
            return
        if self.pollable:
            ready, _, _ = select.select([self.fd], [], [], timeout)
            if not ready:
                return
        chunk = os.read(self.fd, _CHUNK)
        if not chunk:
            self.eof = True
            if self.partial and (self.pollable or not follow):
                # The last line has no newline and nothing can follow it.
                self.pending.append(self.partial)
                self.partial = b""
            elif follow and not self.pollable:
                time.sleep(min(timeout, _FOLLOW_POLL))
            return
        self.eof = False
        lines = (self.partial + chunk).split(b"\n")
        self.partial = lines.pop()
        self.pending.extend(lines)

    def close(self) -> None:
        if self.closes:
            os.close(self.fd)
