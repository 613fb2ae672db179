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
"""

from __future__ import annotations

import enum
import os
import re
import secrets
import socket
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from evrelay.envelope import Headers, Message, Position
from evrelay.errors import AddressError, ConfigError, EvrelayError, ProducerTimeout, UnsupportedError
from evrelay.positions import Beginning, StreamPosition

__all__ = [
    "Backend",
    "BackendSettings",
    "Capability",
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
    "default_consumer_name",
]


def default_consumer_name() -> str:
    """This process's consumer name within a group, unless the user gives one: unique per
    process (host, pid and a random tag), so two readers on one host never take each
    other's pending messages for their own. A restarted reader gets a new name and
    recovers a dead predecessor's messages by claiming those idle past a bound."""
    global _CONSUMER_NAME
    if _CONSUMER_NAME is None:
        _CONSUMER_NAME = f"evrelay-{socket.gethostname()}-{os.getpid()}-{secrets.token_hex(2)}"
    return _CONSUMER_NAME


_CONSUMER_NAME: str | None = None


class Capability(enum.Enum):
    PUBLISH = "publishing"
    READ = "reading"
    FOLLOW = "following new messages (-f)"
    GROUPS = "consumer groups (-g)"
    PENDING = "listing pending messages"
    CLAIM = "claiming idle messages"
    SEEK_POSITION = "starting at a native position"
    SEEK_TIME = "starting at a time"
    GROUP_SEEK = "moving a consumer group (replay -g)"
    GROUP_DELETE = "deleting a consumer group"
    KEEP_TIMESTAMP = "keeping the original timestamp"
    INSPECT = "inspection (ls, info, groups, lag)"
    EXACTLY_ONCE = "exactly-once delivery (transactions that include the source's progress)"


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


@dataclass(slots=True)
class ReadSpec:
    """What a consumer should read.

    Without `group`: messages from `start` up to `stop` (inclusive), then `exhausted`,
    unless `follow`. With `group`: the group's own position; `start` only places a group
    that does not exist yet, and the consumer first re-reads its own pending messages
    where the backend keeps them.
    """

    stream: str
    start: StreamPosition = field(default_factory=Beginning)
    stop: StreamPosition | None = None
    follow: bool = False
    group: str | None = None
    consumer_name: str | None = None
    partitions: tuple[int, ...] | None = None
    finish_group: bool = False
    """Group reads: idle (for --idle-timeout) only once the whole group is finished, other
    consumers' pending messages included, which are claimed once idle past the bound (a
    bridge after a crash); False: once nothing is left undelivered (tail)."""
    release_on_close: bool = True
    """Group reads: hand back, on a clean close, what this consumer took and did not ack,
    so the next reader gets it at once; False keeps it pending (`tail -g --no-ack`)."""


class StopReason(enum.Enum):
    END_OF_DATA = "end of data"
    LIMIT = "count reached"
    DEADLINE = "timeout"
    IDLE = "idle timeout"
    STOPPED = "stopped"


@dataclass(slots=True)
class DeliveryFailure:
    message: Message
    reason: str
    permanent: bool
    """True when sending again cannot help (too large, refused); False for outages."""
    unfit: bool = False
    """The message cannot be written in the sink's format (a Redis layout, a CloudEvents
    content mode): the input is at fault, nothing of it was sent. Always permanent."""


@dataclass(slots=True)
class DeliveryReport:
    """The outcome of one `flush()`: every message sent since the previous flush is either
    delivered, failed, or (only when the timeout ran out) still pending."""

    delivered: int = 0
    failures: list[DeliveryFailure] = field(default_factory=list)
    pending: int = 0

    @property
    def ok(self) -> bool:
        return not self.failures and not self.pending


@dataclass(slots=True)
class Health:
    healthy: bool
    detail: str
    latency_ms: float | None = None


@dataclass(slots=True)
class PartitionInfo:
    """One Kafka partition, or the whole of a stream (partition None)."""

    partition: int | None
    length: int | None
    first: str | None
    last: str | None
    first_time: int | None = None
    last_time: int | None = None


@dataclass(slots=True)
class GroupInfo:
    name: str
    consumers: int | None
    pending: int | None
    lag: int | None
    position: str | None = None
    """The group's committed / last-delivered position, in the backend's native form."""
    state: str | None = None


@dataclass(slots=True)
class StreamInfo:
    name: str
    length: int | None
    partitions: list[PartitionInfo] = field(default_factory=list)
    groups: list[GroupInfo] = field(default_factory=list)


@dataclass(slots=True)
class GroupLag:
    """Where a group stands on one partition (Kafka) or on the whole stream."""

    partition: int | None
    position: str | None
    """Committed (Kafka) or last-delivered (Redis, local) position; None: nothing yet."""
    end: str | None
    lag: int
    """Messages after the position: not yet delivered to the group."""
    pending: int | None = None
    """Delivered but not acked (Redis, local); None where there is no such thing (Kafka)."""
    oldest_time: int | None = None
    """Epoch ms of the oldest message the group has not finished with (pending, or not
    yet delivered): `lag --max-age` compares its age. None when there is none."""


