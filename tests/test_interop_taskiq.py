"""taskiq through evrelay, with the real frameworks from PyPI: taskiq-redis's stream broker
and taskiq-aio-kafka, their real kickers and a real taskiq Receiver running the tasks.

taskiq-aio-kafka 1.0.0 needs two workarounds with aiokafka 0.14 (its defaults come from
kafka-python and are not what aiokafka calls): aiokafka's own DefaultPartitioner and a
RoundRobinPartitionAssignor. Its consumer has no group and starts at `latest` by default,
and taskiq-redis's group starts at `$`: the workers here start at the beginning instead.
"""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from tests.conftest import evrelay

pytestmark = [pytest.mark.redis, pytest.mark.kafka, pytest.mark.filterwarnings("ignore::DeprecationWarning")]

TASK = "evrelay_tests.add"


def _kafka_broker(bootstrap: str, topic: str, worker: bool):
    from aiokafka.coordinator.assignors.roundrobin import RoundRobinPartitionAssignor
    from aiokafka.partitioner import DefaultPartitioner
    from taskiq_aio_kafka import AioKafkaBroker

    broker = AioKafkaBroker(bootstrap_servers=bootstrap, kafka_topic=topic)
    broker.configure_producer(partitioner=DefaultPartitioner())
    broker.configure_consumer(
        auto_offset_reset="earliest", partition_assignment_strategy=(RoundRobinPartitionAssignor,)
    )
    broker.is_worker_process = worker
    return broker


def _redis_broker(url: str, stream: str, worker: bool):
    from taskiq_redis import RedisStreamBroker

    broker = RedisStreamBroker(url, queue_name=stream, consumer_group_name=f"workers-{stream}", consumer_id="0")
    broker.is_worker_process = worker
    return broker


async def _kick(broker, calls: list[tuple[int, int]]) -> None:
    @broker.task(task_name=TASK)
    async def add(a: int, b: int) -> int:
        return a + b

    await broker.startup()
    try:
        for a, b in calls:
            await add.kicker().with_labels(origin="evrelay-test").kiq(a, b)
    finally:
        await broker.shutdown()


async def _work(broker, expected: int, timeout: float = 90) -> list[int]:
    """Run the broker's tasks with taskiq's own Receiver until `expected` have run."""
    from taskiq.receiver import Receiver

    results: list[int] = []

    @broker.task(task_name=TASK)
    async def add(a: int, b: int) -> int:
        results.append(a + b)
        return a + b

    await broker.startup()
    receiver = Receiver(broker, run_startup=False)

    async def consume() -> None:
        async for message in broker.listen():
            await receiver.callback(message)
            if len(results) >= expected:
                return

    try:
        await asyncio.wait_for(consume(), timeout)
    finally:
        await broker.shutdown()
    return results


def test_taskiq_redis_tasks_run_on_a_taskiq_kafka_worker(redis_server, kafka_server):
    stream, topic = f"tq-{uuid.uuid4().hex[:8]}", f"tq-{uuid.uuid4().hex[:8]}"
    asyncio.run(_kick(_redis_broker(redis_server.url, stream, worker=False), [(1, 10), (2, 10), (3, 10)]))
    run = evrelay(
        "bridge", f"{redis_server.url}/{stream}?layout=taskiq", f"kafka://{kafka_server.bootstrap}/{topic}",
        "-n", "3", "--timeout", "30s", timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.err
    results = asyncio.run(_work(_kafka_broker(kafka_server.bootstrap, topic, worker=True), 3))
    assert sorted(results) == [11, 12, 13]


def test_taskiq_kafka_tasks_run_on_a_taskiq_redis_worker(redis_server, kafka_server):
    stream, topic = f"tq-{uuid.uuid4().hex[:8]}", f"tq-{uuid.uuid4().hex[:8]}"
    asyncio.run(_kick(_kafka_broker(kafka_server.bootstrap, topic, worker=False), [(5, 1), (6, 1), (7, 1)]))
    run = evrelay(
        "bridge", f"kafka://{kafka_server.bootstrap}/{topic}", f"{redis_server.url}/{stream}?layout=taskiq",
        "-n", "3", "--timeout", "30s", timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.err
    results = asyncio.run(_work(_redis_broker(redis_server.url, stream, worker=True), 3))
    assert sorted(results) == [6, 7, 8]


def test_taskiq_layout_round_trip_through_tail_and_publish(redis_server):
    """taskiq-redis writes -> tail -o json -> publish (the layout encoding, raw fields
    removed) to a second stream -> a taskiq-redis worker runs them as its own."""
    first, second = f"tq-{uuid.uuid4().hex[:8]}", f"tq-{uuid.uuid4().hex[:8]}"
    asyncio.run(_kick(_redis_broker(redis_server.url, first, worker=False), [(1, 1), (2, 2)]))
    tail = evrelay("tail", f"{redis_server.url}/{first}?layout=taskiq", "-o", "json")
    assert tail.returncode == 0, tail.err
    envelopes = [json.loads(line) for line in tail.lines()]
    assert [json.loads(e["value"])["task_name"] for e in envelopes] == [TASK, TASK]
    assert json.loads(envelopes[0]["value"])["labels"]["origin"] == "evrelay-test"
    pretty = evrelay("tail", f"{redis_server.url}/{first}?layout=taskiq", "-o", "pretty", "-n", "1")
    assert f'taskiq task {TASK} labels={{"origin":"evrelay-test"}} args=[2,2]' in pretty.out, pretty.out
    stripped = "".join(json.dumps({k: v for k, v in e.items() if k != "fields"}) + "\n" for e in envelopes)
    run = evrelay("publish", f"{redis_server.url}/{second}?layout=taskiq", "--input", "json", input=stripped)
    assert run.returncode == 0, run.err
    results = asyncio.run(_work(_redis_broker(redis_server.url, second, worker=True), 2))
    assert sorted(results) == [2, 4]
