"""`bridge` against real servers: crashes, outages, signals, scale-out, poison messages.

The figures these tests measure (messages, kills, duplicates) are printed with -s.
"""

from __future__ import annotations

import json
import signal
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import evrelay
from tests.crash import (
    WINDOW,
    check_delivery,
    fill_redis_stream,
    phased_kill_thresholds,
    redis_len,
    redis_values,
    run_with_kills,
    spawn,
    stop_with_sigterm,
    wait_until,
)
from tests.servers import RedisServer
from tests.test_contract_kafka import create_topic

__all__ = ["WINDOW", "check_delivery", "consume_kafka", "produce_kafka", "redis_len", "redis_values", "spawn", "wait_until"]
"""The crash harness lives in tests/crash.py; other test modules import these names from here too."""


def produce_kafka(bootstrap: str, topic: str, count: int, prefix: str = "m") -> list[bytes]:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap, "linger.ms": 20})
    values = [f"{prefix}-{i:06d}".encode() for i in range(count)]
    for i, value in enumerate(values):
        while True:
            try:
                producer.produce(topic, value=value, key=str(i % 17).encode())
                break
            except BufferError:
                producer.poll(0.1)
    assert producer.flush(30) == 0
    return values


def consume_kafka(bootstrap: str, topic: str) -> list:
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "verify", "enable.partition.eof": True})
    partitions = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
    consumer.assign([TopicPartition(topic, p, -2) for p in partitions])
    got, eof = [], set()
    deadline = time.monotonic() + 60
    while len(eof) < len(partitions) and time.monotonic() < deadline:
        for message in consumer.consume(10000, 0.5):
            if message.error() is None:
                got.append(message)
            elif message.error().code() == KafkaError._PARTITION_EOF:
                eof.add(message.partition())
    consumer.close()
    return got


@pytest.mark.kafka
@pytest.mark.redis
@pytest.mark.slow
def test_kill_9_kafka_to_redis_loses_nothing(kafka_server, redis_server, tmp_path):
    topic = create_topic(kafka_server.bootstrap, f"crash-{uuid.uuid4().hex[:6]}", partitions=3)
    stream = f"crash-{uuid.uuid4().hex[:6]}"
    phases = [10000, 10000, 10000]  # one kill in each of the first two: see phased_kill_thresholds
    sent = produce_kafka(kafka_server.bootstrap, topic, phases[0], prefix="m0")
    args = ["bridge", f"kafka://{kafka_server.bootstrap}/{topic}", f"redis://127.0.0.1:{redis_server.port}/0/{stream}",
            "--idle-timeout", "20s", "--window", str(WINDOW), "-q"]
    kills = run_with_kills(args, log=tmp_path / "bridge.log", thresholds=phased_kill_thresholds(phases),
                           reached=lambda t: redis_len(redis_server.url, stream) >= t,
                           after_kill=lambda k: sent.extend(produce_kafka(kafka_server.bootstrap, topic, phases[k], prefix=f"m{k}")),
                           progress=lambda: f"{redis_len(redis_server.url, stream)} message(s) in the sink")
    assert len(sent) == sum(phases)
    check_delivery(sent, redis_values(redis_server.url, stream), max_duplicates=kills * WINDOW, label="kafka->redis kill -9")


@pytest.mark.kafka
@pytest.mark.redis
@pytest.mark.slow
def test_kill_9_redis_to_kafka_loses_nothing(kafka_server, redis_server, tmp_path):
    import redis

    stream = f"crash-{uuid.uuid4().hex[:6]}"
    topic = create_topic(kafka_server.bootstrap, f"crash-{uuid.uuid4().hex[:6]}", partitions=2)
    client = redis.Redis.from_url(redis_server.url)
    sent = [f"r-{i:06d}".encode() for i in range(30000)]
    phases = [10000, 10000, 10000]  # one kill in each of the first two: see phased_kill_thresholds
    ids: list[bytes] = []

    def feed(phase: int) -> None:
        start = sum(phases[:phase])
        fill_redis_stream(redis_server.url, stream, sent[start : start + phases[phase]])
        ids.extend(row[0] for row in client.xrange(stream, ids[-1] if ids else "-", "+") if not ids or row[0] != ids[-1])

    feed(0)
    args = ["bridge", f"redis://127.0.0.1:{redis_server.port}/0/{stream}", f"kafka://{kafka_server.bootstrap}/{topic}",
            "--idle-timeout", "5s", "--window", str(WINDOW), "-q"]

    def delivered_past(index: int) -> bool:
        groups = client.xinfo_groups(stream)
        return bool(groups) and tuple(map(int, groups[0]["last-delivered-id"].split(b"-"))) >= tuple(map(int, ids[index].split(b"-")))

    kills = run_with_kills(args, log=tmp_path / "bridge.log", thresholds=phased_kill_thresholds(phases), reached=delivered_past,
                           after_kill=feed)
    assert len(ids) == len(sent)
    received = [m.value() for m in consume_kafka(kafka_server.bootstrap, topic)]
    check_delivery(sent, received, max_duplicates=kills * WINDOW, label="redis->kafka kill -9")
    (group,) = client.xinfo_groups(stream)
    assert group["pending"] == 0, "everything delivered must be acked"


