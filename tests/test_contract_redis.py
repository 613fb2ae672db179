"""The contract suite against a real redis-server (started by the fixtures)."""

from __future__ import annotations

import uuid

import pytest

from evrelay.backends.base import BackendSettings
from evrelay.backends.redis_streams import RedisStreamsBackend
from tests.contract import BackendContract

pytestmark = pytest.mark.redis


class TestRedisContract(BackendContract):
    @pytest.fixture
    def backend(self, redis_server):
        with RedisStreamsBackend({"url": redis_server.url}, BackendSettings(timeout=5)) as backend:
            yield backend

    @pytest.fixture
    def stream(self):
        return f"s-{uuid.uuid4().hex[:10]}"

    def second_handle(self, backend):
        return RedisStreamsBackend({"url": backend.url}, BackendSettings(timeout=5))
