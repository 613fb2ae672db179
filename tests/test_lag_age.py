"""`lag --max-age`: the age of the oldest message a group has not finished, on every backend."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from tests.conftest import evrelay
from tests.test_contract_kafka import create_topic


@pytest.fixture(params=["local", "redis", "kafka"])
def address(request):
    name = f"age-{uuid.uuid4().hex[:6]}"
    if request.param == "local":
        return name
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        return f"redis://127.0.0.1:{server.port}/0/{name}"
    server = request.getfixturevalue("kafka_server")
    return f"kafka://{server.bootstrap}/{create_topic(server.bootstrap, name)}"


def test_max_age_gates_on_the_oldest_unconsumed_message(address):
    assert evrelay("publish", address, "first").returncode == 0
    time.sleep(0.3)
    assert evrelay("publish", address, "second", "third").returncode == 0
    second = json.loads(evrelay("tail", address, "-n", "2", "-o", "json").lines()[0])
    assert second["value"] == "second"
    run = evrelay("tail", address, "-g", "ops", "-n", "1", "-o", "raw")
    assert run.lines() == [b"first"], run.err
    time.sleep(1.5)

    run = evrelay("lag", address, "-g", "ops", "--max-age", "1s", "-o", "json")
    assert run.returncode == 4, run.err
    rows = [json.loads(line) for line in run.lines()]
    assert sum(r["lag"] for r in rows) == 2
    assert [r["oldest"] for r in rows if r["oldest"]] == [second["timestamp"]]
    assert "has a message" in run.err and "over --max-age 1s" in run.err
    assert evrelay("lag", address, "-g", "ops", "--max-age", "1h").returncode == 0

    assert evrelay("tail", address, "-g", "ops", "-o", "raw").lines() == [b"second", b"third"]
    run = evrelay("lag", address, "-g", "ops", "--max-age", "1s", "-o", "json")
    assert run.returncode == 0, run.err
    assert "nothing unconsumed" in run.err
    assert all(json.loads(line)["age_s"] is None for line in run.lines())


@pytest.mark.redis
def test_a_pending_message_counts_as_unconsumed(redis_server):
    address = f"redis://127.0.0.1:{redis_server.port}/0/age-{uuid.uuid4().hex[:6]}"
    assert evrelay("publish", address, "a", "b").returncode == 0
    assert evrelay("tail", address, "-g", "ops", "--no-ack", "-o", "raw").lines() == [b"a", b"b"]
    time.sleep(1.2)
    run = evrelay("lag", address, "-g", "ops", "--max-age", "1s", "-o", "json")
    assert run.returncode == 4, run.err
    [row] = [json.loads(line) for line in run.lines()]
    assert (row["lag"], row["pending"]) == (0, 2) and row["age_s"] >= 1.0
