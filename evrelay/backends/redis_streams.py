"""`redis`: Redis Streams through redis-py (with hiredis when installed).

Features
    Publishing as pipelined XADD in batches, `MAXLEN ~ max_len` when the profile sets
    it. Plain reads with XRANGE / XREVRANGE (the last N) / blocking XREAD (`-f`); every
    position form, times mapped to stream IDs (they are milliseconds). Consumer groups
    with XREADGROUP: the group is created at `--from` when missing (MKSTREAM), a reader
    first re-reads its own pending entries, acks are XACK after output; pending entries
    (XPENDING) and claiming idle ones (XAUTOCLAIM). A group that vanished (a server
    restarted without persistence) is reported, never silently recreated.

Field mapping (round-trips exactly, binary included)
    value      -> field `value` (always first)
    key        -> field `key` (only when there is one)
    headers    -> one field `h:NAME` per header, in order, duplicates kept
    timestamp  -> the entry ID's milliseconds (Redis assigns it; a given timestamp is not kept)
    An entry written by another program with any other fields is shown as a JSON object
    of its fields (`{"b64": ...}` for binary values; a list of [name, value] pairs when a
    name repeats), so it is readable and nothing is dropped.

Connection string
    redis://[USER:PASSWORD@]HOST:PORT[/DB]/STREAM, rediss://... for TLS

Options
    url       "redis://[user:password@]host:port[/db]" (rediss:// for TLS)
    max_len   approximate trimming on publish (XADD MAXLEN ~)
    options   a table passed to redis-py's Redis.from_url (e.g. ssl_ca_certs)
"""

from __future__ import annotations

import collections
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

import orjson

from evrelay.backends.base import (
    Backend,
    Capability,
    Consumer,
    DeliveryFailure,
    DeliveryReport,
    GroupInfo,
    GroupLag,
    GroupSeekPlan,
    GroupSeekStep,
    Health,
    Message,
    PartitionInfo,
    PendingEntry,
    Position,
    Producer,
    ReadSpec,
    StreamInfo,
)
from evrelay.config import mask_url
from evrelay.errors import (
    AddressError,
    BackendUnavailable,
    ConfigError,
    EvrelayError,
    NotFoundError,
    UnsupportedError,
    UsageError,
)
from evrelay.positions import (
    AtTime,
    Beginning,
    End,
    EntryId,
    Last,
    Offset,
    PartitionOffsets,
    Stored,
    StreamPosition,
)

VALUE_FIELD = b"value"
KEY_FIELD = b"key"
HEADER_PREFIX = b"h:"
MAX_SEQ = 18446744073709551615
# The raw commands whose replies must keep duplicate field names (redis-py turns them into dicts).
_RAW_REPLIES = ("XRANGE", "XREVRANGE", "XREAD", "XREADGROUP", "XAUTOCLAIM", "XCLAIM", "XPENDING", "XINFO GROUPS", "XINFO STREAM")


def parse_stream_id(raw: bytes | str) -> tuple[int, int]:
    text = raw.decode() if isinstance(raw, bytes) else raw
    ms, _, seq = text.partition("-")
    return int(ms), int(seq or 0)


def format_stream_id(ms: int, seq: int) -> str:
    return f"{ms}-{seq}"


def id_before(ms: int, seq: int) -> str:
    """The ID just before ms-seq: XGROUP CREATE/SETID name the last *delivered* ID."""
    if seq > 0:
        return f"{ms}-{seq - 1}"
    if ms > 0:
        return f"{ms - 1}-{MAX_SEQ}"
    return "0-0"


def encode_fields(message: Message) -> list[bytes | str]:
    fields: list[bytes | str] = [VALUE_FIELD, message.value]
    if message.key is not None:
        fields += [KEY_FIELD, message.key]
    for name, value in message.headers:
        fields += [HEADER_PREFIX + name.encode("utf-8"), value]
    return fields


def _json_text(value: bytes) -> Any:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        import base64

        return {"b64": base64.b64encode(value).decode("ascii")}


