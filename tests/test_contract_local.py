"""The contract suite against the embedded `local` backend (SQLite)."""

from __future__ import annotations

import uuid

import pytest

from evrelay.backends.local import LocalBackend
from tests.contract import BackendContract


class TestLocalContract(BackendContract):
    @pytest.fixture
    def backend(self, tmp_path):
        backend = LocalBackend({"path": str(tmp_path / "store.db")})
        with backend:
            yield backend

    @pytest.fixture
    def stream(self):
        return f"s-{uuid.uuid4().hex[:8]}"

    def second_handle(self, backend):
        other = LocalBackend({"path": str(backend.path)})
        other.open()
        return other
