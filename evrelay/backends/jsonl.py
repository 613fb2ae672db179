"""`file:PATH` and `-`: JSONL envelopes (CONTRACT.md §3) in a file, or on stdin/stdout.

Features
    Publishing appends one envelope per line (flushed before it counts as delivered);
    reading parses envelopes, keeping value, key, headers and timestamp exactly. Positions
    are 1-based line numbers (`--from 5`); times select by each envelope's timestamp;
    `-f` follows a growing file like `tail -f`. No consumer groups: a file cannot record
    what a group has seen. Blank lines are skipped; a malformed line stops the read with
    its line number, after the lines before it were handed out.

Connection string
    `file:events.jsonl`, `file:/abs/path.jsonl`, or `-` for stdin (source) / stdout (sink).

Options
    path   the file (set by the address; in a profile, the file the profile alone means:
           `PROFILE:NAME` is the file NAME)
"""

from __future__ import annotations

import collections
import contextlib
import os
import stat
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import IO, Any

from evrelay.backends.base import (
    Backend,
    Capability,
    Consumer,
    DeliveryReport,
    Message,
    Position,
    Producer,
    ReadSpec,
)
from evrelay.envelope import EnvelopeError, decode_envelope, encode_envelope
from evrelay.errors import BackendUnavailable, ConfigError, EvrelayError, InputError, NotFoundError, UsageError
from evrelay.lines import STDIO, LineReader
from evrelay.positions import AtTime, Beginning, End, Last, Offset, StreamPosition
from evrelay.timestamps import now_ms

_CHUNK = 1 << 16


class JsonlBackend(Backend):
    name = "file"
    stream_noun = "file"
    target_option = "path"
    option_names = frozenset({"path"})
    capabilities = frozenset(
        {
            Capability.PUBLISH,
            Capability.READ,
            Capability.FOLLOW,
            Capability.SEEK_POSITION,
            Capability.SEEK_TIME,
            Capability.KEEP_TIMESTAMP,
        }
    )

    def __init__(self, options: dict[str, Any], settings: Any = None) -> None:
        super().__init__(options, settings)
        path = self.options.get("path") or STDIO
        if not isinstance(path, str):
            raise ConfigError(f"file option path must be a file path (a string), not {path!r}")
        self.path = path

    def describe(self) -> str:
        return "stdin/stdout" if self.path == STDIO else f"file {self.path}"

    def describe_stream(self, stream: str) -> str:
        # The stream IS the file (`NAME` in a file profile is the file NAME, not `path`).
        path = stream or self.path
        return "stdin/stdout" if path == STDIO else f"file {path}"

    @classmethod
    def default_stream(cls, options: Any) -> str | None:
        path = options.get("path")
        return path if isinstance(path, str) and path else None

    def producer(self, stream: str) -> Producer:
        return JsonlProducer(stream if stream else self.path)

    def consumer(self, spec: ReadSpec) -> Consumer:
        path = spec.stream or self.path
        if path != STDIO and not os.path.exists(path):
            raise NotFoundError(f"file {path} does not exist")
        if path != STDIO and os.path.isdir(path):
            raise UsageError(f"{path} is a directory, not a JSONL file")
        return JsonlConsumer(path, spec, self.settings.warn)


def _lock(fd: int) -> None:
    """Hold the file for one append (flock; none where fcntl is missing)."""
    try:
        import fcntl
    except ImportError:
        return
    with contextlib.suppress(OSError):  # a file system without locks: append unlocked
        fcntl.flock(fd, fcntl.LOCK_EX)


def _unlock(fd: int) -> None:
    try:
        import fcntl
    except ImportError:
        return
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_UN)


class JsonlProducer(Producer):
    def __init__(self, path: str) -> None:
        self.path = path
        self._report = DeliveryReport()
        self._file: IO[bytes] | None = None
        self._target()  # a file that cannot be opened is reported now, before anything is read

    def _target(self) -> IO[bytes]:
        if self._file is None:
            if self.path == STDIO:
                self._file = sys.stdout.buffer
            else:
                try:
                    self._file = open(self.path, "ab")  # noqa: SIM115 - closed in close()
                except OSError as exc:
                    raise BackendUnavailable(f"cannot open {self.path} for appending: {exc.strerror}") from None
        return self._file

    def send(self, messages: Sequence[Message]) -> None:
        target = self._target()
        now = now_ms()
        data = b"".join(encode_envelope(m if m.timestamp is not None else replace(m, timestamp=now)) for m in messages)
        if self.path == STDIO:
            target.write(data)  # a failure is about stdout, and the app says so
            target.flush()
        else:
            self._append(target, data)
        self._report.delivered += len(messages)

    def _append(self, target: IO[bytes], data: bytes) -> None:
        """Append whole lines or nothing: a full disk (or /dev/full, or a file size limit)
        fails the batch, and what of it reached the file is cut off again, so the file
        never ends in half an envelope that would break its next reader. The end to cut
        back to is the file's own size, taken under an exclusive lock that every evrelay
        writer of the file takes: tell() is where this process last wrote, and lines
        another process appended since (bridges sharing a dead-letter file) were cut too."""
        fd = target.fileno()
        _lock(fd)
        try:
            status = os.fstat(fd)
            size = status.st_size if stat.S_ISREG(status.st_mode) else None  # a FIFO, a device: nothing to cut
            try:
                target.write(data)
                target.flush()
            except OSError as exc:
                self._file = None
                # The file itself, not its path (renamed meanwhile?), once its buffer is dropped.
                kept = os.dup(fd)
                with contextlib.suppress(OSError):
                    target.close()  # drops what is still buffered
                try:
                    if size is not None:
                        with contextlib.suppress(OSError):
                            os.ftruncate(kept, size)
                finally:
                    os.close(kept)  # the lock goes with the last descriptor
                raise EvrelayError(
                    f"cannot write to {self.path}: {exc.strerror or exc}; the {len(data)}-byte batch was not appended"
                ) from None
        finally:
            if self._file is not None:
                _unlock(fd)

    def flush(self, timeout: float | None = None) -> DeliveryReport:
        if self._file is not None:
            self._file.flush()
        report, self._report = self._report, DeliveryReport()
        return report

    def close(self) -> None:
        if self._file is not None and self.path != STDIO:
            self._file.close()
        self._file = None


