"""A small Dispytch service for the interop tests, run by the Python 3.13 venv of
tests/python313.py (Dispytch needs 3.13): Dispytch's real EventEmitter emits events, or its
real EventDispatcher runs a typed handler for every event it consumes.

Kafka uses Dispytch's own KafkaProducer / KafkaConsumer (aiokafka). Dispytch's own Redis
backend is Pub/Sub, not Streams; for Redis Streams this file writes a Producer and a
Consumer the way Dispytch's docs show ("Writing Custom Producers & Consumers": XADD the
payload in field `payload`, read it back from `raw["payload"]`), its documented extension
point. The emitter, dispatcher, routing, JSON serialization and the handler's typed body
(`Event[UserRegistered]`, pydantic) are all Dispytch's.

    emit kafka BOOTSTRAP TOPIC FIRST COUNT       events with seq FIRST..FIRST+COUNT-1
    emit redis URL STREAM FIRST COUNT
    handle kafka BOOTSTRAP TOPIC EXPECT TIMEOUT [RUNS]  run the handler until EXPECT distinct
    handle redis URL STREAM EXPECT TIMEOUT [RUNS]       seqs (and RUNS handler runs) were handled

`emit` prints each payload Dispytch's emitter handed to the producer, one JSON line
{"payload": TEXT}. `handle` prints {"handled": EVENT} per handler run (the typed body,
dumped) and {"error": TEXT} per event Dispytch could not handle (a payload that is not
JSON, a body that does not validate, a Redis entry without `payload`); it exits 0 once
EXPECT distinct seqs were handled in at least RUNS handler runs (duplicates included), 4 on
timeout.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import AsyncIterator

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from dispytch import EventBase, EventDispatcher, EventEmitter
from dispytch.di import Event
from dispytch.dispatcher.consumer import Consumer, EventSubscription, Message
from dispytch.emitter.producer import BackendConfig, EventRoute, Producer, ProducerTimeout
from dispytch.kafka import KafkaConsumer, KafkaEventRoute, KafkaEventSubscription, KafkaProducer
from pydantic import BaseModel
from redis.asyncio import Redis


class User(BaseModel):
    id: str
    email: str
    name: str


class UserRegistered(BaseModel):
    """The handler's typed body (the README's example event, plus a sequence number)."""

    type: str
    seq: int
    user: User
    timestamp: int


# --- Redis Streams, as Dispytch's docs show how to write a backend ----------------------------


class RedisStreamsEventRoute(EventRoute):
    stream: str


class RedisStreamsSubscription(EventSubscription):
    stream: str


class RedisStreamsProducer(Producer):
    def __init__(self, redis: Redis) -> None:
        self.redis = redis

    async def send(self, payload: bytes, route: EventRoute, config: BackendConfig | None = None):
        if not isinstance(route, RedisStreamsEventRoute):
            raise TypeError(f"Expected a RedisStreamsEventRoute when using RedisStreamsProducer got {type(route).__name__}")
        if not await self.redis.xadd(route.stream, {"payload": payload}):
            raise ProducerTimeout("Redis XADD failed")


class RedisStreamsConsumer(Consumer):
    def __init__(self, redis: Redis, stream: str, on_error) -> None:
        self.redis, self.stream, self.on_error = redis, stream, on_error

    async def listen(self) -> AsyncIterator[Message]:
        last_id = "0"
        while True:
            for _stream, entries in await self.redis.xread({self.stream: last_id}, count=500, block=1000) or []:
                for entry_id, fields in entries:
                    last_id = entry_id
                    if b"payload" not in fields:
                        self.on_error(f"entry {entry_id.decode()} has no field 'payload': {sorted(fields)}")
                        continue
                    yield Message(subscription=RedisStreamsSubscription(stream=self.stream), payload=fields[b"payload"])

    async def ack(self, message: Message):
        pass  # XREAD keeps no pending list (the docs' example: "might not need manual ack")


# --- emitting ------------------------------------------------------------------------------------


class RecordingProducer(Producer):
    """Passes every payload on to the real producer and prints it: what Dispytch sent."""

    def __init__(self, inner: Producer) -> None:
        self.inner = inner

    async def send(self, payload: bytes, route: EventRoute, config: BackendConfig | None = None):
        await self.inner.send(payload=payload, route=route, config=config)
        print(json.dumps({"payload": payload.decode()}), flush=True)


def event_class(route: EventRoute) -> type[EventBase]:
    class UserRegisteredEvent(EventBase):
        __route__ = route
        type: str = "user_registered"
        seq: int
        user: User
        timestamp: int

    return UserRegisteredEvent


def make_event(cls: type[EventBase], seq: int) -> EventBase:
    return cls(seq=seq, user=User(id=f"u-{seq}", email=f"user{seq}@example.com", name=f"Zoë {seq} ✓"),
               timestamp=1_700_000_000 + seq)


async def emit(backend: str, address: str, name: str, first: int, count: int) -> None:
    if backend == "kafka":
        client = AIOKafkaProducer(bootstrap_servers=address, linger_ms=5)
        await client.start()
        producer, route, close = KafkaProducer(client), KafkaEventRoute(topic=name), client.stop
    else:
        client = Redis.from_url(address)
        producer, route, close = RedisStreamsProducer(client), RedisStreamsEventRoute(stream=name), client.aclose
    emitter = EventEmitter(RecordingProducer(producer))
    cls = event_class(route)
    try:
        for start in range(first, first + count, 200):
            await asyncio.gather(*(emitter.emit(make_event(cls, seq)) for seq in range(start, min(start + 200, first + count))))
    finally:
        await close()


# --- handling --------------------------------------------------------------------------------------


async def handle(backend: str, address: str, name: str, expect: int, timeout: float, runs: int = 0) -> int:
    seen: set[int] = set()
    handled = 0
    done = asyncio.Event()

    def report_error(text: str) -> None:
        print(json.dumps({"error": text}), flush=True)

    class ReportErrors(logging.Handler):
        """Dispytch logs a failed handler (a body that does not validate) and asyncio a
        failed dispatch (a payload that is not JSON); both are events not handled."""

        def emit(self, record: logging.LogRecord) -> None:
            if record.levelno >= logging.ERROR:
                report_error(record.getMessage() + (f": {record.exc_info[1]!r}" if record.exc_info else ""))

    for logger_name in ("dispytch", "asyncio"):
        logging.getLogger(logger_name).addHandler(ReportErrors())

    if backend == "kafka":
        client = AIOKafkaConsumer(name, bootstrap_servers=address, group_id=f"dispytch-{name}",
                                  enable_auto_commit=False, auto_offset_reset="earliest")
        consumer = KafkaConsumer(client)
        subscription: EventSubscription = KafkaEventSubscription(topic=name)
        await consumer.start()
        close = consumer.stop
    else:
        client = Redis.from_url(address)
        consumer = RedisStreamsConsumer(client, name, report_error)
        subscription = RedisStreamsSubscription(stream=name)
        close = client.aclose
    dispatcher = EventDispatcher(consumer)

    @dispatcher.handler(subscription)
    async def on_user_registered(event: Event[UserRegistered]) -> None:
        assert isinstance(event, UserRegistered) and isinstance(event.user, User)
        nonlocal handled
        print(json.dumps({"handled": event.model_dump(mode="json")}), flush=True)
        seen.add(event.seq)
        handled += 1
        if len(seen) >= expect and handled >= runs:
            done.set()

    running = asyncio.create_task(dispatcher.start())
    try:
        await asyncio.wait_for(done.wait(), timeout)
        await asyncio.sleep(0.2)  # let an ack in flight finish before stopping
        return 0
    except TimeoutError:
        report_error(f"timed out after {timeout}s with {len(seen)} of {expect} events handled ({handled} runs)")
        return 4
    finally:
        running.cancel()
        await asyncio.gather(running, return_exceptions=True)
        await close()


def main(argv: list[str]) -> int:
    action, backend, address, name, *rest = argv
    if action == "emit":
        asyncio.run(emit(backend, address, name, int(rest[0]), int(rest[1])))
        return 0
    return asyncio.run(handle(backend, address, name, int(rest[0]), float(rest[1]), *map(int, rest[2:3])))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
