"""The NATS producer: JetStream publishes with many acknowledgements in flight.

Each message goes out as a core NATS publish with a reply subject of its own under one
inbox; the stream's acknowledgement (`{"stream": ..., "seq": ...}` or an error) arrives
there. send() only writes; flush() waits for the acknowledgements, which are the
confirmations evrelay reports. A message stays pending across flushes until its
acknowledgement comes, or until the connection was lost and re-made after it went out,
or UNCONFIRMED_AFTER passed without one (the server may never have stored it): then it
is a failure that sending again can fix.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import orjson

from evrelay.backends.base import DeliveryFailure, DeliveryReport, Message, Producer
from evrelay.backends.nats.mapping import encode_headers, header_block_size
from evrelay.errors import BackendUnavailable

if TYPE_CHECKING:
    from evrelay.backends.nats import NatsBackend


class NatsProducer(Producer):
    UNCONFIRMED_AFTER = 30.0
    """Seconds after which a message still not acknowledged counts as not delivered."""

    def __init__(self, backend: NatsBackend, stream: str, subject: str) -> None:
        self.backend = backend
        self.stream = stream
        self.subject = subject
        self.conn = backend.conn
        self.report = DeliveryReport()
        self.waiting: dict[str, tuple[Message, float, int]] = {}
        self.counter = 0
        self.sub: Any = None
        self.inbox = ""
        self.settled: asyncio.Event | None = None

    async def _start(self) -> None:
        self.settled = asyncio.Event()
        self.inbox = self.conn.nc.new_inbox()
        self.sub = await self.conn.nc.subscribe(self.inbox + ".*", cb=self._on_ack)

    async def _on_ack(self, msg: Any) -> None:
        entry = self.waiting.pop(msg.subject.rsplit(".", 1)[1], None)
        if entry is not None:
            message = entry[0]
            status = (msg.headers or {}).get("Status") if not msg.data else None
            if status == "503":
                self.report.failures.append(
                    DeliveryFailure(message, f"no NATS stream takes subject {self.subject!r}", permanent=True)
                )
            else:
                try:
                    error = orjson.loads(msg.data).get("error")
                except (orjson.JSONDecodeError, AttributeError):
                    error = {"description": f"unexpected reply {msg.data[:80]!r}"}
                if error:
                    # 503 is JetStream's "not now": above all a stream full with discard new
                    # (max_msgs, max_bytes), which its consumers or a purge will make room in;
                    # a relay waits that out as it does a Redis sink out of memory.
                    full = isinstance(error, dict) and error.get("code") == 503
                    self.report.failures.append(
                        DeliveryFailure(message, f"NATS JetStream: {error.get('description', error)}", permanent=not full)
                    )
                else:
                    self.report.delivered += 1
        if not self.waiting and self.settled is not None:
            self.settled.set()

    async def _send(self, messages: Sequence[Message]) -> None:
        import nats.errors

        if self.sub is None:
            await self._start()
        publish = self.conn.nc.publish
        # Within send()'s own bound, so that a reconnect that never comes ends here, cleanly.
        deadline = time.monotonic() + max(self.backend.settings.timeout, 30.0) - 2
        for message in messages:
            if message.value is None:
                self.report.failures.append(
                    DeliveryFailure(message, "NATS has no tombstones: a message needs a value, not null", permanent=True)
                )
                continue
            headers = encode_headers(message.key, message.headers)
            limit = self.conn.nc.max_payload
            if headers and len(message.value) + header_block_size(headers) > limit:
                # The server counts the header block against max_payload and hangs up on a
                # message over it; nats-py checks the payload alone, so it is caught here.
                self.report.failures.append(
                    DeliveryFailure(message, f"larger than the server's max_payload ({limit} bytes, headers and key included)", permanent=True)
                )
                continue
            self.counter += 1
            token = str(self.counter)
            while True:
                self.waiting[token] = (message, time.monotonic(), self.conn.reconnects)
                try:
                    await publish(self.subject, message.value, reply=f"{self.inbox}.{token}", headers=headers)
                except nats.errors.MaxPayloadError:
                    del self.waiting[token]
                    self.report.failures.append(
                        DeliveryFailure(message, f"larger than the server's max_payload ({limit} bytes)", permanent=True)
                    )
                except nats.errors.OutboundBufferLimitError:
                    # The server went away and nats-py's buffer for the reconnect is full:
                    # wait for the reconnect, then go on. What was in flight before it is
                    # reported by flush() as lost with the connection (counted, not dropped).
                    if await self._reconnected(deadline):
                        continue
                    self._superseded()
                except (nats.errors.ConnectionClosedError, nats.errors.StaleConnectionError):
                    self._superseded()
                break

    async def _reconnected(self, deadline: float) -> bool:
        """Whether nats-py reconnected before `deadline` (monotonic)."""
        while time.monotonic() < deadline:
            if self.conn.nc.is_connected:
                return True
            await asyncio.sleep(0.05)
        return False

    def _superseded(self) -> None:
        # The caller sends everything again: outcomes of this attempt are superseded.
        self.waiting.clear()
        self.report = DeliveryReport()
        raise BackendUnavailable(f"lost the connection to NATS at {self.backend.where} while publishing")

    def send(self, messages: Sequence[Message]) -> None:
        self.conn.run(self._send(messages), max(self.backend.settings.timeout, 30.0), "publishing")

    async def _flush(self, timeout: float) -> DeliveryReport:
        assert self.settled is not None
        # No nc.flush() here: nats-py's flusher task writes what publish() queued, and a
        # PING round trip would only add a way to time out.
        if self.waiting:
            self.settled.clear()
            try:
                await asyncio.wait_for(self.settled.wait(), timeout)
            except TimeoutError:
                pass
        expired = time.monotonic() - self.UNCONFIRMED_AFTER
        for token, (message, sent_at, reconnects) in list(self.waiting.items()):
            if reconnects < self.conn.reconnects:
                reason = f"the connection to NATS at {self.backend.where} was lost before the stream acknowledged it"
            elif sent_at < expired:
                reason = f"not acknowledged by the stream within {self.UNCONFIRMED_AFTER:g}s"
            else:
                continue
            del self.waiting[token]
            self.report.failures.append(DeliveryFailure(message, reason, permanent=False))
        report, self.report = self.report, DeliveryReport()
        # Still unconfirmed: reported as pending now, and counted by a later flush.
        report.pending = len(self.waiting)
        return report

    def flush(self, timeout: float | None = None) -> DeliveryReport:
        if self.sub is None:
            report, self.report = self.report, DeliveryReport()
            return report
        bound = self.backend.settings.timeout if timeout is None else timeout
        try:
            return self.conn.run(self._flush(bound), bound + 5, "waiting for acknowledgements")
        except BackendUnavailable:
            raise
        except Exception as exc:  # nats-py's flush timeout or a closed connection
            raise BackendUnavailable(f"NATS at {self.backend.where}: {type(exc).__name__} while confirming") from None

    def close(self) -> None:
        if self.sub is not None and self.backend._conn is not None:
            sub, self.sub = self.sub, None
            try:
                self.conn.run(sub.unsubscribe(), 5)
            except Exception:
                pass
