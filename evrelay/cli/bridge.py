"""`evrelay bridge SOURCE SINK` (or `'SOURCE->SINK'`): relay at-least-once until stopped."""

from __future__ import annotations

import contextlib
import re
import signal
from typing import Annotated, Optional

import typer

from evrelay import backends
from evrelay.cli.common import (
    DEFAULT_CLAIM_IDLE,
    ClaimIdleOption,
    CloudEventsOption,
    ConsumerOption,
    DryRunOption,
    FollowOption,
    FromOption,
    GroupOption,
    IdleTimeoutOption,
    MessageOutputOptions,
    SelectionOptions,
    Session,
    StopFlag,
    command,
    complete_address,
    count_option,
    exactly_once_option,
    parse_duration,
    parse_position_option,
    with_backend_help,
)
from evrelay.errors import Interrupted, UsageError

DEFAULT_WINDOW = 1000
# An exactly-once window's transaction lives for about a second; a bridge killed mid-window
# and not restarted under its name holds back read_committed readers until the broker
# aborts its transaction: keep that short.
BRIDGE_TRANSACTION_SECONDS = 15.0


def split_endpoints(source: str, sink: str | None) -> tuple[str, str]:
    """`bridge A B` or `bridge 'A->B'`; explain a `>` eaten by the shell."""
    if sink is None:
        if "->" in source:
            left, _, right = source.partition("->")
            if left and right:
                return left, right
        if source.endswith("-") and source != "-":
            raise UsageError(
                f"{source!r} ends in '-': the shell probably read `{source}>SINK` as {source!r} with stdout "
                f"redirected to a file named SINK (check for that file); write `evrelay bridge {source[:-1]} SINK` "
                f"or quote it: `evrelay bridge '{source}>SINK'`"
            )
        raise UsageError("bridge needs a SOURCE and a SINK: `evrelay bridge SOURCE SINK` or `evrelay bridge 'SOURCE->SINK'`")
    if "->" in source:
        raise UsageError("give `SOURCE SINK` or `'SOURCE->SINK'`, not both")
    return source, sink


def default_group(sink_backend: str, sink_stream: str) -> str:
    """One group per destination: two copies of the same bridge share the work, while
    bridges to different sinks each get every message."""
    return "evrelay-bridge-" + re.sub(r"[^A-Za-z0-9._-]+", "_", f"{sink_backend}-{sink_stream}")


