"""Where Apache Kafka itself behaves differently from other Kafka-protocol brokers, and
evrelay against Kafka's own tools (kafka-consumer-groups from the same jars and Java).

Each test names the behaviour that is Kafka's; evrelay follows Kafka.
"""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import evrelay, start_server
from tests.test_contract_kafka import create_topic

pytestmark = pytest.mark.kafka


@pytest.fixture
def fresh_kafka():
    """A broker of the session's flavour that no consumer group has used yet."""
    from tests.servers import KafkaServer

    server = start_server(KafkaServer)
    yield server
    server.__exit__(None, None, None)


def test_first_group_read_on_a_fresh_cluster_waits_for_the_coordinator(fresh_kafka):
    # Kafka's behaviour: the first group request creates __consumer_offsets, and until its
    # coordinator has loaded, OffsetFetch answers NOT_COORDINATOR. That is a broker
    # starting up, not an unreachable one: evrelay waits (within --timeout) instead of exit 3.
    topic = create_topic(fresh_kafka.bootstrap, f"fresh-{uuid.uuid4().hex[:6]}")
    address = f"kafka://{fresh_kafka.bootstrap}/{topic}"
    assert evrelay("publish", address, "one", "two").returncode == 0
    run = evrelay("tail", address, "-g", "first", "-n", "2", "-o", "raw", "--timeout", "30s")
    assert run.returncode == 0, run.err
    assert run.out.splitlines() == ["one", "two"]


def tool_table(text: str) -> list[dict[str, str]]:
    """The rows of a kafka-consumer-groups table (GROUP TOPIC PARTITION ...) as dicts."""
    lines = [line.split() for line in text.splitlines() if line.strip()]
    header_at = next(i for i, cells in enumerate(lines) if cells[:2] == ["GROUP", "TOPIC"])
    header = lines[header_at]
    return [dict(zip(header, cells, strict=False)) for cells in lines[header_at + 1 :] if len(cells) >= len(header) - 3 and cells[0] != "Consumer"]


def test_group_rewind_by_time_and_lag_agree_with_kafka_consumer_groups(apache_kafka):
    import json
    import time
    from datetime import UTC, datetime

    from confluent_kafka import Producer

    topic = create_topic(apache_kafka.bootstrap, f"rewind-{uuid.uuid4().hex[:6]}", partitions=3)
    address = f"kafka://{apache_kafka.bootstrap}/{topic}"
    producer = Producer({"bootstrap.servers": apache_kafka.bootstrap})
    for i in range(90):
        producer.produce(topic, value=f"early-{i}".encode(), partition=i % 3)
    assert producer.flush(10) == 0
    time.sleep(1.2)
    rewind_to = datetime.now(UTC).replace(microsecond=0)
    time.sleep(1.2)
    for i in range(61):
        producer.produce(topic, value=f"late-{i}".encode(), partition=i % 3)
    assert producer.flush(10) == 0

    group = f"rewind-{uuid.uuid4().hex[:6]}"
    assert evrelay("tail", address, "-g", group, "-n", "151", "-o", "raw").out.count("\n") == 151
    # Kafka's own answer for "the first offset at or after this time", per partition.
    wall = rewind_to.strftime("%Y-%m-%dT%H:%M:%S.000")
    kafka_plan = {int(row["PARTITION"]): int(row["NEW-OFFSET"]) for row in tool_table(apache_kafka.consumer_groups(
        "--reset-offsets", "--group", group, "--topic", topic, "--to-datetime", wall, "--dry-run"))}
    assert kafka_plan == {0: 30, 1: 30, 2: 30}

    moved = evrelay("replay", address, "-g", group, "--from", rewind_to.strftime("%Y-%m-%dT%H:%M:%SZ"), "--yes")
    assert moved.returncode == 0, moved.err
    described = {int(row["PARTITION"]): row for row in tool_table(apache_kafka.consumer_groups("--describe", "--group", group))}
    assert {p: int(row["CURRENT-OFFSET"]) for p, row in described.items()} == kafka_plan

    lag = evrelay("lag", address, "-g", group, "-o", "json")
    assert lag.returncode == 0, lag.err
    ours = {row["partition"]: row for row in map(json.loads, lag.out.splitlines())}
    for partition, row in described.items():
        assert ours[partition]["position"] == row["CURRENT-OFFSET"]
        assert ours[partition]["end"] == row["LOG-END-OFFSET"]
        assert ours[partition]["lag"] == int(row["LAG"])
    assert sum(r["lag"] for r in ours.values()) == 61
