"""The contract suite against the JSONL `file:` backend."""

from __future__ import annotations

import pytest

from evrelay.backends.jsonl import JsonlBackend
from tests.contract import BackendContract


class TestFileContract(BackendContract):
    @pytest.fixture
    def backend(self, tmp_path):
        backend = JsonlBackend({"path": str(tmp_path / "events.jsonl")})
        with backend:
            yield backend

    @pytest.fixture
    def stream(self, tmp_path):
        return str(tmp_path / "events.jsonl")
