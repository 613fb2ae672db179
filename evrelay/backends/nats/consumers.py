"""NATS consumers: pull requests against a JetStream consumer, in batches.

`PullSession` is the asyncio part: one inbox subscription receiving a JetStream
consumer's deliveries, and the pull requests (`$JS.API.CONSUMER.MSG.NEXT`) that feed it.
The subscription has no callback: a fetch takes the deliveries from its queue in bulk
(a callback costs nats-py a coroutine call, a queue round trip and an event per message:
a fifth of a plain read's time on the loop's thread).
A read first asks with `no_wait` (the server sends what it has and ends the request at
once), and only when nothing came does it leave one request of one message waiting for
the rest of the read's timeout, so no long request can keep taking messages after the
read returned. Each request has its own reply subject, so a status from an old request
can never end a newer one.

`NatsStreamConsumer` is a plain read (an ephemeral consumer without acks);
`NatsGroupConsumer` reads as a group (the durable consumer of that name, explicit acks).
"""

from __future__ import annotations

import asyncio
import collections
import dataclasses
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from evrelay.backends.base import Consumer, Message, ReadSpec
from evrelay.backends.nats.connection import JetStreamError
from evrelay.backends.nats.mapping import delivery_to_message, reply_metadata
from evrelay.errors import NotFoundError, UsageError
from evrelay.positions import Beginning, End, Last, Stored

if TYPE_CHECKING:
    from evrelay.backends.nats import NatsBackend
    from evrelay.backends.nats.connection import NatsConnection

# An ephemeral consumer left behind by a killed reader disappears after this long.
EPHEMERAL_INACTIVE_NS = 120 * 1_000_000_000

# No limit, whatever nats-py version (0 means "none" only in newer ones).
PENDING_BYTES_UNLIMITED = 1 << 62


class ConsumerGone(NotFoundError):
    """The JetStream consumer behind a read no longer exists."""


