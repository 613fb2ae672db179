"""A bridge's sink producer running in a child process, so a bridge uses two cores.

One interpreter cannot run a bridge at the speed of its slower half: the reading half's
and the writing half's Python work share one GIL (README, Performance). `SubprocessProducer`
is a `Producer` whose real producer lives in a child process: `send()` encodes the window
as plain tuples (marshal), writes it to a pipe and returns at once, while the child
decodes it, sends it, and confirms it (its `flush()`) on the other core as the relay reads
the next window; `flush()` waits for the child's report, whose failures name messages by
their index in what was sent. The relay's rule is unchanged: it acks window k at its
source only after this `flush()` reported k delivered.

The child builds its producer itself (client libraries never cross a fork): it gets the
resolved sink address, the source's location (for a routing template's loop check) and
the --cloudevents mode, and runs `python -m evrelay.subprocess_producer`. It dies with
its parent (PR_SET_PDEATHSIG on Linux, and end of file on its pipe), ignores SIGINT and
SIGTERM (the parent stops the bridge and needs the window in flight confirmed), and a
child that dies on its own stops the bridge with `SinkProcessLost` (exit 1): nothing it
had not confirmed was acked.

Frames both ways: one kind byte, a 4-byte length, the payload. Parent to child: `I`
(the pickled `SinkSpec`), `R` (ready?), `S` (a window), `F` (flush, timeout), `C` (close).
Child to parent: one `A` (answer) for each `R`, `S` and `F`.
"""

from __future__ import annotations

import marshal
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from evrelay.backends.base import DeliveryFailure, DeliveryReport, Message, Position, Producer
from evrelay.errors import EvrelayError, SinkProcessLost

FRAME = struct.Struct("<cI")
PIPE_SIZE = 1 << 20
"""Room in each pipe (Linux F_SETPIPE_SZ): a window of 1,000 small messages fits, so
`send()` returns without waiting for the child to read it."""
EAGER_FLUSH_SECONDS = 5.0
"""How long the child waits for confirmations right after sending a window, before the
parent asks: the relay's own confirm timeout."""
CLOSE_SECONDS = 15.0


def runs_apart(backend: Any, *, transactional: bool, dry_run: bool, in_process: bool) -> bool:
    """Whether a bridge writes to this sink backend from a child process: where its
    producer costs enough CPU to pay for the second process (`Backend.sink_in_own_process`),
    with a second core to run it, and never for a transaction (it holds the source
    consumer and the producer together) or a dry run (nothing is sent)."""
    return (
        getattr(backend, "sink_in_own_process", False)
        and not (transactional or dry_run or in_process)
        and (os.cpu_count() or 1) >= 2
    )


@dataclass(slots=True)
class SinkSpec:
    """What the child needs to open the sink: all plain, picklable data."""

    address: Any
    """The resolved `evrelay.addresses.Address` of the sink."""
    stream: str
    same_place: bool
    """The sink is on the source's system (a routing template's loop guard)."""
    cloudevents: str | None
    timeout: float
    verbose: bool
    provenance: bool = True
    """Add the evrelay-source header to each copy (the child makes the relay's copies)."""


