"""`evrelay ack ADDRESS -g GROUP [ID...]`: acknowledge, list pending, claim idle messages."""

from __future__ import annotations

from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from evrelay import backends
from evrelay.cli.common import (
    AddressArgument,
    ConsumerOption,
    GroupOption,
    MessageOutputOptions,
    Session,
    command,
    count_option,
    force_option,
    group_for,
    parse_duration,
    with_backend_help,
)
from evrelay.errors import InputError, UsageError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from evrelay.envelope import Position


NOTHING_ACKED = "; nothing was acked (every line is checked before the first ack)"


def positions_from_stdin(stdin: Iterable[bytes], backend_name: str, stream: str) -> list[Position]:
    """Positions of the JSON envelopes on stdin (e.g. from `tail -g G --no-ack -o json`)."""
    from evrelay.envelope import EnvelopeError, decode_envelope

    positions = []
    for number, line in enumerate(stdin, 1):
        if not line.strip():
            continue
        try:
            message = decode_envelope(line)
        except EnvelopeError as exc:
            raise InputError(f"stdin line {number}: {exc}{NOTHING_ACKED}") from None
        position = message.position
        if position is None:
            raise InputError(f"stdin line {number}: the envelope has no position (stream and id, or topic, partition and offset){NOTHING_ACKED}")
        if position.backend != backend_name or position.stream != stream:
            raise InputError(
                f"stdin line {number}: the envelope is from {position.backend} {position.stream!r}, not {backend_name} {stream!r}{NOTHING_ACKED}"
            )
        positions.append(position)
    return positions


@command()
def ack(
    address: AddressArgument,
    ids: Annotated[Optional[list[str]], typer.Argument(metavar="ID", help="Message IDs as the backend prints them (entry IDs 1700000000000-0, PARTITION:OFFSET, sequence numbers); without IDs, JSON envelopes are read from stdin.", show_default=False)] = None,
    group: GroupOption = None,
    list_pending: Annotated[bool, typer.Option("--list", help=f"List pending messages (id, consumer, idle, deliveries); for backends with cumulative acks ({backends.help_backends_with('cumulative_ack')}), the lag.")] = False,
    claim: Annotated[bool, typer.Option("--claim", help="Take over messages pending longer than --min-idle and print them.")] = False,
    min_idle: Annotated[str, typer.Option("--min-idle", metavar="DURATION", help="With --claim: how long a message must have been pending.")] = "1m",
    consumer: ConsumerOption = None,
    force: Annotated[bool, force_option(f"Backends with cumulative acks ({backends.help_backends_with('cumulative_ack')}): commit even when that skips offsets the group has not acked.")] = False,
    count: Annotated[int, count_option("With --list/--claim: at most N messages.", show_default=True)] = 100,
    output: MessageOutputOptions = MessageOutputOptions(),
    *,
    session: Session,
) -> None:
    """Acknowledge messages for a consumer group, list what is pending, or claim idle ones.

    IDs come from the arguments or, without any, from JSON envelopes on stdin, so
    `evrelay tail A -g G --no-ack -o json | ... | evrelay ack A -g G` acks exactly what
    made it through the pipeline.

    {ack_help}

    \b
    Examples:
      evrelay ack redis:orders -g billing 1700000000000-0 1700000000000-1
      evrelay ack kafka:orders -g billing 0:41 1:17
      evrelay ack redis:orders -g billing --list
      evrelay ack redis:orders -g billing --claim --min-idle 5m --consumer rescuer
    """
    from evrelay.backends.base import Capability

    if list_pending and claim:
        raise UsageError("give --list or --claim, not both")
    if (list_pending or claim) and ids:
        raise UsageError("IDs are for acking; --list and --claim take none")
    idle_ms = int((parse_duration(min_idle, "--min-idle") or 0) * 1000)
    target = session.address(address)
    needs = {Capability.GROUPS, Capability.CLAIM} if claim else {Capability.GROUPS}
    with session.backend(target, needs, command="ack --claim" if claim else "ack") as backend:
        stream = target.require_stream(backend.stream_noun)
        group_name = group_for(session, target, group, "ack")
        if list_pending:
            mode = session.record_mode(output.output)
            if backend.supports(Capability.PENDING):
                rows = [
                    {"id": str(p.position), "consumer": p.consumer, "idle_ms": p.idle_ms, "deliveries": p.deliveries}
                    for p in backend.pending(stream, group_name, consumer=consumer, count=count)
                ]
                session.records(rows, [("id", "ID"), ("consumer", "CONSUMER"), ("idle_ms", "IDLE MS"), ("deliveries", "DELIVERIES")], mode)
                session.info(f"{len(rows)} pending message(s) for group {group_name!r} on {target.display}")
            else:
                rows = [asdict(r) for r in backend.group_lag(stream, group_name)]
                session.records(rows, backend.lag_columns, mode)
                session.info(
                    f"{backend.name} keeps no per-message pending list: group {group_name!r} is "
                    f"{sum(r['lag'] for r in rows)} message(s) behind"
                )
            return
        if claim:
            writer = output.writer(session)
            from evrelay.backends.base import default_consumer_name

            name = consumer or default_consumer_name()
            claimed = backend.claim(stream, group_name, name, min_idle_ms=idle_ms, count=count)
            if claimed:
                writer.write(claimed)
            session.info(f"claimed {len(claimed)} message(s) pending for {min_idle} or more, now owned by {name!r}")
            return
        if not ids and session.stdin_is_tty:
            raise UsageError("give message IDs, or pipe JSON envelopes in (e.g. from `evrelay tail ... -g GROUP --no-ack -o json`)")
        positions = backend.parse_message_ids(ids, stream) if ids else positions_from_stdin(session.stdin, backend.name, stream)
        acked = backend.ack(stream, group_name, positions, force=force) if positions else 0
    session.info(f"acked {acked} of {len(positions)} message(s) for group {group_name!r} on {target.display}")
    if acked < len(positions):
        session.warn(f"{len(positions) - acked} message(s) not acked: {backend.ack_shortfall_reason()}")


def register(app: typer.Typer) -> None:
    app.command("ack", no_args_is_help=True)(with_backend_help(ack, ack_help=lambda: backends.help_sentences("ack_help")))
