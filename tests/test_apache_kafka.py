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
