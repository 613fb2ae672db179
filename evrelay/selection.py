"""Selecting and rewriting messages: `--match-key`, `--match-header`, `--filter` and `--map`.

One `Selection` serves `tail`, `bridge`, `replay` and `redrive` (through the Relay and
tail's read loop), whatever the backend. The cheap checks come first: `--match-key GLOB`
and `--match-header NAME=GLOB` are shell globs matched in Python, no JSON involved. The
expressions are jq (the `jq` package from PyPI), compiled once when the command starts,
so a syntax error is a usage error (exit 2) before anything is connected. jq sees the
JSONL envelope of CONTRACT.md §3 with `value` parsed when it is JSON.

A whole batch goes through jq in one call: its envelopes are joined into one JSON text
and the compiled program answers once per message; when one message makes it fail, the
batch goes through again wrapped in `try … catch`, so a runtime error is reported for
that message alone (bridge: the dead-letter address; tail: stderr with its position)
and the others go on.
"""

from __future__ import annotations

import base64
import fnmatch
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from evrelay.envelope import EnvelopeError, Message, envelope_dict, message_from_envelope
from evrelay.errors import UsageError
from evrelay.timestamps import format_ms

JQ_INSTALL_HINT = "pip install 'evrelay[jq]' (or: pip install jq)"


@dataclass(slots=True)
class SelectionResult:
    """What a batch became: the messages to pass on, each with the index of the message
    it came from (a --map may drop or split), and the messages that failed with why."""

    kept: list[Message] = field(default_factory=list)
    origins: list[int] = field(default_factory=list)
    errors: list[tuple[int, str]] = field(default_factory=list)


def _compile_glob(pattern: str) -> re.Pattern[str]:
    return re.compile(fnmatch.translate(pattern), re.DOTALL)


def _text(data: bytes) -> str:
    return data.decode("utf-8", "surrogateescape")


def jq_input(message: Message, fields: frozenset[str] | None = None) -> bytes:
    """The envelope jq sees, as JSON text: CONTRACT §3 fields (only `fields`, when
    given), `value` parsed when it is JSON. A JSON value is spliced in as its original
    bytes: checking that it is JSON is all the work it costs."""
    if fields is None:
        envelope = envelope_dict(message)
        envelope.pop("value", None)
        wants_value = True
    else:
        envelope = {}
        if "key" in fields and message.key is not None:
            _text_field(message.key, "key", envelope)
        if "headers" in fields:
            envelope["headers"] = envelope_dict(Message(b"", None, message.headers))["headers"]
        if fields & _POSITION_FIELDS:
            _position_fields(message, fields, envelope)
        wants_value = "value" in fields
    value = message.value
    if not wants_value:
        return orjson.dumps(envelope)
    if not envelope and value is not None:  # `{"value": …}` alone: the common filter
        try:
            orjson.loads(value)
            return b'{"value":' + value + b"}"
        except orjson.JSONDecodeError:
            pass
    if value is not None:
        try:
            orjson.loads(value)
        except orjson.JSONDecodeError:
            envelope.pop("value_b64", None)
            _text_field(value, "value", envelope)
            return orjson.dumps(envelope)
        envelope.pop("value_b64", None)
        rest = orjson.dumps(envelope)
        return b'{"value":' + value + (b"," + rest[1:] if len(rest) > 2 else b"}")
    envelope["value"] = None
    return orjson.dumps(envelope)


def _position_fields(message: Message, fields: frozenset[str], out: dict[str, Any]) -> None:
    if "timestamp" in fields and message.timestamp is not None:
        out["timestamp"] = format_ms(message.timestamp)
    position = message.position
    if position is None:
        return
    if "backend" in fields:
        out["backend"] = position.backend
    if position.partition is not None:
        for name, item in (("topic", position.stream), ("partition", position.partition), ("offset", position.id)):
            if name in fields:
                out[name] = item
    else:
        for name, item in (("stream", position.stream), ("id", position.id)):
            if name in fields:
                out[name] = item


def _text_field(data: bytes, name: str, out: dict[str, Any]) -> None:
    try:
        out[name] = data.decode("utf-8")
    except UnicodeDecodeError:
        out[f"{name}_b64"] = base64.b64encode(data).decode("ascii")


_POSITION_FIELDS = frozenset({"timestamp", "backend", "topic", "partition", "offset", "stream", "id"})
_ENVELOPE_FIELDS = frozenset({"value", "key", "headers"}) | _POSITION_FIELDS
# Words an expression may use without being able to observe which fields the envelope
# has (so it can be given only the fields it names); anything else (`keys`, `length`,
# `tojson`, `..`, `.[]`, a bare `.`, string interpolation, a function definition) gets
# the whole envelope.
_BLIND_WORDS = frozenset(
    ["select", "not", "and", "or", "if", "then", "elif", "else", "end", "test", "startswith", "endswith", "ltrimstr", "rtrimstr", "ascii_downcase", "ascii_upcase", "tonumber", "true", "false", "null", "as", "try", "catch", "type"]
)
_STRING = re.compile(r'"(?:\\.|[^"\\])*"')
_WORD = re.compile(r"(?<![A-Za-z0-9_$.])([A-Za-z_][A-Za-z0-9_]*)")


