"""The contract suite against a real nats-server with JetStream (started by the fixtures)."""

from __future__ import annotations

import uuid

import pytest

from evrelay.backends.base import BackendSettings
from evrelay.backends.nats import NatsBackend
from tests.contract import BackendContract

pytestmark = pytest.mark.nats

# A short ack_wait so that the redelivery of unacked group messages shows within a test.
OPTIONS = {"create": True, "ack_wait": 1}


class TestNatsContract(BackendContract):
    @pytest.fixture
    def backend(self, nats_server):
        with NatsBackend({"url": nats_server.url, **OPTIONS}, BackendSettings(timeout=5)) as backend:
            yield backend

    @pytest.fixture
    def stream(self, backend):
        name = f"s-{uuid.uuid4().hex[:10]}"
        backend.ensure_stream(name)
        return name

    def second_handle(self, backend):
        return NatsBackend({"url": backend.url, **OPTIONS}, BackendSettings(timeout=5))