class SubprocessProducer(Producer):
    """The sink's producer in a child process; see the module docstring."""

    def __init__(
        self, spec: SinkSpec, *, label: str, warn: Callable[[str], None], debug: Callable[[str], None] = lambda text: None
    ) -> None:

        self.label = label
        self.warn = warn
        self.debug = debug
        self.copies_for_relay = True
        """The relay hands over its source messages; the child makes the copies."""
        self._sent: list[Message] = []
        """Sent since the last flush that resolved everything: failures name an index here."""
        self._answers_due = 0
        to_child_r, to_child_w = os.pipe()
        from_child_r, from_child_w = os.pipe()
        for fd in (to_child_w, from_child_w):
            _enlarge_pipe(fd)
        env = _child_environment()
        try:
            # Started from the main thread (PR_SET_PDEATHSIG follows the thread that
            # started it) and in a session of its own, so a Ctrl-C at the terminal
            # reaches only the parent, which stops the bridge in order. -P: without it
            # `-m` puts the working directory first on sys.path, and an `evrelay` package
            # there (another version's checkout) would run instead of this one.
            self.process = subprocess.Popen(
                [sys.executable, "-P", "-m", "evrelay.subprocess_producer", str(to_child_r), str(from_child_w), str(os.getpid())],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                pass_fds=(to_child_r, from_child_w),
                start_new_session=True,
                env=env,
            )
        except OSError as exc:  # no such interpreter any more, out of processes or memory
            os.close(to_child_w)
            os.close(from_child_r)
            raise EvrelayError(f"could not start the process writing to {label}: {exc.strerror or exc}; try --in-process") from None
        finally:
            os.close(to_child_r)
            os.close(from_child_w)
        self._to_child = to_child_w
        self._from_child = from_child_r
        self._closed = False
        try:
            self._write(b"I", pickle.dumps(spec, protocol=pickle.HIGHEST_PROTOCOL))
        except BaseException:
            self.close()  # not left waiting for a spec until the bridge exits
            raise
        debug(f"writing to {label} from process {self.process.pid}")

    # --- the Producer interface ------------------------------------------------------------

    def ready(self) -> None:
        self._write(b"R", b"")
        self._answers_due += 1
        self._collect(None)

    def send(self, messages: Sequence[Message]) -> None:
        # Each message's own position (copies_for_relay): the child adds the provenance
        # header and sets `origin` from it, as the relay does for an in-process sink.
        rows = [
            (m.value, m.key, m.headers, m.timestamp, m.fields, None if (p := m.position) is None else (p.backend, p.stream, p.id, p.partition))
            for m in messages
        ]
        self._write(b"S", marshal.dumps(rows))
        self._sent.extend(messages)
        self._answers_due += 1

    def flush(self, timeout: float | None = None) -> DeliveryReport:
        if not self._answers_due:
            self._write(b"F", struct.pack("<d", -1.0 if timeout is None else timeout))
            self._answers_due += 1
        # A little longer than the child's own wait, so its answer usually arrives in this call.
        deadline = None if timeout is None else time.monotonic() + timeout + 1.0
        return self._collect(deadline)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        # Never blocking: a child busy writing an answer does not read, and a full pipe
        # would hold both processes. The end of file after the last frame says the same.
        os.set_blocking(self._to_child, False)
        try:
            self._write(b"C", b"")
        except SinkProcessLost:
            pass
        os.close(self._to_child)
        self._reap(CLOSE_SECONDS)
        os.close(self._from_child)

    def _reap(self, timeout: float) -> None:
        """Wait for the child to exit (killing it after `timeout`); with -v, say what it used."""
        if self.process.returncode is not None:
            return
        deadline = time.monotonic() + timeout
        draining = True
        while True:
            pid, status, usage = os.wait4(self.process.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() > deadline:
                self.process.kill()
                pid, status, usage = os.wait4(self.process.pid, 0)
                break
            # An answer nobody will read (a window in flight when the bridge stopped) may be
            # larger than the pipe: the child blocks writing it and never reads `C` unless
            # it is read away here (before: close() waited all of CLOSE_SECONDS, then killed).
            if draining and select.select([self._from_child], [], [], 0.01)[0]:
                draining = bool(os.read(self._from_child, PIPE_SIZE))
            else:
                time.sleep(0.01)
        self.process.returncode = os.waitstatus_to_exitcode(status)
        self.debug(
            f"process {pid} (writing to {self.label}) used {usage.ru_utime + usage.ru_stime:.2f} s of CPU "
            f"(user {usage.ru_utime:.2f}, system {usage.ru_stime:.2f}); peak RSS {usage.ru_maxrss / 1024:.0f} MB"
        )

    # --- the pipe ----------------------------------------------------------------------

    def _write(self, kind: bytes, payload: bytes) -> None:
        data = FRAME.pack(kind, len(payload)) + payload
        view = memoryview(data)
        try:
            while view:
                view = view[os.write(self._to_child, view):]
        except BlockingIOError:
            return  # close()'s `C` into a full pipe: the end of file follows
        except (BrokenPipeError, OSError):
            raise self._lost() from None

    def _collect(self, deadline: float | None) -> DeliveryReport:
        """Read the answers due (until `deadline`); what is not answered yet is pending."""
        report = DeliveryReport()
        while self._answers_due:
            answer = self._read_answer(deadline)
            if answer is None:
                report.pending = len(self._sent) - report.delivered - len(report.failures)
                return report
            self._answers_due -= 1
            delivered, failures, pending, warnings, error = answer
            for text in warnings:
                self.warn(text)
            if error is not None:
                self._sent.clear()
                raise _rebuild_error(error)
            report.delivered += delivered
            report.failures += [DeliveryFailure(self._sent[i], reason, permanent, unfit) for i, reason, permanent, unfit in failures]
            report.pending = pending
        if not report.pending:
            self._sent.clear()
        return report

    def _read_answer(self, deadline: float | None) -> tuple | None:
        fd = self._from_child
        while True:
            wait = 1.0 if deadline is None else min(1.0, deadline - time.monotonic())
            if wait < 0:
                return None
            if select.select([fd], [], [], wait)[0]:
                break
            if self.process.poll() is not None:
                raise self._lost()
        _kind, length = FRAME.unpack(self._read_exactly(FRAME.size))
        return pickle.loads(self._read_exactly(length))

    def _read_exactly(self, size: int) -> bytes:
        chunks = []
        while size:
            chunk = os.read(self._from_child, min(size, PIPE_SIZE))
            if not chunk:
                raise self._lost()
            chunks.append(chunk)
            size -= len(chunk)
        return b"".join(chunks)

    def _lost(self) -> SinkProcessLost:
        try:
            code = self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            code = self.process.wait()
        if code < 0:
            try:
                how = f"was killed by {signal.Signals(-code).name}"
            except ValueError:
                how = f"was killed by signal {-code}"
        else:
            how = f"exited with code {code}"
        return SinkProcessLost(
            f"the process writing to {self.label} (pid {self.process.pid}) {how}; nothing it had not confirmed was "
            "acked at the source, so it is read again when the bridge runs again"
        )


def _child_environment() -> dict[str, str]:
    """The parent's environment, with this evrelay's directory put first on PYTHONPATH only
    where the child would not find it by itself (the parent imported it from its own
    first sys.path entry, a checkout run with `python -m`, which the child's `-P` drops).
    A site-packages directory is never put there: on PYTHONPATH it would come before the
    standard library, and an old backport in it (`dataclasses`, `pathlib` from PyPI)
    would shadow the real module in the child."""
    package_root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    found_by_child = sys.path if sys.flags.safe_path else sys.path[1:]
    if package_root in {os.path.abspath(entry) for entry in found_by_child if entry}:
        return dict(os.environ)
    return dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))