@pytest.mark.kafka
@pytest.mark.redis
@pytest.mark.slow
def test_sink_outage_is_waited_out_and_the_source_never_runs_ahead(kafka_server, tmp_path):
    from confluent_kafka import Consumer, TopicPartition

    topic = create_topic(kafka_server.bootstrap, f"outage-{uuid.uuid4().hex[:6]}", partitions=1)
    sent = produce_kafka(kafka_server.bootstrap, topic, 20000)
    stream = "outage"
    log = tmp_path / "bridge.log"
    with RedisServer(persistent=True) as sink:
        group = "outage-group"
        proc = spawn("bridge", f"kafka://{kafka_server.bootstrap}/{topic}", f"redis://127.0.0.1:{sink.port}/0/{stream}",
                     "-g", group, "--idle-timeout", "20s", "--window", "500", log=log)
        wait_until(lambda: redis_len(sink.url, stream) >= 3000, 120, "first deliveries")
        sink.kill()  # the sink dies (its AOF is fsync'd on every write)
        time.sleep(1.0)
        probe = Consumer({"bootstrap.servers": kafka_server.bootstrap, "group.id": group})
        committed = probe.committed([TopicPartition(topic, 0)], timeout=10)[0].offset
        probe.close()
        time.sleep(3.0)
        assert proc.poll() is None, "the bridge must wait out the outage, not exit"
        sink.restart()
        held = redis_values(sink.url, stream)
        # Every message the source has acked (offsets below the commit) is in the sink.
        assert set(sent[:committed]) <= set(held), "the source position ran ahead of the sink"
        print(f"\noutage: committed offset {committed} while the sink held {len(held)} message(s)")
        assert proc.wait(timeout=300) == 0, log.read_text()
        check_delivery(sent, redis_values(sink.url, stream), max_duplicates=500, label="sink outage")
    text = log.read_text()
    assert "retrying in" in text and "nothing is acked meanwhile" in text
    assert "Traceback" not in text


@pytest.mark.kafka
@pytest.mark.redis
def test_sigterm_then_restart_gives_no_loss_and_no_duplicates(kafka_server, redis_server, tmp_path):
    topic = create_topic(kafka_server.bootstrap, f"term-{uuid.uuid4().hex[:6]}", partitions=2)
    stream = f"term-{uuid.uuid4().hex[:6]}"
    sent = produce_kafka(kafka_server.bootstrap, topic, 20000)
    log = tmp_path / "bridge.log"
    args = ["bridge", f"kafka://{kafka_server.bootstrap}/{topic}", f"redis://127.0.0.1:{redis_server.port}/0/{stream}",
            "--idle-timeout", "15s", "--window", "500"]
    stop_with_sigterm(args, log=log, reached=lambda: redis_len(redis_server.url, stream) >= 2000)
    assert "bridged" in log.read_text()
    assert 0 < redis_len(redis_server.url, stream) < len(sent)
    assert spawn(*args, log=log).wait(timeout=300) == 0, log.read_text()
    check_delivery(sent, redis_values(redis_server.url, stream), max_duplicates=0, label="SIGTERM + restart")


