"""Writing messages to stdout: `-o json`, `-o raw`, `-o pretty`, `--format TEMPLATE`.

Writers take whole batches and flush after each one, so a following reader shows messages
as they arrive and a group reader can ack exactly what has reached stdout. Data goes to
stdout only; everything else (summaries, warnings, errors) goes to stderr through
`evrelay.cli.common.Session`.
"""

from __future__ import annotations

import errno
import os
from collections.abc import Sequence
from typing import IO, Any

import orjson

from evrelay.envelope import Message, Position, encode_envelope
from evrelay.errors import EvrelayError, UsageError
from evrelay.templates import TemplateError, template_roots
from evrelay.timestamps import format_ms

OUTPUT_MODES = ("pretty", "json", "raw", "kcat", "keyed")
TEMPLATE_FIELDS = (
    "value",
    "key",
    "headers",
    "timestamp",
    "ts_ms",
    "backend",
    "topic",
    "stream",
    "partition",
    "offset",
    "id",
    "position",
    "fields",
)


class OutputClosed(BrokenPipeError):
    """The reader of stdout went away (`| head`): only the first `written` messages of the
    batch reached it in full (a message sitting in the pipe's buffer counts as printed)."""

    def __init__(self, written: int) -> None:
        super().__init__(errno.EPIPE, "the reader of stdout went away")
        self.written = written


def write_failure(exc: OSError) -> EvrelayError:
    """stdout cannot take data (a full disk, /dev/full, a closed descriptor): exit 1."""
    return EvrelayError(f"cannot write to stdout: {exc.strerror or exc}")


