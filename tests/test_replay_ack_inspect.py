"""replay, ack and inspection against real servers (and the local store)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import REPO, evrelay
from tests.servers import RedisServer, free_port
from tests.test_contract_kafka import create_topic


def envelopes(run) -> list[dict]:
    assert run.returncode == 0, run.err
    return [json.loads(line) for line in run.lines()]


def content(e: dict) -> tuple:
    return (e.get("value"), e.get("value_b64"), e.get("key"), e.get("key_b64"), e["headers"])


@pytest.fixture
def config(kafka_server, redis_server):
    Path("evrelay.toml").write_text(
        f'[profiles.k]\nbackend = "kafka"\nbootstrap_servers = "{kafka_server.bootstrap}"\n'
        f'[profiles.r]\nbackend = "redis"\nurl = "{redis_server.url}"\n'
    )


@pytest.mark.kafka
@pytest.mark.redis
def test_replay_a_time_range_from_redis_into_kafka_and_back(config, kafka_server):
    stream, topic, back = f"s-{uuid.uuid4().hex[:6]}", create_topic(kafka_server.bootstrap, f"t-{uuid.uuid4().hex[:6]}"), f"b-{uuid.uuid4().hex[:6]}"
    evrelay("publish", f"r:{stream}", "before-1", "before-2")
    time.sleep(1.1)
    window = [
        {"value": "in-1", "key": "k1", "headers": [["h", "1"], ["h", "2"]]},
        {"value_b64": base64.b64encode(b"\xffin-2").decode(), "headers": [["bin", {"b64": base64.b64encode(b"\x80").decode()}]]},
        {"value": "in-3"},
    ]
    evrelay("publish", f"r:{stream}", "--input", "json", input="\n".join(json.dumps(w) for w in window))
    time.sleep(1.1)
    evrelay("publish", f"r:{stream}", "after-1")
    everything = envelopes(evrelay("tail", f"r:{stream}", "--from", "beginning"))
    start, end = everything[2]["timestamp"], everything[4]["timestamp"]
    expected = [content(e) for e in everything[2:5]]

    run = evrelay("replay", f"r:{stream}", f"k:{topic}", "--from", start, "--to", end)
    assert run.returncode == 0, run.err
    assert "replayed 3 message(s)" in run.err
    in_kafka = envelopes(evrelay("tail", f"k:{topic}", "--from", "beginning"))
    assert [content(e) for e in in_kafka] == expected
    assert [e["timestamp"] for e in in_kafka] == [e["timestamp"] for e in everything[2:5]], "Kafka keeps the timestamps"

    run = evrelay("replay", f"k:{topic}", f"r:{back}", "--from", start, "--to", end)
    assert run.returncode == 0, run.err
    assert [content(e) for e in envelopes(evrelay("tail", f"r:{back}", "--from", "beginning"))] == expected
    dry = evrelay("replay", f"r:{stream}", f"k:{topic}", "--from", start, "--to", end, "--dry-run", "-o", "raw")
    assert dry.lines() == [b"in-1", b"\xffin-2", b"in-3"] and "would replay 3" in dry.err


def test_replay_paces_like_the_original():
    for value in ("a", "b", "c"):
        evrelay("publish", "paced", value)
        time.sleep(0.5)
    assert evrelay("replay", "paced", "paced-copy", "--from", "beginning", "--pace", "original").returncode == 0
    assert evrelay("replay", "paced", "paced-fast", "--from", "beginning", "--pace", "10x").returncode == 0

    def spread(stream: str) -> float:
        """Seconds from the first message's arrival to the last's (local IDs are arrival ms)."""
        ids = [int(e["id"].split("-")[0]) for e in envelopes(evrelay("tail", stream, "--from", "beginning", "-o", "json"))]
        assert len(ids) == 3, ids
        return (ids[-1] - ids[0]) / 1000

    # Measured where the copies arrived, not by timing the whole command: a replay's start-up
    # (a second or more on a loaded machine) is no part of its pace.
    original, copy, fast = spread("paced"), spread("paced-copy"), spread("paced-fast")
    assert original >= 1.0, original
    # The pace is kept from the replay's start: a slow first write (the copy's stream is
    # created) narrows the copy's spread by that much, hence the margins.
    assert copy > original * 0.8, (original, copy)
    assert original / 20 <= fast < original / 2, (original, fast)
    assert evrelay("replay", "paced", "x", "--from", "beginning", "--pace", "warp").returncode == 2


@pytest.mark.parametrize("backend", ["r", "k", "local"])
def test_group_rewind_by_relative_time_redelivers_exactly_that_window(request, backend):
    if backend != "local":
        request.getfixturevalue("config")
    address = f"{backend}:rw-{uuid.uuid4().hex[:6]}" if backend != "local" else f"rw-{uuid.uuid4().hex[:6]}"
    if backend == "k":
        create_topic(request.getfixturevalue("kafka_server").bootstrap, address.split(":", 1)[1])
    evrelay("publish", address, "old-1", "old-2")
    time.sleep(2.5)
    before_new = time.time()
    evrelay("publish", address, "new-1", "new-2")
    assert evrelay("tail", address, "-g", "g", "-o", "raw").lines() == [b"old-1", b"old-2", b"new-1", b"new-2"]

    def relative() -> str:
        """`-Nms` back to just before the new batch (the old one is 2.5 s older still)."""
        return f"-{int((time.time() - before_new) * 1000) + 1000}ms"

    plan = evrelay("replay", address, "-g", "g", "--from", relative(), "--dry-run", "-o", "json")
    assert plan.returncode == 0, plan.err
    assert sum(step["affected"] for step in envelopes(plan)) == 2
    moved = evrelay("replay", address, "-g", "g", "--from", relative(), "--yes")
    assert moved.returncode == 0, moved.err
    assert "2 message(s) to be delivered again" in moved.err
    assert evrelay("tail", address, "-g", "g", "-o", "raw").lines() == [b"new-1", b"new-2"]


@pytest.mark.kafka
def test_rewind_is_refused_while_a_kafka_group_has_live_members(config, kafka_server):
    topic = create_topic(kafka_server.bootstrap, f"busy-{uuid.uuid4().hex[:6]}")
    evrelay("publish", f"k:{topic}", "x")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    member = subprocess.Popen([sys.executable, "-m", "evrelay", "tail", f"k:{topic}", "-g", "busy", "-f", "-o", "raw"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert member.stdout.readline() == b"x\n"  # it has joined and read
        refused = evrelay("replay", f"k:{topic}", "-g", "busy", "--from", "beginning", "--yes")
        assert refused.returncode == 1
        assert "live member(s)" in refused.err and "Traceback" not in refused.err
    finally:
        member.terminate()
        member.wait()
    moved = evrelay("replay", f"k:{topic}", "-g", "busy", "--from", "beginning", "--yes")
    assert moved.returncode == 0, moved.err


@pytest.mark.redis
def test_piped_ack_clears_exactly_the_acked_entries(config):
    address = f"r:ack-{uuid.uuid4().hex[:6]}"
    evrelay("publish", address, *[f"m{i}" for i in range(5)])
    taken = evrelay("tail", address, "-g", "g", "--no-ack", "-o", "json")
    lines = taken.stdout.splitlines()
    assert len(lines) == 5
    chosen = b"\n".join(lines[i] for i in (0, 2, 4)) + b"\n"
    run = evrelay("ack", address, "-g", "g", input=chosen)
    assert run.returncode == 0, run.err
    assert "acked 3 of 3" in run.err
    pending = envelopes(evrelay("ack", address, "-g", "g", "--list", "-o", "json"))
    assert [p["id"] for p in pending] == [json.loads(lines[i])["id"] for i in (1, 3)]
    again = evrelay("ack", address, "-g", "g", json.loads(lines[1])["id"], json.loads(lines[0])["id"])
    assert "acked 1 of 2" in again.err and "not pending" in again.err
    wrong = evrelay("ack", address, "-g", "g", input=b'{"value":"x","backend":"redis","stream":"other","id":"1-0"}\n')
    assert wrong.returncode == 1 and "stdin line 1" in wrong.err and "not redis" in wrong.err


@pytest.mark.kafka
def test_kafka_ack_commits_the_contiguous_prefix_and_reports_the_rest(config, kafka_server):
    topic = create_topic(kafka_server.bootstrap, f"kack-{uuid.uuid4().hex[:6]}")
    address = f"k:{topic}"
    evrelay("publish", address, *[f"m{i}" for i in range(5)])
    taken = evrelay("tail", address, "-g", "g", "--no-ack", "-o", "json").stdout.splitlines()
    assert len(taken) == 5
    run = evrelay("ack", address, "-g", "g", input=b"\n".join(taken[i] for i in (0, 1, 3)) + b"\n")
    assert run.returncode == 0, run.err
    assert "acked 2 of 3" in run.err and "Kafka acks are cumulative" in run.err
    lag = envelopes(evrelay("lag", address, "-g", "g", "-o", "json"))
    assert [(row["position"], row["lag"]) for row in lag] == [("2", 3)]
    assert evrelay("ack", address, "-g", "g", "0:2", "0:3").returncode == 0
    assert envelopes(evrelay("ack", address, "-g", "g", "--list", "-o", "json"))[0]["lag"] == 1


@pytest.mark.redis
def test_claim_after_a_killed_reader_through_the_cli(config):
    address = f"r:claim-{uuid.uuid4().hex[:6]}"
    evrelay("publish", address, "a", "b", "c")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    reader = subprocess.Popen([sys.executable, "-m", "evrelay", "tail", address, "-g", "g", "--consumer", "doomed", "-f",
                               "--no-ack", "-o", "raw"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    assert [reader.stdout.readline() for _ in range(3)] == [b"a\n", b"b\n", b"c\n"]
    reader.kill()
    reader.wait()
    listed = envelopes(evrelay("ack", address, "-g", "g", "--list", "-o", "json"))
    assert [p["consumer"] for p in listed] == ["doomed"] * 3
    too_soon = evrelay("ack", address, "-g", "g", "--claim", "--min-idle", "1h", "-o", "raw")
    assert too_soon.stdout == b"" and "claimed 0" in too_soon.err
    claimed = evrelay("ack", address, "-g", "g", "--claim", "--min-idle", "0s", "--consumer", "rescuer", "-o", "json")
    ids = [e["id"] for e in envelopes(claimed)]
    assert len(ids) == 3 and "claimed 3" in claimed.err
    assert {p["consumer"] for p in envelopes(evrelay("ack", address, "-g", "g", "--list", "-o", "json"))} == {"rescuer"}
    assert "acked 3 of 3" in evrelay("ack", address, "-g", "g", input=claimed.stdout).err
    assert envelopes(evrelay("ack", address, "-g", "g", "--list", "-o", "json")) == []


@pytest.mark.parametrize("backend", ["r", "k"])
def test_lag_max_exit_codes(request, backend):
    request.getfixturevalue("config")
    name = f"lag-{uuid.uuid4().hex[:6]}"
    if backend == "k":
        create_topic(request.getfixturevalue("kafka_server").bootstrap, name)
    address = f"{backend}:{name}"
    evrelay("publish", address, *[f"m{i}" for i in range(10)])
    evrelay("tail", address, "-g", "g", "-n", "4")
    ok = evrelay("lag", address, "-g", "g", "--max", "6", "-o", "json")
    assert ok.returncode == 0, ok.err
    assert sum(row["lag"] for row in envelopes(ok)) == 6
    over = evrelay("lag", address, "-g", "g", "--max", "5")
    assert over.returncode == 4 and "6 message(s) behind, over --max 5" in over.err
    missing = evrelay("lag", address, "-g", "nobody")
    assert missing.returncode == 1 and "Traceback" not in missing.err
    assert evrelay("lag", address).returncode == 2  # no group given, none in the profile


def test_health_wait_exit_codes(tmp_path):
    port = free_port()
    Path("evrelay.toml").write_text(f'[profiles.later]\nbackend = "redis"\nurl = "redis://127.0.0.1:{port}/0"\n')
    assert evrelay("health", "later", "--timeout", "1s").returncode == 3
    waited = evrelay("health", "later", "--wait", "1s")
    assert waited.returncode == 4 and "still not healthy after --wait 1s" in waited.err
    server = RedisServer()
    server.port = port
    env = dict(os.environ, PYTHONPATH=str(REPO))
    waiting = subprocess.Popen([sys.executable, "-m", "evrelay", "health", "later", "--wait", "30s", "-o", "json"],
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    time.sleep(2)
    with server:
        out, err = waiting.communicate(timeout=40)
    assert waiting.returncode == 0, err
    assert json.loads(out)["healthy"] is True
    assert evrelay("health", "local").returncode == 0


@pytest.mark.kafka
@pytest.mark.redis
def test_ls_info_groups(config, kafka_server):
    topic = create_topic(kafka_server.bootstrap, f"info-{uuid.uuid4().hex[:6]}", partitions=2)
    stream = f"info-{uuid.uuid4().hex[:6]}"
    # one batch of 100: a broker with a lagging high watermark must still show 100
    evrelay("publish", f"k:{topic}", input="".join(f"{i}\n" for i in range(100)))
    evrelay("publish", f"r:{stream}", "a", "b", "c")
    evrelay("tail", f"k:{topic}", "-g", "readers", "-n", "30")
    evrelay("tail", f"r:{stream}", "-g", "readers", "-n", "1", "--no-ack")
    topics = {row["name"]: row for row in envelopes(evrelay("ls", "k", "-o", "json"))}
    assert topics[topic]["partitions"] == 2
    streams = {row["name"]: row for row in envelopes(evrelay("ls", "r", "-o", "json"))}
    assert streams[stream]["length"] == 3
    kinfo = envelopes(evrelay("info", f"k:{topic}", "-o", "json"))[0]
    assert kinfo["length"] == 100 and len(kinfo["partitions"]) == 2
    assert [(g["name"], g["lag"]) for g in kinfo["groups"]] == [("readers", 70)]
    rinfo = envelopes(evrelay("info", f"r:{stream}", "-o", "json"))[0]
    assert rinfo["length"] == 3 and rinfo["partitions"][0]["first"].endswith("-0")
    (group,) = envelopes(evrelay("groups", f"r:{stream}", "-o", "json"))
    assert (group["name"], group["pending"], group["lag"], group["consumers"]) == ("readers", 1, 2, 1)
    table = evrelay("groups", f"r:{stream}", "-o", "table")
    assert "readers" in table.out and "PENDING" in table.out
    assert evrelay("info", "file:x.jsonl").returncode == 2  # files have no inspection


def test_health_never_echoes_a_password_from_a_url():
    for mode in ("json", "table"):
        run = evrelay("health", "redis://me:s3cret-pw@127.0.0.1:1/0", "--timeout", "1s", "-o", mode)
        assert run.returncode == 3
        assert "s3cret-pw" not in run.out + run.err
        assert "********" in run.out