def _enlarge_pipe(fd: int) -> None:
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), PIPE_SIZE)
    except (ImportError, OSError):
        pass  # not Linux, or over /proc/sys/fs/pipe-max-size: a smaller pipe only blocks sooner


def _error_row(exc: BaseException) -> tuple:
    """An error as plain data: EvrelayError subclasses are rebuilt as themselves."""
    if isinstance(exc, EvrelayError):
        attributes = {k: v for k, v in vars(exc).items() if k not in ("message", "hint") and isinstance(v, (int, float, str, bool, type(None)))}
        return (type(exc).__module__, type(exc).__qualname__, exc.message, exc.hint, attributes)
    import traceback

    last = traceback.format_exception_only(type(exc), exc)[-1].strip()
    return ("evrelay.errors", "EvrelayError", f"the process writing to the sink failed: {last}", None, {})


def _rebuild_error(row: tuple) -> EvrelayError:
    import importlib

    module, qualname, message, hint, attributes = row
    cls = getattr(importlib.import_module(module), qualname, EvrelayError)
    if not (isinstance(cls, type) and issubclass(cls, EvrelayError)):
        cls = EvrelayError
    error = cls.__new__(cls)
    Exception.__init__(error, message)
    error.message, error.hint = message, hint
    for name, value in attributes.items():
        setattr(error, name, value)
    return error


# --- the child ------------------------------------------------------------------------------


def _die_with(parent_pid: int) -> None:
    """SIGKILL this process when its parent dies (Linux), even by kill -9; end of file on
    the pipe covers the rest."""
    if sys.platform.startswith("linux"):
        try:
            import ctypes

            PR_SET_PDEATHSIG = 1
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os._exit(1)