class TextOut:
    """A text view of a binary stream for rich's Console, which writes str: the bytes go
    to the stream the caller was given (closing this never closes that stream)."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out

    def write(self, text: str) -> int:
        self.out.write(text.encode("utf-8", "surrogateescape"))
        return len(text)

    def flush(self) -> None:
        self.out.flush()

    def isatty(self) -> bool:
        return bool(getattr(self.out, "isatty", lambda: False)())


class MessageWriter:
    """Writes messages to the binary stream it is given (the session's stdout).
    Subclasses give `render_each` (the bytes of each message) or `render` (a batch)."""

    values_only = False
    """True when the writer uses nothing but each message's value: a reader may then hand
    it the values alone (`ReadSpec.values_only`), as bytes, None for a tombstone."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out

    def render(self, messages: Sequence[Message]) -> bytes:
        return b"".join(self.render_each(messages))

    def render_each(self, messages: Sequence[Message]) -> list[bytes]:
        """The output of each message, in order."""
        return [self.render([m]) for m in messages]

    def write(self, messages: Sequence[Message]) -> None:
        """Write a batch straight to the descriptor, counting whole messages: raises
        OutputClosed (how many were written in full) when the reader has gone, so a group
        reader acks exactly what reached it."""
        chunks = self.render_each(messages)
        data = b"".join(chunks)
        try:
            self.out.flush()
            fd = self.out.fileno()
        except (AttributeError, OSError, ValueError):
            fd = None
        if fd is None:
            self.out.write(data)
            self.out.flush()
            return
        view = memoryview(data)
        sent = 0
        try:
            while sent < len(data):
                sent += os.write(fd, view[sent:])
        except BrokenPipeError:
            written = 0
            end = 0
            for chunk in chunks:
                end += len(chunk)
                if end > sent:
                    break
                written += 1
            raise OutputClosed(written) from None
        except OSError as exc:
            if exc.errno == errno.EPIPE:
                raise OutputClosed(0) from None
            raise write_failure(exc) from None

    def reader_gone(self) -> bool:
        """True when stdout is a pipe whose reader has exited (noticed without writing, so
        a follower waiting for new messages stops as soon as `| head` is done)."""
        import select

        try:
            poller = select.poll()
            poller.register(self.out.fileno(), 0)
            return any(event & (select.POLLERR | select.POLLHUP) for _, event in poller.poll(0))
        except (AttributeError, OSError, ValueError):
            return False


class JsonWriter(MessageWriter):
    def render_each(self, messages: Sequence[Message]) -> list[bytes]:
        return [encode_envelope(m) for m in messages]

    def write(self, messages: Sequence[Message]) -> None:
        # Each line goes into the buffered stream as soon as it is encoded, so the working
        # set stays in cache: encoding a whole batch and joining it first took twice as
        # long (3.2 vs 1.4 us per envelope of a stream entry).
        self.out.writelines(map(encode_envelope, messages))
        self.out.flush()


class RawWriter(MessageWriter):
    values_only = True

    def render_each(self, messages: Sequence[Message] | Sequence[bytes | None]) -> list[bytes]:
        if messages and not isinstance(messages[0], Message):  # bare values (ReadSpec.values_only)
            return [(value or b"") + b"\n" for value in messages]  # type: ignore[operator]
        return [(m.value or b"") + b"\n" for m in messages]  # type: ignore[union-attr]


def _text(data: bytes | None) -> str:
    # surrogateescape keeps undecodable bytes, so the template output is byte-exact.
    return "" if data is None else data.decode("utf-8", "surrogateescape")


class HeaderView:
    """`{headers}` in a template: JSON pairs; `{headers[name]}`: that header's last value."""

    def __init__(self, headers: list[tuple[str, bytes]]) -> None:
        self.headers = headers

    def __getitem__(self, name: str) -> str:
        for header, value in reversed(self.headers):
            if header == name:
                return _text(value)
        return ""

    def __format__(self, spec: str) -> str:
        return format(str(self), spec)

    def __str__(self) -> str:
        return orjson.dumps([[n, _text(v).encode("utf-8", "surrogateescape").decode("utf-8", "replace")] for n, v in self.headers]).decode()


class FieldView(HeaderView):
    """`{fields}` in a template: a field-value entry's raw fields as JSON pairs;
    `{fields[name]}`: that field's last value (empty when there is none)."""

    def __init__(self, fields: list[tuple[bytes, bytes]] | None) -> None:
        super().__init__([(name.decode("utf-8", "replace"), value) for name, value in fields or ()])


class Number:
    """A numeric template field (`{offset:08d}`): formats as its number, or as nothing
    when the message has none (a stream entry has no offset)."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value if isinstance(value, int) else None

    def __format__(self, spec: str) -> str:
        return "" if self.value is None else format(self.value, spec)

    def __str__(self) -> str:
        return "" if self.value is None else str(self.value)


def template_fields(message: Message) -> dict[str, Any]:
    position = message.position
    # A partitioned log fills {topic}/{partition}/{offset}; a stream leaves them empty.
    partitioned = position is not None and position.partition is not None
    return {
        "value": _text(message.value),
        "key": _text(message.key),
        "headers": HeaderView(message.headers),
        "fields": FieldView(message.fields),
        "timestamp": format_ms(message.timestamp) if message.timestamp is not None else "",
        "ts_ms": Number(message.timestamp),
        "backend": position.backend if position else "",
        "topic": position.stream if position and partitioned else "",
        "stream": position.stream if position else "",
        "partition": Number(position.partition if position and partitioned else None),
        "offset": Number(position.id if position and partitioned else None),
        "id": position.id if position else "",
        "position": str(position) if position else "",
    }


def _unescape(template: str) -> str:
    return template.replace("\\\\", "\0").replace("\\n", "\n").replace("\\t", "\t").replace("\0", "\\")


class TemplateWriter(MessageWriter):
    """`--format '{partition}:{offset} {key} {value}'` (Python format syntax, one line each)."""

    def __init__(self, template: str, out: IO[bytes]) -> None:
        super().__init__(out)
        self.template = _unescape(template)
        try:
            template_roots(self.template)
        except TemplateError as exc:
            raise UsageError(f"--format: {exc}") from None
        probe = Message(b"v", b"k", [("h", b"1")], 0, Position("example", "t", 0, 0), fields=[(b"f", b"1")])
        try:
            self.template.format_map(template_fields(probe))
        except KeyError as exc:
            raise UsageError(
                f"--format: unknown field {{{exc.args[0]}}}; fields: {', '.join('{' + f + '}' for f in TEMPLATE_FIELDS)}"
            ) from None
        except (ValueError, IndexError, AttributeError, TypeError) as exc:
            raise UsageError(f"--format: bad template {template!r}: {exc}") from None

    def render_each(self, messages: Sequence[Message]) -> list[bytes]:
        try:
            return [(self.template.format_map(template_fields(m)) + "\n").encode("utf-8", "surrogateescape") for m in messages]
        except (KeyError, ValueError, IndexError, AttributeError, TypeError) as exc:  # `{id:08d}` of a stream ID
            raise UsageError(f"--format: {self.template!r} does not fit this backend's messages: {exc}") from None


class PrettyWriter(MessageWriter):
    """For people at a terminal: a dim line of coordinates, a one-line summary of a
    recognised CloudEvent or taskiq task, then the value: JSON indented and highlighted,
    with JSON held in its string members decoded too."""

    def __init__(self, out: IO[bytes], color: bool | None = None) -> None:
        super().__init__(out)
        import io

        from rich.console import Console

        tty = bool(getattr(out, "isatty", lambda: False)()) if color is None else color
        # Rendered into a buffer, then written like every other mode, so a closed pipe
        # ends it the same way (whole messages counted, no error).
        self.buffer = io.StringIO()
        self.console = Console(
            file=self.buffer, force_terminal=tty, color_system="auto" if tty else None, highlight=False,
            soft_wrap=True, width=_terminal_width(out),
        )

    def render_each(self, messages: Sequence[Message]) -> list[bytes]:
        return [self._render_one(m) for m in messages]

    def _render_one(self, message: Message) -> bytes:
        from rich.json import JSON
        from rich.text import Text

        meta = Text()
        position = message.position
        if position is not None:
            meta.append(f"{position.stream.translate(ESCAPED_IN_LINE)} ", style="bold cyan")
            meta.append(str(position).translate(ESCAPED_IN_LINE), style="cyan")
        if message.timestamp is not None:
            meta.append(f"  {format_ms(message.timestamp)}", style="dim")
        if message.key is not None:
            meta.append("  key=", style="dim")
            meta.append(_shown(message.key, ESCAPED_IN_LINE), style="yellow")
        for name, value in message.headers:
            meta.append(f"  {name.translate(ESCAPED_IN_LINE)}=", style="dim")
            meta.append(_shown(value, ESCAPED_IN_LINE), style="magenta")
        self.console.print(meta)
        summary = payload_summary(message)
        if summary is not None:
            self.console.print(Text(summary.translate(ESCAPED_CONTROLS), style="bold green"))
        body = _shown(message.value) if message.value is not None else "(null)"
        parsed = _json_document(body)
        if parsed is not None:
            self.console.print(JSON.from_data(_decode_nested(parsed)))
        else:
            self.console.print(Text(body))
        text = self.buffer.getvalue()
        self.buffer.seek(0)
        self.buffer.truncate()
        return text.encode("utf-8", "surrogateescape")


def _terminal_width(out: IO[bytes]) -> int | None:
    try:
        return os.get_terminal_size(out.fileno()).columns
    except (OSError, ValueError, AttributeError):
        return None


def _json_document(text: str) -> Any:
    """The parsed value when the text is a JSON object or array, else None."""
    if text.lstrip()[:1] not in ("{", "["):
        return None
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        return None


def _decode_nested(value: Any) -> Any:
    """JSON held in string members (`"cloud_event": "{...}"`, taskiq's `data`) decoded, for reading."""
    if isinstance(value, dict):
        return {name: _decode_nested(member) for name, member in value.items()}
    if isinstance(value, list):
        return [_decode_nested(member) for member in value]
    if isinstance(value, str):
        inner = _json_document(value)
        if inner is not None:
            return _decode_nested(inner)
    return value


def payload_summary(message: Message) -> str | None:
    """One line about a recognised payload: a CloudEvent (type, source, id, subject, time)
    or a taskiq task (name, labels, args, kwargs)."""
    from evrelay import cloudevents

    summary = cloudevents.summary(message)
    if summary is not None:
        return summary
    if message.value is None:
        return None
    task = _json_document(_shown(message.value))
    if isinstance(task, dict) and isinstance(task.get("task_name"), str) and "task_id" in task:
        parts = [f"taskiq task {task['task_name']}"]
        for name in ("labels", "args", "kwargs"):
            if task.get(name):
                parts.append(f"{name}={orjson.dumps(task[name]).decode()}")
        return " ".join(parts)
    return None


ESCAPED_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0)) if c not in (0x09, 0x0A)}
"""Control characters a message must not send to a terminal (clear it, retitle it, forge lines)."""
ESCAPED_IN_LINE = {**ESCAPED_CONTROLS, 0x09: "\\x09", 0x0A: "\\x0a"}
"""The same for the one line of coordinates, key and headers: a newline or tab there
would forge a line of its own (a value may span lines; it is shown below that line)."""


