"""What every command shares: the option spellings of CONTRACT.md §2, the `Session`, and
the `command` decorator that hands each command its session.

A `Session` is one invocation's view of the world (httpie's Environment): the config and
profile in use, how chatty to be, its stdout and stderr. The app creates it once per
invocation (evrelay/cli/app.py); `@command` gives it to the command, with the session
options (--timeout, --config, --profile, -v, -q) declared here once rather than in every
command (sqlite-utils' shared option decorators). Commands resolve addresses and open
backends through the session, and never touch a client library or the global streams.
`Session` itself lives in evrelay/cli/session.py (no typer there: the fast path of
`publish` builds one without the CLI framework) and is imported from here as before.
"""

from __future__ import annotations

import inspect
import os
import signal
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

from evrelay import backends
from evrelay.cli.session import Session, parse_duration  # noqa: F401 (the commands import them from here)
from evrelay.errors import UsageError

if TYPE_CHECKING:
    from evrelay.addresses import Address
    from evrelay.output import MessageWriter
    from evrelay.positions import StreamPosition
    from evrelay.selection import Selection


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
    typer.Option("--claim-idle", metavar="DURATION", help=f"Groups with pending lists ({backends.help_backends_with('PENDING')}): at start and every few seconds, take over messages another consumer left pending this long (a dead reader's: live readers keep theirs fresh; 0: never).", show_default=True),
]
DEFAULT_CLAIM_IDLE = "30s"


# Options whose flag means the same thing everywhere, worded for each command that takes
# it: the spelling (flags, metavar, bounds) is here once, the help text is the command's.


def with_backend_help(function: Callable[..., Any], **parts: Callable[[], str]) -> Callable[..., Any]:
    """Fill `{name}` in a command's docstring with `parts[name]()`: what the registry says
    about the backends (built when the command is registered, not at import)."""
    text = inspect.cleandoc(function.__doc__ or "")  # the parts are not indented like a docstring
    for name, part in parts.items():
        text = text.replace("{" + name + "}", part())
    function.__doc__ = text
    return function


def from_option(help: str, *, show_default: bool = False) -> Any:
    """`--from POSITION`: where a read starts."""
    return typer.Option("--from", metavar="POSITION", help=help, show_default=show_default)


def count_option(help: str, *, minimum: int = 1, maximum: int | None = MAX_COUNT, show_default: bool = False) -> Any:
    """`-n/--count N`: how many messages."""
    return typer.Option("-n", "--count", metavar="N", min=minimum, max=maximum, help=help, show_default=show_default)


def exactly_once_option(help: str) -> Any:
    """`--exactly-once`: write in transactions, where the sink has them."""
    return typer.Option("--exactly-once", help=help)


def force_option(help: str) -> Any:
    """`--force`: do it although it replaces or skips something."""
    return typer.Option("--force", help=help)


FromOption = Annotated[Optional[str], from_option("Start: beginning, end, stored, OFFSET, P:OFFSET,..., ID, RFC 3339 time, -15m.")]
ToOption = Annotated[Optional[str], typer.Option("--to", metavar="POSITION", help="Stop after this position or time (inclusive).", show_default=False)]
CountOption = Annotated[Optional[int], count_option("Number of messages (with -g: acked once written to stdout; a message in a pipe's buffer counts as printed).", minimum=0)]
FollowOption = Annotated[bool, typer.Option("-f", "--follow", help="Keep waiting for new messages.")]
TimeoutOption = Annotated[Optional[str], typer.Option("--timeout", metavar="DURATION", help="Give up after this long (10s, 2m); also bounds connecting.", show_default=False)]
IdleTimeoutOption = Annotated[Optional[str], typer.Option("--idle-timeout", metavar="DURATION", help="Stop when nothing arrived for this long.", show_default=False)]
OutputOption = Annotated[Optional[str], typer.Option("-o", "--output", metavar="MODE", help="pretty (default on a terminal), json (default otherwise), raw, or kcat/keyed (kcat -J / -K lines).", show_default=False)]
FormatOption = Annotated[Optional[str], typer.Option("--format", metavar="TEMPLATE", help="Python format template, e.g. '{partition}:{offset} {key} {value}'.", show_default=False)]
KeyOption = Annotated[Optional[str], typer.Option("-k", "--key", metavar="KEY", help="Message key.", show_default=False)]
HeaderOption = Annotated[Optional[list[str]], typer.Option("-H", "--header", metavar="NAME=VALUE", help="Header (repeatable; order and duplicates kept).", show_default=False)]
PartitionOption = Annotated[Optional[list[int]], typer.Option("--partition", metavar="P", help=f"Backends with partitions ({backends.help_backends_with('PARTITIONS')}): only this partition (repeatable).", show_default=False)]
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


