"""Inspection: `ls`, `info`, `groups`, `health`, `lag`. Tables on a terminal, JSON for scripts."""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from evrelay import backends
from evrelay.cli.common import (
    MAX_COUNT,
    AddressArgument,
    GroupOption,
    OutputOption,
    Session,
    YesOption,
    command,
    complete_address,
    group_for,
    parse_duration,
    with_backend_help,
)
from evrelay.errors import BackendUnavailable, EvrelayError, ExpectationFailed, UsageError

if TYPE_CHECKING:
    from evrelay.addresses import Address

ProfileArgument = Annotated[
    Optional[str],
    typer.Argument(metavar="PROFILE", help=f"A profile (default: the default profile) or an inline URL ({', '.join(f'{scheme}://...' for scheme in backends.url_schemes(plugins=False))}).", autocompletion=complete_address, show_default=False),
]


def resolve_profile(session: Session, name: str | None) -> Address:
    """A whole profile (no stream needed) or an inline URL."""
    import os

    if name is not None and "://" in name:
        return session.address(name)
    chosen = name or session.profile or os.environ.get("EVRELAY_PROFILE") or session.config.default_profile
    session.config.profile(chosen)  # unknown profile: exit 2 with a did-you-mean
    return session.address(chosen)


@command()
def ls(
    profile_name: ProfileArgument = None,
    output: OutputOption = None,
    *,
    session: Session,
) -> None:
    """List the topics or streams of a profile, with partitions or length.

    \b
    Examples:
      evrelay ls kafka
      evrelay ls redis -o json
    """
    from evrelay.backends.base import Capability

    mode = session.record_mode(output)
    target = resolve_profile(session, profile_name)
    with session.backend(target, {Capability.INSPECT}, command="ls") as backend:
        streams = backend.list_streams()
    table = backend.stream_table(streams)
    session.records(table.rows, table.columns, mode)


@command()
def info(
    address: AddressArgument,
    output: OutputOption = None,
    *,
    session: Session,
) -> None:
    """Show a topic or stream: per partition low/high offsets (backends with partitions:
    {partitioned}) or length, first and last ID and time (the others); and its consumer groups.

    \b
    Examples:
      evrelay info kafka:orders
      evrelay info redis:orders -o json
    """
    from evrelay.backends.base import Capability

    mode = session.record_mode(output)
    source = session.address(address)
    with session.backend(source, {Capability.INSPECT}, command="info") as backend:
        stream = source.require_stream(backend.stream_noun)
        details = backend.stream_info(stream)
    table = backend.info_table(details)
    groups = [asdict(g) for g in details.groups]
    if mode == "json":
        session.record({"backend": backend.name, "stream": details.name, "length": details.length, "partitions": table.rows, "groups": groups})
        return
    session.records(table.rows, table.columns, mode, title=f"{backend.stream_noun} {details.name} ({details.length} messages)")
    session.records(groups, GROUP_COLUMNS, mode, title=f"groups ({len(groups)})")


GROUP_COLUMNS = [
    ("name", "GROUP"),
    ("consumers", "MEMBERS"),
    ("pending", "PENDING"),
    ("lag", "LAG"),
    ("position", "POSITION"),
    ("state", "STATE"),
]


@command()
def groups(
    address: AddressArgument,
    delete: Annotated[Optional[str], typer.Option("--delete", metavar="GROUP", help="Delete this consumer group (asks first; --yes in scripts).", show_default=False)] = None,
    yes: YesOption = False,
    output: OutputOption = None,
    *,
    session: Session,
) -> None:
    """List the consumer groups of a topic or stream: members, pending, lag, position;
    or delete one with --delete GROUP.

    Deleting removes the group's position, pending list and consumers: a reader of that
    group starts again as a new group. It asks on a terminal; --yes skips the question.

    {group_help}

    \b
    Examples:
      evrelay groups redis:orders
      evrelay groups kafka:orders --delete old-billing --yes
    """
    from evrelay.backends.base import Capability

    source = session.address(address)
    if delete is not None:
        with session.backend(source, {Capability.GROUP_DELETE}, command="groups --delete") as backend:
            stream = source.require_stream(backend.stream_noun)
            scope = backend.group_delete_scope(stream, delete)
            session.info(f"delete {scope}")
            if not yes:
                if not session.stdin_is_tty:
                    raise UsageError("refusing to delete the group without confirmation: stdin is not a terminal; add --yes")
                if not typer.confirm(f"Delete group {delete!r}?", default=False, err=True):
                    raise EvrelayError("not deleted (declined)")
            backend.delete_group(stream, delete)
        session.info(f"deleted consumer group {delete!r} on {source.display}")
        return
    mode = session.record_mode(output)
    with session.backend(source, {Capability.GROUPS}, command="groups") as backend:
        stream = source.require_stream(backend.stream_noun)
        rows = [asdict(g) for g in backend.group_infos(stream)]
    session.records(rows, GROUP_COLUMNS, mode)