def decode_fields(fields: list[bytes]) -> tuple[bytes, bytes | None, list[tuple[str, bytes]]]:
    """(value, key, headers) from an entry's flat [name, value, ...] field list."""
    names = fields[0::2]
    if names and names[0] == VALUE_FIELD:
        key: bytes | None = None
        headers: list[tuple[str, bytes]] = []
        ours = True
        for index in range(2, len(fields), 2):
            name = fields[index]
            if name == KEY_FIELD and index == 2:
                key = fields[index + 1]
            elif name.startswith(HEADER_PREFIX):
                try:
                    headers.append((name[2:].decode("utf-8"), fields[index + 1]))
                except UnicodeDecodeError:
                    ours = False
                    break
            else:
                ours = False
                break
        if ours:
            return fields[1], key, headers
    # Written by another program: all its fields, readably, as JSON.
    pairs = [(fields[i].decode("utf-8", "replace"), _json_text(fields[i + 1])) for i in range(0, len(fields) - 1, 2)]
    if len({name for name, _ in pairs}) == len(pairs):
        return orjson.dumps(dict(pairs)), None, []
    return orjson.dumps([list(pair) for pair in pairs]), None, []


class RedisStreamsBackend(Backend):
    name = "redis"
    stream_noun = "stream"
    url_schemes = ("redis", "rediss")
    option_names = frozenset({"url", "max_len", "options"})
    secret_options = frozenset({"url"})
    capabilities = frozenset(
        {
            Capability.PUBLISH,
            Capability.READ,
            Capability.FOLLOW,
            Capability.GROUPS,
            Capability.PENDING,
            Capability.CLAIM,
            Capability.SEEK_POSITION,
            Capability.SEEK_TIME,
            Capability.GROUP_SEEK,
            Capability.INSPECT,
        }
    )

    def __init__(self, options: dict[str, Any], settings: Any = None) -> None:
        super().__init__(options, settings)
        url = self.options.get("url")
        if not url or not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("a redis profile needs url = \"redis://[user:password@]host:port[/db]\" (rediss:// for TLS)")
        self.url = url
        max_len = self.options.get("max_len")
        if max_len is not None and (not isinstance(max_len, int) or isinstance(max_len, bool) or max_len < 1):
            raise ConfigError(f"redis option max_len must be a positive integer, not {max_len!r}")
        self.max_len: int | None = max_len
        extra = self.options.get("options") or {}
        if not isinstance(extra, dict):
            raise ConfigError("redis 'options' must be a table of redis-py connection settings")
        self.client_options = dict(extra)
        self._client: Any = None

    @classmethod
    def options_from_url(cls, url: str) -> tuple[dict[str, Any], str | None]:
        parts = urlsplit(url)
        if not parts.netloc:
            raise AddressError(f"{mask_url(url)!r}: expected redis://[USER:PASS@]HOST:PORT[/DB]/STREAM")
        segments = [s for s in parts.path.split("/") if s]
        stream = unquote(segments.pop()) if segments else None
        if len(segments) > 1 or (segments and not segments[0].isdigit()):
            raise AddressError(f"{mask_url(url)!r}: the path is [/DB]/STREAM with a numeric DB")
        path = f"/{segments[0]}" if segments else ""
        return {"url": urlunsplit((parts.scheme, parts.netloc, path, parts.query, ""))}, stream

    @property
    def where(self) -> str:
        parts = urlsplit(self.url)
        host = parts.hostname or "localhost"
        return f"{host}:{parts.port or 6379}"

    def describe(self) -> str:
        return f"redis {mask_url(self.url)}"

    # --- connection --------------------------------------------------------------------

    def open(self) -> None:
        if self._client is not None:
            return
        import redis

        timeout = self.settings.timeout
        try:
            client = redis.Redis.from_url(
                self.url,
                socket_connect_timeout=timeout,
                socket_timeout=max(timeout, 5.0) + 5.0,
                # RESP2 replies have one shape on every server version (RESP3 turns XREAD
                # into maps); the raw callbacks below rely on it.
                protocol=2,
                **self.client_options,
            )
        except (ValueError, TypeError) as exc:
            raise ConfigError(f"redis url {mask_url(self.url)!r}: {exc}") from None
        for command in _RAW_REPLIES:
            client.set_response_callback(command, lambda response, **_: response)
        self._client = client
        self.call(client.ping)

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self.open()
        return self._client

    def translate(self, exc: Exception, what: str = "") -> EvrelayError:
        """A redis-py exception as an evrelay error (credentials and reachability -> exit 3)."""
        import redis

        detail = f" ({what})" if what else ""
        if isinstance(exc, redis.AuthenticationError) or (
            isinstance(exc, redis.ResponseError) and str(exc).startswith(("NOAUTH", "WRONGPASS", "NOPERM"))
        ):
            return BackendUnavailable(f"Redis at {self.where} refused the credentials{detail}: {exc}")
        if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
            return BackendUnavailable(
                f"Redis at {self.where} could not be reached{detail}: {exc}",
                hint="is redis-server running, and is the url right?",
            )
        message = str(exc)
        if message.startswith("NOGROUP"):
            return NotFoundError(f"Redis{detail}: {message}")
        if message.startswith("WRONGTYPE"):
            return UsageError(f"Redis{detail}: that key is not a stream ({message})")
        return EvrelayError(f"Redis{detail}: {message}")

    def call(self, fn: Any, *args: Any, what: str = "", **kwargs: Any) -> Any:
        import redis

        try:
            return fn(*args, **kwargs)
        except redis.RedisError as exc:
            raise self.translate(exc, what) from None

    def command(self, *args: Any, what: str = "") -> Any:
        return self.call(self.client.execute_command, *args, what=what or str(args[0]))

    def health_check(self) -> Health:
        started = time.perf_counter()
        try:
            self.command("PING")
            version = self.command("INFO", "server").get("redis_version", "?")
        except BackendUnavailable as exc:
            return Health(False, exc.message)
        return Health(True, f"redis {version} at {self.where}", (time.perf_counter() - started) * 1000)

    # --- streams -------------------------------------------------------------------------

    def key_type(self, stream: str) -> str:
        kind = self.command("TYPE", stream)
        return kind.decode() if isinstance(kind, bytes) else str(kind)

    def require_stream(self, stream: str) -> None:
        kind = self.key_type(stream)
        if kind == "none":
            raise NotFoundError(f"Redis stream {stream!r} does not exist on {self.where}")
        if kind != "stream":
            raise UsageError(f"Redis key {stream!r} on {self.where} is a {kind}, not a stream")

    def last_id(self, stream: str) -> tuple[int, int] | None:
        rows = self.command("XREVRANGE", stream, "+", "-", "COUNT", 1)
        return parse_stream_id(rows[0][0]) if rows else None

    def to_message(self, stream: str, entry: list[Any], receipt: Consumer | None = None) -> Message:
        entry_id, fields = entry[0], entry[1]
        text_id = entry_id.decode()
        value, key, headers = decode_fields(fields or [])
        return Message(value, key, headers, int(text_id.partition("-")[0]), Position("redis", stream, text_id), receipt)

    def start_id(self, stream: str, position: StreamPosition) -> tuple[str, bool]:
        """(ID, inclusive) where a plain read starts."""
        if isinstance(position, Beginning):
            return "-", True
        if isinstance(position, End):
            last = self.last_id(stream)
            return (format_stream_id(*last) if last else "0-0"), False
        if isinstance(position, EntryId):
            return position.entry_id, True
        if isinstance(position, (Offset, AtTime)):
            return str(position.offset if isinstance(position, Offset) else position.ms), True
        if isinstance(position, Stored):
            raise UsageError("--from stored needs a consumer group (-g GROUP)")
        if isinstance(position, PartitionOffsets):
            raise UnsupportedError("Redis streams have no partitions; use an entry ID such as 1700000000000-0")
        raise UsageError(f"--from {position} does not apply to Redis streams")

    def stop_id(self, stream: str, position: StreamPosition) -> str:
        if isinstance(position, End):
            last = self.last_id(stream)
            return format_stream_id(*last) if last else "0-0"
        if isinstance(position, EntryId):
            return position.entry_id
        if isinstance(position, (Offset, AtTime)):
            return str(position.offset if isinstance(position, Offset) else position.ms)
        raise UsageError(f"--to {position} does not apply; use end, an entry ID or a time")

    def group_start_id(self, stream: str, position: StreamPosition) -> str:
        """XGROUP CREATE's ID (the last delivered one) for a group that should start at position."""
        if isinstance(position, (Beginning, Stored)):
            return "0"
        if isinstance(position, End):
            return "$"
        if isinstance(position, EntryId):
            return id_before(*position.parts)
        if isinstance(position, (Offset, AtTime)):
            return id_before(position.offset if isinstance(position, Offset) else position.ms, 0)
        if isinstance(position, Last):
            rows = self.command("XREVRANGE", stream, "+", "-", "COUNT", max(position.count, 1))
            return id_before(*parse_stream_id(rows[-1][0])) if rows and position.count > 0 else "$"
        raise UsageError(f"--from {position} cannot place a Redis consumer group")

    # --- producing and consuming -------------------------------------------------------------

    def producer(self, stream: str) -> Producer:
        return RedisProducer(self, stream)

    def consumer(self, spec: ReadSpec) -> Consumer:
        if spec.partitions:
            raise UnsupportedError("Redis streams have no partitions (--partition)")
        if spec.group:
            return RedisGroupConsumer(self, spec)
        if not spec.follow or self.key_type(spec.stream) not in ("none", "stream"):
            self.require_stream(spec.stream)
        return RedisConsumer(self, spec)

    # --- groups --------------------------------------------------------------------------

    def create_group(self, stream: str, group: str, start: StreamPosition) -> bool:
        import redis

        start_id = self.group_start_id(stream, start)
        try:
            self.client.execute_command("XGROUP", "CREATE", stream, group, start_id, "MKSTREAM")
            return True
        except redis.ResponseError as exc:
            if str(exc).startswith("BUSYGROUP"):
                return False
            raise self.translate(exc, f"creating group {group!r}") from None
        except redis.RedisError as exc:
            raise self.translate(exc, f"creating group {group!r}") from None

    def raw_group_infos(self, stream: str) -> list[dict[str, Any]]:
        self.require_stream(stream)
        infos = []
        for row in self.command("XINFO", "GROUPS", stream):
            info = {}
            for i in range(0, len(row) - 1, 2):
                key = row[i].decode() if isinstance(row[i], bytes) else row[i]
                value = row[i + 1]
                info[key] = value.decode() if isinstance(value, bytes) else value
            infos.append(info)
        return infos

    def group_last_delivered(self, stream: str, group: str) -> str:
        for info in self.raw_group_infos(stream):
            if info["name"] == group:
                return info["last-delivered-id"]
        raise NotFoundError(f"group {group!r} does not exist on Redis stream {stream!r}")

    def count_between(self, stream: str, after: str, upto: str) -> int:
        """Entries with after < id <= upto (paged XRANGE; IDs only are transferred)."""
        count, cursor = 0, f"({after}"
        while True:
            rows = self.command("XRANGE", stream, cursor, upto, "COUNT", 10000)
            count += len(rows)
            if len(rows) < 10000:
                return count
            cursor = "(" + rows[-1][0].decode()

    def group_infos(self, stream: str) -> list[GroupInfo]:
        infos = []
        last = self.last_id(stream)
        last_text = format_stream_id(*last) if last else "0-0"
        for info in self.raw_group_infos(stream):
            lag = info.get("lag")
            if lag is None:
                lag = self.count_between(stream, info["last-delivered-id"], last_text)
            infos.append(GroupInfo(info["name"], info["consumers"], info["pending"], lag, info["last-delivered-id"]))
        return infos

    def group_lag(self, stream: str, group: str) -> list[GroupLag]:
        for info in self.raw_group_infos(stream):
            if info["name"] != group:
                continue
            last = self.last_id(stream)
            end = format_stream_id(*last) if last else None
            lag = info.get("lag")
            if lag is None:  # Redis < 7, or a lag Redis cannot compute after deletions
                lag = self.count_between(stream, info["last-delivered-id"], end or "0-0")
            return [GroupLag(None, info["last-delivered-id"], end, int(lag), int(info["pending"]))]
        raise NotFoundError(f"group {group!r} does not exist on Redis stream {stream!r}")

    def pending(self, stream: str, group: str, *, consumer: str | None = None, count: int = 100) -> list[PendingEntry]:
        args: list[Any] = ["XPENDING", stream, group, "-", "+", count]
        if consumer is not None:
            args.append(consumer)
        rows = self.command(*args, what=f"pending entries of group {group!r}")
        return [
            PendingEntry(Position("redis", stream, row[0].decode()), row[1].decode("utf-8", "replace"), int(row[2]), int(row[3]))
            for row in rows
        ]

    def claim(self, stream: str, group: str, consumer: str, *, min_idle_ms: int, count: int = 100) -> list[Message]:
        claimed: list[Message] = []
        cursor = "0-0"
        while len(claimed) < count:
            reply = self.command(
                "XAUTOCLAIM", stream, group, consumer, min_idle_ms, cursor, "COUNT", count - len(claimed),
                what=f"claiming for group {group!r}",
            )
            cursor = reply[0].decode()
            claimed += [self.to_message(stream, entry) for entry in reply[1] if entry and entry[1] is not None]
            if cursor == "0-0":
                break
        return claimed

    def ack(self, stream: str, group: str, positions: Sequence[Position]) -> int:
        ids = [str(p.id) for p in positions]
        if not ids:
            return 0
        return int(self.command("XACK", stream, group, *ids, what=f"acking for group {group!r}"))

    def plan_group_seek(self, stream: str, group: str, target: StreamPosition) -> GroupSeekPlan:
        current = self.group_last_delivered(stream, group)
        new = self.group_start_id(stream, target)
        if new == "$":
            last = self.last_id(stream)
            new = format_stream_id(*last) if last else "0-0"
        new = new if "-" in new else f"{new}-0"
        old_key, new_key = parse_stream_id(current), parse_stream_id(new)
        if new_key < old_key:
            affected = self.count_between(stream, new, current)
        else:
            affected = -self.count_between(stream, current, new)
        return GroupSeekPlan(stream, group, target, [GroupSeekStep(None, current, new, affected)], native=new)

    def apply_group_seek(self, plan: GroupSeekPlan) -> None:
        self.command("XGROUP", "SETID", plan.stream, plan.group, plan.native, what=f"moving group {plan.group!r}")

    # --- inspection --------------------------------------------------------------------

    def list_streams(self) -> list[StreamInfo]:
        names: list[str] = []
        cursor = 0
        while True:
            cursor, keys = self.command("SCAN", cursor, "TYPE", "stream", "COUNT", 1000)
            names += [k.decode("utf-8", "replace") for k in keys]
            if int(cursor) == 0:
                break
        return [self.stream_summary(name) for name in sorted(set(names))]

    def stream_summary(self, stream: str) -> StreamInfo:
        length = int(self.command("XLEN", stream))
        first = self.command("XRANGE", stream, "-", "+", "COUNT", 1)
        last = self.command("XREVRANGE", stream, "+", "-", "COUNT", 1)
        first_id = first[0][0].decode() if first else None
        last_id = last[0][0].decode() if last else None
        part = PartitionInfo(
            None,
            length,
            first_id,
            last_id,
            parse_stream_id(first_id)[0] if first_id else None,
            parse_stream_id(last_id)[0] if last_id else None,
        )
        return StreamInfo(stream, length, [part])

    def stream_info(self, stream: str) -> StreamInfo:
        self.require_stream(stream)
        info = self.stream_summary(stream)
        info.groups = self.group_infos(stream)
        return info


