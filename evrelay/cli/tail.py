"""`evrelay tail ADDRESS`: print messages, like tail(1): the last 10, a range, or follow."""

from __future__ import annotations

import contextlib
import signal
import time
from typing import Annotated, Optional

import typer

from evrelay.cli.common import (
    DEFAULT_CLAIM_IDLE,
    MAX_COUNT,
    ClaimIdleOption,
    ConsumerOption,
    CountOption,
    FollowOption,
    FromOption,
    GroupOption,
    IdleTimeoutOption,
    KcatOutputOptions,
    PartitionOption,
    SelectionOptions,
    Session,
    StopFlag,
    TimeoutOption,
    ToOption,
    check_range,
    command,
    complete_address,
    parse_duration,
    parse_position_option,
)
from evrelay.errors import ExpectationFailed, Interrupted, UsageError

DEFAULT_LAST = 10
DEFAULT_EXPECT_TIMEOUT = 30.0


@command(session_options=("config", "profile", "verbose", "quiet"))
def tail(
    addresses: Annotated[
        list[str],
        typer.Argument(metavar="ADDRESS...", help="One or more addresses; NAME may be ~REGEX for every matching topic/stream.", autocompletion=complete_address, show_default=False),
    ],
    from_: FromOption = None,
    to: ToOption = None,
    count: CountOption = None,
    follow: FollowOption = False,
    group: GroupOption = None,
    consumer: ConsumerOption = None,
    claim_idle: ClaimIdleOption = DEFAULT_CLAIM_IDLE,
    no_ack: Annotated[bool, typer.Option("--no-ack", help="With -g: leave what was printed pending (not acked).")] = False,
    expect: Annotated[Optional[int], typer.Option("--expect", metavar="N", min=0, max=MAX_COUNT, help="Exit 4 unless N messages arrive before --timeout (default 30s); stops after N.", show_default=False)] = None,
    timeout: TimeoutOption = None,
    idle_timeout: IdleTimeoutOption = None,
    output: KcatOutputOptions = KcatOutputOptions(),
    partition: PartitionOption = None,
    selection_options: SelectionOptions = SelectionOptions(),
    *,
    session: Session,
) -> None:
    """Print messages: the last 10 by default, a range with --from/--to/-n, new ones with -f.

    With -g GROUP it reads as that consumer group (a new group starts at --from, default
    beginning) and acks each message once it is written in full to stdout (a message
    sitting in a pipe's buffer counts as printed: `| head -n 1` may ack a few more than
    head shows); --no-ack leaves them pending. When the reader of stdout goes away,
    tail stops at once and exits 0.
    Data goes to stdout; -o json envelopes round-trip through `publish --input json`.

    \b
    Examples:
      evrelay tail demo
      evrelay tail kafka:orders --from -15m --to -5m -o json
      evrelay tail redis:orders -g billing -n 100 --no-ack
      evrelay tail demo --from end --expect 3 --timeout 20s
      evrelay tail kafka:orders --from beginning --filter '.value.total > 100'
      evrelay tail redis:orders --match-key 'customer-*' --match-header region=eu
      evrelay tail kafka:orders -J          # like kcat -C -J -t orders
      evrelay tail kafka:orders kafka:payments 'redis:~audit-.*' -f
    """
    from evrelay.backends.base import ReadSpec, StopReason
    from evrelay.cli.sources import open_reader
    from evrelay.output import OutputClosed
    from evrelay.positions import Beginning, Last

    deadline_seconds = parse_duration(timeout, "--timeout")
    idle_seconds = parse_duration(idle_timeout, "--idle-timeout")
    claim_seconds = parse_duration(claim_idle, "--claim-idle")
    if expect is not None and deadline_seconds is None:
        deadline_seconds = DEFAULT_EXPECT_TIMEOUT
    session.timeout = deadline_seconds
    start = parse_position_option(from_, "--from")
    stop = parse_position_option(to, "--to")
    check_range(start, stop, from_, to)
    if no_ack and not group:
        raise UsageError("--no-ack only makes sense with -g/--group")
    writer = output.writer(session)
    selection = selection_options.compile()
    follow = follow or expect is not None
    # With a selection, `-n N` counts the messages shown, and a plain read without --from
    # searches the whole stream for the last N matches (tail's "last 10" of what matches).
    last_matches: int | None = None
    if selection is not None and start is None and not group and not follow and stop is None:
        last_matches = count if count is not None else DEFAULT_LAST
        start = Beginning()

    limit = count if count is not None else expect
    if group and follow and count == 0 and expect is None:
        count = None  # `-f -n 0`: no backlog, only what comes next; a group has no backlog
        limit = None
    if last_matches is not None:
        limit = None
    elif group:
        group_start = start if start is not None else Beginning()
    elif start is None:
        start = Beginning() if stop is not None else Last(count if count is not None else DEFAULT_LAST)
        if count is not None and not follow and stop is None:
            limit = None  # Last(count) already bounds the read (with --to, the range's first N do)
        elif follow and expect is None and stop is None:
            limit = None  # `-f -n N`: N is the backlog shown before following (coreutils tail)
        # With --to, `-n N` is the range's first N, following or not: a count limit.

    display = ", ".join(session.address(text).display for text in addresses)
    started = time.monotonic()
    deadline = started + deadline_seconds if deadline_seconds is not None else None
    received = 0
    with contextlib.ExitStack() as stack:
        group_name = group or None
        spec = ReadSpec(
            stream="",
            start=group_start if group_name else start,
            stop=stop,
            follow=follow,
            group=group_name,
            consumer_name=consumer if group_name else None,
            partitions=tuple(partition) if partition else None,
            release_on_close=not no_ack,
            values_only=writer.values_only and selection is None and not group_name and len(addresses) == 1,
        )
        reader, _, _ = open_reader(session, stack, addresses, spec, command="tail")
        if group_name and reader.created:
            session.info(f"evrelay: created consumer group {group_name!r} on {display} at {group_start}")
        if group_name and from_ is not None and reader.created is False:
            session.warn(
                f"group {group_name!r} already exists, so --from {from_} was not applied; "
                f"`evrelay replay {addresses[0]} -g {group_name} --from {from_}` moves it"
            )
        # SIGTERM (and Ctrl-C) end the read between batches, so the consumer closes
        # cleanly: acks done, group left (its partitions are free to move at once). A closed
        # stdout (`| head`) ends it at once too, even while waiting for new messages; only
        # messages written in full are acked.
        with StopFlag() as stop:
            shown = ShownMessages(writer, selection, session, limit=None if selection is None else limit, last=last_matches)
            for batch in reader.batches(
                limit=limit if selection is None else None,
                deadline=deadline,
                idle_timeout=idle_seconds,
                batch_size=500 if group_name else 5000,
                should_stop=lambda: stop() or shown.done or writer.reader_gone(),
                claim_idle_ms=int(claim_seconds * 1000) if group_name and claim_seconds else None,
                # Following, an outage is waited out (and said), as a bridge does; a plain
                # read ends with exit 3 instead, its data being what it asked for now.
                warn_outage=session.warn if follow else None,
            ):
                handled = shown.write(batch)
                if group_name and not no_ack and handled:
                    reader.ack(handled)
                if shown.closed:
                    break
            if not shown.closed:
                try:
                    shown.finish()
                except OutputClosed:
                    shown.closed = True
            received = shown.count
        reason = StopReason.LIMIT if shown.done else reader.stop_reason
    if shown.closed or (reason is StopReason.STOPPED and stop.signal is None and not shown.done):
        session.debug(f"the reader of stdout went away after {received} message(s)")
        return
    session.debug(f"read {received} message(s) from {display}; stopped: {reason.value if reason else 'done'}")
    if stop.signal == signal.SIGINT:
        raise Interrupted(f"interrupted after {received} message(s)")
    if expect is not None and received < expect:
        raise ExpectationFailed(
            f"expected {expect} message(s) from {display}, got {received} within {deadline_seconds:g}s"
        )
    if reason is StopReason.DEADLINE and limit is not None and received < limit:
        raise ExpectationFailed(f"--timeout: only {received} of {limit} message(s) from {display} arrived in time")