class OptionBundle:
    """Options that go together, declared once (sqlite-utils' option decorators): a class
    whose annotated attributes are options (Annotated aliases), their values the defaults.
    A command parameter annotated with a bundle stands, in `--help`, for all of its options
    at that place; `@command` hands the command the bundle, filled in. (Plain classes, not
    dataclasses: importing and building those cost every command ~1.4 ms of its start-up.)"""

    def __init__(self, **values: Any) -> None:
        unknown = set(values) - set(self.option_names())
        if unknown:
            raise TypeError(f"{type(self).__name__} has no option {', '.join(sorted(unknown))}")
        self.__dict__.update(values)  # the rest keep the class's defaults

    @classmethod
    def option_names(cls) -> list[str]:
        """The options, in declaration order (a subclass's after its base's)."""
        return [name for klass in reversed(cls.__mro__) for name in vars(klass).get("__annotations__", {})]

    @classmethod
    def parameters(cls) -> list[inspect.Parameter]:
        import typing

        hints = typing.get_type_hints(cls, include_extras=True)
        return [
            inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=hints[name], default=getattr(cls, name))
            for name in cls.option_names()
        ]


class MatchOptions(OptionBundle):
    """--filter and --match-*: which messages a command takes (it keeps them as they are)."""

    filter_expr: FilterOption = None
    match_key: MatchKeyOption = None
    match_header: MatchHeaderOption = None

    @property
    def given(self) -> bool:
        return bool(self.filter_expr or self.match_key or self.match_header)

    def compile(self) -> Selection | None:
        """The compiled selection, or None; a jq syntax error is a usage error here, before
        anything is connected."""
        from evrelay.selection import Selection

        return Selection.from_options(self.filter_expr, None, self.match_key, self.match_header)


class SelectionOptions(OptionBundle):
    """--filter, --map and --match-*: which messages a command takes, and how it rewrites them."""

    filter_expr: FilterOption = None
    map_expr: MapOption = None
    match_key: MatchKeyOption = None
    match_header: MatchHeaderOption = None

    @property
    def given(self) -> bool:
        return bool(self.filter_expr or self.map_expr or self.match_key or self.match_header)

    def compile(self) -> Selection | None:
        """The compiled selection, or None (see MatchOptions.compile)."""
        from evrelay.selection import Selection

        return Selection.from_options(self.filter_expr, self.map_expr, self.match_key, self.match_header)


class MessageOutputOptions(OptionBundle):
    """-o MODE and --format TEMPLATE: how messages are written to stdout."""

    output: OutputOption = None
    template: FormatOption = None

    def writer(self, session: Session) -> MessageWriter:
        return session.writer(self.output, self.template)


class KcatOutputOptions(MessageOutputOptions):
    """-o/--format, and kcat's -J and -K as their shorthands."""

    kcat_json: KcatJsonOption = False
    key_delimiter: KeyDelimiterOption = None

    def writer(self, session: Session) -> MessageWriter:
        mode, delimiter = kcat_mode(self.output, self.kcat_json, self.key_delimiter, "-o")
        return session.writer(mode, self.template, key_delimiter=delimiter)