def _bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


class RedisProducer(Producer):
    """Pipelined XADD. send() writes one packed batch of commands on a connection of its
    own; flush() reads the replies, one per message, which are the confirmations. Writing
    before reading lets a relay prepare its next batch while Redis works on this one; at
    most MAX_UNCONFIRMED replies are left unread, so an endless publish stays bounded.

    The RESP encoding is done here (the XADD prefix once, two bulk strings per field)
    rather than by redis-py's pipeline, whose per-command bookkeeping costs more than the
    server's work (measured: ~4x slower for 300k XADDs)."""

    MAX_UNCONFIRMED = 20000

    def __init__(self, backend: RedisStreamsBackend, stream: str) -> None:
        self.backend = backend
        self.stream = stream
        self._report = DeliveryReport()
        backend.open()
        trim = [b"MAXLEN", b"~", str(backend.max_len).encode()] if backend.max_len else []
        prefix = [b"XADD", stream.encode("utf-8"), *trim, b"*"]
        self._prefix_len = len(prefix)
        self._prefix = b"".join(_bulk(part) for part in prefix) + _bulk(VALUE_FIELD)
        self._value_command = b"*%d\r\n" % (self._prefix_len + 2) + self._prefix
        self._header_names: dict[str, bytes] = {}
        self._conn: Any = None
        # Batches written but not yet confirmed: (messages, or plain values), in order.
        self._unconfirmed: collections.deque[Sequence[Message] | Sequence[bytes]] = collections.deque()
        self._unconfirmed_count = 0

    def _connection(self) -> Any:
        if self._conn is None:
            pool = self.backend.client.connection_pool
            try:
                self._conn = self.backend.call(pool.get_connection, what="connecting")
            except TypeError:  # redis-py < 6 wants a command name
                self._conn = self.backend.call(pool.get_connection, "XADD", what="connecting")
        return self._conn

    def _drop_connection(self) -> None:
        # Outcomes read before the failure are superseded: the caller sends it all again.
        self._report = DeliveryReport()
        self._unconfirmed.clear()
        self._unconfirmed_count = 0
        if self._conn is not None:
            self._conn.disconnect()
            self.backend.client.connection_pool.release(self._conn)
            self._conn = None

    def _command(self, message: Message) -> bytes:
        """One XADD in RESP, in the field layout of encode_fields()."""
        value = message.value
        key = message.key
        headers = message.headers
        if key is None and not headers:
            return self._value_command + b"$%d\r\n%s\r\n" % (len(value), value)
        parts = [b"$%d\r\n%s\r\n" % (len(value), value)]
        if key is not None:
            parts.append(b"$3\r\nkey\r\n$%d\r\n%s\r\n" % (len(key), key))
        names = self._header_names
        for name, header in headers:
            encoded = names.get(name)
            if encoded is None:
                encoded = names[name] = _bulk(HEADER_PREFIX + name.encode("utf-8"))
            parts.append(encoded + b"$%d\r\n%s\r\n" % (len(header), header))
        return b"*%d\r\n" % (self._prefix_len + 2 * len(parts)) + self._prefix + b"".join(parts)

    def send(self, messages: Sequence[Message]) -> None:
        if messages:
            self._write(b"".join([self._command(m) for m in messages]), messages)

    def send_values(self, values: Sequence[bytes], key: bytes | None = None, headers: Any = None) -> None:
        if key is not None or headers:
            super().send_values(values, key, headers)
            return
        if values:
            head = self._value_command
            self._write(b"".join([head + b"$%d\r\n%s\r\n" % (len(v), v) for v in values]), values)

    def _write(self, payload: bytes, batch: Sequence[Message] | Sequence[bytes]) -> None:
        import redis

        if self._unconfirmed_count + len(batch) > self.MAX_UNCONFIRMED:
            self._confirm()
        try:
            self._connection().send_packed_command([payload])
        except redis.RedisError as exc:
            self._drop_connection()
            raise self.backend.translate(exc, f"XADD to {self.stream!r}") from None
        self._unconfirmed.append(batch)
        self._unconfirmed_count += len(batch)

    def _confirm(self) -> None:
        """Read the replies of everything written: successes and per-message errors."""
        import redis

        if not self._unconfirmed:
            return
        try:
            replies = self._read_replies(self._unconfirmed_count)
        except (redis.RedisError, OSError) as exc:
            # Replies lost mid-way: the connection's state is unknown, never reuse it. What
            # was not confirmed is reported by the exception (the caller sends it again).
            self._drop_connection()
            if isinstance(exc, OSError):
                exc = redis.ConnectionError(str(exc))
            raise self.backend.translate(exc, f"XADD to {self.stream!r}") from None
        replies_iter = iter(replies)
        for batch in self._unconfirmed:
            for item in batch:
                reply = next(replies_iter)
                if isinstance(reply, Exception):
                    error = self.backend.translate(reply, "XADD")
                    failed = item if isinstance(item, Message) else Message(item)
                    self._report.failures.append(
                        DeliveryFailure(failed, error.message, permanent=not isinstance(error, BackendUnavailable))
                    )
                else:
                    self._report.delivered += 1
        self._unconfirmed.clear()
        self._unconfirmed_count = 0

    def _read_replies(self, count: int) -> list[Any]:
        """`count` replies, error replies as exception objects. With hiredis, parsed in
        bulk straight off the socket (a Python call per reply through redis-py costs
        more than Redis's own work for an XADD); otherwise through redis-py."""
        import redis

        conn = self._conn
        sock = getattr(conn, "_sock", None)
        try:
            import hiredis
        except ImportError:
            hiredis = None
        if hiredis is None or sock is None:
            replies: list[Any] = []
            for _ in range(count):
                try:
                    replies.append(conn.read_response())
                except redis.ResponseError as exc:
                    replies.append(exc)
            return replies
        reader = hiredis.Reader(replyError=redis.ResponseError)
        replies = []
        while len(replies) < count:
            data = sock.recv(1 << 18)
            if not data:
                raise redis.ConnectionError("connection closed by the server")
            reader.feed(data)
            while True:
                reply = reader.gets()
                if reply is False:
                    break
                replies.append(reply)
        return replies

    def flush(self, timeout: float | None = None) -> DeliveryReport:
        self._confirm()
        report, self._report = self._report, DeliveryReport()
        return report

    def close(self) -> None:
        if self._conn is not None:
            self.backend.client.connection_pool.release(self._conn)
            self._conn = None


