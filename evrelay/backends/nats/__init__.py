"""`nats`: NATS JetStream streams through nats-py (the optional extra `evrelay[nats]`).

Features
    Publishing with JetStream acknowledgements (every message is confirmed by the stream,
    many in flight at once). Plain reads through an ephemeral pull consumer: every
    position form (stream sequence numbers, beginning, end, the last N, RFC 3339 and
    relative times through JetStream's start-time delivery), `--to` by sequence, time or
    end, and `-f`. Consumer groups are durable pull consumers with explicit acks: members
    of a group share its messages; a message not acked within the group's `ack_wait` is
    delivered again, to any member (NATS decides, not evrelay), while a live reader keeps
    the messages it holds with in-progress acks, so only a dead reader's messages come
    back. `ack` by position, `ack --claim` (take the messages NATS has made due for
    redelivery), `replay -g` (the durable is re-created at the new position), `groups
    --delete`, `ls`, `info`, `groups`, `lag` (with the age of the oldest message past the
    group's ack floor, for `--max-age`), `~REGEX` stream patterns and `health`.
    Not supported: a per-message pending list (JetStream keeps only counts: `groups` and
    `lag` show them), keeping a given timestamp (the server stamps each message).

Message mapping: see `evrelay.backends.nats.mapping` (value = payload, key and headers in
NATS headers, exact for binary and repeated headers).

Connection string
    nats://[USER:PASSWORD@]HOST:PORT/STREAM[?create=true&subject=SUBJECT]

Options
    url              "nats://[user:password@]host:port" (tls:// for TLS)
    subject          the subject to publish to (default: the stream's only subject)
    create           true: create a missing stream on first publish (subjects = [subject or STREAM])
    storage          "file" (default) or "memory", for a stream evrelay creates
    ack_wait         seconds a group member has to ack a message before it is redelivered (30)
    max_ack_pending  unacked messages a group may have out at once (100000)
    options          a table passed to nats-py's connect() (e.g. user_credentials = "x.creds")
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from evrelay.backends.base import (
    Backend,
    Capability,
    Consumer,
    GroupInfo,
    GroupLag,
    GroupSeekPlan,
    GroupSeekStep,
    Health,
    Message,
    PartitionInfo,
    Position,
    Producer,
    ReadSpec,
    StreamInfo,
    Table,
)
from evrelay.backends.nats.connection import NATS_CLIENT, JetStreamError, NatsConnection, import_nats
from evrelay.config import mask_url
from evrelay.errors import (
    AddressError,
    BackendUnavailable,
    ConfigError,
    GroupBusyError,
    NotFoundError,
    UsageError,
)
from evrelay.positions import AtTime, Beginning, End, Last, Offset, Stored, StreamPosition
from evrelay.timestamps import format_ms, parse_duration_seconds, parse_rfc3339

# Stream and consumer names: no white space, dots, wildcards or path separators.
_NAME = re.compile(r"[^\s.*>/\\]+")
_DISALLOWED = re.compile(r"[\s.*>/\\]")
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def valid_name(name: str, what: str) -> str:
    if not _NAME.fullmatch(name) or len(name) > 255:
        raise UsageError(f"{name!r} is not a valid NATS {what} name (no spaces, dots, '*', '>' or slashes)")
    return name


def durable_name(group: str) -> str:
    """The JetStream consumer name of a group: the group name itself when NATS allows it;
    otherwise (`evrelay-bridge-file-copy.jsonl`) its disallowed characters become `_`,
    plus a short hash of the name so that two groups never share a consumer."""
    if _NAME.fullmatch(group) and len(group) <= 200:
        return group
    digest = hashlib.sha1(group.encode("utf-8")).hexdigest()[:8]
    return f"{_DISALLOWED.sub('_', group)[:180]}-{digest}"


GROUP_DESCRIPTION = "evrelay group: "


def group_name(info: dict[str, Any]) -> str:
    """The group a durable consumer serves (see durable_name)."""
    description = info.get("config", {}).get("description") or ""
    return description[len(GROUP_DESCRIPTION) :] if description.startswith(GROUP_DESCRIPTION) else info["name"]


def ms_from_rfc3339(text: str | None) -> int | None:
    if not text or text.startswith("0001-01-01"):
        return None
    return parse_rfc3339(text)


def mask_nats_url(url: str) -> str:
    """The URL with any password or token replaced (a NATS token is a user with no password).
    The generic masking: it reads the userinfo up to the last '@', so an unencoded '/' or
    '@' in a password does not leave part of it showing, as a URL parser's netloc would."""
    return mask_url(url)


