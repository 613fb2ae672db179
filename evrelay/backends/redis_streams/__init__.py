"""`redis`: Redis Streams through redis-py (with hiredis when installed).

Features
    Publishing as pipelined XADD in batches, `MAXLEN ~ max_len` when the profile sets
    it. Plain reads with XRANGE / XREVRANGE (the last N) / blocking XREAD (`-f`); every
    position form, times mapped to stream IDs (they are milliseconds). Consumer groups
    with XREADGROUP: the group is created at `--from` when missing (MKSTREAM), a reader
    first re-reads its own pending entries, acks are XACK after output; pending entries
    (XPENDING) and claiming idle ones (XAUTOCLAIM). A group that vanished (a server
    restarted without persistence) is reported, never silently recreated.

Field mapping: a layout (layouts.py), `evrelay` by default, which round-trips exactly
    value      -> field `value` (always first)
    key        -> field `key` (only when there is one)
    headers    -> one field `h:NAME` per header, in order, duplicates kept
    timestamp  -> the entry ID's milliseconds (Redis assigns it; a given timestamp is not kept)
    An entry written by another program with any other fields is shown as a JSON object
    of its fields (`{"b64": ...}` for binary values; a list of [name, value] pairs when a
    name repeats), so it is readable and nothing is dropped. Other layouts: `fields`,
    `value_field=NAME[,key_field=NAME]`, `taskiq`, `faststream`, `cloudevents`. Every
    message read carries the entry's raw fields, and a message whose raw fields still
    match its value, key and headers is written back with exactly those fields.

Connection string
    redis://[USER:PASSWORD@]HOST:PORT[/DB]/STREAM[?OPTION=VALUE&...], rediss://... for TLS

Options (a profile's keys; `layout` and `max_len` also as `?layout=...` on any address)
    url       "redis://[user:password@]host:port[/db]" (rediss:// for TLS)
    max_len   approximate trimming on publish (XADD MAXLEN ~)
    layout    how messages map onto stream fields (see above; default evrelay)
    options   a table passed to redis-py's Redis.from_url (e.g. ssl_ca_certs)
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, unquote, urlsplit, urlunsplit

from evrelay.backends.base import (
    Backend,
    Capability,
    ClientLibrary,
    Consumer,
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
    canonical_endpoint,
)
from evrelay.backends.redis_streams.layouts import VALUE_FIELD, EvrelayLayout, parse_layout
from evrelay.backends.redis_streams.positions import StreamPositions
from evrelay.backends.redis_streams.replies import TRANSIENT_REPLIES, error_for_reply, reply_code
from evrelay.backends.stream_ids import (
    format_stream_id,
    parse_stream_id,
)
from evrelay.config import mask_url
from evrelay.errors import (
    AddressError,
    BackendUnavailable,
    ConfigError,
    EvrelayError,
    NotFoundError,
    PermissionDenied,
    UsageError,
)
from evrelay.positions import (
    StreamPosition,
)

# The raw commands whose replies must keep duplicate field names (redis-py turns them into dicts).
_RAW_REPLIES = ("XRANGE", "XREVRANGE", "XREAD", "XREADGROUP", "XAUTOCLAIM", "XCLAIM", "XPENDING", "XINFO GROUPS", "XINFO STREAM")


# redis-py connection settings an address's query may carry besides the ssl_* ones.
_QUERY_CLIENT_SETTINGS = {"health_check_interval", "client_name", "socket_keepalive", "retry_on_timeout"}


class RedisStreamsBackend(StreamPositions, Backend):
    name = "redis"
    stream_noun = "stream"
    client_library = ClientLibrary("redis", "redis")
    sink_in_own_process = True
    target_option = "url"
    option_names = frozenset({"url", "max_len", "layout", "options"})
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
            Capability.GROUP_DELETE,
            Capability.INSPECT,
        }
    )

    def __init__(self, options: dict[str, Any], settings: Any = None) -> None:
        super().__init__(options, settings)
        url = self.options.get("url")
        if not url or not isinstance(url, str) or not url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigError("a redis profile needs url = \"redis://[user:password@]host:port[/db]\" (rediss:// for TLS)")
        self.url = url
        self.max_len = self.positive_int_option("max_len")
        self.client_options = self.table_option("options", "redis-py connection settings")
        self.layout = parse_layout(self.options.get("layout"))
        self._client: Any = None
        self._warn_about_verification()

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
        # The query string was cut off by the address resolver: it never reaches redis-py.
        return {"url": urlunsplit((parts.scheme, parts.netloc, path, "", ""))}, stream

    @classmethod
    def options_from_query(cls, query: dict[str, str]) -> dict[str, Any]:
        """`?layout=taskiq&max_len=1000` set evrelay's options; redis-py's TLS and connection
        settings (`?ssl_ca_certs=PATH`, `ssl_cert_reqs`, ...) go to its `options` table, as in
        a profile; any other name is refused as an unknown option."""
        is_client = lambda name: name.startswith("ssl_") or name in _QUERY_CLIENT_SETTINGS  # noqa: E731
        options = super().options_from_query({k: v for k, v in query.items() if not is_client(k)})
        client = super().options_from_query({k: v for k, v in query.items() if is_client(k)})
        if client:
            options["options"] = client
        return options

    @property
    def where(self) -> str:
        parts = urlsplit(self.url)
        host = parts.hostname or "localhost"
        return f"{host}:{parts.port or 6379}"

    def location(self) -> tuple[Any, ...]:
        # The server and database, not how they are spelled or who logs in:
        # redis://localhost/0 and redis://u:p@127.0.0.1:6379 hold the same streams.
        parts = urlsplit(self.url)
        query = dict(parse_qsl(parts.query))
        path = parts.path.strip("/")
        if parts.scheme == "unix":
            return (self.name, "unix", os.path.realpath(parts.path), str(query.get("db", "0")))
        database = path if path.isdigit() else str(query.get("db", "0"))
        try:
            port = parts.port
        except ValueError:
            port = None
        return (self.name, *canonical_endpoint(parts.hostname, port, 6379), str(int(database)) if database.isdigit() else database)

    def describe(self) -> str:
        layout = "" if self.layout.name == "evrelay" else f", layout {self.layout.name}"
        return f"redis {mask_url(self.url)}{layout}"

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
        try:
            self.call(client.ping, what="PING")
        except PermissionDenied:
            # The server answered, to an authenticated user: reachable. A least-privilege
            # ACL (a producer's `+xadd ~orders*`) need not allow PING; the commands this
            # one runs next are refused on their own, naming themselves, if not allowed.
            pass

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None

    @property
    def client(self) -> Any:
        if self._client is None:
            self.open()
        return self._client

    def _warn_about_verification(self) -> None:
        query = dict(parse_qsl(urlsplit(self.url).query))
        setting = str(self.client_options.get("ssl_cert_reqs", query.get("ssl_cert_reqs", "required"))).lower()
        if self.url.startswith("rediss://") and setting in ("none", "optional"):
            origin = self.settings.origin or f"Redis at {self.where}"
            self.settings.warn(f"TLS certificate verification is off for {origin} (ssl_cert_reqs = {setting}): anyone on the network path can pose as the server")

    def is_transient_reply(self, reply: Exception) -> bool:
        return reply_code(reply) in TRANSIENT_REPLIES

    def translate(self, exc: Exception, what: str = "") -> EvrelayError:
        """A redis-py exception as an evrelay error (credentials and reachability -> exit 3)."""
        user = urlsplit(self.url).username
        return error_for_reply(exc, what, where=self.where, origin=self.settings.origin, user=unquote(user) if user else None)

    def call(self, fn: Any, *args: Any, what: str = "", **kwargs: Any) -> Any:
        import redis

        try:
            return fn(*args, **kwargs)
        except redis.RedisError as exc:
            raise self.translate(exc, what) from None

    def dedicated_connection(self, command_name: str) -> Any:
        """A connection of the pool's own, for a reader or writer that pipelines raw RESP
        on it (an XACK or XADD written now, its answer read later) and so cannot share
        one; hand it back with `release_connection`."""
        pool = self.client.connection_pool
        try:
            return self.call(pool.get_connection, what="connecting")
        except TypeError:  # redis-py < 6 wants a command name
            return self.call(pool.get_connection, command_name, what="connecting")

    def release_connection(self, connection: Any, *, broken: bool = False) -> None:
        """Give back a `dedicated_connection`; a broken one (an answer may be half read)
        is disconnected first, so the pool never hands out a stream in mid-reply."""
        if broken:
            connection.disconnect()
        self.client.connection_pool.release(connection)

    def command(self, *args: Any, what: str = "") -> Any:
        import redis

        try:
            return self.client.execute_command(*args)
        except redis.RedisError as exc:
            key = _stream_key(args)
            if key is not None and reply_code(exc) == "WRONGTYPE":
                raise self.not_a_stream(key) from None
            raise self.translate(exc, what or str(args[0])) from None

    def not_a_stream(self, stream: str) -> UsageError:
        """The one error for a key that holds something else than a stream (exit 2, like
        any address that names the wrong thing): every command says it in these words."""
        try:
            kind = self.key_type(stream)
        except EvrelayError:
            kind = ""
        # "stream" or "none": the key changed since the command was refused.
        what = f"is a {kind}, not a stream" if kind not in ("", "stream", "none") else "does not hold a stream"
        return UsageError(f"Redis key {stream!r} on {self.where} {what}")

    def health_check(self) -> Health:
        started = time.perf_counter()
        try:
            self.command("PING")
            try:
                version = self.command("INFO", "server").get("redis_version", "?")
            except PermissionDenied:
                version = "?"  # an ACL user without INFO: the server answered all the same
        except (BackendUnavailable, PermissionDenied) as exc:
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
            raise self.not_a_stream(stream)

    def last_id(self, stream: str) -> tuple[int, int] | None:
        rows = self.command("XREVRANGE", stream, "+", "-", "COUNT", 1)
        return parse_stream_id(rows[0][0]) if rows else None

    def to_message(self, stream: str, entry: list[Any], receipt: Consumer | None = None) -> Message:
        entry_id, flat = entry[0], entry[1]
        text_id = entry_id.decode()
        fields = list(zip(flat[0::2], flat[1::2], strict=False)) if flat else []
        decoded = self.layout.decode(fields)
        if decoded.problem is not None:
            self.settings.warn(f"redis stream {stream!r} entry {text_id} {decoded.problem}; shown as its fields")
        return Message(
            decoded.value,
            decoded.key,
            decoded.headers,
            int(text_id.partition("-")[0]),
            Position("redis", stream, text_id),
            receipt,
            fields,
        )

    def to_messages(self, stream: str, rows: list[Any], receipt: Consumer | None = None) -> list[Message]:
        """A batch of entries as messages; `to_message` for each, with the commonest entry,
        a lone `value` field in the evrelay layout, made in one step (the read path's cost
        per entry: a 300k tail -o raw went from 0.83 s to X s in-process)."""
        if type(self.layout) is not EvrelayLayout:
            return [self.to_message(stream, row, receipt) for row in rows]
        out = []
        append = out.append
        to_message = self.to_message
        for row in rows:
            entry_id, flat = row
            if len(flat) == 2 and flat[0] == VALUE_FIELD:
                text_id = entry_id.decode()
                value = flat[1]
                append(Message(value, None, [], int(text_id.partition("-")[0]), Position("redis", stream, text_id), receipt, [(VALUE_FIELD, value)]))
            else:
                append(to_message(stream, row, receipt))
        return out

    # --- producing and consuming -------------------------------------------------------------

    def producer(self, stream: str) -> Producer:
        from evrelay.backends.redis_streams.producer import RedisProducer

        return RedisProducer(self, stream)

    def consumer(self, spec: ReadSpec) -> Consumer:
        from evrelay.backends.redis_streams.consumers import RedisConsumer, RedisGroupConsumer

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
            if reply_code(exc) == "BUSYGROUP":
                return False
            if reply_code(exc) == "WRONGTYPE":
                raise self.not_a_stream(stream) from None
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
            return [GroupLag(None, info["last-delivered-id"], end, int(lag), int(info["pending"]),
                             self.oldest_unfinished(stream, group, info["last-delivered-id"]))]
        raise NotFoundError(f"group {group!r} does not exist on Redis stream {stream!r}")

    def group_backlog(self, stream: str, group: str, *, excluding_consumer: str | None = None) -> int:
        (row,) = self.group_lag(stream, group)
        summary = self.command("XPENDING", stream, group, what=f"pending entries of group {group!r}")
        owners = summary[3] if summary and len(summary) > 3 and summary[3] else []
        others = sum(int(count) for name, count in owners if name.decode("utf-8", "replace") != excluding_consumer)
        return row.lag + others
    def group_delete_scope(self, stream: str, group: str) -> str:
        for info in self.raw_group_infos(stream):
            if info["name"] == group:
                return (f"consumer group {group!r} of Redis stream {stream!r}: its position "
                        f"({info['last-delivered-id']}), {info['consumers']} consumer(s) and {info['pending']} pending entries")
        raise NotFoundError(f"group {group!r} does not exist on Redis stream {stream!r}")

    def delete_group(self, stream: str, group: str) -> None:
        self.require_stream(stream)
        if not self.command("XGROUP", "DESTROY", stream, group, what=f"deleting group {group!r}"):
            raise NotFoundError(f"group {group!r} does not exist on Redis stream {stream!r}")

    def oldest_unfinished(self, stream: str, group: str, last_delivered: str) -> int | None:
        """The entry time (its ID's milliseconds) of the oldest pending entry or, with
        none pending, of the first entry not yet delivered."""
        summary = self.command("XPENDING", stream, group, what=f"pending entries of group {group!r}")
        if summary and summary[0] and summary[1] is not None:
            return parse_stream_id(summary[1])[0]
        rows = self.command("XRANGE", stream, f"({last_delivered}", "+", "COUNT", 1)
        return parse_stream_id(rows[0][0])[0] if rows else None

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

    def ack(self, stream: str, group: str, positions: Sequence[Position], *, force: bool = False) -> int:
        ids = [str(p.id) for p in positions]
        # XACK on a missing group answers 0 like "already acked": say the group is missing.
        self.group_last_delivered(stream, group)
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
        return [self.stream_summary(name) for name in self.stream_names()]

    def stream_names(self) -> list[str]:
        names: list[str] = []
        cursor = 0
        while True:
            cursor, keys = self.command("SCAN", cursor, "TYPE", "stream", "COUNT", 1000)
            names += [k.decode("utf-8", "replace") for k in keys]
            if int(cursor) == 0:
                break
        return sorted(set(names))

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


def _stream_key(args: tuple[Any, ...]) -> str | None:
    """The stream key a Redis stream command names (`XRANGE KEY ...`, `XGROUP CREATE KEY
    ...`), or None where it is not in a fixed place (XREAD's STREAMS list)."""
    name = str(args[0]).upper()
    if not name.startswith("X") or name in ("XREAD", "XREADGROUP"):
        return None
    index = 2 if name in ("XGROUP", "XINFO") else 1
    if len(args) <= index:
        return None
    key = args[index]
    return key.decode("utf-8", "replace") if isinstance(key, bytes) else str(key)
