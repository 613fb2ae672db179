"""What every command shares: the option spellings of CONTRACT.md §2 and the `Session`.

A `Session` is one command invocation's view of the world (httpie's Environment): the
config and profile in use, how chatty to be, and the stderr reporter. Commands create one,
resolve addresses and open backends through it, and never touch a client library.
"""

from __future__ import annotations

import os
import signal
import sys
from functools import cached_property
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from evrelay.errors import UsageError

if TYPE_CHECKING:
    from evrelay.addresses import Address
    from evrelay.backends.base import Backend
    from evrelay.config import Config
    from evrelay.positions import StreamPosition

DEFAULT_CONNECT_TIMEOUT = 10.0

def complete_address(incomplete: str) -> list[str]:
    """Shell completion for ADDRESS: profile names (as PROFILE and PROFILE:), and `-`."""
    try:
        from evrelay.config import load_config

        profiles = sorted(load_config().profiles)
    except Exception:  # completion must never print an error into the user's shell
        profiles = []
    candidates = [*profiles, *(f"{p}:" for p in profiles), "-", "file:"]
    return [c for c in candidates if c.startswith(incomplete)]


# --- the shared options (same spelling on every command that takes them) ---------------

ConfigOption = Annotated[
    Optional[str],
    typer.Option("--config", metavar="PATH", help="Config file (else $EVRELAY_CONFIG, ./evrelay.toml, ~/.config/evrelay/config.toml).", show_default=False),
]
ProfileOption = Annotated[
    Optional[str],
    typer.Option("--profile", metavar="NAME", help="Profile for bare names (else $EVRELAY_PROFILE, then the config's default_profile).", show_default=False),
]
AddressArgument = Annotated[
    str,
    typer.Argument(metavar="ADDRESS", help="PROFILE, PROFILE:NAME, NAME, kafka://..., redis://..., file:PATH or -.", autocompletion=complete_address, show_default=False),
]
VerboseOption = Annotated[bool, typer.Option("-v", "--verbose", help="More detail on stderr (client logs, tracebacks).")]
QuietOption = Annotated[bool, typer.Option("-q", "--quiet", help="No summary or progress on stderr.")]
MAX_COUNT = 2**62
"""Counts (-n, --window, --expect) beyond this are a typo, and overflow 64-bit storage."""


def utf8_name(ctx: typer.Context, param: typer.CallbackParam, value: str | None) -> str | None:
    """Group and consumer names are text everywhere: bytes that are not UTF-8 (passed
    through by the shell as surrogates) are a usage error, not a crash in a client library."""
    if value is not None:
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise typer.BadParameter(f"{os.fsencode(value)!r} is not valid UTF-8") from None
    return value