def envelope_fields_used(expression: str) -> frozenset[str] | None:
    """The envelope fields a filter can look at, or None when it may see the whole
    envelope. jq spends most of its time parsing its input: handing a filter like
    `.value.total > 100` only `{"value": …}` makes it about a third faster."""
    if "\\(" in expression or "@" in expression or "#" in expression:
        return None
    code = _STRING.sub('""', expression)
    for match in re.finditer(r"\.", code):
        before = code[match.start() - 1] if match.start() else ""
        after = code[match.end()] if match.end() < len(code) else ""
        if before.isdigit() or after.isdigit():
            continue  # a number
        if not (after.isalpha() or after == "_") or before == ".":
            return None  # `.`, `..`, `.[`, `."name"`
    if any(word not in _BLIND_WORDS for word in _WORD.findall(code)):
        return None
    names = set()
    for match in re.finditer(r"\.([A-Za-z_][A-Za-z0-9_]*)", code):
        before = code[: match.start()]
        if before.endswith(("]", ")", "?")):
            continue  # `.value.id`, `.a[0].b`, `(.x).y`: a field inside another value
        word = re.search(r"[$A-Za-z0-9_]+$", before)
        if word is not None and not word.group().startswith("$"):
            continue  # `.value.id` again: what follows a field name is inside it
        names.add(match.group(1))  # a path start, or `$var.name` (the var may be the envelope)
    names |= {name.removesuffix("_b64") for name in names}
    return frozenset(names & _ENVELOPE_FIELDS)


def _compile_jq(expression: str, flag: str) -> Any:
    try:
        import jq
    except ImportError:
        raise UsageError(f"{flag} needs the jq package, which is not installed", hint=JQ_INSTALL_HINT) from None
    try:
        return jq.compile(expression)
    except ValueError as exc:
        lines = [line.strip() for line in str(exc).splitlines()]
        detail = "; ".join(
            line.removeprefix("jq: error: ").rstrip(":") for line in lines if line.startswith("jq: error") and "compile error" not in line
        ) or (lines[0] if lines else "syntax error")
        raise UsageError(f"{flag} {expression!r} is not a valid jq expression: {detail}") from None


class JqProgram:
    """An expression compiled twice: a fast form that answers a whole batch in one call,
    and a `try … catch` form that answers per message, used for a batch only when the
    fast form failed on one of its messages (runtime errors are rare, `try` costs ~30%).
    Both answer exactly once per input, so the answers line up with the batch."""

    def __init__(self, expression: str, flag: str, fast: str, careful: str, fields: frozenset[str] | None = None) -> None:
        _compile_jq(expression, flag)
        self.fields = fields
        self.fast = _compile_jq(fast.replace("EXPR", expression), flag)
        self.careful = _compile_jq(careful.replace("EXPR", expression), flag)

    def answers(self, messages: list[Message]) -> tuple[list[Any], bool]:
        """(one answer per message, whether they came from the careful form)."""
        fields = self.fields
        text = b"\n".join([jq_input(m, fields) for m in messages]).decode("utf-8")
        try:
            return self._check(self.fast.input_text(text).all(), messages), False
        except ValueError:
            return self._check(self.careful.input_text(text).all(), messages), True

    @staticmethod
    def _check(answers: list[Any], messages: list[Message]) -> list[Any]:
        if len(answers) != len(messages):  # an expression that reads further inputs itself, or stops jq
            raise UsageError("a --filter/--map expression must answer for each message: it must not read other inputs (input, inputs) nor stop jq (halt, halt_error)")
        return answers


MAX_MAP_OUTPUTS = 1000
"""The most messages --map may make of one (`repeat(.)` would make them without end)."""

# Every form answers one list per input, or, in the careful form (`try`), the error text
# for an input it failed on. jq builds each list in C before Python sees any of it, so
# each is bounded: a filter answers `[true]` at its first true output and stops (`[]` when
# there is none), a map at most MAX_MAP_OUTPUTS + 1 outputs, the one past the bound only
# to tell that it was passed. Unbounded, `--filter 'repeat(1)'` filled 8 GB in minutes
# without answering a signal (jq does not return to Python while it builds a list).
_FILTER_FAST = "[label $found | EXPR | select(.) | (true, break $found)]"  # ~1 µs a message more than [EXPR]
_FILTER_CAREFUL = f"try {_FILTER_FAST} catch (. | tostring)"
_MAP_FAST = f"[limit({MAX_MAP_OUTPUTS + 1}; EXPR)]"  # ~3 µs a message more than [EXPR], of ~10
_MAP_CAREFUL = f"try {_MAP_FAST} catch (. | tostring)"