def test_sigint_exits_130_after_acking(tmp_path):
    evrelay("publish", "int-src", input="".join(f"{i}\n" for i in range(100)))
    log = tmp_path / "bridge.log"
    proc = spawn("bridge", "int-src", "int-dst", log=log)
    # SIGINT once all 100 are in the sink: the bridge is then idle, waiting for more.
    wait_until(lambda: len(evrelay("tail", "int-dst", "--from", "beginning", "-o", "raw").lines()) == 100
               or proc.poll() is not None, 60, "the 100 messages bridged")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=30) == 130, log.read_text()
    text = log.read_text()
    assert "interrupted; 100 message(s) were delivered and acked" in text
    assert len(evrelay("tail", "int-dst", "--from", "beginning", "-o", "raw").lines()) == 100
    assert evrelay("bridge", "int-src", "int-dst", "--idle-timeout", "1s").returncode == 0
    assert len(evrelay("tail", "int-dst", "--from", "beginning", "-o", "raw").lines()) == 100


def group_assignment(bootstrap: str, group: str) -> int:
    """How many members of a Kafka consumer group hold partitions, once it is stable (else 0)."""
    from confluent_kafka import ConsumerGroupState
    from confluent_kafka.admin import AdminClient

    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        description = admin.describe_consumer_groups([group])[group].result(timeout=10)
    except Exception:  # the group does not exist yet
        return 0
    if description.state != ConsumerGroupState.STABLE:
        return 0
    return sum(1 for member in description.members if member.assignment and member.assignment.topic_partitions)


@pytest.mark.kafka
@pytest.mark.redis
def test_two_bridges_in_one_group_split_kafka_partitions(kafka_server, redis_server, tmp_path):
    topic = create_topic(kafka_server.bootstrap, f"scale-{uuid.uuid4().hex[:6]}", partitions=4)
    stream = f"scale-{uuid.uuid4().hex[:6]}"
    group = f"scale-{uuid.uuid4().hex[:6]}"
    args = ["bridge", f"kafka://{kafka_server.bootstrap}/{topic}", f"redis://127.0.0.1:{redis_server.port}/0/{stream}",
            "-g", group, "--idle-timeout", "20s"]
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [spawn(*args, log=logs[0]), spawn(*args, log=logs[1])]
    # Data arrives once both have joined the group and hold partitions (a fixed sleep of
    # 12 s was the guess before; a bridge that joins after the data is gone does no work).
    wait_until(lambda: group_assignment(kafka_server.bootstrap, group) == 2 or any(p.poll() is not None for p in procs),
               120, "both bridges to hold partitions")
    sent = produce_kafka(kafka_server.bootstrap, topic, 20000)
    for proc, log in zip(procs, logs, strict=True):
        assert proc.wait(timeout=300) == 0, log.read_text()
    check_delivery(sent, redis_values(redis_server.url, stream), max_duplicates=2 * WINDOW, label="two kafka bridges")
    work = [int(log.read_text().split("bridged ")[1].split(" ")[0]) for log in logs]
    print(f"work split: {work}")
    assert all(n > 0 for n in work), f"both bridges must do work: {work}"


@pytest.mark.redis
def test_two_bridges_in_one_group_split_a_redis_stream(redis_server, tmp_path):
    import redis

    stream = f"scale-{uuid.uuid4().hex[:6]}"
    client = redis.Redis.from_url(redis_server.url)
    client.xadd(stream, {"value": "warm-up"})
    args = ["bridge", f"redis://127.0.0.1:{redis_server.port}/0/{stream}", "local:scaled", "--idle-timeout", "4s",
            "--window", "200"]
    logs = [tmp_path / "a.log", tmp_path / "b.log"]
    procs = [spawn(*args, "--consumer", "a", log=logs[0]), spawn(*args, "--consumer", "b", log=logs[1])]
    # More warm-ups, one at a time, until both bridges have read one (a consumer shows in
    # XINFO CONSUMERS once it got an entry): a fixed sleep let a slow-starting bridge find
    # the whole stream taken by the other.
    warm_ups = [b"warm-up"]

    def both_reading() -> bool:
        groups = client.xinfo_groups(stream)
        if groups and {c["name"] for c in client.xinfo_consumers(stream, groups[0]["name"])} >= {b"a", b"b"}:
            return True
        if any(p.poll() is not None for p in procs):
            return True
        warm_ups.append(f"warm-up-{len(warm_ups)}".encode())
        client.xadd(stream, {"value": warm_ups[-1]})
        time.sleep(0.2)
        return False

    wait_until(both_reading, 60, "both bridges to read")
    sent = warm_ups + [f"v-{i:05d}".encode() for i in range(20000)]
    for start in range(len(warm_ups), len(sent), 1000):
        pipe = client.pipeline(transaction=False)
        for value in sent[start : start + 1000]:
            pipe.xadd(stream, {"value": value})
        pipe.execute()
        time.sleep(0.02)
    for proc, log in zip(procs, logs, strict=True):
        assert proc.wait(timeout=120) == 0, log.read_text()
    received = evrelay("tail", "scaled", "--from", "beginning", "-o", "raw").lines()
    check_delivery(sent, received, max_duplicates=0, label="two redis bridges")
    work = [int(log.read_text().split("bridged ")[1].split(" ")[0]) for log in logs]
    print(f"work split: {work}")
    assert all(n > 0 for n in work), work