class PullSession:
    """Deliveries of one JetStream consumer to this process (runs on the connection's loop).

    `durable` names an existing consumer; without it an ephemeral consumer is created from
    `ephemeral_config` by `start()` and deleted by `stop()`. With `read_ahead` (plain reads
    only: nothing to ack, so a message taken early is never a message held from others),
    a fetch that filled its batch sends the next request at once, and the server delivers
    the next batch while the caller converts and prints this one.
    """

    def __init__(
        self,
        conn: NatsConnection,
        stream: str,
        durable: str | None,
        ephemeral_config: dict[str, Any] | None = None,
        *,
        read_ahead: bool = False,
    ) -> None:
        self.conn = conn
        self.stream = stream
        self.name = durable
        self.ephemeral_config = ephemeral_config
        self.queue: collections.deque[Any] = collections.deque()
        self.statuses: dict[int, tuple[str, str]] = {}
        self.incoming: asyncio.Queue[Any] | None = None
        """The subscription's own queue of what arrived, not sorted into `queue` and `statuses` yet."""
        self.requests = 0
        self.sub: Any = None
        self.inbox = ""
        self.held: dict[int, str] = {}
        """Group reads: stream sequence -> ack subject of each message handed out, not yet acked."""
        self.progress_task: asyncio.Task[None] | None = None
        self.read_ahead = read_ahead
        self.ahead: int | None = None
        """The request sent ahead by the last fetch, not collected yet."""
        self.owed = 0
        """Deliveries the requests sent still owe. A request that delivers all it asked for
        sends no status, and deliveries do not say which request they answer (they carry
        the stream's subject): the server serves requests in order, so a count tells when
        every request sent so far is done."""

    async def start(self, keep_in_progress: float | None = None) -> None:
        if self.name is None:
            config = {"inactive_threshold": EPHEMERAL_INACTIVE_NS, **(self.ephemeral_config or {})}
            reply = await self.conn.api(f"CONSUMER.CREATE.{self.stream}", {"stream_name": self.stream, "config": config})
            self.name = reply["name"]
        self.inbox = self.conn.nc.new_inbox()
        # Without a callback nats-py queues what arrives and counts it against the pending
        # limits, which are lifted: a fetch takes everything queued at once, and what it
        # asked for (two batches at most) bounds the queue.
        self.sub = await self.conn.nc.subscribe(self.inbox + ".*", pending_msgs_limit=0, pending_bytes_limit=PENDING_BYTES_UNLIMITED)
        # The queue nats-py's own next_msg() and message iterator read: private, but there
        # since 2.6 at least (the oldest nats-py evrelay accepts), and every read uses it.
        self.incoming = self.sub._pending_queue
        if keep_in_progress:
            self.progress_task = asyncio.get_running_loop().create_task(self._keep_in_progress(keep_in_progress))

    async def stop(self) -> None:
        if self.progress_task is not None:
            self.progress_task.cancel()
            self.progress_task = None
        if self.sub is not None:
            try:
                await self.sub.unsubscribe()
            except Exception:  # the connection may be gone already; nothing to give back then
                pass
            self.sub = None
        if self.ephemeral_config is not None and self.name is not None:
            try:
                await self.conn.api(f"CONSUMER.DELETE.{self.stream}.{self.name}")
            except Exception:  # it expires on its own (inactive_threshold)
                pass

    def _sort(self, msg: Any) -> None:
        """Put what arrived where a fetch looks for it: a delivery, or a request's status."""
        if not msg.reply:
            # A status from the server ends (404, 408, 409) or accompanies (100) a request.
            headers = msg.headers or {}
            status = str(headers.get("Status", ""))
            if status and status != "100":
                request = int(msg.subject.rsplit(".", 1)[1])
                self.statuses[request] = (status, str(headers.get("Description", "")))
                if request == self.requests:
                    self.owed = 0  # the newest request ended: so did every older one
        else:
            self.queue.append(msg)
            self.owed -= 1

    def _sort_arrived(self) -> None:
        incoming = self.incoming
        assert incoming is not None
        while not incoming.empty():
            self._sort(incoming.get_nowait())

    async def _request(self, body: dict[str, Any]) -> int:
        import orjson

        self.requests += 1
        self.owed += body["batch"]
        await self.conn.nc.publish(
            f"$JS.API.CONSUMER.MSG.NEXT.{self.stream}.{self.name}",
            orjson.dumps(body),
            reply=f"{self.inbox}.{self.requests}",
        )
        return self.requests

    def _take(self, out: list[Any], limit: int) -> None:
        self._sort_arrived()
        while self.queue and len(out) < limit:
            out.append(self.queue.popleft())

    async def _collect(self, request: int, out: list[Any], limit: int, seconds: float) -> str | None:
        """Gather deliveries until `limit`, the request's ending status, or `seconds`."""
        assert self.incoming is not None
        loop = asyncio.get_running_loop()
        deadline = loop.time() + seconds
        while True:
            self._take(out, limit)
            if len(out) >= limit:
                return None
            if request in self.statuses:
                status, description = self.statuses.pop(request)
                if status == "503" or (status == "409" and "deleted" in description.lower()):
                    raise ConsumerGone(f"the NATS consumer {self.name!r} on stream {self.stream!r} no longer exists")
                return status
            left = deadline - loop.time()
            if left <= 0:
                return "timeout"
            try:
                self._sort(await asyncio.wait_for(self.incoming.get(), left))
            except TimeoutError:
                pass

    async def fetch(self, limit: int, wait: float) -> tuple[list[Any], bool]:
        """Up to `limit` deliveries, waiting at most `wait` seconds for the first; and
        whether the server said it had nothing at all to deliver (a 404 to the immediate
        request, or the waiting one expiring: a 408 from the server, not a local timeout)."""
        out: list[Any] = []
        self._take(out, limit)
        if len(out) >= limit:
            await self._read_ahead(limit)
            return self._handed_out(out), False
        if self.ahead is not None and self.owed > 0 and self.ahead not in self.statuses:
            request, self.ahead = self.ahead, None  # still delivering: collect the rest of it
        else:
            self.ahead = None  # delivered in full (or ended): its messages were in the queue
            request = await self._request({"batch": limit - len(out), "no_wait": True})
        status = await self._collect(request, out, limit, self.conn.timeout)
        if len(out) >= limit:
            await self._read_ahead(limit)
        if out or wait < 0.01:
            return self._handed_out(out), not out and status == "404"
        request = await self._request({"batch": 1, "expires": int(wait * 1e9)})
        status = await self._collect(request, out, 1, wait + 0.5)
        return self._handed_out(out), not out and status == "408"

    async def _read_ahead(self, limit: int) -> None:
        """After a full batch (more is probably there), ask for the next one at once:
        waiting for it only when the caller asks again left the server and this process
        idle by turns (a 300k tail spent half its time so). Only with nothing else owed,
        so the count tells when this request is done."""
        if self.read_ahead and self.owed <= 0:
            self.ahead = await self._request({"batch": limit, "no_wait": True})

    def _handed_out(self, msgs: list[Any]) -> list[Any]:
        if self.progress_task is not None:
            for msg in msgs:
                self.held[reply_metadata(msg.reply)[0]] = msg.reply
        return msgs

    async def acknowledge(self, sequences: Sequence[int], body: bytes = b"+ACK") -> list[int]:
        """Ack (or with body b"-NAK", give back) held messages; the sequences not held."""
        missing = []
        for seq in sequences:
            reply = self.held.pop(seq, None)
            if reply is None:
                missing.append(seq)
            else:
                await self.conn.nc.publish(reply, body)
        await self.conn.nc.flush(self.conn.timeout)
        return missing

    async def nak(self, msgs: Sequence[Any]) -> None:
        for msg in msgs:
            await self.conn.nc.publish(msg.reply, b"-NAK")
        await self.conn.nc.flush(self.conn.timeout)

    async def mark_in_progress(self) -> None:
        for reply in list(self.held.values()):
            await self.conn.nc.publish(reply, b"+WPI")

    async def _keep_in_progress(self, interval: float) -> None:
        # A live reader keeps what it holds: JetStream redelivers only a dead reader's messages.
        while True:
            await asyncio.sleep(interval)
            try:
                await self.mark_in_progress()
            except Exception:  # a broken connection shows up on the next read instead
                pass