class Selection:
    """The compiled selection of one command; `select()` applies it to a batch."""

    def __init__(
        self,
        *,
        filter_expr: str | None = None,
        map_expr: str | None = None,
        match_keys: Sequence[str] = (),
        match_headers: Sequence[str] = (),
    ) -> None:
        self.key_patterns = [_compile_glob(glob) for glob in match_keys]
        self.header_patterns: list[tuple[str, re.Pattern[str]]] = []
        for pair in match_headers:
            name, sep, glob = pair.partition("=")
            if not sep or not name:
                raise UsageError(f"--match-header expects NAME=GLOB, got {pair!r}")
            self.header_patterns.append((name, _compile_glob(glob)))
        self.filter_program = (
            JqProgram(filter_expr, "--filter", _FILTER_FAST, _FILTER_CAREFUL, envelope_fields_used(filter_expr)) if filter_expr else None
        )
        self.map_program = JqProgram(map_expr, "--map", _MAP_FAST, _MAP_CAREFUL) if map_expr else None

    @classmethod
    def from_options(
        cls,
        filter_expr: str | None = None,
        map_expr: str | None = None,
        match_keys: Sequence[str] | None = None,
        match_headers: Sequence[str] | None = None,
    ) -> Selection | None:
        """None when no selection option was given (the fast path stays untouched)."""
        if not (filter_expr or map_expr or match_keys or match_headers):
            return None
        return cls(filter_expr=filter_expr, map_expr=map_expr, match_keys=match_keys or (), match_headers=match_headers or ())

    # --- the cheap checks ----------------------------------------------------------------

    def _matches(self, message: Message) -> bool:
        if self.key_patterns:
            if message.key is None:
                return False
            key = _text(message.key)
            if not any(pattern.match(key) for pattern in self.key_patterns):
                return False
        for name, pattern in self.header_patterns:
            if not any(header == name and pattern.match(_text(value)) for header, value in message.headers):
                return False
        return True

    # --- a batch -------------------------------------------------------------------------

    def select(self, batch: Sequence[Message]) -> SelectionResult:
        result = SelectionResult()
        indices = [i for i, message in enumerate(batch) if self._matches(message)] if (self.key_patterns or self.header_patterns) else list(range(len(batch)))
        if self.filter_program is not None and indices:
            answers, _ = self.filter_program.answers([batch[i] for i in indices])
            survivors = []
            for i, answer in zip(indices, answers, strict=True):
                if answer.__class__ is not list:
                    result.errors.append((i, f"--filter: {answer}"))
                elif answer:  # [true]: an output was neither false nor null
                    survivors.append(i)
            indices = survivors
        if self.map_program is None:
            result.kept = [batch[i] for i in indices]
            result.origins = indices
            return result
        if indices:
            answers, _ = self.map_program.answers([batch[i] for i in indices])
            for i, answer in zip(indices, answers, strict=True):
                if answer.__class__ is not list:
                    result.errors.append((i, f"--map: {answer}"))
                    continue
                if len(answer) > MAX_MAP_OUTPUTS:
                    result.errors.append((i, f"--map: made more than {MAX_MAP_OUTPUTS:,} messages of one (is it endless, like repeat?)"))
                    continue
                try:
                    rewritten = [self._from_map_output(batch[i], output) for output in answer]
                except EnvelopeError as exc:
                    result.errors.append((i, f"--map: the result {exc}"))
                    continue
                result.kept.extend(rewritten)
                result.origins.extend([i] * len(rewritten))
        return result

    @staticmethod
    def _from_map_output(original: Message, output: Any) -> Message:
        """A --map result back into a Message, at the original's position. A value jq left
        as it was keeps its exact original bytes (re-serialising JSON changes its spacing)."""
        if not isinstance(output, dict):
            raise EnvelopeError(f"must be an envelope object (change its fields, e.g. `.value = .value.id`), got {type(output).__name__}")
        keep_value = "value" in output and "value_b64" not in output and _same_value(original.value, output["value"])
        message = message_from_envelope({**output, "value": ""} if keep_value else output)
        if keep_value:
            message.value = original.value
        message.position = original.position
        return message


def _same_value(raw: bytes | None, parsed: Any) -> bool:
    if raw is None:
        return parsed is None
    try:
        return orjson.loads(raw) == parsed
    except orjson.JSONDecodeError:
        return isinstance(parsed, str) and _text(raw) == parsed