def _shown(data: bytes, table: dict[int, str] = ESCAPED_CONTROLS) -> str:
    try:
        return data.decode("utf-8").translate(table)
    except UnicodeDecodeError:
        return repr(data)[2:-1]


def make_writer(
    mode: str | None,
    template: str | None,
    *,
    out: IO[bytes],
    stdout_is_tty: bool,
    color: bool | None = None,
    key_delimiter: bytes = b":",
) -> MessageWriter:
    """The writer for `-o MODE` / `--format` onto `out`; the default is pretty on a
    terminal, else json. `kcat` and `keyed` are kcat's -J and -K line formats (evrelay/kcat.py)."""
    if template is not None:
        if mode is not None:
            raise UsageError("give either -o/--output or --format, not both")
        return TemplateWriter(template, out)
    if mode is None:
        mode = "pretty" if stdout_is_tty else "json"
    if mode == "json":
        return JsonWriter(out)
    if mode == "raw":
        return RawWriter(out)
    if mode == "pretty":
        return PrettyWriter(out, color)
    if mode in ("kcat", "keyed"):
        from evrelay.kcat import KcatJsonWriter, KeyedWriter

        return KcatJsonWriter(out) if mode == "kcat" else KeyedWriter(key_delimiter, out)
    raise UsageError(f"-o/--output must be one of {', '.join(OUTPUT_MODES)}, not {mode!r}")


