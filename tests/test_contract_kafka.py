"""The contract suite against a real Kafka-protocol broker (tansu, started by the fixtures)."""

from __future__ import annotations

import uuid

import pytest

from evrelay.backends.base import BackendSettings
from evrelay.backends.kafka import KafkaBackend
from tests.contract import BackendContract

pytestmark = pytest.mark.kafka


def create_topic(bootstrap: str, name: str, partitions: int = 1) -> str:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})
    for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        future.result(timeout=10)
    return name


class TestKafkaContract(BackendContract):
    @pytest.fixture
    def backend(self, kafka_server):
        with KafkaBackend({"bootstrap_servers": kafka_server.bootstrap}, BackendSettings(timeout=10)) as backend:
            yield backend

    @pytest.fixture
    def stream(self, kafka_server):
        return create_topic(kafka_server.bootstrap, f"t-{uuid.uuid4().hex[:10]}")