class SinkChild:
    """The child's side: opens the sink from a `SinkSpec` and answers the parent's frames."""

    def __init__(self, read_fd: int, write_fd: int) -> None:
        self.reader = os.fdopen(read_fd, "rb", buffering=PIPE_SIZE)
        self.write_fd = write_fd
        self.producer: Producer | None = None
        self.open_error: BaseException | None = None
        self.send_error: BaseException | None = None
        self.sent_index: dict[int, int] = {}
        self.sent: list[Message] = []
        self.warnings: list[str] = []
        self.provenance = True
        self.with_origins = False

    def run(self) -> None:
        import contextlib

        with contextlib.ExitStack() as stack:
            while True:
                header = self.reader.read(FRAME.size)
                if len(header) < FRAME.size:
                    return  # the parent is gone or closed the pipe
                kind, length = FRAME.unpack(header)
                payload = self.reader.read(length) if length else b""
                if kind == b"I":
                    self._open(pickle.loads(payload), stack)
                elif kind == b"R":
                    self._answer(self._ready())
                elif kind == b"S":
                    self._send(marshal.loads(payload))
                    self._answer(self._flush(EAGER_FLUSH_SECONDS))
                elif kind == b"F":
                    (timeout,) = struct.unpack("<d", payload)
                    self._answer(self._flush(None if timeout < 0 else timeout))
                elif kind == b"C":
                    return

    def _open(self, spec: SinkSpec, stack: Any) -> None:
        from evrelay.addresses import open_backend
        from evrelay.backends.base import BackendSettings
        from evrelay.routing import is_template, open_sink
        from evrelay.transforms import message_transform, with_transform

        self.provenance = spec.provenance
        self.with_origins = is_template(spec.stream)
        try:
            settings = BackendSettings(timeout=spec.timeout, verbose=spec.verbose, warn=self.warnings.append, origin=spec.address.where)
            backend = stack.enter_context(open_backend(spec.address, settings))
            producer = stack.enter_context(open_sink(backend, spec.stream, same_place=spec.same_place))
            self.producer = with_transform(producer, message_transform(spec.cloudevents))
        except Exception as exc:  # said at ready(), where the in-process producer says it
            self.open_error = exc

    def _ready(self) -> tuple:
        if self.open_error is not None:
            return (0, [], 0, self._take_warnings(), _error_row(self.open_error))
        try:
            self.producer.ready()  # type: ignore[union-attr]
        except Exception as exc:
            return (0, [], 0, self._take_warnings(), _error_row(exc))
        return (0, [], 0, self._take_warnings(), None)

    def _send(self, rows: list[tuple]) -> None:
        messages = self._copies(rows)
        base = len(self.sent)
        self.sent += messages
        index = self.sent_index
        for offset, message in enumerate(messages, base):
            index[id(message)] = offset
        if self.open_error is not None or self.send_error is not None:
            return
        try:
            self.producer.send(messages)  # type: ignore[union-attr]
        except Exception as exc:  # said at the flush, where the relay waits for this window
            self.send_error = exc

    def _flush(self, timeout: float | None) -> tuple:
        error = self.open_error or self.send_error
        if error is None:
            try:
                report = self.producer.flush(timeout)  # type: ignore[union-attr]
            except Exception as exc:
                error = exc
        if error is not None:
            self.send_error = None
            self.sent.clear()
            self.sent_index.clear()
            return (0, [], 0, self._take_warnings(), _error_row(error))
        index = self.sent_index
        failures = [(index[id(f.message)], f.reason, f.permanent, f.unfit) for f in report.failures]
        if not report.pending:
            self.sent.clear()
            index.clear()
        return (report.delivered, failures, report.pending, self._take_warnings(), None)

    def _copies(self, rows: list[tuple]) -> list[Message]:
        """The copies the relay makes for an in-process sink (Relay._with_provenance_headers,
        a test holds the two together), made in one step from the rows: the provenance
        header replaces an earlier hop's; `origin` only where a routing template reads it."""
        if not self.provenance:
            return [
                Message(value, key, headers, timestamp, None, None, fields, Position(*where) if where and self.with_origins else None)
                for value, key, headers, timestamp, fields, where in rows
            ]
        from evrelay.relay import PROVENANCE_HEADER as name

        prefixes: dict[tuple, str] = {}
        with_origins = self.with_origins
        out = []
        append = out.append
        for value, key, headers, timestamp, fields, where in rows:
            if where is None:
                append(Message(value, key, headers, timestamp, None, None, fields, None))
                continue
            backend, stream, position_id, partition = where
            prefix = prefixes.get((backend, stream, partition))
            if prefix is None:
                prefix = prefixes[(backend, stream, partition)] = (
                    f"{backend}/{stream}/{partition}/" if partition is not None else f"{backend}/{stream}/"
                )
            header = (name, f"{prefix}{position_id}".encode())
            append(Message(
                value,
                key,
                [*(h for h in headers if h[0] != name), header] if headers else [header],
                timestamp,
                None,
                None,
                fields,
                Position(*where) if with_origins else None,
            ))
        return out

    def _take_warnings(self) -> list[str]:
        taken, self.warnings[:] = list(self.warnings), []
        return taken

    def _answer(self, answer: tuple) -> None:
        payload = pickle.dumps(answer, protocol=pickle.HIGHEST_PROTOCOL)
        data = memoryview(FRAME.pack(b"A", len(payload)) + payload)
        while data:
            data = data[os.write(self.write_fd, data):]


def main(argv: list[str]) -> None:
    import gc

    read_fd, write_fd, parent_pid = (int(arg) for arg in argv)
    _die_with(parent_pid)
    gc.set_threshold(50_000, 20, 100)  # as the CLI does (evrelay/cli/__init__.py): no cycles in messages
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        SinkChild(read_fd, write_fd).run()
    except BrokenPipeError:
        pass  # the parent went away mid-answer
    os._exit(0)  # no interpreter teardown: the producer was closed, nothing is left to flush


if __name__ == "__main__":
    main(sys.argv[1:])