def url_credentials(url: str) -> tuple[str, dict[str, str]]:
    """(the URL without its userinfo, nats-py connect() options for it). nats-py reads
    `user:password@` or a lone `TOKEN@` from the URL without percent-decoding it, so a
    password holding '@', ':' or '/' could not be written at all; decoded here instead."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, {}
    userinfo, _, host = parts.netloc.rpartition("@")
    user, colon, password = userinfo.partition(":")
    credentials = {"user": unquote(user), "password": unquote(password)} if colon else {"token": unquote(user)}
    return urlunsplit((parts.scheme, host, parts.path, parts.query, parts.fragment)), credentials


class NatsBackend(Backend):
    name = "nats"
    stream_noun = "stream"
    client_library = NATS_CLIENT
    target_option = "url"
    message_id_syntax = "a stream sequence number (42)"
    option_names = frozenset({"url", "subject", "create", "storage", "ack_wait", "max_ack_pending", "options"})
    capabilities = frozenset(
        {
            Capability.PUBLISH,
            Capability.READ,
            Capability.FOLLOW,
            Capability.GROUPS,
            Capability.CLAIM,
            Capability.SEEK_POSITION,
            Capability.SEEK_TIME,
            Capability.GROUP_SEEK,
            Capability.INSPECT,
            Capability.GROUP_DELETE,
        }
    )

    def __init__(self, options: dict[str, Any], settings: Any = None) -> None:
        super().__init__(options, settings)
        url = self.options.get("url")
        if not url or not isinstance(url, str) or not url.startswith(("nats://", "tls://")):
            raise ConfigError('a nats profile needs url = "nats://[user:password@]host:port"')
        try:
            urlsplit(url).port  # noqa: B018 - a port that is not a number, or out of range, raises
        except ValueError as exc:
            raise ConfigError(f"nats url {mask_nats_url(url)!r}: {exc}") from None
        self.url = url
        subject = self.options.get("subject")
        if subject is not None and (not isinstance(subject, str) or not subject or " " in subject):
            raise ConfigError(f"nats option subject must be a subject such as orders.new, not {subject!r}")
        self.subject: str | None = subject
        self.create = self.bool_option("create")
        storage = self.options.get("storage", "file")
        if storage not in ("file", "memory"):
            raise ConfigError(f'nats option storage must be "file" or "memory", not {storage!r}')
        self.storage = storage
        self.ack_wait = self.seconds_option("ack_wait", 30.0)
        self.max_ack_pending = self.positive_int_option("max_ack_pending") or 100_000
        self.client_options = self.table_option("options", "nats-py connect() settings")
        self._conn: NatsConnection | None = None

    def positive_int_option(self, name: str) -> int | None:
        # Options from an address's query string arrive as text.
        value = self.options.get(name)
        if isinstance(value, str) and value.isdigit() and int(value) > 0:
            return int(value)
        return super().positive_int_option(name)

    def bool_option(self, name: str) -> bool:
        value = self.options.get(name, False)
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise ConfigError(f"nats option {name} must be true or false, not {value!r}")

    def seconds_option(self, name: str, default: float) -> float:
        value = self.options.get(name, default)
        try:
            seconds = float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else parse_duration_seconds(str(value))
        except ValueError:
            seconds = 0
        if seconds <= 0:
            raise ConfigError(f"nats option {name} must be a positive number of seconds (or 10s, 2m), not {value!r}")
        return seconds

    @classmethod
    def options_from_url(cls, url: str) -> tuple[dict[str, Any], str | None]:
        parts = urlsplit(url)
        if not parts.netloc or not parts.hostname:
            raise AddressError(f"{mask_nats_url(url)!r}: expected nats://[USER:PASS@]HOST:PORT/STREAM")
        segments = [s for s in parts.path.split("/") if s]
        if len(segments) > 1:
            raise AddressError(f"{mask_nats_url(url)!r}: the path is just /STREAM")
        stream = unquote(segments[0]) if segments else None
        # The query string (?create=true&subject=...) is read by the address layer, for
        # every address form, and arrives as options like a profile's.
        return {"url": urlunsplit((parts.scheme, parts.netloc, "", "", ""))}, stream

    def location(self) -> tuple[Any, ...]:
        # The server, not the options: ?create=true does not make another stream.
        return (self.name, self.where)

    @property
    def where(self) -> str:
        parts = urlsplit(self.url)
        return f"{parts.hostname or 'localhost'}:{parts.port or 4222}"

    def describe(self) -> str:
        return f"nats {mask_nats_url(self.url)}"

    # --- connection --------------------------------------------------------------------

    def open(self) -> None:
        if self._conn is not None:
            return
        import_nats()
        url, credentials = url_credentials(self.url)
        conn = NatsConnection(
            url,
            where=self.where,
            timeout=self.settings.timeout,
            name=self.settings.client_name,
            client_options={**credentials, **self.client_options},
            warn=self.settings.warn,
            verbose=self.settings.verbose,
        )
        conn.open()
        self._conn = conn

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    @property
    def conn(self) -> NatsConnection:
        if self._conn is None:
            self.open()
        assert self._conn is not None
        return self._conn

    def health_check(self) -> Health:
        started = time.perf_counter()
        try:
            info = self.conn.call("INFO", what="account info")
        except BackendUnavailable as exc:
            return Health(False, exc.message)
        except JetStreamError as exc:
            return Health(False, f"NATS at {self.where}: {exc.message}")
        # The version from the server's INFO greeting (nats-py keeps it as parsed JSON).
        version = (getattr(self.conn.nc, "_server_info", None) or {}).get("version", "?")
        streams = info.get("streams", "?")
        return Health(
            True, f"nats {version} at {self.where}, JetStream with {streams} stream(s)", (time.perf_counter() - started) * 1000
        )

    # --- streams -------------------------------------------------------------------------

    def stream_state(self, stream: str) -> dict[str, Any]:
        valid_name(stream, "stream")
        return self.conn.stream_info(stream).get("state", {})

    def ensure_stream(self, stream: str) -> list[str]:
        """The stream's subjects; creates the stream when it is missing and `create` is set."""
        valid_name(stream, "stream")
        try:
            return self.conn.stream_info(stream)["config"].get("subjects") or []
        except NotFoundError as exc:
            if not self.create:
                raise NotFoundError(
                    f"NATS stream {stream!r} does not exist on {self.where}",
                    hint="add ?create=true to the address (or create = true to the profile) to create it on publish",
                ) from exc
        subjects = [self.subject or stream]
        try:
            self.conn.call(
                f"STREAM.CREATE.{stream}",
                {"name": stream, "subjects": subjects, "storage": self.storage, "retention": "limits"},
                what=f"creating stream {stream}",
            )
        except JetStreamError as exc:
            if "already in use" not in exc.message:
                raise UsageError(f"could not create NATS stream {stream!r} with subjects {subjects}: {exc.message}") from None
            return self.conn.stream_info(stream)["config"].get("subjects") or []
        self.settings.warn(f"created NATS stream {stream!r} (subjects {', '.join(subjects)}) on {self.where}")
        return subjects

    def publish_subject(self, stream: str) -> str:
        subjects = self.ensure_stream(stream)
        if self.subject is not None:
            return self.subject
        if len(subjects) == 1 and "*" not in subjects[0] and ">" not in subjects[0]:
            return subjects[0]
        raise UsageError(
            f"NATS stream {stream!r} takes subjects {', '.join(subjects) or '(none)'}: say which one to publish to "
            "with ?subject=SUBJECT (or subject = ... in the profile)"
        )

    def to_message(self, msg: Any, stream: str) -> Message:
        from evrelay.backends.nats.mapping import decode_headers, reply_metadata

        seq, timestamp_ns, _, _ = reply_metadata(msg.reply)
        key, headers = decode_headers(msg.headers)
        return Message(msg.data, key, headers, timestamp_ns // 1_000_000, Position("nats", stream, seq))

    # --- positions -----------------------------------------------------------------------

    def deliver_config(self, stream: str, position: StreamPosition, state: dict[str, Any] | None = None) -> dict[str, Any]:
        """The consumer settings that start delivery at `position`."""
        if isinstance(position, (Beginning, Stored)):
            return {"deliver_policy": "all"}
        if isinstance(position, End):
            return {"deliver_policy": "new"}
        if isinstance(position, Offset):
            return {"deliver_policy": "by_start_sequence", "opt_start_seq": max(position.offset, 1)}
        if isinstance(position, AtTime):
            return {"deliver_policy": "by_start_time", "opt_start_time": format_ms(position.ms)}
        if isinstance(position, Last):
            state = state if state is not None else self.stream_state(stream)
            if position.count <= 0 or not state.get("messages"):
                return {"deliver_policy": "new"}
            start = max(int(state.get("first_seq", 1)), int(state.get("last_seq", 0)) - position.count + 1)
            return {"deliver_policy": "by_start_sequence", "opt_start_seq": start}
        raise UsageError(
            f"--from {position} does not apply to NATS streams; use a stream sequence number (42), "
            "beginning, end or a time"
        )

    def stop_bound(self, position: StreamPosition, state: dict[str, Any]) -> tuple[int | None, int | None]:
        """(last sequence, last timestamp ms) a read with `--to position` delivers."""
        if isinstance(position, End):
            return int(state.get("last_seq", 0)), None
        if isinstance(position, Offset):
            return position.offset, None
        if isinstance(position, AtTime):
            return None, position.ms
        raise UsageError(f"--to {position} does not apply to NATS streams; use end, a stream sequence number or a time")

    # --- producing and consuming -------------------------------------------------------------

    def producer(self, stream: str) -> Producer:
        from evrelay.backends.nats.producer import NatsProducer

        return NatsProducer(self, stream, self.publish_subject(stream))

    def consumer(self, spec: ReadSpec) -> Consumer:
        from evrelay.backends.nats.consumers import NatsGroupConsumer, NatsStreamConsumer

        valid_name(spec.stream, "stream")
        if spec.group:
            return NatsGroupConsumer(self, spec)
        return NatsStreamConsumer(self, spec)

    # --- groups --------------------------------------------------------------------------

    def group_config(self, group: str, start: dict[str, Any]) -> dict[str, Any]:
        return {
            "durable_name": group,
            "ack_policy": "explicit",
            "ack_wait": int(self.ack_wait * 1e9),
            "max_ack_pending": self.max_ack_pending,
            "replay_policy": "instant",
            **start,
        }

    def create_group(self, stream: str, group: str, start: StreamPosition) -> bool:
        """Create the durable consumer when missing; True when this call created it."""
        name = durable_name(group)
        if self.conn.consumer_info(stream, name) is not None:
            return False
        config = self.group_config(name, self.deliver_config(stream, start))
        if name != group:
            config["description"] = GROUP_DESCRIPTION + group
        try:
            self.conn.call(f"CONSUMER.DURABLE.CREATE.{stream}.{name}", {"stream_name": stream, "config": config})
        except JetStreamError:
            if self.conn.consumer_info(stream, name) is not None:
                return False  # another reader created it at the same moment
            raise
        return True

    def group_consumer_info(self, stream: str, group: str) -> dict[str, Any]:
        valid_name(stream, "stream")
        info = self.conn.consumer_info(stream, durable_name(group))
        if info is None:
            raise NotFoundError(f"group {group!r} does not exist on NATS stream {stream!r}")
        return info

    def durable_infos(self, stream: str) -> list[dict[str, Any]]:
        valid_name(stream, "stream")
        self.conn.stream_info(stream)
        infos: list[dict[str, Any]] = []
        offset = 0
        while True:
            page = self.conn.call(f"CONSUMER.LIST.{stream}", {"offset": offset})
            consumers = page.get("consumers") or []
            infos += [c for c in consumers if c.get("config", {}).get("durable_name")]
            offset += len(consumers)
            if not consumers or offset >= int(page.get("total", 0)):
                return sorted(infos, key=lambda c: c["name"])

    @staticmethod
    def delivered_seq(info: dict[str, Any]) -> int:
        return int(info.get("delivered", {}).get("stream_seq", 0))

    def group_infos(self, stream: str) -> list[GroupInfo]:
        return [
            GroupInfo(
                group_name(info),
                None,
                int(info.get("num_ack_pending", 0)),
                int(info.get("num_pending", 0)),
                str(self.delivered_seq(info)) if self.delivered_seq(info) else None,
            )
            for info in self.durable_infos(stream)
        ]

    def group_lag(self, stream: str, group: str) -> list[GroupLag]:
        info = self.group_consumer_info(stream, group)
        state = self.stream_state(stream)
        delivered = self.delivered_seq(info)
        last = int(state.get("last_seq", 0))
        # Everything up to the ack floor is acked, and the message after it is not: the
        # oldest the group has not finished (pending or not yet delivered).
        floor = int(info.get("ack_floor", {}).get("stream_seq", 0))
        start = max(floor + 1, int(info.get("config", {}).get("opt_start_seq", 0) or 0))
        return [
            GroupLag(
                None,
                str(delivered) if delivered else None,
                str(last) if last else None,
                int(info.get("num_pending", 0)),
                int(info.get("num_ack_pending", 0)),
                self.message_time_from(stream, start) if start <= last else None,
            )
        ]

    def message_time_from(self, stream: str, seq: int) -> int | None:
        """The timestamp (ms) of the first message at or after `seq`, None when none."""
        try:
            reply = self.conn.call(f"STREAM.MSG.GET.{stream}", {"seq": seq, "next_by_subj": ">"})
        except JetStreamError as exc:
            if exc.code == 404:
                return None
            raise
        return ms_from_rfc3339(reply.get("message", {}).get("time"))

    @classmethod
    def parse_message_ids(cls, texts: Sequence[str], stream: str) -> list[Position]:
        positions = []
        for text in texts:
            if not text.strip().isdigit() or int(text) < 1:
                raise cls.not_a_message_id(text)
            positions.append(Position(cls.name, stream, int(text)))
        return positions

    @classmethod
    def info_table(cls, details: StreamInfo) -> Table:
        table = super().info_table(details)
        table.columns = [("length", "LENGTH"), ("first", "FIRST SEQ"), ("first_time", "FIRST TIME"), ("last", "LAST SEQ"), ("last_time", "LAST TIME")]
        return table

    def ack(self, stream: str, group: str, positions: Sequence[Position], *, force: bool = False) -> int:
        """Acks by stream sequence: JetStream matches an ack to the pending message by its
        stream sequence (the other tokens of the ack subject are the delivery's details).
        Acks are per message, so `force` (skip unacked messages, for cumulative acks) has
        nothing to allow."""
        sequences = []
        for position in positions:
            try:
                sequences.append(int(position.id))
            except (TypeError, ValueError):
                raise UsageError(f"{position.id!r} is not a NATS stream sequence number") from None
        if not sequences:
            return 0
        before = int(self.group_consumer_info(stream, group).get("num_ack_pending", 0))
        self.conn.run(self._ack_sequences(stream, group, sequences), what=f"acking for group {group!r}")
        after = int(self.group_consumer_info(stream, group).get("num_ack_pending", 0))
        return max(0, min(len(sequences), before - after))

    async def _ack_sequences(self, stream: str, group: str, sequences: list[int]) -> None:
        nc = self.conn.nc
        for seq in sequences:
            await nc.publish(f"$JS.ACK.{stream}.{durable_name(group)}.1.{seq}.{seq}.{time.time_ns()}.0", b"+ACK")
        await nc.flush(self.settings.timeout)

    def claim(self, stream: str, group: str, consumer: str, *, min_idle_ms: int, count: int = 100) -> list[Message]:
        """The group's messages NATS has made due for redelivery (pending past its
        ack_wait), taken by this call and ackable by position. NATS, not `min_idle_ms`,
        decides when a message is due; a shorter `min_idle_ms` gets a warning."""
        from evrelay.backends.nats.consumers import PullSession
        from evrelay.backends.nats.mapping import reply_metadata

        info = self.group_consumer_info(stream, group)
        if int(info.get("num_ack_pending", 0)) == 0:
            # Nothing is pending, so nothing can be due: a fetch could only take a message
            # no reader has had yet, and handing it back would count as a delivery, making
            # it look claimable to the next `ack --claim`.
            return []
        ack_wait_ms = int(info.get("config", {}).get("ack_wait", 0)) // 1_000_000
        if min_idle_ms < ack_wait_ms:
            self.settings.warn(
                f"NATS redelivers a message only after the group's ack_wait ({ack_wait_ms / 1000:g}s); "
                "messages pending for less than that cannot be claimed yet"
            )
        session = PullSession(self.conn, stream, durable_name(group))
        claimed: list[Message] = []
        try:
            self.conn.run(session.start())
            while len(claimed) < count:
                msgs, _ = self.conn.run(session.fetch(1, 0.0), self.settings.timeout + 2)
                if not msgs:
                    break
                _, _, deliveries, _ = reply_metadata(msgs[0].reply)
                if deliveries <= 1:
                    # A first delivery is not a claim: hand it straight back.
                    self.conn.run(session.nak([msgs[0]]))
                    break
                claimed.append(self.to_message(msgs[0], stream))
        finally:
            self.conn.run(session.stop())
        return claimed

    def plan_group_seek(self, stream: str, group: str, target: StreamPosition) -> GroupSeekPlan:
        info = self.group_consumer_info(stream, group)
        state = self.stream_state(stream)
        current = self.delivered_seq(info)
        first, last = int(state.get("first_seq", 1)), int(state.get("last_seq", 0))
        if isinstance(target, (Beginning, Stored)):
            new = first - 1
        elif isinstance(target, End):
            new = last
        elif isinstance(target, Offset):
            new = max(target.offset, 1) - 1
        elif isinstance(target, AtTime):
            new = self.first_seq_at(stream, target.ms) - 1
        else:
            raise UsageError(f"cannot move a NATS consumer group to {target}")
        step = GroupSeekStep(None, str(current), str(new), current - new)
        return GroupSeekPlan(stream, group, target, [step], native={"config": info["config"], "start_seq": new + 1})

    def first_seq_at(self, stream: str, ms: int) -> int:
        """The sequence of the first message at or after `ms` (the next sequence if none)."""
        from evrelay.backends.nats.consumers import PullSession
        from evrelay.backends.nats.mapping import reply_metadata

        state = self.stream_state(stream)
        session = PullSession(self.conn, stream, None, {"ack_policy": "none", **self.deliver_config(stream, AtTime(ms, ""))})
        try:
            self.conn.run(session.start())
            msgs, _ = self.conn.run(session.fetch(1, 0.0), self.settings.timeout + 2)
        finally:
            self.conn.run(session.stop())
        return reply_metadata(msgs[0].reply)[0] if msgs else int(state.get("last_seq", 0)) + 1

    def apply_group_seek(self, plan: GroupSeekPlan) -> None:
        """JetStream cannot move a durable consumer: it is deleted and created again at the
        new position with the same settings (its pending acks go with it)."""
        info = self.group_consumer_info(plan.stream, plan.group)
        if int(info.get("num_waiting", 0)) > 0:
            raise GroupBusyError(
                f"group {plan.group!r} on NATS stream {plan.stream!r} has readers waiting for messages; stop them first"
            )
        config = dict(plan.native["config"])
        for field in ("opt_start_seq", "opt_start_time"):
            config.pop(field, None)
        config.update({"deliver_policy": "by_start_sequence", "opt_start_seq": max(plan.native["start_seq"], 1)})
        name = durable_name(plan.group)
        self.conn.call(f"CONSUMER.DELETE.{plan.stream}.{name}", what=f"moving group {plan.group!r}")
        self.conn.call(
            f"CONSUMER.DURABLE.CREATE.{plan.stream}.{name}",
            {"stream_name": plan.stream, "config": config},
            what=f"moving group {plan.group!r}",
        )

    def group_delete_scope(self, stream: str, group: str) -> str:
        info = self.group_consumer_info(stream, group)
        if int(info.get("num_waiting", 0)) > 0:
            raise GroupBusyError(f"group {group!r} on NATS stream {stream!r} has readers waiting for messages; stop them first")
        return (
            f"consumer group {group!r} of NATS stream {stream!r} (the durable consumer {info['name']!r}), "
            f"with its position and {int(info.get('num_ack_pending', 0))} unacked message(s)"
        )

    def delete_group(self, stream: str, group: str) -> None:
        self.group_consumer_info(stream, group)
        self.conn.call(f"CONSUMER.DELETE.{stream}.{durable_name(group)}", what=f"deleting group {group!r}")

    # --- inspection --------------------------------------------------------------------

    def summary(self, info: dict[str, Any]) -> StreamInfo:
        state = info.get("state", {})
        messages = int(state.get("messages", 0))
        part = PartitionInfo(
            None,
            messages,
            str(state.get("first_seq")) if messages else None,
            str(state.get("last_seq")) if messages else None,
            ms_from_rfc3339(state.get("first_ts")) if messages else None,
            ms_from_rfc3339(state.get("last_ts")) if messages else None,
        )
        return StreamInfo(info["config"]["name"], messages, [part])

    def list_streams(self) -> list[StreamInfo]:
        infos: list[dict[str, Any]] = []
        offset = 0
        while True:
            page = self.conn.call("STREAM.LIST", {"offset": offset}, what="listing streams")
            streams = page.get("streams") or []
            infos += streams
            offset += len(streams)
            if not streams or offset >= int(page.get("total", 0)):
                break
        return sorted((self.summary(info) for info in infos), key=lambda s: s.name)

    def stream_info(self, stream: str) -> StreamInfo:
        valid_name(stream, "stream")
        details = self.summary(self.conn.stream_info(stream))
        details.groups = self.group_infos(stream)
        return details

