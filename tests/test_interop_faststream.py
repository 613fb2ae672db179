"""FastStream through evrelay, with the real package from PyPI: its RedisBroker publishing
to a stream (field `__data__`, its binary message format) and its KafkaBroker subscribing,
and the reverse. Body, headers and correlation_id must survive the hop."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from tests.conftest import evrelay

pytestmark = [pytest.mark.redis, pytest.mark.kafka, pytest.mark.filterwarnings("ignore::DeprecationWarning")]


async def _publish(broker, body: dict, **target) -> None:
    async with broker:
        await broker.start()
        await broker.publish(body, headers={"x-trace": "trace-1"}, correlation_id="corr-42", **target)


async def _receive(broker, subscriber_target, expected: int, timeout: float = 60) -> list[tuple]:
    """Start a real FastStream subscriber and collect (body, headers, correlation_id)."""
    received: list[tuple] = []
    done = asyncio.Event()

    from faststream.redis.annotations import RedisStreamMessage

    @broker.subscriber(stream=subscriber_target)
    async def handle(body: dict, message: RedisStreamMessage) -> None:
        received.append((body, dict(message.headers), message.correlation_id, message.content_type))
        if len(received) >= expected:
            done.set()

    async with broker:
        await broker.start()
        await asyncio.wait_for(done.wait(), timeout)
    return received


def _redis_broker(url: str):
    from faststream.redis import RedisBroker

    return RedisBroker(url)


def _kafka_broker(bootstrap: str):
    from faststream.kafka import KafkaBroker

    return KafkaBroker(bootstrap)


def _check(received: list[tuple]) -> None:
    assert len(received) == 1
    body, headers, correlation_id, content_type = received[0]
    assert body == {"order": 7}
    assert correlation_id == "corr-42"
    assert content_type == "application/json"
    assert headers["x-trace"] == "trace-1"


def test_faststream_redis_stream_to_faststream_kafka_subscriber(redis_server, kafka_server):
    stream, topic = f"fs-{uuid.uuid4().hex[:8]}", f"fs-{uuid.uuid4().hex[:8]}"
    asyncio.run(_publish(_redis_broker(redis_server.url), {"order": 7}, stream=stream))
    run = evrelay(
        "bridge", f"{redis_server.url}/{stream}?layout=faststream", f"kafka://{kafka_server.bootstrap}/{topic}",
        "-n", "1", "--timeout", "30s", timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.err
    received = asyncio.run(_receive_kafka(kafka_server.bootstrap, topic))
    _check(received)


async def _receive_kafka(bootstrap: str, topic: str) -> list[tuple]:
    broker = _kafka_broker(bootstrap)
    received: list[tuple] = []
    done = asyncio.Event()

    from faststream.kafka.annotations import KafkaMessage

    @broker.subscriber(topic, auto_offset_reset="earliest", group_id=f"g-{topic}")
    async def handle(body: dict, message: KafkaMessage) -> None:
        received.append((body, dict(message.headers), message.correlation_id, message.content_type))
        done.set()

    async with broker:
        await broker.start()
        await asyncio.wait_for(done.wait(), 60)
    return received


def test_faststream_kafka_to_faststream_redis_stream_subscriber(redis_server, kafka_server):
    from faststream.redis import StreamSub

    stream, topic = f"fs-{uuid.uuid4().hex[:8]}", f"fs-{uuid.uuid4().hex[:8]}"
    asyncio.run(_publish(_kafka_broker(kafka_server.bootstrap), {"order": 7}, topic=topic))
    run = evrelay(
        "bridge", f"kafka://{kafka_server.bootstrap}/{topic}", f"{redis_server.url}/{stream}?layout=faststream",
        "-n", "1", "--timeout", "30s", timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.err
    received = asyncio.run(_receive(_redis_broker(redis_server.url), StreamSub(stream, last_id="0"), 1))
    _check(received)


def test_faststream_layout_round_trip_through_tail_and_publish(redis_server):
    """FastStream writes -> tail -o json (body and headers decoded) -> publish with the
    layout's own encoding (raw fields removed) -> FastStream reads it as its own."""
    from faststream.redis import StreamSub

    first, second = f"fs-{uuid.uuid4().hex[:8]}", f"fs-{uuid.uuid4().hex[:8]}"
    asyncio.run(_publish(_redis_broker(redis_server.url), {"order": 7}, stream=first))
    tail = evrelay("tail", f"{redis_server.url}/{first}?layout=faststream", "-o", "json")
    assert tail.returncode == 0, tail.err
    (envelope,) = [json.loads(line) for line in tail.lines()]
    assert json.loads(envelope["value"]) == {"order": 7}
    assert dict(envelope["headers"])["correlation_id"] == "corr-42"
    del envelope["fields"]
    run = evrelay("publish", f"{redis_server.url}/{second}?layout=faststream", "--input", "json", input=json.dumps(envelope))
    assert run.returncode == 0, run.err
    received = asyncio.run(_receive(_redis_broker(redis_server.url), StreamSub(second, last_id="0"), 1))
    _check(received)


def test_a_faststream_entry_that_does_not_decode_is_shown_with_a_warning(redis_server):
    import redis

    stream = f"fs-{uuid.uuid4().hex[:8]}"
    client = redis.Redis.from_url(redis_server.url)
    client.xadd(stream, {"__data__": b"\x89BIN\r\n\x1a\n\x00\x01\xff\xff"})
    client.close()
    run = evrelay("tail", f"{redis_server.url}/{stream}?layout=faststream", "-o", "json")
    assert run.returncode == 0, run.err
    assert "does not decode as a FastStream message" in run.err
    (envelope,) = [json.loads(line) for line in run.lines()]
    assert envelope["fields"] == [["__data__", {"b64": "iUJJTg0KGgoAAf//"}]]


def test_a_header_faststream_cannot_carry_is_refused_and_nothing_is_written(redis_server):
    import redis

    stream = f"fs-{uuid.uuid4().hex[:8]}"
    envelope = {"value": "{}", "headers": [["bin", {"b64": "/w=="}]]}
    run = evrelay("publish", f"{redis_server.url}/{stream}?layout=faststream", "--input", "json", input=json.dumps(envelope))
    assert run.returncode == 2, run.err
    assert "header 'bin' is not UTF-8 text" in run.err
    client = redis.Redis.from_url(redis_server.url)
    assert client.exists(stream) == 0
    client.close()
