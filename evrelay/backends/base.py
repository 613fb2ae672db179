"""The adapter interface: the only way any command reaches a backend.

A `Backend` is one connection to one system (a Kafka cluster, a Redis server, the local
SQLite store, a JSONL file), opened from a profile's options. It hands out

* `Producer`s, which queue batches with `send()` and confirm them with `flush()`: success
  is reported only for what the backend acknowledged (Kafka delivery reports, XADD
  replies, a committed SQLite transaction); a delivery not confirmed in time raises
  `ProducerTimeout`;
* `Consumer`s, which `read()` batches from a position (beginning, end, stored, native, time,
  last N) or as a consumer group; group-read messages can be `ack()`ed or `reject()`ed,
  and non-follow reads set `exhausted` at the end of the data.

A backend that can commit a source's progress in the same transaction as the messages it
writes (Kafka -> Kafka on one cluster) also hands out exactly-once producers: their
`commit()` makes a window of messages and the source's acks of it visible together, or
neither (`transactional`, `begin`, `commit`, `abort` below; the relay drives them).

Each backend declares its `capabilities`; commands call `require()` first so a missing
capability is refused cleanly, before anything is read or sent. Inspection and group
administration (pending, claim, group seeks, lag) live here too, so the commands that use
them stay backend-neutral.

The interface is spread over sibling modules by subject (`capabilities`: what a backend
can do and needs; `messaging`: producers, consumers and reads; `inspection`: the rows of
ls/info/groups/lag and group seeks); this module holds `Backend` itself and re-exports
every name, so backends and plug-ins import all of it from here.
"""

from __future__ import annotations

import functools
import re
from abc import ABC
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from evrelay.backends.capabilities import REFUSAL_HINTS as REFUSAL_HINTS  # defined here before the split
from evrelay.backends.capabilities import Capability, ClientLibrary, import_client, read_needs, refuse_missing
from evrelay.backends.inspection import (
    GroupInfo,
    GroupLag,
    GroupSeekPlan,
    GroupSeekStep,
    Health,
    PartitionInfo,
    PendingEntry,
    StreamInfo,
    Table,
    _time_text,
)
from evrelay.backends.messaging import (
    Consumer,
    DeliveryFailure,
    DeliveryReport,
    GroupReader,
    Producer,
    ReadSpec,
    StopReason,
    default_consumer_name,
)
from evrelay.envelope import Message, Position
from evrelay.errors import AddressError, ConfigError, UnsupportedError, UsageError
from evrelay.positions import StreamPosition

__all__ = [
    "Backend",
    "BackendSettings",
    "Capability",
    "ClientLibrary",
    "Consumer",
    "DeliveryFailure",
    "DeliveryReport",
    "GroupInfo",
    "GroupLag",
    "GroupReader",
    "GroupSeekPlan",
    "GroupSeekStep",
    "Health",
    "Message",
    "PartitionInfo",
    "PendingEntry",
    "Position",
    "Producer",
    "ReadSpec",
    "StopReason",
    "StreamInfo",
    "Table",
    "default_consumer_name",
    "import_client",
    "read_needs",
    "refuse_missing",
]


@dataclass(slots=True)
class BackendSettings:
    """What every backend gets besides its profile's options."""

    timeout: float = 10.0
    """Seconds to wait for a connection or a single request before giving up (exit 3)."""
    verbose: bool = False
    warn: Callable[[str], None] = field(default=lambda text: None)
    """Writes a warning line to stderr (through the CLI's console)."""
    client_name: str = "evrelay"
    origin: str = ""
    """Where the options came from (config file, line and profile, or the address): errors
    about credentials and certificates name it."""


LOOPBACK_NAMES = frozenset({"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"})


def canonical_endpoint(host: str | None, port: int | str | None, default_port: int) -> tuple[str, int]:
    """`(host, port)` spelled one way: lower case, the default port filled in, and every
    name of this machine's loopback (`localhost`, `127.0.0.1`, `::1`, `0.0.0.0`, which a
    client connects to as loopback) as `loopback`. Names are not resolved: that could
    block, and two different names for one remote server stay two places."""
    import ipaddress

    name = (host or "localhost").strip("[]").lower().rstrip(".")
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        loopback = name in LOOPBACK_NAMES
    else:
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        loopback = address.is_loopback or address.is_unspecified
        name = str(address)
    try:
        number = int(port) if port not in (None, "") else default_port
    except ValueError:
        number = default_port
    return ("loopback" if loopback else name, number)


