"""`evrelay stats ADDRESS --from -1h`: summarise a range of messages."""

from __future__ import annotations

import contextlib
from typing import Annotated

import typer

from evrelay.cli.common import (
    AddressArgument,
    MatchOptions,
    OutputOption,
    Session,
    StopFlag,
    ToOption,
    command,
    from_option,
    parse_position_option,
)
from evrelay.errors import Interrupted

DEFAULT_FROM = "-1h"


@command()
def stats(
    address: AddressArgument,
    from_: Annotated[str, from_option("Start: a position or time (default -1h).", show_default=True)] = DEFAULT_FROM,
    to: ToOption = None,
    match_options: MatchOptions = MatchOptions(),
    output: OutputOption = None,
    *,
    session: Session,
) -> None:
    """Summarise a range: messages per minute (a small chart), value-size percentiles,
    top keys and header names.

    Reads from --from (default -1h) to --to (default: the current end) without a group.
    -o table (the default on a terminal) draws the chart; -o json prints one object.

    \b
    Examples:
      evrelay stats kafka:orders --from -1h
      evrelay stats redis:orders --from -1d --match-header region=eu -o json
    """
    from evrelay.backends.base import ReadSpec
    from evrelay.cli.sources import open_reader
    from evrelay.summary import RangeSummary

    start = parse_position_option(from_, "--from")
    stop = parse_position_option(to, "--to")
    mode = session.record_mode(output)
    selection = match_options.compile()
    source = session.address(address)
    summary = RangeSummary()
    with contextlib.ExitStack() as stack:
        spec = ReadSpec(stream="", start=start, stop=stop)  # type: ignore[arg-type]
        reader, _, _ = open_reader(session, stack, [address], spec, command="stats")
        stop_flag = stack.enter_context(StopFlag())
        for batch in reader.batches(batch_size=5000, should_stop=stop_flag):
            summary.add(batch if selection is None else selection.select(batch).kept)
    if mode == "json":
        session.record({"address": source.display, "from": from_, "to": to or "end", **summary.record()})
    else:
        session.write_text(summary.text(f"{source.display} ({from_} .. {to or 'end'})"))
    if stop_flag.signal is not None:
        raise Interrupted(f"interrupted after {summary.count} message(s); the summary covers those")


def register(app: typer.Typer) -> None:
    app.command("stats", no_args_is_help=True)(stats)