class RedisConsumer(Consumer):
    """A plain read: XRANGE pages up to the stop ID, then (with -f) blocking XREAD."""

    def __init__(self, backend: RedisStreamsBackend, spec: ReadSpec) -> None:
        self.backend = backend
        self.stream = spec.stream
        self.follow = spec.follow
        self.backlog: list[Message] = []
        if isinstance(spec.start, Last):
            rows = backend.command("XREVRANGE", self.stream, "+", "-", "COUNT", max(spec.start.count, 0)) if spec.start.count else []
            self.backlog = [backend.to_message(self.stream, row) for row in reversed(rows)]
            last = backend.last_id(self.stream)
            self.cursor, self.inclusive = (format_stream_id(*last) if last else "0-0"), False
        else:
            self.cursor, self.inclusive = backend.start_id(self.stream, spec.start)
        stop = spec.stop if spec.stop is not None else (None if spec.follow else End())
        self.stop = backend.stop_id(self.stream, stop) if stop is not None else None
        if self.stop is not None:
            bound = parse_stream_id(self.stop) if "-" in self.stop else (int(self.stop), MAX_SEQ)
            self.stop_key: tuple[int, int] | None = bound
            self.backlog = [m for m in self.backlog if parse_stream_id(str(m.position.id)) <= bound]  # type: ignore[union-attr]
        else:
            self.stop_key = None

    def read(self, max_messages: int, timeout: float) -> list[Message]:
        if self.backlog:
            out, self.backlog = self.backlog[:max_messages], self.backlog[max_messages:]
            return out
        if self.exhausted:
            return []
        rows = self._range(max_messages)
        if not rows and self.follow and (self.stop_key is None or parse_stream_id(self._cursor_id()) < self.stop_key):
            rows = self._block(max_messages, timeout)
        messages = [self.backend.to_message(self.stream, row) for row in rows]
        if self.stop_key is not None:
            kept = [m for m in messages if parse_stream_id(str(m.position.id)) <= self.stop_key]  # type: ignore[union-attr]
            if len(kept) < len(messages):
                self.exhausted = True
            messages = kept
        if rows:
            self.cursor, self.inclusive = rows[-1][0].decode(), False
        if not rows and not self.follow:
            self.exhausted = True
        return messages

    def _cursor_id(self) -> str:
        return self.cursor if self.cursor != "-" else "0-0"

    def _range(self, count: int) -> list[Any]:
        start = self.cursor if self.inclusive else f"({self.cursor}"
        end = self.stop if self.stop is not None else "+"
        if self.cursor == "-":
            start = "-"
        return self.backend.command("XRANGE", self.stream, start, end, "COUNT", count)

    def _block(self, count: int, timeout: float) -> list[Any]:
        cursor = self._cursor_id() if not self.inclusive else id_before(*parse_stream_id(self._cursor_id()))
        reply = self.backend.command(
            "XREAD", "COUNT", count, "BLOCK", max(int(timeout * 1000), 1), "STREAMS", self.stream, cursor
        )
        if not reply:
            return []
        return reply[0][1]


