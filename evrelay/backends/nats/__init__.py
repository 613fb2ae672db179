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
    subject          the subject to publish to (default: the stream's only subject); one
                     subject, not a wildcard
    create           true: create a missing stream on first publish (subjects = [subject or STREAM])
    storage          "file" (default) or "memory", for a stream evrelay creates
    ack_wait         seconds a group member has to ack a message before it is redelivered (30)
    max_ack_pending  unacked messages a group may have out at once (100000)
    options          a table passed to nats-py's connect() (e.g. user_credentials = "x.creds")
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from evrelay.backends.base import (
    Backend,
    Capability,
    Consumer,
    Health,
    Message,
    PartitionInfo,
    Position,
    Producer,
    ReadSpec,
    StreamInfo,
    Table,
    canonical_endpoint,
)
from evrelay.backends.nats.connection import (
    NATS_CLIENT,
    JetStreamError,
    NatsConnection,
    import_nats,
    ms_from_rfc3339,
    valid_name,
)
from evrelay.backends.nats.groups import NatsGroups
from evrelay.config import mask_url
from evrelay.errors import (
    AddressError,
    BackendUnavailable,
    ConfigError,
    NotFoundError,
    UsageError,
)
from evrelay.positions import AtTime, Beginning, End, Last, Offset, Stored, StreamPosition
from evrelay.timestamps import format_ms, parse_duration_seconds


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


def _publishable_subject(subject: Any) -> bool:
    """A subject a message can be published to. Wildcards (`orders.*`, `orders.>`) select
    subjects; the server stores a message published to one under that literal name, which
    no consumer filtering on `orders.new` ever sees."""
    if not isinstance(subject, str) or not subject:
        return False
    return all(token and token not in ("*", ">") and not any(c.isspace() or ord(c) < 0x20 for c in token) for token in subject.split("."))


class NatsBackend(NatsGroups, Backend):
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
        if subject is not None and not _publishable_subject(subject):
            raise ConfigError(
                f"nats option subject must be one subject to publish to, such as orders.new, not {subject!r} "
                "(tokens split by dots, none empty, no spaces, no wildcard * or >)"
            )
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
        parts = urlsplit(self.url)
        try:
            port = parts.port
        except ValueError:
            port = None
        return (self.name, *canonical_endpoint(parts.hostname, port, 4222))

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
        from evrelay.backends.nats.mapping import delivery_to_message

        return delivery_to_message(msg, stream)

    # --- positions -----------------------------------------------------------------------

    def deliver_config(self, stream: str, position: StreamPosition, state: dict[str, Any] | None = None) -> dict[str, Any]:
        """The consumer settings that start delivery at `position`."""
        if isinstance(position, (Beginning, Stored)):
            return {"deliver_policy": "all"}
        if isinstance(position, End):
            return {"deliver_policy": "new"}
        if isinstance(position, Offset):
            # Past the end means the end, as Kafka clamps an offset: a consumer started at
            # sequence 999999 would skip every message published until then.
            state = state if state is not None else self.stream_state(stream)
            start = min(max(position.offset, 1), int(state.get("last_seq", 0)) + 1)
            return {"deliver_policy": "by_start_sequence", "opt_start_seq": start}
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

    # --- groups: see groups.py; message ids ------------------------------------------

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

