"""`evrelay redrive DLQ`: send dead-lettered messages back where they came from."""

from __future__ import annotations

import contextlib
import signal
from typing import Annotated, Optional

import typer

from evrelay.cli.common import (
    DEFAULT_CLAIM_IDLE,
    AddressArgument,
    ConsumerOption,
    DryRunOption,
    GroupOption,
    MatchOptions,
    MessageOutputOptions,
    Session,
    StopFlag,
    command,
    complete_address,
    count_option,
    parse_duration,
)
from evrelay.errors import DeliveryFailed, Interrupted

DEFAULT_GROUP = "evrelay-redrive"


@command()
def redrive(
    address: AddressArgument,
    to: Annotated[Optional[str], typer.Option("--to", metavar="SINK", help="Send every message here instead of back to its recorded source.", autocompletion=complete_address, show_default=False)] = None,
    group: GroupOption = None,
    consumer: ConsumerOption = None,
    count: Annotated[Optional[int], count_option("Re-drive at most N dead letters.", maximum=None)] = None,
    match_options: MatchOptions = MatchOptions(),
    dry_run: DryRunOption = False,
    output: MessageOutputOptions = MessageOutputOptions(),
    *,
    session: Session,
) -> None:
    """Send dead-lettered messages (bridge --dead-letter) back where they came from.

    Each dead letter records its source address (evrelay-source-address), why it failed
    (evrelay-error) and where it was going (evrelay-sink). redrive strips those headers
    and the bridge's evrelay-source, sends the original message to its source (or to
    --to SINK), and acks in the dead-letter stream only what was delivered. Messages
    --filter/--match-* leave out, or that cannot be delivered, stay there. The
    dead-letter stream is read as a consumer group (default evrelay-redrive) where the
    backend has groups. --dry-run shows what would go where.

    \b
    Examples:
      evrelay redrive orders-dlq --dry-run
      evrelay redrive orders-dlq --match-header 'evrelay-error=*too large*'
      evrelay redrive kafka:orders-dlq --to kafka:orders-retry --filter '.value.total > 0'
    """
    from evrelay.backends.base import Capability, ReadSpec
    from evrelay.positions import Beginning
    from evrelay.redrive import Redrive

    selection = match_options.compile()
    writer = output.writer(session) if dry_run else None
    dlq = session.address(address)
    if to is not None:
        session.address(to)  # a bad --to is a usage error before anything is read

    with contextlib.ExitStack() as stack:
        backend = stack.enter_context(session.backend(dlq, {Capability.READ}, command="redrive"))
        grouped = backend.supports(Capability.GROUPS) and not dry_run
        group_name = (group or DEFAULT_GROUP) if grouped else None
        spec = ReadSpec(
            stream=dlq.require_stream(backend.stream_noun),
            start=Beginning(),
            group=group_name,
            consumer_name=consumer if grouped else None,
        )
        producers: dict[str, object] = {}

        def producer_for(text: str):
            if text not in producers:
                target = session.address(text)
                target_backend = stack.enter_context(session.backend(target, {Capability.PUBLISH}, command="redrive"))
                producers[text] = stack.enter_context(target_backend.producer(target.require_stream(target_backend.stream_noun)))
            return producers[text]

        def show(destination: str, messages) -> None:
            assert writer is not None
            session.info(f"would send {len(messages)} message(s) to {destination}:")
            writer.write(messages)

        reader = stack.enter_context(backend.consumer(spec))
        if group_name and reader.created:
            session.info(f"evrelay: created consumer group {group_name!r} on {dlq.display} at beginning")
        if not grouped and not dry_run:
            session.warn(f"{dlq.display} has no consumer groups: re-driven messages cannot be acked there and stay in it")
        engine = Redrive(reader, producer_for, to=to, selection=selection, emit=show if dry_run else None,
                         confirm_timeout=max(session.connect_timeout, 30.0))
        stop = stack.enter_context(StopFlag())
        # Letters an earlier run left in place were handed back when it closed (or belong
        # to a reader that died): take them over first, like any group reader.
        claim_ms = int((parse_duration(DEFAULT_CLAIM_IDLE, "--claim-idle") or 0) * 1000) if grouped else None
        for batch in reader.batches(limit=count, batch_size=500, should_stop=stop, claim_idle_ms=claim_ms):
            engine.handle(batch)
    stats = engine.stats
    for problem in stats.problems:
        session.warn(problem)
    destinations = ", ".join(f"{n} to {where}" for where, n in stats.by_destination.items()) or "none"
    verb = "would re-drive" if dry_run else "re-drove"
    session.info(
        f"{verb} {stats.delivered} of {stats.read} dead letter(s) from {dlq.display} ({destinations}); "
        f"{stats.acked} acked, {stats.left} left in place"
    )
    if stop.signal == signal.SIGINT:
        raise Interrupted(f"interrupted; {stats.acked} dead letter(s) were re-driven and acked before stopping")
    if stats.problems and not dry_run:
        raise DeliveryFailed(f"{len(stats.problems)} dead letter(s) could not be re-driven (above); they stay in {dlq.display}",
                             failed=stats.read - stats.delivered, delivered=stats.delivered)


def register(app: typer.Typer) -> None:
    app.command("redrive", no_args_is_help=True)(redrive)