GroupOption = Annotated[Optional[str], typer.Option("-g", "--group", metavar="GROUP", help="Read as this consumer group.", show_default=False, callback=utf8_name)]
ConsumerOption = Annotated[
    Optional[str],
    typer.Option("--consumer", metavar="NAME", callback=utf8_name, help="Consumer name within the group (default: unique per process, evrelay-HOST-PID-TAG; a stable name re-reads its own pending messages on restart).", show_default=False),
]
ClaimIdleOption = Annotated[
    str,
    typer.Option("--claim-idle", metavar="DURATION", help="Groups with pending lists (Redis, local): at start and every few seconds, take over messages another consumer left pending this long (a dead reader's: live readers keep theirs fresh; 0: never).", show_default=True),
]
DEFAULT_CLAIM_IDLE = "30s"
FromOption = Annotated[Optional[str], typer.Option("--from", metavar="POSITION", help="Start: beginning, end, stored, OFFSET, P:OFFSET,..., ID, RFC 3339 time, -15m.", show_default=False)]
ToOption = Annotated[Optional[str], typer.Option("--to", metavar="POSITION", help="Stop after this position or time (inclusive).", show_default=False)]
CountOption = Annotated[Optional[int], typer.Option("-n", "--count", metavar="N", min=0, max=MAX_COUNT, help="Number of messages (with -g: acked once written to stdout; a message in a pipe's buffer counts as printed).", show_default=False)]
FollowOption = Annotated[bool, typer.Option("-f", "--follow", help="Keep waiting for new messages.")]
TimeoutOption = Annotated[Optional[str], typer.Option("--timeout", metavar="DURATION", help="Give up after this long (10s, 2m); also bounds connecting.", show_default=False)]
IdleTimeoutOption = Annotated[Optional[str], typer.Option("--idle-timeout", metavar="DURATION", help="Stop when nothing arrived for this long.", show_default=False)]
OutputOption = Annotated[Optional[str], typer.Option("-o", "--output", metavar="MODE", help="pretty (default on a terminal), json (default otherwise), raw, or kcat/keyed (kcat -J / -K lines).", show_default=False)]
FormatOption = Annotated[Optional[str], typer.Option("--format", metavar="TEMPLATE", help="Python format template, e.g. '{partition}:{offset} {key} {value}'.", show_default=False)]
KeyOption = Annotated[Optional[str], typer.Option("-k", "--key", metavar="KEY", help="Message key.", show_default=False)]
HeaderOption = Annotated[Optional[list[str]], typer.Option("-H", "--header", metavar="NAME=VALUE", help="Header (repeatable; order and duplicates kept).", show_default=False)]
PartitionOption = Annotated[Optional[list[int]], typer.Option("--partition", metavar="P", help="Kafka: only this partition (repeatable).", show_default=False)]
DryRunOption = Annotated[bool, typer.Option("--dry-run", help="Show what would happen; send nothing, ack nothing.")]
CloudEventsOption = Annotated[
    Optional[str],
    typer.Option("--cloudevents", metavar="MODE", help="Convert CloudEvents to this content mode on the sink: binary (ce_ headers + data) or structured (application/cloudevents+json).", show_default=False),
]
YesOption = Annotated[bool, typer.Option("-y", "--yes", help="Do not ask for confirmation.")]
KcatJsonOption = Annotated[bool, typer.Option("-J", "--kcat-json", help="kcat's -J JSON envelope (the same as -o kcat / --input kcat).")]
KeyDelimiterOption = Annotated[
    Optional[str],
    typer.Option("-K", "--key-delimiter", metavar="DELIM", help="kcat's -K: KEY<DELIM>VALUE lines (implies -o keyed / --input keyed).", show_default=False),
]


def kcat_mode(mode: str | None, kcat_json: bool, key_delimiter: str | None, flag: str) -> tuple[str | None, bytes]:
    """Resolve -J / -K into the output or input mode they stand for, and the delimiter."""
    if kcat_json and key_delimiter is not None:
        raise UsageError("give -J or -K, not both")
    wanted = "kcat" if kcat_json else "keyed" if key_delimiter is not None else None
    if wanted is not None and mode is not None and mode != wanted:
        raise UsageError(f"-{'J' if kcat_json else 'K'} means {flag} {wanted}; it does not go with {flag} {mode}")
    if key_delimiter == "":
        raise UsageError("-K/--key-delimiter needs a delimiter, e.g. -K:")
    delimiter = os.fsencode(key_delimiter) if key_delimiter is not None else b":"
    return (wanted or mode), delimiter


FilterOption = Annotated[
    Optional[str],
    typer.Option("--filter", metavar="JQ", help="Keep a message when this jq expression is true; it sees the JSON envelope, .value parsed when it is JSON.", show_default=False),
]
MapOption = Annotated[
    Optional[str],
    typer.Option("--map", metavar="JQ", help="Rewrite the envelope with this jq expression (no output drops the message, several split it).", show_default=False),
]
MatchKeyOption = Annotated[
    Optional[list[str]],
    typer.Option("--match-key", metavar="GLOB", help="Keep messages whose key matches this glob (repeatable: any of them).", show_default=False),
]
MatchHeaderOption = Annotated[
    Optional[list[str]],
    typer.Option("--match-header", metavar="NAME=GLOB", help="Keep messages with a header NAME matching GLOB (repeatable: all of them).", show_default=False),
]


def selection_from_options(filter_expr, map_expr, match_keys, match_headers):
    """The compiled --filter/--map/--match-* of a command, or None; a jq syntax error is a
    usage error here, before anything is connected."""
    from evrelay.selection import Selection

    return Selection.from_options(filter_expr, map_expr, match_keys, match_headers)


class _Runtime:
    """Process-wide flags the error mapper needs before/after a command's own code runs,
    and the global options given before the command (`evrelay -v --config X tail ...`)."""

    verbose: bool = False
    config: str | None = None
    profile: str | None = None
    global_verbose: bool = False
    quiet: bool = False

    def reset(self) -> None:
        self.verbose = self.global_verbose = self.quiet = False
        self.config = self.profile = None