@command()
def health(
    profiles: Annotated[Optional[list[str]], typer.Argument(metavar="PROFILE", help="Profiles or URLs to check (default: every profile in the config).", autocompletion=complete_address, show_default=False)] = None,
    wait: Annotated[Optional[str], typer.Option("--wait", metavar="DURATION", help="Keep checking until all are healthy, for at most this long (exit 4 if not).", show_default=False)] = None,
    output: OutputOption = None,
    *,
    session: Session,
) -> None:
    """Check that backends answer: exit 0 healthy, 3 unreachable, 4 still not healthy after --wait.

    \b
    Examples:
      evrelay health kafka redis --wait 60s     # CI: wait for the services to come up
    """
    from evrelay.backends.base import Health

    wait_seconds = parse_duration(wait, "--wait")
    session.timeout = session.timeout or (min(wait_seconds, 5.0) if wait_seconds else 5.0)
    mode = session.record_mode(output)
    names = profiles or sorted(session.config.profiles)
    targets = [(name, resolve_profile(session, name)) for name in names]
    deadline = time.monotonic() + wait_seconds if wait_seconds else None

    def check(target: Address) -> Health:
        try:
            with session.backend(target) as backend:
                return backend.health_check()
        except BackendUnavailable as exc:
            return Health(False, exc.message)

    results = {name: check(target) for name, target in targets}
    shown = {name: target.display for name, target in targets}
    while deadline is not None and not all(r.healthy for r in results.values()) and time.monotonic() < deadline:
        time.sleep(min(0.5, max(deadline - time.monotonic(), 0)))
        for name, target in targets:
            if not results[name].healthy:
                results[name] = check(target)
    rows = [
        {
            "profile": target.display,  # a URL argument may carry a password
            "backend": target.backend,
            "healthy": results[name].healthy,
            "latency_ms": round(results[name].latency_ms, 1) if results[name].latency_ms is not None else None,
            "detail": results[name].detail,
        }
        for name, target in targets
    ]
    session.records(rows, [("profile", "PROFILE"), ("backend", "BACKEND"), ("healthy", "HEALTHY"), ("latency_ms", "MS"), ("detail", "DETAIL")], mode)
    unhealthy = [shown[name] for name, result in results.items() if not result.healthy]
    if unhealthy:
        if deadline is not None:
            raise ExpectationFailed(f"still not healthy after --wait {wait}: {', '.join(unhealthy)}")
        raise BackendUnavailable(f"not healthy: {', '.join(unhealthy)}")


@command()
def lag(
    address: AddressArgument,
    group: GroupOption = None,
    max_lag: Annotated[Optional[int], typer.Option("--max", metavar="N", min=0, max=MAX_COUNT, help="Exit 4 when the total lag (not yet delivered plus delivered but not acked) is over N.", show_default=False)] = None,
    max_age: Annotated[Optional[str], typer.Option("--max-age", metavar="DURATION", help="Exit 4 when the oldest unconsumed message is older than this (5m, 1h).", show_default=False)] = None,
    output: OutputOption = None,
    *,
    session: Session,
) -> None:
    """Show how far a consumer group is behind, in messages and in time (the age of the
    oldest message it has not finished: pending or not yet delivered).

    With --max N, exit 4 when it is more than N messages behind; with --max-age DURATION,
    when that oldest message is older than DURATION.

    The total counts messages not yet delivered to the group and, where the backend keeps
    them ({pending}), messages delivered but still pending (not acked): both are work
    the group has not finished.

    \b
    Examples:
      evrelay lag kafka:orders -g billing --max 1000    # a CI gate
      evrelay lag redis:orders -g billing --max-age 5m  # a cron check
    """
    from evrelay.backends.base import Capability
    from evrelay.timestamps import format_duration, format_ms, now_ms

    max_age_seconds = parse_duration(max_age, "--max-age")
    mode = session.record_mode(output)
    source = session.address(address)
    with session.backend(source, {Capability.GROUPS}, command="lag") as backend:
        stream = source.require_stream(backend.stream_noun)
        group_name = group_for(session, source, group, "lag")
        lags = backend.group_lag(stream, group_name)
    now = now_ms()
    rows = []
    for row in lags:
        record = asdict(row)
        oldest = record.pop("oldest_time")
        record["oldest"] = format_ms(oldest) if oldest is not None else None
        record["age_s"] = round(max(now - oldest, 0) / 1000, 3) if oldest is not None else None
        rows.append(record)
    undelivered = sum(r["lag"] for r in rows)
    pending = sum(r["pending"] or 0 for r in rows)
    total = undelivered + pending
    detail = f" ({undelivered} not delivered, {pending} pending)" if pending else ""
    ages = [r["age_s"] for r in rows if r["age_s"] is not None]
    oldest_age = max(ages) if ages else None
    session.records(rows, [*backend.lag_columns, ("age_s", "AGE S")], mode)
    age_text = f", oldest unconsumed message {format_duration(oldest_age)} old" if oldest_age is not None else ", nothing unconsumed"
    session.info(f"lag of group {group_name!r} on {source.display}: {total}{detail}{age_text}")
    if max_lag is not None and total > max_lag:
        raise ExpectationFailed(
            f"group {group_name!r} on {source.display} is {total} message(s) behind{detail}, over --max {max_lag}"
        )
    if max_age_seconds is not None and oldest_age is not None and oldest_age > max_age_seconds:
        raise ExpectationFailed(
            f"group {group_name!r} on {source.display} has a message {format_duration(oldest_age)} old not yet consumed, "
            f"over --max-age {max_age}"
        )


def register(app: typer.Typer) -> None:
    app.command("ls")(ls)
    app.command("info", no_args_is_help=True)(with_backend_help(info, partitioned=lambda: backends.help_backends_with("partitioned")))
    app.command("groups", no_args_is_help=True)(with_backend_help(groups, group_help=lambda: backends.help_sentences("group_help")))
    app.command("health")(health)
    app.command("lag", no_args_is_help=True)(with_backend_help(lag, pending=lambda: backends.help_backends_with("PENDING")))
