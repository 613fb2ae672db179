"""Several sources in one command, and `~REGEX` patterns picked up while following."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from tests.conftest import REPO, evrelay
from tests.test_contract_kafka import create_topic


def test_several_local_streams_and_a_pattern_merge_the_last_n_by_time():
    for stream, value in (("orders-eu", "e1"), ("orders-us", "u1"), ("orders-eu", "e2"), ("payments", "p1")):
        assert evrelay("publish", stream, value).returncode == 0
        time.sleep(0.01)
    run = evrelay("tail", "orders-eu", "payments", "--format", "{stream} {value}")
    assert run.returncode == 0, run.err
    assert run.out.splitlines() == ["orders-eu e1", "orders-eu e2", "payments p1"]
    assert evrelay("tail", "~orders-.*", "-n", "2", "-o", "raw").lines() == [b"u1", b"e2"]
    assert evrelay("tail", "~orders-.*", "--from", "beginning", "-o", "raw").lines().__len__() == 3
    missing = evrelay("tail", "~nothing-.*")
    assert missing.returncode == 1 and "no topic/stream matches ~nothing-.*" in missing.err
    bad = evrelay("tail", "~orders-(")
    assert bad.returncode == 2 and "is not a valid pattern" in bad.err


@pytest.mark.redis
def test_following_a_redis_pattern_picks_up_new_streams(redis_server):
    prefix = f"pat-{uuid.uuid4().hex[:6]}"
    base = f"redis://127.0.0.1:{redis_server.port}/0"
    assert evrelay("publish", f"{base}/{prefix}-a", "a1").returncode == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "evrelay", "tail", f"{base}/~{prefix}-.*", "--from", "end", "-f", "--expect", "2", "--timeout", "40s", "-o", "raw"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    time.sleep(2)
    assert evrelay("publish", f"{base}/{prefix}-a", "a2").returncode == 0
    assert evrelay("publish", f"{base}/{prefix}-b", "b1").returncode == 0  # a stream that did not exist
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    assert out.splitlines() == [b"a2", b"b1"]
    assert f"now also reading '{prefix}-b'" in err.decode()


@pytest.mark.kafka
def test_group_reads_and_a_bridge_over_a_kafka_topic_pattern(kafka_server, redis_server):
    b = kafka_server.bootstrap
    prefix = f"pk{uuid.uuid4().hex[:6]}"
    topics = [create_topic(b, f"{prefix}.orders"), create_topic(b, f"{prefix}.payments")]
    for topic in topics:
        assert evrelay("publish", f"kafka://{b}/{topic}", f"{topic}-1", f"{topic}-2").returncode == 0
    run = evrelay("tail", f"kafka://{b}/{topics[0]}", f"kafka://{b}/{topics[1]}", "-g", "both", "-o", "raw")
    assert run.returncode == 0, run.err
    assert sorted(run.lines()) == sorted(f"{t}-{i}".encode() for t in topics for i in (1, 2))
    assert evrelay("tail", f"kafka://{b}/{topics[0]}", f"kafka://{b}/{topics[1]}", "-g", "both", "-o", "raw").lines() == []

    redis = f"redis://127.0.0.1:{redis_server.port}/0"
    pattern = f"kafka://{b}/~{prefix}\\..*"
    run = evrelay("bridge", pattern, f"{redis}/copy-{{topic}}", "-n", "4")
    assert run.returncode == 0, run.err
    for topic in topics:
        assert evrelay("tail", f"{redis}/copy-{topic}", "-o", "raw").lines() == [f"{topic}-1".encode(), f"{topic}-2".encode()]
    stats = json.loads(evrelay("stats", pattern, "--from", "beginning", "-o", "json").stdout)
    assert stats["messages"] == 4
