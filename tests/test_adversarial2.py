"""Defects found by the second adversarial pass (replay, ack, redrive, config, the local
store, file sinks, outages mid-bridge) and the items the first pass left alone: each test
failed before its fix. Real servers come from the session fixtures in tests/conftest.py."""

from __future__ import annotations

import uuid

import pytest

from evrelay.backends.base import canonical_endpoint
from evrelay.backends.kafka import KafkaBackend
from evrelay.backends.local import LocalBackend
from evrelay.backends.redis_streams import RedisStreamsBackend
from tests.conftest import evrelay


@pytest.fixture
def stream():
    return f"adv2-{uuid.uuid4().hex[:8]}"


# --- the loop guard: one server, spelled two ways ------------------------------------------


def test_canonical_endpoint_spells_loopback_and_default_ports_one_way():
    loopback = ("loopback", 6379)
    for host, port in [("localhost", None), ("127.0.0.1", 6379), ("::1", "6379"), ("[::1]", None), ("LOCALHOST.", None), ("0.0.0.0", None), ("127.0.1.1", None)]:
        assert canonical_endpoint(host, port, 6379) == loopback, host
    assert canonical_endpoint("Redis.Example", None, 6379) == ("redis.example", 6379)
    assert canonical_endpoint("localhost", 6380, 6379) != loopback


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("redis://localhost:6379/0", "redis://127.0.0.1:6379/0", True),
        ("redis://localhost", "redis://127.0.0.1:6379/0", True),
        ("redis://u:pw@localhost:6379", "redis://127.0.0.1", True),
        ("redis://localhost:6379/1", "redis://localhost:6379/0", False),
        ("redis://localhost:6380", "redis://localhost:6379", False),
        ("redis://a.example", "redis://b.example", False),
    ],
)
def test_redis_locations_compare_the_server_and_database_not_the_spelling(a, b, same):
    assert RedisStreamsBackend({"url": a}).same_place(RedisStreamsBackend({"url": b})) is same


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("localhost:9092", "127.0.0.1:9092", True),
        ("localhost", "127.0.0.1:9092", True),
        ("b1.example:9092,localhost:9092", "127.0.0.1:9092", True),
        ("localhost:9093", "localhost:9092", False),
        ("b1.example:9092", "b2.example:9092", False),
    ],
)
def test_kafka_clusters_sharing_a_bootstrap_broker_are_one_place(a, b, same):
    assert KafkaBackend({"bootstrap_servers": a}).same_place(KafkaBackend({"bootstrap_servers": b})) is same


def test_a_local_store_is_its_file_however_the_path_is_spelled(tmp_path):
    one = LocalBackend({"path": str(tmp_path / "x.db")})
    two = LocalBackend({"path": str(tmp_path / "sub" / ".." / "x.db"), "max_len": 10})
    assert one.same_place(two)


@pytest.mark.redis
def test_bridge_refuses_a_redis_stream_into_itself_spelled_two_ways(redis_server, stream):
    # Before: localhost and 127.0.0.1 were two places, so the bridge relayed the stream
    # into itself (here it stopped at --count; without it, forever).
    port = redis_server.port
    assert evrelay("publish", f"redis://127.0.0.1:{port}/0/{stream}", "a").returncode == 0
    run = evrelay("bridge", f"redis://localhost:{port}/0/{stream}", f"redis://127.0.0.1:{port}/{stream}", "--count", "3", timeout=60)
    assert run.returncode == 2, run.err
    assert "that would relay into itself" in run.err
    assert evrelay("info", f"redis://127.0.0.1:{port}/0/{stream}", "-o", "json").out.count('"length":1') >= 1


@pytest.mark.kafka
def test_bridge_refuses_a_kafka_topic_into_itself_spelled_two_ways(kafka_server, stream):
    port = kafka_server.port
    run = evrelay("bridge", f"kafka://localhost:{port}/{stream}", f"kafka://127.0.0.1:{port}/{stream}", "--count", "1", timeout=60)
    assert run.returncode == 2, run.err
    assert "that would relay into itself" in run.err
