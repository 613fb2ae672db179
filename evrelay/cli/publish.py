"""`evrelay publish ADDRESS [VALUE...]`: send values, or stdin, and confirm delivery."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from evrelay.cli.common import (
    AddressArgument,
    ConfigOption,
    HeaderOption,
    KeyOption,
    ProfileOption,
    QuietOption,
    Session,
    TimeoutOption,
    VerboseOption,
    parse_duration,
    parse_headers,
)
from evrelay.errors import DeliveryFailed, InputError, Interrupted, UsageError

if TYPE_CHECKING:
    from evrelay.envelope import Message

INPUT_MODES = ("lines", "json", "raw")
BATCH_SIZE = 2000


STALLED = None
"""Yielded by `_messages` when stdin has nothing new for a moment: send what is queued."""
STALL_SECONDS = 0.05


def _messages(
    values: list[str] | None,
    mode: str,
    key: bytes | None,
    headers: list[tuple[str, bytes]],
    skipped: list[str],
    skip_invalid: bool,
) -> Iterator[Message | None]:
    """Messages from arguments or stdin, and STALLED whenever stdin pauses;
    InputError naming the line of a bad one."""
    from evrelay.envelope import EnvelopeError, Message, decode_envelope
    from evrelay.lines import STDIO, LineReader

    def build(number: int, data: bytes, where: str) -> Message | None:
        if mode == "json":
            try:
                message = decode_envelope(data)
            except EnvelopeError as exc:
                if skip_invalid:
                    skipped.append(f"{where} {number}: {exc}")
                    return None
                raise InputError(f"{where} {number}: {exc}") from None
            message.position = None
            if key is not None:
                message.key = key
            if headers:
                message.headers = message.headers + headers
            return message
        return Message(data, key, list(headers))

    if values:
        for number, value in enumerate(values, 1):
            message = build(number, os.fsencode(value), "argument")
            if message is not None:
                yield message
        return
    if mode == "raw":
        yield Message(sys.stdin.buffer.read(), key, list(headers))
        return
    reader = LineReader(STDIO)
    while not reader.drained:
        item = reader.next_line(STALL_SECONDS, follow=False)
        if item is None:
            yield STALLED
            continue
        number, line = item
        if not line or (mode == "json" and not line.strip()):
            continue
        message = build(number, line, "stdin line")
        if message is not None:
            yield message


def publish(
    address: AddressArgument,
    values: Annotated[Optional[list[str]], typer.Argument(metavar="VALUE", help="Values to send; without them, stdin is read.", show_default=False)] = None,
    key: KeyOption = None,
    header: HeaderOption = None,
    input_mode: Annotated[str, typer.Option("--input", metavar="MODE", help="stdin as lines (one message per line), json (envelopes) or raw (one message).")] = "lines",
    skip_invalid: Annotated[bool, typer.Option("--skip-invalid", help="With --input json: report and skip bad lines instead of stopping.")] = False,
    timeout: TimeoutOption = None,
    config: ConfigOption = None,
    profile: ProfileOption = None,
    verbose: VerboseOption = False,
    quiet: QuietOption = False,
) -> None:
    """Publish VALUEs, or stdin one message per line, and wait until the backend confirms them.

    \b
    Examples:
      evrelay publish demo hello world
      evrelay publish kafka:orders -k order-1 -H source=ci '{"id": 1}'
      cat events.jsonl | evrelay publish redis:orders --input json
    """
    if input_mode not in INPUT_MODES:
        raise UsageError(f"--input must be one of {', '.join(INPUT_MODES)}, not {input_mode!r}")
    session = Session(config=config, profile=profile, verbose=verbose, quiet=quiet, timeout=parse_duration(timeout, "--timeout"))
    from evrelay.backends.base import Capability

    target = session.address(address)
    key_bytes = os.fsencode(key) if key is not None else None
    headers = parse_headers(header)
    if not values and sys.stdin.isatty() and not quiet:
        session.info("evrelay: reading messages from the terminal, one per line; end with Ctrl-D")
    skipped: list[str] = []
    started = time.perf_counter()
    with session.backend(target) as backend:
        backend.require(Capability.PUBLISH, command="publish")
        stream = target.require_stream(backend.stream_noun)
        with backend.producer(stream) as producer:
            queued = 0
            input_error: InputError | None = None
            interrupted = False
            batch: list[Message] = []
            try:
                for message in _messages(values, input_mode, key_bytes, headers, skipped, skip_invalid):
                    if message is not STALLED:
                        batch.append(message)
                    if batch and (message is STALLED or len(batch) >= BATCH_SIZE):
                        producer.send(batch)
                        queued += len(batch)
                        batch = []
            except InputError as exc:
                input_error = exc
            except KeyboardInterrupt:
                interrupted = True
            if batch:
                producer.send(batch)
                queued += len(batch)
            report = producer.flush(session.timeout)
    elapsed = time.perf_counter() - started
    for line in skipped:
        session.warn(f"skipped {line}")
    delivered = report.delivered
    where = f"{target.display} [{backend.describe()}]"
    if report.pending:
        from evrelay.errors import ProducerTimeout

        raise ProducerTimeout(
            f"{report.pending} of {queued} message(s) to {where} were not confirmed in time; "
            f"{delivered} confirmed",
            undelivered=report.pending,
            hint="is the backend reachable? raise --timeout for slow links",
        )
    if report.failures:
        first = report.failures[0]
        raise DeliveryFailed(
            f"{len(report.failures)} of {queued} message(s) to {where} were not delivered "
            f"(first failure: {first.reason}); {delivered} delivered",
            failed=len(report.failures),
            delivered=delivered,
        )
    if input_error is not None:
        raise InputError(
            f"{input_error.message}; the {delivered} message(s) before it were published to {target.display}, "
            "nothing from that line on was sent",
            hint="--skip-invalid reports and skips bad lines instead" if input_mode == "json" else None,
        )
    if interrupted:
        raise Interrupted(f"interrupted: {delivered} message(s) were published to {target.display} before stopping")
    note = f", skipped {len(skipped)} invalid line(s)" if skipped else ""
    session.info(f"published {delivered} message(s) to {where} in {_seconds(elapsed)}{note}")


def _seconds(elapsed: float) -> str:
    from evrelay.timestamps import format_duration

    return format_duration(elapsed)