class ShownMessages:
    """tail's output side: applies the selection, writes, and counts what was shown.

    `write()` returns the messages of the batch that were handled (shown or dropped by the
    selection), which a group read then acks: with a count, the rest of the batch after
    the last message shown stays unacked and is read again. `last` keeps only the final N
    matches and writes them at `finish()`."""

    def __init__(self, writer, selection, session: Session, *, limit: int | None, last: int | None) -> None:
        import collections

        self.writer = writer
        self.selection = selection
        self.session = session
        self.limit = limit
        self.last = collections.deque(maxlen=last) if last is not None else None
        self.count = 0
        self.closed = False
        """The reader of stdout went away: nothing more is written or acked."""

    @property
    def done(self) -> bool:
        return self.limit is not None and self.count >= self.limit

    def write(self, batch: list) -> list:
        from evrelay.output import OutputClosed

        if self.selection is None:
            try:
                self.writer.write(batch)
            except OutputClosed as exc:
                self.closed = True
                batch = batch[: exc.written]
            self.count += len(batch)
            return batch
        result = self.selection.select(batch)
        kept, handled_upto = result.kept, len(batch)
        if self.limit is not None and self.count + len(kept) >= self.limit:
            kept = kept[: self.limit - self.count]
            handled_upto = result.origins[len(kept) - 1] + 1 if kept else 0
        for index, reason in result.errors:
            if index < handled_upto:
                position = batch[index].position
                where = position.coordinates if position is not None else "a message"
                self.session.warn(f"{where}: {reason} (not shown)")
        if self.last is not None:
            self.last.extend(kept)
        else:
            try:
                self.writer.write(kept)
            except OutputClosed as exc:
                # Only what reached the reader in full counts as handled (and is acked).
                self.closed = True
                kept = kept[: exc.written]
                handled_upto = result.origins[len(kept) - 1] + 1 if kept else 0
            self.count += len(kept)
        return batch[:handled_upto]

    def finish(self) -> None:
        if self.last is not None:
            self.writer.write(list(self.last))
            self.count = len(self.last)
