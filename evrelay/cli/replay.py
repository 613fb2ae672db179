"""`evrelay replay`: copy a range into a sink, or move a consumer group to a position or time."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Optional

import typer

from evrelay import backends
from evrelay.cli.common import (
    CloudEventsOption,
    DryRunOption,
    GroupOption,
    MessageOutputOptions,
    SelectionOptions,
    Session,
    StopFlag,
    ToOption,
    YesOption,
    check_range,
    command,
    complete_address,
    exactly_once_option,
    from_option,
    parse_position_option,
    with_backend_help,
)
from evrelay.errors import EvrelayError, UsageError


@command()
def replay(
    source: Annotated[str, typer.Argument(metavar="SOURCE", help="Where the range (or the group) is.", autocompletion=complete_address, show_default=False)],
    sink: Annotated[Optional[str], typer.Argument(metavar="SINK", help="Where to copy the range (omit with -g).", autocompletion=complete_address, show_default=False)] = None,
    from_: Annotated[str, from_option("Start: a position or time (beginning, 0:42, 1700000000000-0, 2026-11-22T10:00:00Z, -1h).")] = ...,  # type: ignore[assignment]
    to: ToOption = None,
    group: GroupOption = None,
    pace: Annotated[str, typer.Option("--pace", metavar="PACE", help="max (as fast as possible), original (the original spacing) or Nx (N times faster).")] = "max",
    exactly_once: Annotated[bool, exactly_once_option(f"Copy in one transaction (sinks with transactions: {backends.help_backends_with('EXACTLY_ONCE')}): readers with isolation.level=read_committed see the whole range once, or nothing if the replay fails or is killed.")] = False,
    cloudevents: CloudEventsOption = None,
    dry_run: DryRunOption = False,
    yes: YesOption = False,
    output: MessageOutputOptions = MessageOutputOptions(),
    selection_options: SelectionOptions = SelectionOptions(),
    *,
    session: Session,
) -> None:
    """Re-deliver a range into SINK, or (with -g) move a consumer group to a position or time.

    SOURCE SINK --from X [--to Y]: copy the messages from X to Y (inclusive; default: the
    current end) into SINK, keeping value, key, headers and, where the sink can, the
    original timestamp. --pace original/Nx keeps the original spacing (N times faster).

    SOURCE -g GROUP --from X: rewind (or advance) the group so it reads again from X. The
    plan (current -> new position, messages affected) is shown and confirmed on a
    terminal; --yes applies it without asking, --dry-run only shows it.

    {group_seek_help}

    \b
    Examples:
      evrelay replay redis:orders kafka:orders-replay --from -2h --to -1h
      evrelay replay kafka:orders file:incident.jsonl --from 2026-11-22T10:00:00Z --to 2026-11-22T10:05:00Z
      evrelay replay kafka:orders -g billing --from -1h --yes
      evrelay replay kafka:orders kafka:orders-fix --from -1h --exactly-once
    """
    start = parse_position_option(from_, "--from")
    stop = parse_position_option(to, "--to")
    check_range(start, stop, from_, to)
    assert start is not None
    if group and selection_options.given:
        raise UsageError("--filter/--map/--match-* select messages to copy; they do not apply when moving a group (-g)")
    if group and sink:
        raise UsageError("give SINK (copy a range) or -g GROUP (move a group), not both")
    if group:
        if cloudevents is not None:
            raise UsageError("--cloudevents applies to copying a range into a SINK, not to moving a group (-g)")
        if to is not None:
            raise UsageError("--to does not apply when moving a group (-g); the group moves to --from")
        _move_group(session, source, group, start, dry_run=dry_run, yes=yes, output=output.output)
        return
    if sink is None:
        raise UsageError("replay needs a SINK to copy into, or -g GROUP to move a group")
    if exactly_once and dry_run:
        raise UsageError("--exactly-once cannot be combined with --dry-run")
    selection = selection_options.compile()
    _copy_range(session, source, sink, start, stop, pace=pace, dry_run=dry_run, output=output,
                cloudevents=cloudevents, selection=selection, exactly_once=exactly_once)


# A whole replay is one transaction: brokers cap a transaction at 15 minutes by default.
REPLAY_TRANSACTION_SECONDS = 900.0


def _copy_range(session: Session, source: str, sink: str, start, stop, *, pace: str, dry_run: bool, output: MessageOutputOptions,
                cloudevents, selection, exactly_once: bool = False) -> None:
    import contextlib

    from evrelay.backends.base import Capability, ReadSpec, read_needs
    from evrelay.pacing import Pacer, TimeOrdered, parse_pace
    from evrelay.relay import Relay
    from evrelay.routing import is_template, open_sink
    from evrelay.transforms import message_transform, previewing, with_transform
    from evrelay.watch import ProgressLine, Watch

    try:
        speed = parse_pace(pace)
    except ValueError as exc:
        raise UsageError(f"--pace: {exc}") from None
    src = session.address(source)
    dst = session.address(sink)
    writer = output.writer(session) if dry_run else None
    transform = message_transform(cloudevents)
    with contextlib.ExitStack() as stack:
        if exactly_once:
            session.backend(dst).refuse_exactly_once(None)  # before anything connects
        src_backend = stack.enter_context(session.backend(src, read_needs(ReadSpec("", start=start, stop=stop)), command="replay"))
        spec = ReadSpec(stream=src.require_stream(src_backend.stream_noun), start=start, stop=stop)
        producer = None
        if not dry_run:
            dst_backend = stack.enter_context(session.backend(dst, {Capability.PUBLISH}, command="replay"))
            if not dst_backend.supports(Capability.KEEP_TIMESTAMP):
                session.debug(f"{dst_backend.name} does not keep timestamps; the copies get new ones")
            dst_stream = dst.require_stream(dst_backend.stream_noun)
            if exactly_once:
                if is_template(dst_stream):
                    raise UsageError("--exactly-once writes one topic in its transaction; a sink name template routes to many")
                # Stable per sink: a rerun fences a killed replay and aborts what it left open.
                producer = stack.enter_context(dst_backend.exactly_once_producer(
                    dst_stream, transaction_id=f"evrelay-replay-{dst_stream}", max_transaction_seconds=REPLAY_TRANSACTION_SECONDS))
            else:
                producer = stack.enter_context(open_sink(dst_backend, dst_stream))
            producer = with_transform(producer, transform)
        reader = stack.enter_context(src_backend.consumer(spec))
        if speed is not None and src_backend.partitioned:
            reader = TimeOrdered(reader)
        stop_flag = stack.enter_context(StopFlag())
        progress = Watch(ProgressLine(session.stderr_is_tty and not session.quiet and not dry_run, verb="replayed", err=session.stderr))
        relay = Relay(
            reader,
            producer,
            sink_label=dst.display,
            source_label=src.display,
            selection=selection,
            emit=previewing(writer.write if writer is not None else None, transform, session.warn),
            provenance=False,
            ack=False,
            stop=stop_flag,
            warn=session.warn,
            pacer=Pacer(speed, stop_flag),
            progress=progress,
        )
        try:
            stats = relay.run()
        finally:
            progress.close()
    verb = "would replay" if dry_run else "replayed"
    note = f"; {stats.filtered} filtered out" if selection is not None else ""
    session.info(f"{verb} {stats.delivered} message(s){note} from {src.display} ({start} .. {stop or 'end'}) to {dst.display} in {stats.elapsed:.1f}s")
    if stop_flag.signal is not None:
        # A replay is a finite job, like publish: stopped early, its range is not all
        # copied, so a signal is never exit 0 (SIGTERM 143 as publish, SIGINT 130).
        import signal

        from evrelay.errors import Interrupted, Terminated

        if stop_flag.signal == signal.SIGTERM:
            raise Terminated(f"terminated after {stats.delivered} message(s)")
        raise Interrupted(f"interrupted after {stats.delivered} message(s)")


def _move_group(session: Session, source: str, group: str, target, *, dry_run: bool, yes: bool, output) -> None:
    from evrelay.backends.base import Capability

    mode = session.record_mode(output)
    src = session.address(source)
    with session.backend(src, {Capability.GROUP_SEEK}, command="replay -g") as backend:
        stream = src.require_stream(backend.stream_noun)
        plan = backend.plan_group_seek(stream, group, target)
        rows = [asdict(step) for step in plan.steps]
        columns = [("partition", "PARTITION"), ("current", "CURRENT"), ("new", "NEW"), ("affected", "MESSAGES AGAIN (+) / SKIPPED (-)")]
        session.records(rows, columns, mode, title=f"move group {group!r} on {src.display} to {target}")
        if dry_run:
            session.info("dry run: nothing changed")
            return
        if not yes:
            if not session.stdin_is_tty:
                raise UsageError("refusing to move the group without confirmation: stdin is not a terminal; add --yes")
            if not typer.confirm(f"Move group {group!r}?", default=False, err=True):
                raise EvrelayError("not moved (declined)")
        backend.apply_group_seek(plan)
    total = sum(step.affected or 0 for step in plan.steps)
    effect = f"{total} message(s) to be delivered again" if total >= 0 else f"{-total} message(s) skipped"
    session.info(f"moved group {group!r} on {src.display} to {target}: {effect}")


def register(app: typer.Typer) -> None:
    app.command("replay", no_args_is_help=True)(with_backend_help(replay, group_seek_help=lambda: backends.help_sentences("group_seek_help")))