@dataclass(slots=True)
class PendingEntry:
    position: Position
    consumer: str
    idle_ms: int
    deliveries: int


@dataclass(slots=True)
class GroupSeekStep:
    partition: int | None
    current: str
    new: str
    affected: int | None
    """How many messages will be delivered again (positive) or skipped (negative)."""


@dataclass(slots=True)
class GroupSeekPlan:
    stream: str
    group: str
    target: StreamPosition
    steps: list[GroupSeekStep]
    native: Any = None
    """Backend-private data `apply_group_seek` needs (the resolved offsets or ID)."""


class Producer(ABC):
    """Sends messages to one topic/stream. `send` queues, `flush` confirms.

    An exactly-once producer (`transactional` True) sends inside a transaction opened by
    `begin()`; `commit(source, acked)` then makes the messages and the source's acks of `acked`
    visible atomically (the relay does not ack them at the source itself), and `abort()`
    discards both, after which the source must re-read the window.
    """

    transactional: ClassVar[bool] = False

    @abstractmethod
    def send(self, messages: Sequence[Message]) -> None:
        """Queue messages for delivery (it may start sending at once)."""

    def send_values(self, values: Sequence[bytes], key: bytes | None = None, headers: Headers | None = None) -> None:
        """Queue plain values sharing one key and header set (publish's line input),
        confirmed by flush() like send(); a failure then names the value, not a source
        message. Backends override it to skip building a Message per value."""
        self.send([Message(value, key, list(headers or ())) for value in values])

    @abstractmethod
    def flush(self, timeout: float | None = None) -> DeliveryReport:
        """Wait until everything queued since the last flush is confirmed or failed."""

    def close(self) -> None:
        """Release resources; anything not flushed is abandoned."""

    def begin(self) -> None:
        """Open a transaction (exactly-once producers only)."""
        raise UnsupportedError("this producer has no transactions")

    def commit(self, source: Consumer, acked: Sequence[Message]) -> None:
        """Commit the open transaction together with `source`'s acks of `acked`.
        Raises TransactionAborted when the transaction had to be aborted instead."""
        raise UnsupportedError("this producer has no transactions")

    def abort(self) -> None:
        """Discard the open transaction: none of its messages become visible."""

    def publish(self, messages: Sequence[Message], timeout: float | None = None) -> DeliveryReport:
        """Send and confirm; raises ProducerTimeout when confirmations did not all arrive."""
        self.send(messages)
        report = self.flush(timeout)
        if report.pending:
            raise ProducerTimeout(
                f"{report.pending} message(s) not confirmed within the timeout", undelivered=report.pending
            )
        return report

    def __enter__(self) -> Producer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Consumer(ABC):
    """Reads batches of messages for one ReadSpec."""

    exhausted: bool = False
    """Set once a non-follow read has delivered everything up to its end."""
    stop_reason: StopReason | None = None
    created: bool | None = None
    """Group reads: True when this consumer created the group, False when it existed."""
    cumulative_acks: bool = False
    """True where acking a message also acks every earlier one of its partition (a Kafka
    commit): a caller that leaves a message unacked must not ack past it."""

    @property
    def caught_up(self) -> bool:
        """True while the source is assigned to us, reachable and has nothing more for us
        right now: only then does `--idle-timeout` count (a Kafka group join, a partition
        not yet read to its end, or an outage is not idleness). Default: always."""
        return True

    @abstractmethod
    def read(self, max_messages: int, timeout: float) -> list[Message]:
        """Up to `max_messages`, waiting at most `timeout` seconds for the first one."""

    def ack(self, messages: Sequence[Message]) -> None:
        """Mark messages processed for the group; a no-op for non-group reads."""

    def reject(self, messages: Sequence[Message]) -> None:
        """Give messages back: they stay pending / uncommitted and will be delivered again."""

    def keepalive(self) -> None:
        """Called while the caller cannot take messages (its sink is down): keep the group
        membership alive without fetching more. Default: nothing to do."""

    def claim_idle(self, min_idle_ms: int, count: int) -> list[Message]:
        """Take over group messages other consumers left pending for `min_idle_ms`
        (dead readers), ackable through this consumer. Default: none (no such thing)."""
        return []

    def close(self) -> None:
        pass

    def __enter__(self) -> Consumer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def batches(
        self,
        *,
        limit: int | None = None,
        deadline: float | None = None,
        idle_timeout: float | None = None,
        batch_size: int = 1000,
        should_stop: Callable[[], bool] | None = None,
        poll_interval: float = 0.5,
        claim_idle_ms: int | None = None,
        claim_every: float = 5.0,
    ) -> Iterator[list[Message]]:
        """Batches until the data ends (non-follow), `limit` messages, the monotonic
        `deadline`, `idle_timeout` seconds without a message, or `should_stop()`.
        With `claim_idle_ms`, a group reader first (and every `claim_every` seconds)
        takes over messages other consumers left pending that long (dead readers).

        Why it stopped is left in `stop_reason`. Never reads more than `limit`, so a
        group reader does not take messages it will not process.
        """
        received = 0
        last_arrival = time.monotonic()
        next_claim = last_arrival if claim_idle_ms is not None else None
        self.stop_reason = None
        while True:
            if should_stop is not None and should_stop():
                self.stop_reason = StopReason.STOPPED
                return
            if idle_timeout is not None and not self.caught_up:
                last_arrival = time.monotonic()
            if limit is not None and received >= limit:
                self.stop_reason = StopReason.LIMIT
                return
            if self.exhausted:
                self.stop_reason = StopReason.END_OF_DATA
                return
            now = time.monotonic()
            wait = poll_interval
            if deadline is not None:
                if now >= deadline:
                    self.stop_reason = StopReason.DEADLINE
                    return
                wait = min(wait, deadline - now)
            if idle_timeout is not None:
                idle_left = last_arrival + idle_timeout - now
                if idle_left <= 0:
                    self.stop_reason = StopReason.IDLE
                    return
                wait = min(wait, idle_left)
            want = batch_size if limit is None else min(batch_size, limit - received)
            batch: list[Message] = []
            if next_claim is not None and claim_idle_ms is not None and now >= next_claim:
                next_claim = now + claim_every
                batch = self.claim_idle(claim_idle_ms, want)
            if not batch:
                batch = self.read(want, max(wait, 0.0))
            if batch:
                received += len(batch)
                yield batch
                # Only now: time the caller spent writing and acking is not idleness.
                last_arrival = time.monotonic()


