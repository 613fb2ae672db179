"""Regression tests of the defects the fixes4 session fixed (one section per defect),
each against the real servers of every backend it concerns."""

from __future__ import annotations

import uuid

import pytest

from tests.conftest import evrelay

FAR_FUTURE = "2099-01-01T00:00:00Z"


def _name() -> str:
    return f"f4-{uuid.uuid4().hex[:10]}"


@pytest.fixture(params=["local", "file", "redis", "kafka", "nats"])
def address(request, tmp_path):
    """A fresh topic/stream address on each backend (its server started by the fixtures)."""
    name = _name()
    if request.param == "local":
        return name
    if request.param == "file":
        return f"file:{tmp_path / name}.jsonl"
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        return f"redis://127.0.0.1:{server.port}/0/{name}"
    if request.param == "kafka":
        server = request.getfixturevalue("kafka_server")
        return f"kafka://{server.bootstrap}/{name}"
    server = request.getfixturevalue("nats_server")
    return f"{server.url}/{name}?create=true"


# --- 1. `tail -f --to T -n N` stops after N, as `tail --to T -n N` does -----------------

def test_follow_with_to_and_count_stops_after_count(address):
    assert evrelay("publish", address, "a", "b", "c", "d", "e", "-q").returncode == 0
    # Before: -n was dropped with -f, so all five were printed and it then followed until
    # the far-away --to (the timeout here). A count limit is a count limit.
    run = evrelay("tail", address, "-f", "--to", FAR_FUTURE, "-n", "2", "-o", "raw", timeout=40)
    assert run.returncode == 0, run.err
    assert run.lines() == [b"a", b"b"]
    # Without --to, -n with -f is the backlog before following: the last N, then new ones.
    run = evrelay("tail", address, "-f", "-n", "2", "-o", "raw", "--idle-timeout", "1s", timeout=60)
    assert run.lines() == [b"d", b"e"], run.err