def group_for(session: Session, address: Address, group: str | None, command: str) -> str:
    """The consumer group a command works on: -g, else the profile's `group`."""
    chosen = group or address.group
    if not chosen:
        raise UsageError(f"{command} needs a consumer group: -g GROUP (or `group` in the profile)")
    return chosen


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
    passes them through as surrogates, which crash C client libraries) and NUL (a C string end)."""
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


SESSION_OPTIONS: dict[str, tuple[Any, Any]] = {
    "timeout": (TimeoutOption, None),
    "config": (ConfigOption, None),
    "profile": (ProfileOption, None),
    "verbose": (VerboseOption, False),
    "quiet": (QuietOption, False),
}
"""The options every command takes for its session: name -> (declaration, default)."""


def invocation_session(context: typer.Context) -> Session:
    """The one session of this invocation, created by the app before any command runs."""
    session = context.find_root().obj
    if not isinstance(session, Session):
        raise RuntimeError("an evrelay command runs inside the evrelay app, which creates its session")
    return session


def command(*, session_options: tuple[str, ...] = tuple(SESSION_OPTIONS)) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Make a function taking `session: Session` a typer command.

    The `session` parameter is replaced, where it stands, by the `session_options` (in
    that order: where they appear in `--help`); when the command runs, their values are
    applied to the invocation's session, which the function receives. A command with its
    own --timeout rules (tail) leaves "timeout" out and sets `session.timeout` itself.
    A parameter annotated with an `OptionBundle` is replaced by the bundle's options in
    the same way, and receives the bundle."""

    def decorate(function: Callable[..., Any]) -> Callable[..., Any]:
        declared = inspect.signature(function, eval_str=True).parameters
        if "session" not in declared:
            raise TypeError(f"{function.__name__} must take a `session` parameter")
        parameters = []
        bundles: dict[str, tuple[type[OptionBundle], list[str]]] = {}
        for parameter in declared.values():
            if isinstance(parameter.annotation, type) and issubclass(parameter.annotation, OptionBundle):
                options = parameter.annotation.parameters()
                bundles[parameter.name] = (parameter.annotation, [option.name for option in options])
                parameters.extend(options)
            elif parameter.name == "session":
                parameters.extend(
                    inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=SESSION_OPTIONS[name][0], default=SESSION_OPTIONS[name][1])
                    for name in session_options
                )
            else:
                # Keyword-only: typer passes every value by name, and the order stays free.
                parameters.append(parameter.replace(kind=inspect.Parameter.KEYWORD_ONLY))
        parameters.append(inspect.Parameter("evrelay_context", inspect.Parameter.KEYWORD_ONLY, annotation=typer.Context))

        def run(*, evrelay_context: typer.Context, **values: Any) -> Any:
            session = invocation_session(evrelay_context)
            session.apply_options(**{name: values.pop(name) for name in session_options})
            for name, (bundle, names) in bundles.items():
                values[name] = bundle(**{option: values.pop(option) for option in names})
            return function(session=session, **values)

        run.__name__, run.__qualname__, run.__module__ = function.__name__, function.__qualname__, function.__module__
        run.__doc__ = function.__doc__
        run.__signature__ = inspect.Signature(parameters)  # type: ignore[attr-defined]
        run.__annotations__ = {p.name: p.annotation for p in parameters}
        return run

    return decorate


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
        self._install(signum)  # the disposition was reset to the default by the signal
        if self.signal is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt
        self.signal = signum

    def _install(self, signum: int) -> Any:
        previous = signal.signal(signum, self._handle)
        if "jq" in sys.modules:  # a --filter/--map was compiled
            _next_signal_kills_if_stuck(signum)
        return previous

    def __enter__(self) -> StopFlag:
        for signum in (signal.SIGINT, signal.SIGTERM):
            self._previous[signum] = self._install(signum)
        return self

    def __exit__(self, *exc: object) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)


def _next_signal_kills_if_stuck(signum: int) -> None:
    """Have the kernel reset `signum` to its default action once it is delivered
    (SA_RESETHAND on the handler Python installed), so a second Ctrl-C or SIGTERM ends a
    process the first could not stop.

    Python runs a signal's handler only between bytecodes. jq evaluates an expression in
    C, without returning to Python until it is done, so `--filter 'until(false; .)'`
    never lets the StopFlag hear the first signal; the second now takes the default
    action (exit by the signal: 130 for SIGINT). When Python is running, the handler
    installs itself again at once and nothing changes. Linux only (the struct's layout);
    elsewhere only SIGKILL stops such an expression."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    class SigAction(ctypes.Structure):  # struct sigaction of glibc and musl on Linux
        _fields_ = [("handler", ctypes.c_void_p), ("mask", ctypes.c_ulong * (1024 // (8 * ctypes.sizeof(ctypes.c_ulong)))),
                    ("flags", ctypes.c_int), ("restorer", ctypes.c_void_p)]

    sa_resethand = 0x80000000
    libc = ctypes.CDLL(None, use_errno=True)
    action = SigAction()
    if libc.sigaction(signum, None, ctypes.byref(action)) != 0:
        return
    action.flags |= ctypes.c_int(sa_resethand).value
    libc.sigaction(signum, ctypes.byref(action), None)


def __getattr__(name: str) -> Any:
    # AddressArgument is built on first use: its help lists plug-in backends' URL schemes,
    # and finding plug-ins imports importlib.metadata and reads every installed package's
    # metadata (~12 ms), which commands that do not take an ADDRESS (tail) need not pay.
    if name == "AddressArgument":
        address_argument = Annotated[
            str,
            typer.Argument(metavar="ADDRESS", help=f"{backends.help_address_forms()}.", autocompletion=complete_address, show_default=False),
        ]
        globals()[name] = address_argument
        return address_argument
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