class GroupReader(Consumer):
    """A group consumer whose acks and claims are the backend's own `ack` and `claim`
    (Redis, local): subclasses set backend, stream, group and consumer."""

    backend: Backend
    stream: str
    group: str
    consumer: str

    def ack(self, messages: Sequence[Message]) -> None:
        positions = [m.position for m in messages if m.position is not None]
        if positions:
            self.backend.ack(self.stream, self.group, positions)

    release_on_close: bool = True
    REFRESH_EVERY = 5.0
    """Seconds between refreshes of this reader's in-flight messages while it waits (see
    keepalive): far below any claim bound, so a live reader's work is never taken over."""
    _refreshed_at: float = 0.0

    finish_group: bool = False

    @property
    def caught_up(self) -> bool:
        """Nothing is left undelivered for the group; with `finish_group`, nothing pending
        for another consumer either (a dead one's messages are claimed once idle past the
        bound, so an idle timeout waits for them)."""
        if self.finish_group:
            return self.backend.group_backlog(self.stream, self.group, excluding_consumer=self.consumer) == 0
        return sum(row.lag for row in self.backend.group_lag(self.stream, self.group)) == 0

    def keepalive(self) -> None:
        """While the sink is down: mark this reader's pending messages as just delivered,
        so no other reader mistakes them for a dead reader's and claims them."""
        now = time.monotonic()
        if now - self._refreshed_at >= self.REFRESH_EVERY:
            self._refreshed_at = now
            self.refresh_pending()

    def refresh_pending(self) -> None:
        """Reset the idle time of every message pending for this consumer."""

    def release_pending(self) -> None:
        """Hand back every message still pending for this consumer (its name is unique
        per process unless the user chose one), making it available to other readers."""

    def close(self) -> None:
        if self.release_on_close:
            try:
                self.release_pending()
            except EvrelayError as exc:  # the server went away: they stay pending, claimable later
                self.backend.settings.warn(f"could not hand back unacked messages of group {self.group!r}: {exc}")

    def claim_idle(self, min_idle_ms: int, count: int) -> list[Message]:
        claimed = self.backend.claim(self.stream, self.group, self.consumer, min_idle_ms=min_idle_ms, count=count)
        for message in claimed:
            message.receipt = self
        return claimed


def _query_value(text: str) -> Any:
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
        value = self.options.get(name) or {}
        if not isinstance(value, dict):
            raise ConfigError(f"{self.name} option {name!r} must be a table of {what}")
        return {str(k): v for k, v in value.items()}

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

    def location(self) -> tuple[Any, ...]:
        """What identifies the system this backend reaches (not how it reads or writes
        there): two backends with equal locations and stream names are the same stream."""
        return (self.name, sorted(self.options.items(), key=lambda item: item[0]).__repr__())

    # --- capabilities ------------------------------------------------------------------

    def supports(self, capability: Capability) -> bool:
        return capability in self.capabilities

    def require(self, *capabilities: Capability, command: str | None = None) -> None:
        for capability in capabilities:
            if capability not in self.capabilities:
                needed = f" ({command} needs it)" if command else ""
                raise UnsupportedError(f"the {self.name} backend does not support {capability.value}{needed}")

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