def effective_config(config: str | None) -> str | None:
    """`--config` after the command, else the one before it."""
    return config if config is not None else RUNTIME.config


RUNTIME = _Runtime()


def parse_duration(text: str | None, flag: str) -> float | None:
    """Seconds from `--timeout`-style text, or None; UsageError naming the flag."""
    if text is None:
        return None
    from evrelay.timestamps import parse_duration_seconds

    try:
        return parse_duration_seconds(text)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from None


def parse_position_option(text: str | None, flag: str) -> StreamPosition | None:
    if text is None:
        return None
    from evrelay.positions import parse_position

    try:
        return parse_position(text)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from None


def check_range(start: StreamPosition | None, stop: StreamPosition | None, from_text: str | None, to_text: str | None) -> None:
    """Refuse `--to` before `--from`: an empty range is a mistake, not a quiet success."""
    from evrelay.positions import reversed_range

    if reversed_range(start, stop):
        raise UsageError(f"--to {to_text} is before --from {from_text}: the range is empty (were they swapped?)")


def check_header_name(name: str, where: str) -> None:
    """Header names are text on every backend: refuse bytes that are not UTF-8 (the shell
    passes them through as surrogates, which crash librdkafka) and NUL (a C string end)."""
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.fsencode(name)
        raise UsageError(f"{where}: header name {shown!r} is not valid UTF-8; header values may be binary, names may not") from None
    if "\0" in name:
        raise UsageError(f"{where}: header name {name!r} contains a NUL character")


def parse_headers(pairs: list[str] | None) -> list[tuple[str, bytes]]:
    headers: list[tuple[str, bytes]] = []
    for pair in pairs or []:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise UsageError(f"-H/--header expects NAME=VALUE, got {pair!r}")
        check_header_name(name, "-H/--header")
        headers.append((name, os.fsencode(value)))
    return headers


class Session:
    """One command invocation: config, profile, verbosity, stderr, backends."""

    def __init__(
        self,
        *,
        config: str | None = None,
        profile: str | None = None,
        verbose: bool = False,
        quiet: bool = False,
        timeout: float | None = None,
    ) -> None:
        self.config_option = effective_config(config)
        self.profile = profile if profile is not None else RUNTIME.profile
        self.verbose = verbose or RUNTIME.global_verbose
        self.quiet = quiet or RUNTIME.quiet
        self.timeout = timeout
        RUNTIME.verbose = self.verbose

    @cached_property
    def config(self) -> Config:
        from evrelay.config import load_config

        return load_config(self.config_option)

    @property
    def connect_timeout(self) -> float:
        return self.timeout if self.timeout is not None else DEFAULT_CONNECT_TIMEOUT

    def address(self, text: str) -> Address:
        from evrelay.addresses import resolve_address

        return resolve_address(text, self.config, profile=self.profile)

    def backend(self, address: Address) -> Backend:
        """The (not yet opened) backend for an address; use it as a context manager."""
        from evrelay.addresses import open_backend
        from evrelay.backends.base import BackendSettings

        settings = BackendSettings(timeout=self.connect_timeout, verbose=self.verbose, warn=self.warn, origin=address.where)
        return open_backend(address, settings)

    # --- stderr ------------------------------------------------------------------------

    def info(self, text: str) -> None:
        """A summary or progress line; silenced by -q."""
        if not self.quiet:
            sys.stderr.write(f"{text}\n")
            sys.stderr.flush()

    def warn(self, text: str) -> None:
        sys.stderr.write(f"evrelay: warning: {text}\n")
        sys.stderr.flush()

    def debug(self, text: str) -> None:
        if self.verbose:
            sys.stderr.write(f"evrelay: {text}\n")
            sys.stderr.flush()


class StopFlag:
    """Set by SIGINT/SIGTERM: the relay finishes its window, acks, and returns.

    A second SIGINT while stopping abandons the window at once (KeyboardInterrupt)."""

    def __init__(self) -> None:
        self.signal: int | None = None
        self._previous: dict[int, Any] = {}

    @property
    def requested(self) -> bool:
        return self.signal is not None

    def __call__(self) -> bool:
        return self.requested

    def _handle(self, signum: int, _frame: Any) -> None:
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum

    def __enter__(self) -> StopFlag:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)