class CaughtUp:
    """`caught_up` for the idle timeout: the server answered the last read and had nothing
    more (an unreachable server, or a read that returned messages, is not idleness)."""

    backend: NatsBackend
    answered_empty = False

    @property
    def caught_up(self) -> bool:
        conn = self.backend._conn
        return self.answered_empty and conn is not None and bool(getattr(conn.nc, "is_connected", False))


class NatsStreamConsumer(CaughtUp, Consumer):
    """A plain read: an ephemeral consumer (no acks) from the start position, ended at the
    stop position (or, without -f, the stream's last message when the read began)."""

    def __init__(self, backend: NatsBackend, spec: ReadSpec) -> None:
        self.backend = backend
        self.stream = spec.stream
        self.follow = spec.follow
        self.session: PullSession | None = None
        self.last_seq = 0
        self.spec = spec
        if isinstance(spec.start, Stored):
            raise UsageError("--from stored needs a consumer group (-g GROUP)")
        try:
            state = backend.stream_state(self.stream)
        except NotFoundError:
            if not spec.follow:
                raise
            # -f on a stream that does not exist yet waits for it (as with Redis).
            self.stop_seq = self.stop_ms = None
            return
        self._begin(state)

    def _begin(self, state: dict[str, Any]) -> None:
        spec, backend = self.spec, self.backend
        stop = spec.stop if spec.stop is not None else (None if spec.follow else End())
        self.stop_seq, self.stop_ms = backend.stop_bound(stop, state) if stop is not None else (None, None)
        config = backend.deliver_config(self.stream, spec.start, state)
        self.config = {"ack_policy": "none", "replay_policy": "instant", **config}
        if not self.follow and (
            not state.get("messages")
            or config["deliver_policy"] == "new"
            or (self.stop_seq is not None and self.stop_seq < int(config.get("opt_start_seq", 0)))
        ):
            self.exhausted = True
            return
        self._start_session()

    def _start_session(self) -> None:
        self.session = PullSession(self.backend.conn, self.stream, None, self.config, read_ahead=True)
        try:
            self.backend.conn.run(self.session.start(), what=f"reading stream {self.stream}")
        except JetStreamError as exc:
            raise NotFoundError(f"cannot read NATS stream {self.stream!r}: {exc.message}") from None

    def read(self, max_messages: int, timeout: float) -> list[Message]:
        if self.exhausted:
            return []
        if self.session is None:
            try:
                state = self.backend.stream_state(self.stream)
                if isinstance(self.spec.start, (End, Last)):
                    # Waited for since before it existed: everything in it is new.
                    self.spec = dataclasses.replace(self.spec, start=Beginning())
                self._begin(state)
            except NotFoundError:
                time.sleep(min(timeout, 0.5))
                return []
            if self.session is None:
                return []
        wait = timeout if self.follow else 0.0
        try:
            msgs, nothing = self.backend.conn.run(
                self.session.fetch(max_messages, wait), wait + self.backend.settings.timeout + 2, f"reading {self.stream}"
            )
        except ConsumerGone:
            # Idle past the ephemeral consumer's inactivity limit (output blocked): resume
            # after the last message delivered.
            if self.last_seq:
                self.config = {**self.config, "deliver_policy": "by_start_sequence", "opt_start_seq": self.last_seq + 1}
                self.config.pop("opt_start_time", None)
            self._start_session()
            return []
        self.answered_empty = not msgs and nothing
        out: list[Message] = []
        pending = None
        stream = self.stream
        for msg in msgs:
            message = delivery_to_message(msg, stream)
            seq = int(message.position.id)  # type: ignore[union-attr]
            if (self.stop_seq is not None and seq > self.stop_seq) or (
                self.stop_ms is not None and (message.timestamp or 0) > self.stop_ms
            ):
                self.exhausted = True
                break
            out.append(message)
            self.last_seq = seq
        if out:
            pending = reply_metadata(msgs[len(out) - 1].reply)[3]
        if self.stop_seq is not None and self.last_seq >= self.stop_seq:
            self.exhausted = True
        if not self.follow and (nothing or pending == 0):
            self.exhausted = True
        return out

    def close(self) -> None:
        if self.session is not None and self.backend._conn is not None:
            session, self.session = self.session, None
            try:
                self.backend.conn.run(session.stop(), what="closing a read")
            except Exception:
                pass