class RedisGroupConsumer(Consumer):
    """XREADGROUP: own pending entries first (from 0), then new ones (`>`); XACK on ack."""

    def __init__(self, backend: RedisStreamsBackend, spec: ReadSpec) -> None:
        self.backend = backend
        self.stream = spec.stream
        self.group = spec.group or ""
        self.consumer = spec.consumer_name or "evrelay"
        self.follow = spec.follow
        if spec.stop is not None:
            raise UnsupportedError("--to is not supported with a consumer group; use -n or --idle-timeout")
        self.created = backend.create_group(self.stream, self.group, spec.start)
        self.pending_cursor: str | None = "0-0"

    def _xreadgroup(self, cursor: str, count: int, block_ms: int | None) -> list[Any]:
        args: list[Any] = ["XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", count]
        if block_ms is not None:
            args += ["BLOCK", block_ms]
        args += ["STREAMS", self.stream, cursor]
        try:
            reply = self.backend.command(*args, what=f"reading as group {self.group!r}")
        except NotFoundError:
            raise NotFoundError(
                f"consumer group {self.group!r} on Redis stream {self.stream!r} no longer exists "
                f"(was the server restarted without persistence, or the stream deleted?); "
                "not recreating it, which could skip data: create it again with `evrelay tail -g GROUP --from ...`"
            ) from None
        return reply[0][1] if reply else []

    def read(self, max_messages: int, timeout: float) -> list[Message]:
        if self.exhausted:
            return []
        if self.pending_cursor is not None:
            rows = self._xreadgroup(self.pending_cursor, max_messages, None)
            if rows:
                self.pending_cursor = rows[-1][0].decode()
                gone = [row[0].decode() for row in rows if row[1] is None]
                if gone:
                    # Trimmed away while pending: nothing left to deliver, so clear them.
                    self.backend.settings.warn(
                        f"redis: {len(gone)} pending entr(ies) of group {self.group!r} were deleted from the stream; acking them"
                    )
                    self.backend.command("XACK", self.stream, self.group, *gone)
                messages = [self.backend.to_message(self.stream, row, self) for row in rows if row[1] is not None]
                if messages:
                    return messages
            else:
                self.pending_cursor = None
        rows = self._xreadgroup(">", max_messages, max(int(timeout * 1000), 1) if self.follow else None)
        if not rows and not self.follow:
            self.exhausted = True
        return [self.backend.to_message(self.stream, row, self) for row in rows]

    def ack(self, messages: Sequence[Message]) -> None:
        ids = [str(m.position.id) for m in messages if m.position is not None]
        if ids:
            self.backend.command("XACK", self.stream, self.group, *ids, what=f"acking for group {self.group!r}")

    def claim_idle(self, min_idle_ms: int, count: int) -> list[Message]:
        claimed = self.backend.claim(self.stream, self.group, self.consumer, min_idle_ms=min_idle_ms, count=count)
        for message in claimed:
            message.receipt = self
        return claimed

    def reject(self, messages: Sequence[Message]) -> None:
        """Redis has no negative ack: the entries stay pending for this consumer, which
        re-reads them on its next start, or another consumer claims them (XAUTOCLAIM)."""