@command()
def bridge(
    source: Annotated[str, typer.Argument(metavar="SOURCE", help="Where to read (or 'SOURCE->SINK').", autocompletion=complete_address, show_default=False)],
    sink: Annotated[Optional[str], typer.Argument(metavar="SINK", help="Where to write.", autocompletion=complete_address, show_default=False)] = None,
    group: GroupOption = None,
    consumer: ConsumerOption = None,
    from_: FromOption = None,
    count: Annotated[Optional[int], count_option("Stop after N messages.")] = None,
    idle_timeout: IdleTimeoutOption = None,
    dead_letter: Annotated[Optional[str], typer.Option("--dead-letter", metavar="ADDRESS", help="Send messages the sink rejects for good here (error in headers) instead of stopping.", show_default=False)] = None,
    dry_run: DryRunOption = False,
    metrics: Annotated[Optional[str], typer.Option("--metrics", metavar="ADDR:PORT", help="Serve Prometheus metrics here (e.g. 127.0.0.1:9464); needs prometheus-client.", show_default=False)] = None,
    window: Annotated[int, typer.Option("--window", metavar="N", min=1, max=1_000_000, help="Messages in flight at once: read, sent, confirmed, then acked together.")] = DEFAULT_WINDOW,
    exactly_once: Annotated[bool, exactly_once_option(f"Source and sink on one cluster of a backend with transactions ({backends.help_backends_with('EXACTLY_ONCE')}): each window is a transaction that also commits the source group's offsets; readers with isolation.level=read_committed see every message once.")] = False,
    claim_idle: ClaimIdleOption = DEFAULT_CLAIM_IDLE,
    follow: FollowOption = False,
    no_provenance: Annotated[bool, typer.Option("--no-provenance", help="Do not add the evrelay-source header (for consumers strict about headers).")] = False,
    cloudevents: CloudEventsOption = None,
    sink_process: Annotated[bool, typer.Option("--sink-process/--in-process", envvar="EVRELAY_BRIDGE_SINK_PROCESS", help=f"Write to a sink whose client costs real CPU ({backends.help_backends_with('sink_in_own_process')}) from a child process, so reading and writing can run on a core each (needs two cores or more); acks still wait for the sink's confirmation. Off by default: measured on a 2-core machine, it was no faster overall than writing from this process (README, Performance).")] = False,
    output: MessageOutputOptions = MessageOutputOptions(),
    selection_options: SelectionOptions = SelectionOptions(),
    *,
    session: Session,
) -> None:
    """Relay messages from SOURCE to SINK at-least-once, until stopped or --count/--idle-timeout.

    A message is acked at its source only after the sink confirmed it. Sources with
    consumer groups ({groups}) are read as a group (default
    evrelay-bridge-<sink>), resuming where it stopped; several bridges with the same
    group share the work. Each message gets an evrelay-source header with its source
    coordinates, replacing one from an earlier hop (--no-provenance: none). SIGTERM
    exits 0 and SIGINT 130, both after acking what was delivered.
    Messages --filter/--match-* drop are acked with their window; one --filter/--map
    fails on goes to --dead-letter (or stops the bridge, like a rejected message).

    \b
    Examples:
      evrelay bridge kafka:orders redis:orders
      evrelay bridge 'kafka:orders->redis:orders' --idle-timeout 30s
      evrelay bridge redis:orders kafka:orders-copy --dead-letter file:rejected.jsonl
      evrelay bridge kafka:orders - --dry-run -n 5
      evrelay bridge kafka:orders redis:big-orders --filter '.value.total > 100' --dead-letter file:dlq.jsonl
      evrelay bridge kafka:orders kafka:orders-copy --exactly-once
    """
    from evrelay.backends.base import Capability, ReadSpec
    from evrelay.multi import MultiConsumer, StreamSource, stream_pattern
    from evrelay.positions import Beginning
    from evrelay.relay import Relay
    from evrelay.routing import is_template, open_sink
    from evrelay.subprocess_producer import SinkSpec, SubprocessProducer, runs_apart
    from evrelay.transforms import message_transform, previewing, with_transform
    from evrelay.watch import (
        LagSampler,
        MetricsServer,
        ProgressLine,
        Watch,
        check_metrics_option,
        group_lag_sampler,
        parse_listen_address,
    )

    source_text, sink_text = split_endpoints(source, sink)
    idle_seconds = parse_duration(idle_timeout, "--idle-timeout")
    claim_seconds = parse_duration(claim_idle, "--claim-idle")
    if metrics is not None:
        check_metrics_option(metrics)  # a --metrics that cannot work is refused before connecting
    start = parse_position_option(from_, "--from") or Beginning()
    src = session.address(source_text)
    dst = session.address(sink_text)
    writer = output.writer(session) if dry_run else None
    if exactly_once and (dry_run or dead_letter is not None):
        raise UsageError(f"--exactly-once cannot be combined with {'--dry-run' if dry_run else '--dead-letter'}")
    selection = selection_options.compile()
    transform = message_transform(cloudevents)

    with contextlib.ExitStack() as stack:
        src_needs = {Capability.READ, Capability.GROUPS} if group else {Capability.READ}
        src_backend = session.backend(src, src_needs, command="bridge -g" if group else "bridge")
        if exactly_once:
            # Refused before anything connects: the pair decides, not the servers.
            if not src_backend.supports(Capability.GROUPS):
                raise UsageError(f"--exactly-once needs a source read as a consumer group; the {src_backend.name} backend has none")
            session.backend(dst).refuse_exactly_once(src_backend)
        src_backend = stack.enter_context(src_backend)
        src_stream = src.require_stream(src_backend.stream_noun)
        sink_producer = None
        dst_backend = None
        if not dry_run:
            dst_backend = session.backend(dst, {Capability.PUBLISH}, command="bridge")
            dst_stream = dst.require_stream(dst_backend.stream_noun)
            if dst_backend.same_place(src_backend) and dst_stream == src_stream:
                raise UsageError(f"{source_text} and {sink_text} are the same {src_backend.stream_noun}: that would relay into itself")
            if runs_apart(dst_backend, transactional=exactly_once, dry_run=dry_run, in_process=not sink_process):
                # Started before the source is read: its start-up overlaps the group join.
                spec = SinkSpec(dst, dst_stream, dst_backend.same_place(src_backend), cloudevents, session.connect_timeout, session.verbose, not no_provenance)
                sink_producer = stack.enter_context(SubprocessProducer(spec, label=dst.display, warn=session.warn, debug=session.debug))
            else:
                dst_backend = stack.enter_context(dst_backend)
                if not exactly_once:
                    sink_producer = with_transform(stack.enter_context(open_sink(dst_backend, dst_stream, src_backend)), transform)
                elif is_template(dst_stream):
                    raise UsageError("--exactly-once writes one topic in each transaction; a sink name template routes to many")
        else:
            dst_stream = dst.stream or "-"
        grouped = src_backend.supports(Capability.GROUPS) and not dry_run
        group_name = (group or src.group or default_group(dst.backend, dst_stream)) if grouped else None
        if exactly_once:
            assert dst_backend is not None and group_name is not None
            # Stable across restarts (a restarted bridge fences its predecessor and aborts
            # what it left open); distinct per --consumer, so bridges sharing a group do not fence each other.
            transaction_id = f"evrelay-{group_name}" + (f"-{consumer}" if consumer else "")
            sink_producer = with_transform(stack.enter_context(dst_backend.exactly_once_producer(
                dst_stream, transaction_id=transaction_id, max_transaction_seconds=BRIDGE_TRANSACTION_SECONDS)), transform)
        spec = ReadSpec(
            stream=src_stream,
            start=start,
            follow=grouped or follow,
            group=group_name,
            consumer_name=consumer if grouped else None,
            finish_group=True,
        )
        dead_producer = None
        if dead_letter is not None and not dry_run:
            dead = session.address(dead_letter)
            dead_backend = stack.enter_context(session.backend(dead, {Capability.PUBLISH}, command="--dead-letter"))
            dead_producer = stack.enter_context(dead_backend.producer(dead.require_stream(dead_backend.stream_noun)))
        pattern = stream_pattern(src_stream)
        if pattern is not None and exactly_once:
            raise UsageError("--exactly-once reads one topic as one consumer group; a ~REGEX source reads many")
        if pattern is not None:  # every topic/stream matching ~REGEX, new ones included
            reader = stack.enter_context(MultiConsumer([StreamSource(src.display, src_backend, pattern=pattern)], spec, warn=session.warn))
        else:
            reader = stack.enter_context(src_backend.consumer(spec))
        if group_name and reader.created:
            session.info(f"evrelay: created consumer group {group_name!r} on {src.display} at {start}")
        lag = LagSampler(group_lag_sampler(src_backend, src_stream, group_name)) if group_name else None
        server = MetricsServer(metrics, source=src.display, sink=dst.display) if metrics else None
        if server is not None:
            session.info(f"evrelay: serving Prometheus metrics on http://{parse_listen_address(metrics)[0]}:{server.port}/metrics")
        progress = Watch(ProgressLine(session.stderr_is_tty and not session.quiet, err=session.stderr), server, lag)
        stop = stack.enter_context(StopFlag())
        relay = Relay(
            reader,
            sink_producer,
            sink_label=dst.display,
            source_label=src.display,
            selection=selection,
            dead_letter=dead_producer,
            emit=previewing(writer.write if writer is not None else None, transform, session.warn),
            provenance=not no_provenance,
            stop=stop,
            warn=session.warn,
            progress=progress,
            claim_idle_ms=int(claim_seconds * 1000) if grouped and claim_seconds else None,
        )
        try:
            stats = relay.run(limit=count, idle_timeout=idle_seconds, window=window)
        finally:
            progress.close()
    verb = "would bridge" if dry_run else "bridged"
    positions = ", ".join(sorted(stats.last_positions.values())) or "none"
    note = f"; {stats.filtered} filtered out" if selection is not None else ""
    note += f"; {stats.dead_lettered} dead-lettered" if stats.dead_lettered else ""
    reason = f" ({stats.stop_reason.value})" if stats.stop_reason else ""
    session.info(
        f"{verb} {stats.delivered} message(s) from {src.display} to {dst.display} {stats.timing()}"
        f"{note}; {stats.acked} acked; last acked: {positions}{reason}"
    )
    if stop.signal == signal.SIGINT:
        raise Interrupted(f"interrupted; {stats.acked} message(s) were delivered and acked before stopping")


def register(app: typer.Typer) -> None:
    app.command("bridge", no_args_is_help=True)(with_backend_help(bridge, groups=lambda: backends.help_backends_with("GROUPS")))