def toml_kind(value: Any) -> str:
    """What TOML calls the type of a value read from a config file (for error messages)."""
    import datetime

    if isinstance(value, datetime.datetime):
        return "date-time"
    if isinstance(value, datetime.date):
        return "date"
    if isinstance(value, datetime.time):
        return "time"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "table"
    return {bool: "boolean", int: "integer", float: "float", str: "string"}.get(type(value), type(value).__name__)


def _query_value(text: str) -> Any:
    # The common values as TOML reads them, without importing tomllib (~4 ms at start-up).
    if text in ("true", "false"):
        return text == "true"
    if text.isascii() and text.isdigit() and len(text) < 19 and (text == "0" or text[0] != "0"):
        return int(text)
    import tomllib

    try:
        value = tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text
    return value if isinstance(value, (int, float, bool)) else text


class Backend(ABC):
    """One connection to one backend, opened from a profile's options.

    Subclasses set `name`, `capabilities` and `option_names` (the profile keys they
    accept); `options_from_url` when `NAME://...` addresses should reach them (the URL
    scheme is the name they are registered under).
    """

    name: ClassVar[str]
    capabilities: ClassVar[frozenset[Capability]] = frozenset()
    option_names: ClassVar[frozenset[str]] = frozenset()
    stream_noun: ClassVar[str] = "stream"
    partitioned: ClassVar[bool] = False
    """True when positions are PARTITION:OFFSET (Kafka), False for entry IDs."""
    stream_key: ClassVar[str] = "stream"
    """The profile key naming its default topic/stream (`config show` writes it so)."""
    required_options: ClassVar[frozenset[str]] = frozenset()
    """Profile keys a profile of this backend cannot do without (`config add` checks)."""
    secret_options: ClassVar[frozenset[str]] = frozenset()
    """Profile keys always masked, besides every secret-looking one (`config.is_secret_key`)."""
    target_option: ClassVar[str | None] = None
    """The profile key saying where it points (`url`, `bootstrap_servers`, `path`): `config list` shows it."""
    message_id_syntax: ClassVar[str] = "an entry ID (1700000000000-0)"
    """How `ack ID...` and error messages spell one message's ID on this backend."""
    cumulative_ack: ClassVar[bool] = False
    """True where acking a message acks every earlier one of its partition (a commit up
    to it, Kafka); False where each message is acked on its own."""
    ack_help: ClassVar[str | None] = None
    """A sentence `ack --help` adds about this backend's acks (what makes them special)."""
    group_help: ClassVar[str | None] = None
    """A sentence `groups --help` adds about deleting this backend's groups."""
    group_seek_help: ClassVar[str | None] = None
    """A sentence `replay --help` adds about moving this backend's groups (replay -g)."""
    lag_columns: ClassVar[list[tuple[str, str]]] = [
        ("position", "POSITION"),
        ("end", "END"),
        ("lag", "LAG"),
        ("pending", "PENDING"),
    ]
    """The `GroupLag` fields `lag` (and `ack --list` without a pending list) shows."""
    sink_in_own_process: ClassVar[bool] = False
    """True where a bridge writes to this backend from a child process by default: its
    producer costs enough CPU per message that running it on a second core, beside the
    reading half, pays for the pipe between them (README, Performance; `--in-process`)."""
    client_library: ClassVar[ClientLibrary | None] = None
    """The client library `open()` imports, checked by `check_client()` before a backend
    is created (None: the standard library is enough)."""

    @classmethod
    def check_client(cls) -> None:
        """Raise MissingClientError (exit 2, with the pip command) when this backend's
        client library cannot be imported."""
        if cls.client_library is not None:
            import_client(cls.client_library, cls.name)

    def __init_subclass__(cls, **kwargs: Any) -> None:
        # Every backend's consumer(), plug-ins' included, refuses a read that needs what the
        # backend does not declare, in the one wording, before it reads: the check lives
        # here once instead of at the top of each implementation.
        super().__init_subclass__(**kwargs)
        consumer = cls.__dict__.get("consumer")
        if consumer is not None and not getattr(consumer, "checks_read_needs", False):

            @functools.wraps(consumer)
            def checked_consumer(self: Backend, spec: ReadSpec) -> Consumer:
                refuse_missing(self, read_needs(spec))
                return consumer(self, spec)

            checked_consumer.checks_read_needs = True  # type: ignore[attr-defined]
            cls.consumer = checked_consumer  # type: ignore[method-assign]

    def __init__(self, options: Mapping[str, Any], settings: BackendSettings | None = None) -> None:
        self.options = dict(options)
        self.settings = settings or BackendSettings()

    # --- profile options ------------------------------------------------------------------

    def positive_int_option(self, name: str) -> int | None:
        value = self.options.get(name)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise ConfigError(f"{self.name} option {name} must be a positive integer, not {value!r}")
        return value

    def table_option(self, name: str, what: str) -> dict[str, Any]:
        """A table of client settings handed to a client library: each value a string,
        number or boolean. A TOML date, array or table would reach the library as its
        Python repr (`linger.ms = 1979-05-27` as "1979-05-27"), so it is refused."""
        value = self.options.get(name) or {}
        if not isinstance(value, dict):
            raise ConfigError(f"{self.name} option {name!r} must be a table of {what}")
        import datetime

        for key, setting in value.items():
            # What TOML reads besides scalars; other objects can only come from Python
            # code handing the backend options directly (a redis-py parser_class), its business.
            if isinstance(setting, (list, dict, datetime.date, datetime.time)):
                raise ConfigError(
                    f"{self.name} option {key!r} (in {name}, the {what}) must be a string, number or boolean, "
                    f"not a TOML {toml_kind(setting)} ({setting!r})"
                )
        return {str(k): v for k, v in value.items()}

    def bool_option(self, name: str, default: bool = False) -> bool:
        """A yes/no option: a TOML boolean in a profile, `true`/`false` in an address's query
        string (read as TOML, like every query value). Nothing else: `create = "yes"` is a
        string, and a string that is not empty would otherwise count as true."""
        value = self.options.get(name, default)
        if isinstance(value, bool):
            return value
        shown = f'"{value}"' if isinstance(value, str) else repr(value)
        raise ConfigError(f"{self.name} option {name} must be true or false (a TOML boolean; ?{name}=true in an address), not {shown}")

    # --- life cycle --------------------------------------------------------------------

    def open(self) -> None:
        """Connect (lazily importing the client library); raise BackendUnavailable."""

    def close(self) -> None:
        """Disconnect; safe to call twice."""

    def __enter__(self) -> Backend:
        self.open()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- addresses ---------------------------------------------------------------------

    @classmethod
    def options_from_url(cls, url: str) -> tuple[dict[str, Any], str | None]:
        """Profile options and stream name for an inline `scheme://...` address (its
        query string already cut off: see `options_from_query`)."""
        raise AddressError(f"the {cls.name} backend does not take URL addresses")

    @classmethod
    def options_from_query(cls, query: dict[str, str]) -> dict[str, Any]:
        """Options from an address's query string (`?layout=taskiq&max_len=1000`), laid
        over the profile's and validated like them. By default each NAME is one of this
        backend's option names and a value that is a TOML number or boolean is one (as
        `config set` reads values); backends override this to route client settings."""
        return {name: _query_value(value) for name, value in query.items()}

    def describe(self) -> str:
        """A short, secret-free description of where this backend points."""
        return self.name

    def describe_stream(self, stream: str) -> str:
        """Where messages of `stream` go or come from, for a summary line: by default where
        the backend points (the stream is printed beside it). A backend whose stream
        changes the place itself (the file backend: a stream is a file) says so here."""
        return self.describe()

    @classmethod
    def default_stream(cls, options: Mapping[str, Any]) -> str | None:
        """The topic/stream a profile of this backend means when it names none (`PROFILE`
        alone): None unless an option says (the file backend's `path`)."""
        return None

    def location(self) -> tuple[Any, ...]:
        """What identifies the system this backend reaches (not how it reads or writes
        there), spelled canonically: two backends with equal locations and stream names
        are the same stream. Backends with network endpoints build it from
        `canonical_endpoint`, so `localhost` and `127.0.0.1`, or a default port spelled
        out and omitted, are one place."""
        return (self.name, sorted(self.options.items(), key=lambda item: item[0]).__repr__())

    def same_place(self, other: Backend) -> bool:
        """Whether `other` reaches the same system, so that a stream name in both is one
        stream (the loop guards of `bridge` and of routed sinks ask). Equal locations by
        default; a backend reached through several endpoints (Kafka's bootstrap list)
        overrides it."""
        return type(other) is type(self) and other.location() == self.location()

    # --- positions, acks and output, as this backend spells them ---------------------------

    @classmethod
    def parse_message_ids(cls, texts: Sequence[str], stream: str) -> list[Position]:
        """The positions `ack ID...` names; UsageError naming `message_id_syntax` for
        text that is not one. Default: millisecond-sequence entry IDs."""
        from evrelay.backends.stream_ids import StreamId

        positions = []
        for text in texts:
            try:
                positions.append(Position(cls.name, stream, str(StreamId.parse(text.strip()))))
            except ValueError:
                raise cls.not_a_message_id(text) from None
        return positions

    @classmethod
    def not_a_message_id(cls, text: str) -> UsageError:
        """The refusal of `ack ID` text, naming the form it has when it is another
        backend's (a PARTITION:OFFSET given to a stream, an entry ID given to Kafka)."""
        from evrelay.positions import EntryId, PartitionOffsets, parse_position

        try:
            parsed = parse_position(text)
        except ValueError:
            parsed = None
        looks = {PartitionOffsets: "a PARTITION:OFFSET", EntryId: "an entry ID"}.get(type(parsed))
        if looks:
            return UsageError(f"{text!r} is {looks}; {cls.name} messages are acked by {cls.message_id_syntax}")
        return UsageError(f"{text!r} is not a {cls.name} message ID: use {cls.message_id_syntax}")

    @classmethod
    def ack_shortfall_reason(cls) -> str:
        """Why `ack` acked fewer messages than it was given, in this backend's terms."""
        if cls.cumulative_ack:
            return f"an earlier message of their partition was not acked ({cls.name} acks are cumulative)"
        return "they were not pending (already acked, or not delivered to this group)"

    @classmethod
    def stream_table(cls, streams: Sequence[StreamInfo]) -> Table:
        """`ls`: one row per topic/stream."""
        rows = [{"name": info.name, "partitions": None, "length": info.length} for info in streams]
        return Table(rows, [("name", cls.stream_noun.upper()), ("length", "LENGTH")])

    @classmethod
    def info_table(cls, details: StreamInfo) -> Table:
        """`info`: one row per partition (or one for the whole stream)."""
        rows = [
            {
                "partition": p.partition,
                "length": p.length,
                "first": p.first,
                "last": p.last,
                "first_time": _time_text(p.first_time),
                "last_time": _time_text(p.last_time),
            }
            for p in details.partitions
        ]
        columns = [("length", "LENGTH"), ("first", "FIRST ID"), ("first_time", "FIRST TIME"), ("last", "LAST ID"), ("last_time", "LAST TIME")]
        return Table(rows, columns)

    # --- capabilities ------------------------------------------------------------------

    def supports(self, capability: Capability) -> bool:
        return capability in self.capabilities

    def require(self, *capabilities: Capability, command: str | None = None) -> None:
        refuse_missing(self, capabilities, command)

    # --- messaging ---------------------------------------------------------------------

    def health_check(self) -> Health:
        return Health(True, "no check needed")

    def producer(self, stream: str) -> Producer:
        self.require(Capability.PUBLISH)
        raise NotImplementedError

    def consumer(self, spec: ReadSpec) -> Consumer:
        self.require(Capability.READ)
        raise NotImplementedError

    # --- exactly-once --------------------------------------------------------------------

    def refuse_exactly_once(self, source: Backend | None) -> None:
        """Raise UnsupportedError, saying why and what there is instead, unless this
        backend (the sink) can commit `source`'s group progress inside its own
        transactions (a bridge), or, with `source` None, make a whole run visible at once
        or not at all (a replay: there is no source progress to keep). Called before
        anything connects, so a refused command has touched nothing."""
        if source is None:
            raise UnsupportedError(
                f"--exactly-once needs a sink with transactions (Kafka); the {self.name} backend has none. Without "
                f"the flag a replay into {self.name} that stops part-way keeps what it copied, and says how much"
            )
        raise UnsupportedError(
            f"--exactly-once needs a sink that commits the source's progress in the same transaction as the "
            f"messages (Kafka -> Kafka on one cluster); the {self.name} backend has no such transactions. "
            f"Without the flag the bridge into {self.name} is at-least-once: a crash repeats at most one window "
            "(--window), and every message carries its source coordinates in the evrelay-source header, so a "
            "reader can drop the repeats"
        )

    def exactly_once_producer(self, stream: str, *, transaction_id: str, max_transaction_seconds: float = 60.0) -> Producer:
        """A transactional producer that commits a source's progress with each window
        (or, for a replay, the whole run in one transaction of at most
        `max_transaction_seconds`).

        `transaction_id` is stable across restarts, so a restarted bridge fences the one it
        replaces and aborts whatever that one left open; make it before the source's
        consumer, which may otherwise wait for the abandoned transaction's offsets."""
        self.require(Capability.EXACTLY_ONCE)
        raise NotImplementedError

    # --- groups and inspection -----------------------------------------------------------

    def list_streams(self) -> list[StreamInfo]:
        self.require(Capability.INSPECT)
        raise NotImplementedError

    def stream_info(self, stream: str) -> StreamInfo:
        self.require(Capability.INSPECT)
        raise NotImplementedError

    def stream_names(self) -> list[str]:
        """Names of the topics/streams there are; backends override it when listing
        names is cheaper than `list_streams()` (which also counts)."""
        return [info.name for info in self.list_streams()]

    def matching_streams(self, pattern: re.Pattern[str]) -> list[str]:
        """The topics/streams whose whole name matches `pattern` (an address's `~REGEX`),
        sorted; called again while following, to pick up new ones."""
        self.require(Capability.INSPECT, command="a ~PATTERN address")
        return sorted(name for name in self.stream_names() if pattern.fullmatch(name))

    def group_infos(self, stream: str) -> list[GroupInfo]:
        self.require(Capability.GROUPS)
        raise NotImplementedError

    def group_lag(self, stream: str, group: str) -> list[GroupLag]:
        """The group's position, the end and the lag, per partition or for the stream,
        with the time of the oldest message not yet finished (`oldest_time`)."""
        self.require(Capability.GROUPS)
        raise NotImplementedError

    def pending(self, stream: str, group: str, *, consumer: str | None = None, count: int = 100) -> list[PendingEntry]:
        self.require(Capability.PENDING)
        raise NotImplementedError

    def group_backlog(self, stream: str, group: str, *, excluding_consumer: str | None = None) -> int:
        """What the group has not finished: messages not yet delivered, plus messages
        pending (delivered, not acked) for consumers other than `excluding_consumer`."""
        rows = self.group_lag(stream, group)
        return sum(r.lag for r in rows) + sum(r.pending or 0 for r in rows)

    def claim(self, stream: str, group: str, consumer: str, *, min_idle_ms: int, count: int = 100) -> list[Message]:
        """Take over messages pending longer than `min_idle_ms` for `consumer`."""
        self.require(Capability.CLAIM)
        raise NotImplementedError

    def ack(self, stream: str, group: str, positions: Sequence[Position], *, force: bool = False) -> int:
        """Acknowledge by position (the `ack` command); returns how many were acked.
        `force`: where acks are cumulative (Kafka), allow skipping unacked messages."""
        self.require(Capability.GROUPS)
        raise NotImplementedError

    def plan_group_seek(self, stream: str, group: str, target: StreamPosition) -> GroupSeekPlan:
        self.require(Capability.GROUP_SEEK)
        raise NotImplementedError

    def apply_group_seek(self, plan: GroupSeekPlan) -> None:
        self.require(Capability.GROUP_SEEK)
        raise NotImplementedError

    def group_delete_scope(self, stream: str, group: str) -> str:
        """What deleting the group removes, for the confirmation (raises NotFoundError
        when there is no such group, GroupBusyError when it cannot be deleted now)."""
        self.require(Capability.GROUP_DELETE)
        return f"consumer group {group!r} of {self.stream_noun} {stream!r}, with its position and pending messages"

    def delete_group(self, stream: str, group: str) -> None:
        """Delete the group: its position, pending list and consumers (NotFoundError
        when there is no such group)."""
        self.require(Capability.GROUP_DELETE)
        raise NotImplementedError