# --- records (inspection commands) -----------------------------------------------------

RECORD_MODES = ("table", "json")


def record_mode(mode: str | None, *, stdout_is_tty: bool) -> str:
    """`-o table|json` for inspection output; default: a table on a terminal, else JSON."""
    if mode is None:
        return "table" if stdout_is_tty else "json"
    if mode not in RECORD_MODES:
        raise UsageError(f"-o/--output must be one of {', '.join(RECORD_MODES)} here, not {mode!r}")
    return mode


def write_records(
    rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]], mode: str, *, out: IO[bytes], title: str | None = None
) -> None:
    """Rows as JSON lines, or as a table with the given (key, heading) columns, onto `out`."""
    if mode == "json":
        out.write(b"".join(orjson.dumps(row, option=orjson.OPT_APPEND_NEWLINE) for row in rows))
        out.flush()
        return
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title, title_justify="left", box=None, header_style="bold", pad_edge=False)
    for _, heading in columns:
        table.add_column(heading)
    for row in rows:
        table.add_row(*("" if row.get(key) is None else str(row.get(key)) for key, _ in columns))
    Console(file=TextOut(out), highlight=False, soft_wrap=True).print(table)
    out.flush()


def write_record(record: dict[str, Any], *, out: IO[bytes]) -> None:
    """One JSON object on one line (a document too nested for a single table)."""
    out.write(orjson.dumps(record, option=orjson.OPT_APPEND_NEWLINE))
    out.flush()