class JsonlConsumer(Consumer):
    def __init__(self, path: str, spec: ReadSpec, warn: Callable[[str], None] = lambda text: None) -> None:
        self.path = path
        self.warn = warn
        self.stream = "stdin" if path == STDIO else path
        self.spec = spec
        self.source = LineReader(path)
        self.follow = spec.follow
        self.start_line, self.start_time, self.last = self._start(spec.start)
        self.stop_line, self.stop_time = self._stop(spec.stop)
        self.started = self.start_time is None
        self.backlog: collections.deque[tuple[int, bytes]] | None = None
        self.bad_line: InputError | None = None
        """A malformed line met after good ones: they are handed out first, this on the next read."""

    def _start(self, position: StreamPosition) -> tuple[int, int | None, int | None]:
        if isinstance(position, Beginning):
            return 1, None, None
        if isinstance(position, Offset):
            return max(position.offset, 1), None, None
        if isinstance(position, AtTime):
            return 1, position.ms, None
        if isinstance(position, Last):
            return 1, None, position.count
        if isinstance(position, End):
            if self.path != STDIO:
                self._skip_to_end()
            return 1, None, None
        raise UsageError(f"--from {position} does not apply to {self.stream}: use beginning, end, a line number or a time")

    def _stop(self, position: StreamPosition | None) -> tuple[int | None, int | None]:
        if position is None or isinstance(position, End):
            return None, None
        if isinstance(position, Offset):
            return position.offset, None
        if isinstance(position, AtTime):
            return None, position.ms
        raise UsageError(f"--to {position} does not apply to {self.stream}: use end, a line number or a time")

    def _skip_to_end(self) -> None:
        size = os.fstat(self.source.fd).st_size
        with open(self.path, "rb") as f:
            self.source.line_no = sum(chunk.count(b"\n") for chunk in iter(lambda: f.read(_CHUNK), b""))
        os.lseek(self.source.fd, size, os.SEEK_SET)

    def _parse(self, line_no: int, line: bytes) -> Message:
        try:
            message = decode_envelope(line)
        except EnvelopeError as exc:
            raise InputError(f"{self.stream} line {line_no}: {exc}") from None
        message.position = Position("file", self.stream, line_no)
        return message

    def read(self, max_messages: int, timeout: float) -> list[Message]:
        # A malformed line stops the read, but what came before it is delivered first
        # (shown, bridged), as `publish` sends the lines before one it cannot read.
        if self.bad_line is not None:
            raise self.bad_line
        out: list[Message] = []
        try:
            if self.last is not None:
                return self._read_last(max_messages, timeout, out)
            return self._read_on(max_messages, timeout, out)
        except InputError as exc:
            if not out:
                raise
            self.bad_line = exc
            return out

    def _read_on(self, max_messages: int, timeout: float, out: list[Message]) -> list[Message]:
        deadline = time.monotonic() + timeout
        while len(out) < max_messages and not self.exhausted:
            truncations = self.source.truncations
            item = self.source.next_line(max(deadline - time.monotonic(), 0.0), self.follow)
            if self.source.truncations != truncations:
                # Line numbers start again with the file: line 1 is its first line now.
                self.warn(f"{self.stream} was truncated; following it from its first line")
                self.start_line = 1
            if item is None:
                if self.source.drained and (not self.follow or self.source.pollable):
                    self.exhausted = True
                elif out or time.monotonic() >= deadline:
                    break
                continue
            line_no, line = item
            if line_no < self.start_line or not line.strip():
                continue
            if self.stop_line is not None and line_no > self.stop_line:
                self.exhausted = True
                break
            message = self._parse(line_no, line)
            if not self.started:
                if message.timestamp is None or message.timestamp < (self.start_time or 0):
                    continue
                self.started = True
            if self.stop_time is not None and message.timestamp is not None and message.timestamp > self.stop_time:
                self.exhausted = True
                break
            out.append(message)
        return out

    def _read_last(self, max_messages: int, timeout: float, out: list[Message]) -> list[Message]:
        """Last N: read to the end keeping N lines, then hand them out (then follow, if asked)."""
        if self.backlog is None:
            keep: collections.deque[tuple[int, bytes]] = collections.deque(maxlen=max(self.last or 0, 0))
            while not self.source.drained:
                item = self.source.next_line(timeout, False)
                if item is not None and item[1].strip():
                    keep.append(item)
            self.backlog = keep
        while self.backlog and len(out) < max_messages:
            out.append(self._parse(*self.backlog.popleft()))
        if not self.backlog:
            self.last = None
            self.start_line = self.source.line_no + 1
            if not self.follow:
                self.exhausted = True
        return out

    def close(self) -> None:
        self.source.close()