class NatsGroupConsumer(CaughtUp, Consumer):
    """A member of a consumer group: pulls from the durable consumer named after the group;
    ack() acks, reject() naks (delivered again at once), and while open the messages it
    holds are kept in progress so JetStream does not hand them to another member;
    close() gives back what it still holds."""

    def __init__(self, backend: NatsBackend, spec: ReadSpec) -> None:
        from evrelay.backends.nats.groups import durable_name

        self.backend = backend
        self.stream = spec.stream
        self.group = spec.group or ""
        self.follow = spec.follow
        # ReadSpec.release_on_close (False for `tail -g --no-ack`) where the interface has it.
        self.release_on_close = getattr(spec, "release_on_close", True)
        self.created = backend.create_group(self.stream, self.group, spec.start)
        info = backend.group_consumer_info(self.stream, self.group)
        ack_wait = int(info.get("config", {}).get("ack_wait", 30_000_000_000)) / 1e9
        self.session = PullSession(backend.conn, self.stream, durable_name(self.group))
        backend.conn.run(self.session.start(keep_in_progress=max(ack_wait / 3, 0.2)), what=f"joining group {self.group}")

    def read(self, max_messages: int, timeout: float) -> list[Message]:
        if self.exhausted:
            return []
        wait = timeout if self.follow else 0.0
        try:
            msgs, nothing = self.backend.conn.run(
                self.session.fetch(max_messages, wait), wait + self.backend.settings.timeout + 2, f"reading as group {self.group}"
            )
        except ConsumerGone:
            raise NotFoundError(
                f"consumer group {self.group!r} on NATS stream {self.stream!r} no longer exists (deleted, or the "
                "server lost it); not recreating it, which could skip data: create it again with "
                "`evrelay tail -g GROUP --from ...`"
            ) from None
        self.answered_empty = not msgs and nothing
        if self.answered_empty and not self.follow:
            self.exhausted = True
        messages = [delivery_to_message(msg, self.stream) for msg in msgs]
        for message in messages:
            message.receipt = self
        return messages

    @staticmethod
    def _sequences(messages: Sequence[Message]) -> list[int]:
        return [int(m.position.id) for m in messages if m.position is not None]

    def ack(self, messages: Sequence[Message]) -> None:
        sequences = self._sequences(messages)
        if not sequences:
            return
        missing = self.backend.conn.run(self.session.acknowledge(sequences), what=f"acking for group {self.group}")
        if missing:
            # Not delivered through this reader (claimed elsewhere): ack by stream sequence.
            self.backend.conn.run(self.backend._ack_sequences(self.stream, self.group, missing))

    def reject(self, messages: Sequence[Message]) -> None:
        sequences = self._sequences(messages)
        if sequences:
            self.backend.conn.run(self.session.acknowledge(sequences, b"-NAK"), what=f"giving back to group {self.group}")

    def keepalive(self) -> None:
        self.backend.conn.run(self.session.mark_in_progress())

    def close(self) -> None:
        # Messages still held (not acked: a relay stopping mid-window) are given back, so
        # the next reader gets them first and at once, unless the read asked to keep them
        # pending; a reader that dies leaves them to redelivery after the group's ack_wait.
        if self.backend._conn is not None:
            try:
                if self.release_on_close:
                    self.backend.conn.run(self.session.acknowledge(list(self.session.held), b"-NAK"))
                self.backend.conn.run(self.session.stop(), what="leaving the group")
            except Exception:
                pass
