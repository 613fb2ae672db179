"""What `evrelay publish` does, without the CLI framework: `publish_messages` sends the
values given, or stdin, and waits until the backend confirms them. Called by the typer
command (evrelay/cli/publish.py, which declares the options) and by the fast path of a
plain `publish ADDRESS` (evrelay/cli/fast_path.py), which imports no typer.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING

from evrelay.errors import DeliveryFailed, EvrelayError, InputError, Interrupted, UsageError

if TYPE_CHECKING:
    from evrelay.cli.session import Session
    from evrelay.envelope import Message

INPUT_MODES = ("lines", "json", "raw", "kcat", "keyed")
LINE_DECODED_MODES = ("json", "kcat", "keyed")
"""Input modes with one message per line, decoded (a bad line stops or is skipped)."""
TERM_FLUSH_SECONDS = 10.0
"""After SIGTERM, how long publish waits for what it accepted to be confirmed (unless --timeout)."""
INTERRUPT_FLUSH_SECONDS = 1.0
"""After Ctrl-C, how long publish waits for confirmations of what it had read: Ctrl-C asks to
stop now, so a backend that is not there yet is not waited for (the connect timeout)."""


class _TermSignal(Exception):
    """Raised in the main thread by the SIGTERM handler: stop reading input."""


def _on_sigterm(_signum: int, _frame: object) -> None:
    import signal

    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # one is enough; the flush is bounded
    raise _TermSignal


BATCH_SIZE = 2000
STALL_SECONDS = 0.05
"""How long stdin may pause before what was read is sent (so slow pipes are not held back)."""


def _value_batches(values: list[str] | None, mode: str) -> Iterator[list[bytes]]:
    """Plain values from the arguments, or stdin one per line (empty lines skipped) or
    whole (raw), in batches sent as soon as they are read."""
    from evrelay.lines import STDIO, LineReader

    if values:
        yield [os.fsencode(value) for value in values]
        return
    if mode == "raw":
        yield [sys.stdin.buffer.read()]
        return
    reader = LineReader(STDIO)
    while not reader.drained:
        _, lines = reader.take_lines(BATCH_SIZE, STALL_SECONDS, follow=False)
        if lines:
            yield list(filter(None, lines))  # empty lines are skipped


def _envelope_batches(
    values: list[str] | None,
    key: bytes | None,
    headers: list[tuple[str, bytes]],
    skipped: list[str],
    skip_invalid: bool,
    decode=None,
) -> Iterator[list[Message]]:
    """Messages from JSON envelopes (arguments or stdin lines), or another line format
    (`decode`). A bad line ends the iteration with InputError naming it, after the
    batch of good lines before it."""
    from evrelay.envelope import EnvelopeError, decode_envelope
    from evrelay.lines import STDIO, LineReader

    decode = decode or decode_envelope

    def convert(first: int, lines: list[bytes], where: str) -> Iterator[list[Message]]:
        batch: list[Message] = []
        for number, line in enumerate(lines, first):
            if not line.strip():
                continue
            try:
                message = decode(line)
            except EnvelopeError as exc:
                if skip_invalid:
                    skipped.append(f"{where} {number}: {exc}")
                    continue
                yield batch
                raise InputError(f"{where} {number}: {exc}") from None
            message.position = None
            if key is not None:
                message.key = key
            if headers:
                message.headers = message.headers + headers
            batch.append(message)
        yield batch

    if values:
        yield from convert(1, [os.fsencode(v) for v in values], "argument")
        return
    reader = LineReader(STDIO)
    while not reader.drained:
        first, lines = reader.take_lines(BATCH_SIZE, STALL_SECONDS, follow=False)
        if lines:
            yield from convert(first, lines, "stdin line")


def publish_messages(
    session: Session,
    address: str,
    values: list[str] | None,
    *,
    key: str | None = None,
    header: list[str] | None = None,
    input_mode: str | None = None,
    delimiter: bytes = b":",
    skip_invalid: bool = False,
    cloudevents: str | None = None,
) -> None:
    """Publish `values`, or stdin, to `address`; the options as `publish` takes them
    (`input_mode` and `delimiter` already resolved from -J / -K)."""
    input_mode = input_mode or "lines"
    if input_mode not in INPUT_MODES:
        raise UsageError(f"--input must be one of {', '.join(INPUT_MODES)}, not {input_mode!r}")
    from evrelay.backends.base import Capability
    from evrelay.transforms import message_transform, with_transform

    transform = message_transform(cloudevents)

    target = session.address(address)
    key_bytes = os.fsencode(key) if key is not None else None
    if header:
        from evrelay.cli.common import parse_headers

        headers = parse_headers(header)
    else:
        headers = []
    if not values and session.stdin_is_tty and not session.quiet:
        session.info("evrelay: reading messages from the terminal, one per line; end with Ctrl-D")
    skipped: list[str] = []
    started = time.perf_counter()
    import signal

    # SIGTERM stops reading, then what was accepted is flushed (bounded) and reported:
    # dying by the signal would drop messages still queued in a client that sends in the background.
    previous_term = signal.signal(signal.SIGTERM, _on_sigterm)
    terminated = False
    try:
        with session.backend(target, {Capability.PUBLISH}, command="publish") as backend:
            stream = target.require_stream(backend.stream_noun)
            with with_transform(backend.producer(stream), transform) as producer:
                queued = 0
                input_error: InputError | None = None
                interrupted = False
                try:
                    if input_mode in LINE_DECODED_MODES:
                        for batch in _envelope_batches(values, key_bytes, headers, skipped, skip_invalid, _line_decoder(input_mode, delimiter)):
                            if batch:
                                producer.send(batch)
                                queued += len(batch)
                    else:
                        for plain in _value_batches(values, input_mode):
                            if plain:
                                producer.send_values(plain, key_bytes, headers)
                                queued += len(plain)
                except InputError as exc:
                    input_error = exc
                except KeyboardInterrupt:
                    interrupted = True
                except _TermSignal:
                    terminated = True
                except EvrelayError as exc:  # the backend failed part-way (a full disk, an ACL)
                    if queued:
                        _say_what_was_published(exc, producer, session, f"{target.display} [{backend.describe_stream(stream)}]")
                    raise
                try:
                    if interrupted:
                        report = _flush_interrupted(producer, session, queued, target.display)
                    else:
                        report = producer.flush(session.timeout if session.timeout is not None or not terminated else TERM_FLUSH_SECONDS)
                except _TermSignal:  # arrived between reading and flushing
                    terminated = True
                    report = producer.flush(session.timeout or TERM_FLUSH_SECONDS)
                except KeyboardInterrupt:  # while waiting for confirmations
                    interrupted = True
                    report = _flush_interrupted(producer, session, queued, target.display)
    except _TermSignal:  # before anything was read (connecting): nothing to flush
        from evrelay.errors import Terminated

        raise Terminated(f"terminated before anything was published to {target.display}") from None
    finally:
        signal.signal(signal.SIGTERM, previous_term)
    elapsed = time.perf_counter() - started
    for line in skipped:
        session.warn(f"skipped {line}")
    delivered = report.delivered
    where = f"{target.display} [{backend.describe_stream(stream)}]"
    if interrupted:
        lost = report.pending + len(report.failures)
        raise Interrupted(
            f"interrupted: {delivered} message(s) were published to {where}"
            + (f"; {lost} read before Ctrl-C were not confirmed, and nothing more is sent" if lost else "; nothing read was lost")
        )
    if terminated:
        from evrelay.errors import Terminated

        lost = report.pending + len(report.failures)
        raise Terminated(
            f"terminated: {delivered} message(s) were published to {where}"
            + (f"; {lost} read before the signal were not confirmed" if lost else "; nothing read was lost")
        )
    if report.pending:
        from evrelay.errors import ProducerTimeout

        raise ProducerTimeout(
            f"{report.pending} of {queued} message(s) to {where} were not confirmed in time; "
            f"{delivered} confirmed",
            undelivered=report.pending,
            hint="is the backend reachable? raise --timeout for slow links",
        )
    unfit = [failure for failure in report.failures if failure.unfit]
    if unfit:
        raise UsageError(
            f"{len(unfit)} of {queued} message(s) cannot be written to {where}: {unfit[0].reason}; "
            f"{delivered} delivered; nothing of the refused ones was sent"
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
            hint="--skip-invalid reports and skips bad lines instead" if input_mode in LINE_DECODED_MODES else None,
        )
    note = f", skipped {len(skipped)} invalid line(s)" if skipped else ""
    session.info(f"published {delivered} message(s) to {where} in {_seconds(elapsed)}{note}")


def _say_what_was_published(exc: EvrelayError, producer, session: Session, where: str) -> None:
    """Add to a failure raised part-way through the input how many messages the backend
    confirmed before it, so a user deciding what to send again knows where it stopped
    (the earlier batches were handed over and may be there: `seq 1 200000 | evrelay
    publish big` on a full disk stored 2,000 and said only 'disk I/O error')."""
    try:
        report = producer.flush(min(session.timeout or INTERRUPT_FLUSH_SECONDS, INTERRUPT_FLUSH_SECONDS))
    except EvrelayError:
        exc.message += f"; whether anything before it reached {where} could not be confirmed"
        return
    exc.message += f"; {report.delivered} message(s) before it were published to {where}, nothing after it was sent"


def _flush_interrupted(producer, session: Session, queued: int, display: str):
    """After Ctrl-C: what the backend confirms within INTERRUPT_FLUSH_SECONDS (or a shorter
    --timeout), not the connect timeout; a second Ctrl-C meanwhile stops at once. When it
    cannot tell (the backend not reached), Interrupted says that nothing was confirmed."""
    from evrelay.errors import EvrelayError

    try:
        return producer.flush(min(session.timeout or INTERRUPT_FLUSH_SECONDS, INTERRUPT_FLUSH_SECONDS))
    except EvrelayError as exc:
        raise Interrupted(
            f"interrupted: {queued} message(s) read were not confirmed by {display}, and nothing more is sent ({exc.message})"
        ) from None


def _line_decoder(mode: str, delimiter: bytes):
    """The decoder of one input line for a line-decoded --input mode."""
    if mode == "kcat":
        from evrelay.kcat import decode_kcat_json

        return decode_kcat_json
    if mode == "keyed":
        from evrelay.kcat import decode_keyed

        return lambda line: decode_keyed(line, delimiter)
    return None


def _seconds(elapsed: float) -> str:
    from evrelay.timestamps import format_duration

    return format_duration(elapsed)