@pytest.mark.kafka
def test_poison_message_stops_the_bridge_or_goes_to_the_dead_letter(kafka_server, tmp_path):
    topic = create_topic(kafka_server.bootstrap, f"poison-{uuid.uuid4().hex[:6]}")
    Path("evrelay.toml").write_text(
        f'[profiles.k]\nbackend = "kafka"\nbootstrap_servers = "{kafka_server.bootstrap}"\ntopic = "{topic}"\n'
        '[profiles.k.options]\n"message.max.bytes" = 10000\n'
    )
    big = "x" * 20000
    evrelay("publish", "poison-src", "one", "two", big, "four", "five")
    stopped = evrelay("bridge", "poison-src", "k", "--idle-timeout", "3s")
    assert stopped.returncode == 1, stopped.err
    assert "rejected by k for good" in stopped.err and "MSG_SIZE_TOO_LARGE" in stopped.err
    assert "--dead-letter" in stopped.err and "Traceback" not in stopped.err
    rescued = evrelay("bridge", "poison-src", "k", "--idle-timeout", "3s", "--dead-letter", "file:dead.jsonl")
    assert rescued.returncode == 0, rescued.err
    assert "1 message(s) rejected by k went to the dead-letter address" in rescued.err
    delivered = {m.value() for m in consume_kafka(kafka_server.bootstrap, topic)}
    assert delivered == {b"one", b"two", b"four", b"five"}
    (letter,) = [json.loads(line) for line in Path("dead.jsonl").read_text().splitlines()]
    headers = dict(letter["headers"])
    assert letter["value"] == big and "MSG_SIZE_TOO_LARGE" in headers["evrelay-error"]
    assert headers["evrelay-source"].startswith("local/poison-src/") and headers["evrelay-sink"] == "k"
    # everything is acked now: another run has nothing to do
    again = evrelay("bridge", "poison-src", "k", "--idle-timeout", "1s")
    assert again.returncode == 0 and "bridged 0 message(s)" in again.err


def test_dry_run_sends_and_acks_nothing():
    evrelay("publish", "dry-src", "a", "b")
    run = evrelay("bridge", "dry-src", "dry-dst", "--dry-run", "-o", "json")
    assert run.returncode == 0, run.err
    shown = [json.loads(line) for line in run.lines()]
    assert [e["value"] for e in shown] == ["a", "b"]
    assert shown[0]["headers"][0][0] == "evrelay-source"
    assert "would bridge 2 message(s)" in run.err
    assert evrelay("tail", "dry-dst").returncode == 1  # never written
    real = evrelay("bridge", "dry-src", "dry-dst", "--idle-timeout", "1s")
    assert "bridged 2 message(s)" in real.err  # nothing was acked by the dry run


def test_provenance_header_and_every_local_file_stdio_pair(tmp_path):
    evrelay("publish", "pv-src", "-k", "k", "-H", "h=1", "payload")
    assert evrelay("bridge", "pv-src", "file:out.jsonl", "--idle-timeout", "1s").returncode == 0
    (line,) = Path("out.jsonl").read_text().splitlines()
    envelope = json.loads(line)
    assert envelope["key"] == "k" and envelope["headers"][0] == ["h", "1"]
    assert envelope["headers"][1][0] == "evrelay-source" and envelope["headers"][1][1].startswith("local/pv-src/")
    # file -> local, - -> local, local -> -
    assert evrelay("bridge", "file:out.jsonl", "pv-copy").returncode == 0
    assert evrelay("tail", "pv-copy", "-o", "raw").stdout == b"payload\n"
    assert evrelay("bridge", "-", "pv-stdin", input=Path("out.jsonl").read_bytes()).returncode == 0
    assert evrelay("tail", "pv-stdin", "-o", "raw").stdout == b"payload\n"
    out = evrelay("bridge", "pv-src", "-", "-g", "to-stdout", "--idle-timeout", "1s")
    assert json.loads(out.stdout)["value"] == "payload"
