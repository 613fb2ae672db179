"""`evrelay tail ADDRESS`: print messages, like tail(1): the last 10, a range, or follow."""

from __future__ import annotations

import signal
import time
from typing import Annotated, Optional

import typer

from evrelay.cli.common import (
    DEFAULT_CLAIM_IDLE,
    MAX_COUNT,
    AddressArgument,
    ClaimIdleOption,
    ConfigOption,
    ConsumerOption,
    CountOption,
    FollowOption,
    FormatOption,
    FromOption,
    GroupOption,
    IdleTimeoutOption,
    OutputOption,
    PartitionOption,
    ProfileOption,
    QuietOption,
    Session,
    StopFlag,
    TimeoutOption,
    ToOption,
    VerboseOption,
    check_range,
    parse_duration,
    parse_position_option,
)
from evrelay.errors import ExpectationFailed, Interrupted, UsageError

DEFAULT_LAST = 10
DEFAULT_EXPECT_TIMEOUT = 30.0


def required_capabilities(spec: object, *, follow: bool) -> list[object]:
    """The capabilities a ReadSpec needs from its backend (checked before reading)."""
    from evrelay.backends.base import Capability
    from evrelay.positions import AtTime, EntryId, Offset, PartitionOffsets

    needed = [Capability.READ]
    if follow:
        needed.append(Capability.FOLLOW)
    if getattr(spec, "group", None):
        needed.append(Capability.GROUPS)
    for position in (getattr(spec, "start", None), getattr(spec, "stop", None)):
        if isinstance(position, AtTime):
            needed.append(Capability.SEEK_TIME)
        elif isinstance(position, (Offset, EntryId, PartitionOffsets)):
            needed.append(Capability.SEEK_POSITION)
    return needed


def tail(
    address: AddressArgument,
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
    output: OutputOption = None,
    template: FormatOption = None,
    partition: PartitionOption = None,
    config: ConfigOption = None,
    profile: ProfileOption = None,
    verbose: VerboseOption = False,
    quiet: QuietOption = False,
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
    """
    from evrelay.backends.base import ReadSpec, StopReason
    from evrelay.output import OutputClosed, make_writer
    from evrelay.positions import Beginning, Last

    deadline_seconds = parse_duration(timeout, "--timeout")
    idle_seconds = parse_duration(idle_timeout, "--idle-timeout")
    claim_seconds = parse_duration(claim_idle, "--claim-idle")
    if expect is not None and deadline_seconds is None:
        deadline_seconds = DEFAULT_EXPECT_TIMEOUT
    session = Session(config=config, profile=profile, verbose=verbose, quiet=quiet, timeout=deadline_seconds)
    start = parse_position_option(from_, "--from")
    stop = parse_position_option(to, "--to")
    check_range(start, stop, from_, to)
    if no_ack and not group:
        raise UsageError("--no-ack only makes sense with -g/--group")
    writer = make_writer(output, template)
    follow = follow or expect is not None

    limit = count if count is not None else expect
    if group and follow and count == 0 and expect is None:
        limit = None  # `-f -n 0`: no backlog, only what comes next; a group has no backlog
    if group:
        group_start = start if start is not None else Beginning()
    elif start is None:
        start = Beginning() if stop is not None else Last(count if count is not None else DEFAULT_LAST)
        if count is not None and not follow:
            limit = None  # Last(count) already bounds the read
        elif follow and expect is None:
            limit = None

    source = session.address(address)
    started = time.monotonic()
    deadline = started + deadline_seconds if deadline_seconds is not None else None
    received = 0
    with session.backend(source) as backend:
        stream = source.require_stream(backend.stream_noun)
        group_name = group or None
        spec = ReadSpec(
            stream=stream,
            start=group_start if group_name else start,
            stop=stop,
            follow=follow,
            group=group_name,
            consumer_name=consumer if group_name else None,
            partitions=tuple(partition) if partition else None,
            release_on_close=not no_ack,
        )
        backend.require(*required_capabilities(spec, follow=follow), command="tail")
        with backend.consumer(spec) as reader:
            if group_name and reader.created:
                session.info(f"evrelay: created consumer group {group_name!r} on {source.display} at {group_start}")
            if group_name and from_ is not None and reader.created is False:
                session.warn(
                    f"group {group_name!r} already exists, so --from {from_} was not applied; "
                    f"`evrelay replay {address} -g {group_name} --from {from_}` moves it"
                )
            # SIGTERM (and Ctrl-C) end the read between batches, so the consumer closes
            # cleanly: acks done, group left (a Kafka group is free to move at once).
            # A closed stdout (`| head`) ends the read at once, even while waiting for new
            # messages; only messages written in full are acked.
            output_closed = False
            with StopFlag() as stop:
                for batch in reader.batches(
                    limit=limit, deadline=deadline, idle_timeout=idle_seconds, batch_size=500 if group_name else 5000,
                    should_stop=lambda: stop() or writer.reader_gone(),
                    claim_idle_ms=int(claim_seconds * 1000) if group_name and claim_seconds else None,
                ):
                    try:
                        writer.write(batch)
                    except OutputClosed as exc:
                        batch = batch[: exc.written]
                        output_closed = True
                    received += len(batch)
                    if group_name and not no_ack and batch:
                        reader.ack(batch)
                    if output_closed:
                        break
            reason = reader.stop_reason
    if output_closed or (reason is StopReason.STOPPED and stop.signal is None):
        session.debug(f"the reader of stdout went away after {received} message(s)")
        return
    session.debug(f"read {received} message(s) from {source.display}; stopped: {reason.value if reason else 'done'}")
    if stop.signal == signal.SIGINT:
        raise Interrupted(f"interrupted after {received} message(s)")
    if expect is not None and received < expect:
        raise ExpectationFailed(
            f"expected {expect} message(s) from {source.display}, got {received} within {deadline_seconds:g}s"
        )
    if reason is StopReason.DEADLINE and limit is not None and received < limit:
        raise ExpectationFailed(f"--timeout: only {received} of {limit} message(s) from {source.display} arrived in time")
