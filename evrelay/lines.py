"""Reading lines from a file or stdin without blocking longer than asked.

Shared by `publish` (stdin, so a slow pipe still gets each line sent promptly) and the
JSONL backend (files that may grow, `-f`). Callers take lines one at a time or in slices,
so a reader never takes more than it will use; slices keep the per-line cost of a
300,000-line publish down to list operations done in C.
"""

from __future__ import annotations

import os
import select
import sys
import time

from evrelay.errors import BackendUnavailable, InputError

STDIO = "-"
_CHUNK = 1 << 18
MAX_LINE_BYTES = 256 << 20
"""The longest line read (256 MiB, far above any broker's message size): past it the
input is refused, so a stream without newlines (/dev/zero) cannot take all memory."""
_FOLLOW_POLL = 0.1


class LineReader:
    """Lines from a file or a pipe.

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
        self.lines: list[bytes] = []
        self.index = 0
        self.partial = bytearray()
        """The start of a line whose newline has not been read yet; grown in place, so a
        100 MB line costs one pass, not a copy of everything so far for every chunk."""
        self.eof = False
        self.line_no = 0
        """The number of the last line handed out (1-based)."""
        self.truncations = 0
        """How often a followed file was cut shorter than what had been read (and read again)."""

    @property
    def drained(self) -> bool:
        """Nothing buffered and the end of the input reached."""
        return self.eof and self.index >= len(self.lines) and not self.partial

    def next_line(self, timeout: float, follow: bool) -> tuple[int, bytes] | None:
        """(line number, line without its newline), or None when nothing came in time."""
        if self.index >= len(self.lines):
            self._fill(timeout, follow)
            if self.index >= len(self.lines):
                return None
        line = self.lines[self.index]
        self.index += 1
        self.line_no += 1
        return self.line_no, line

    def take_lines(self, limit: int, timeout: float, follow: bool) -> tuple[int, list[bytes]]:
        """Up to `limit` lines available now (waiting up to `timeout` for the first
        ones): (number of the first line, lines)."""
        if self.index >= len(self.lines):
            self._fill(timeout, follow)
        taken = self.lines[self.index : self.index + limit]
        self.index += len(taken)
        first = self.line_no + 1
        self.line_no += len(taken)
        return first, taken

    def _fill(self, timeout: float, follow: bool) -> None:
        if self.eof and (self.pollable or not follow):
            return
        if self.pollable:
            ready, _, _ = select.select([self.fd], [], [], timeout)
            if not ready:
                return
        try:
            chunk = os.read(self.fd, _CHUNK)
        except OSError as exc:
            raise BackendUnavailable(f"reading {self.path} failed: {exc.strerror}") from None
        self.lines, self.index = [], 0
        if not chunk:
            self.eof = True
            if self.partial and (self.pollable or not follow):
                # The last line has no newline and nothing can follow it.
                self.lines = [bytes(self.partial)]
                self.partial = bytearray()
            elif follow and not self.pollable:
                if self._truncated():
                    return
                time.sleep(min(timeout, _FOLLOW_POLL))
            return
        self.eof = False
        if b"\n" not in chunk:
            self._check_length(len(chunk))
            self.partial += chunk
            return
        lines = chunk.split(b"\n")
        if self.partial:
            self._check_length(len(lines[0]))
            self.partial += lines[0]
            lines[0] = bytes(self.partial)
        self.partial = bytearray(lines.pop())
        self.lines = lines

    def _truncated(self) -> bool:
        """A followed file now shorter than what was read of it was truncated (`: > log`,
        a copy-and-truncate rotation): start again from its first line, as `tail -f`
        does, instead of waiting for it to grow past the old end and reading from the
        middle of whatever line is there then."""
        try:
            if os.fstat(self.fd).st_size >= os.lseek(self.fd, 0, os.SEEK_CUR):
                return False
            os.lseek(self.fd, 0, os.SEEK_SET)
        except OSError:  # not seekable after all: nothing to compare
            return False
        self.partial = bytearray()
        self.lines, self.index = [], 0
        self.eof = False
        self.line_no = 0
        self.truncations += 1
        return True

    def _check_length(self, more: int) -> None:
        """Refuse the line being assembled (the next one to hand out: _fill runs only when
        every complete line has been taken) before it grows past MAX_LINE_BYTES."""
        if len(self.partial) + more > MAX_LINE_BYTES:
            where = "stdin" if self.path == STDIO else self.path
            raise InputError(f"{where} line {self.line_no + 1}: longer than {MAX_LINE_BYTES >> 20} MiB, the longest line evrelay reads (is it a line-oriented file?)")

    def close(self) -> None:
        if self.closes:
            os.close(self.fd)
