"""`bridge --exactly-once` Kafka -> Kafka: transactions that commit the source group's
offsets, checked by a read_committed consumer (a client we did not write), through
kill -9; and the refusal of pairs where exactly-once cannot hold. The crash tests need
Apache Kafka: tansu 0.6 shows read_committed readers open and aborted transactions.

The figures (messages, kills, duplicates seen committed and uncommitted) print with -s.
"""

from __future__ import annotations

import random
import signal
import time
import uuid
from collections import Counter

import pytest

from tests.conftest import evrelay
from tests.test_bridge import produce_kafka, spawn, wait_until
from tests.test_contract_kafka import create_topic

pytestmark = pytest.mark.kafka


def read_sink(bootstrap: str, topic: str, isolation: str = "read_committed") -> list[bytes]:
    """Every value in the topic as a consumer with this isolation level sees it, to the end."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "verify", "enable.partition.eof": True,
                         "isolation.level": isolation, "enable.auto.commit": False})
    partitions = sorted(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
    consumer.assign([TopicPartition(topic, p, -2) for p in partitions])
    got, eof = [], set()
    deadline = time.monotonic() + 120
    while len(eof) < len(partitions) and time.monotonic() < deadline:
        for message in consumer.consume(10000, 0.5):
            if message.error() is None:
                got.append(message.value())
            elif message.error().code() == KafkaError._PARTITION_EOF:
                eof.add(message.partition())
    consumer.close()
    assert len(eof) == len(partitions), f"{topic}: no end of data within 120s"
    return got


def sink_end(bootstrap: str, topic: str) -> int:
    """Records written to the topic so far, committed or not (the sum of high watermarks)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "probe", "isolation.level": "read_uncommitted"})  # else: the LSO
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions)
    finally:
        consumer.close()


def stable_end(bootstrap: str, topic: str) -> int:
    """Records a read_committed reader can reach (the sum of last stable offsets)."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "probe", "isolation.level": "read_committed"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        return sum(consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions)
    finally:
        consumer.close()


def exactly_once_report(sent: list[bytes], committed: list[bytes], label: str) -> None:
    counts = Counter(committed)
    missing = set(sent) - set(counts)
    duplicates = len(committed) - len(counts)
    print(f"\n{label}: {len(sent)} sent, {len(committed)} seen by read_committed, {duplicates} duplicates, {len(missing)} lost")
    assert not missing, f"{label}: {len(missing)} message(s) lost, e.g. {sorted(missing)[:3]}"
    assert duplicates == 0, f"{label}: {duplicates} duplicates, e.g. {[v for v, n in counts.items() if n > 1][:3]}"


def test_exactly_once_bridge_commits_messages_and_offsets_together(kafka_server):
    source = create_topic(kafka_server.bootstrap, f"eos-a-{uuid.uuid4().hex[:6]}", partitions=3)
    sink = create_topic(kafka_server.bootstrap, f"eos-b-{uuid.uuid4().hex[:6]}", partitions=2)
    sent = produce_kafka(kafka_server.bootstrap, source, 3000)
    run = evrelay("bridge", f"kafka://{kafka_server.bootstrap}/{source}", f"kafka://{kafka_server.bootstrap}/{sink}",
                  "--exactly-once", "--idle-timeout", "6s", "--window", "500", "-g", "eos")  # tansu joins groups slowly
    assert run.returncode == 0, run.err
    assert "bridged 3000 message(s)" in run.err and "3000 acked" in run.err
    exactly_once_report(sent, read_sink(kafka_server.bootstrap, sink), "exactly-once, no crash")
    # The group's offsets were committed inside the transactions: nothing left to read.
    lag = evrelay("lag", f"kafka://{kafka_server.bootstrap}/{source}", "-g", "eos", "--max", "0")
    assert lag.returncode == 0, lag.out + lag.err
    # A second run finds nothing new and writes nothing.
    again = evrelay("bridge", f"kafka://{kafka_server.bootstrap}/{source}", f"kafka://{kafka_server.bootstrap}/{sink}",
                    "--exactly-once", "--idle-timeout", "2s", "-g", "eos")
    assert again.returncode == 0 and "bridged 0 message(s)" in again.err, again.err


def test_exactly_once_is_refused_where_it_cannot_hold(kafka_server, redis_server):
    topic = create_topic(kafka_server.bootstrap, f"eos-r-{uuid.uuid4().hex[:6]}")
    kafka = f"kafka://{kafka_server.bootstrap}/{topic}"
    into_redis = evrelay("bridge", kafka, f"{redis_server.url}/copy", "--exactly-once")
    assert into_redis.returncode == 2
    (line,) = into_redis.err.strip().splitlines()
    assert "redis backend has no such transactions" in line and "at-least-once" in line and "evrelay-source" in line
    from_local = evrelay("bridge", "demo", kafka, "--exactly-once")
    assert from_local.returncode == 2 and "needs a Kafka source" in from_local.err, from_local.err
    other_cluster = evrelay("bridge", kafka, "kafka://127.0.0.1:9/copy", "--exactly-once")
    assert other_cluster.returncode == 2 and "one Kafka cluster" in other_cluster.err, other_cluster.err
    with_dlq = evrelay("bridge", kafka, f"{kafka}-copy", "--exactly-once", "--dead-letter", "file:dlq.jsonl")
    assert with_dlq.returncode == 2 and "--dead-letter" in with_dlq.err, with_dlq.err
    assert "Traceback" not in into_redis.err + from_local.err + other_cluster.err
    replay_into_redis = evrelay("replay", kafka, f"{redis_server.url}/copy", "--from", "beginning", "--exactly-once")
    assert replay_into_redis.returncode == 2 and "sink with transactions" in replay_into_redis.err, replay_into_redis.err


@pytest.mark.slow
def test_kill_9_five_times_during_100k_exactly_once(apache_kafka, tmp_path):
    kafka_server = apache_kafka  # aborted transactions must be invisible to read_committed: see above
    total, kills_wanted = 100_000, 5
    source = create_topic(kafka_server.bootstrap, f"eos-kill-a-{uuid.uuid4().hex[:6]}", partitions=3)
    sink = create_topic(kafka_server.bootstrap, f"eos-kill-b-{uuid.uuid4().hex[:6]}", partitions=3)
    sent = produce_kafka(kafka_server.bootstrap, source, total)
    log = tmp_path / "bridge.log"
    args = ["bridge", f"kafka://{kafka_server.bootstrap}/{source}", f"kafka://{kafka_server.bootstrap}/{sink}",
            "--exactly-once", "--idle-timeout", "20s", "--window", "1000", "-g", "eos-kill", "-q"]  # 20s: a restarted member waits out the killed one's session
    kills = 0
    started = time.monotonic()
    for threshold in sorted(random.sample(range(5_000, 90_000, 1000), kills_wanted)):
        proc = spawn(*args, log=log)
        wait_until(lambda t=threshold, p=proc: sink_end(kafka_server.bootstrap, sink) >= t or p.poll() is not None, 180, "progress")
        assert proc.poll() is None, f"the bridge ended before it was killed:\n{log.read_text()}"
        time.sleep(random.uniform(0, 0.4))  # land anywhere in a window: mid-transaction too
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        print(f"\nkill -9 #{kills} with {sink_end(kafka_server.bootstrap, sink)} record(s) written to the sink")
    final = spawn(*args, log=log)
    assert final.wait(timeout=600) == 0, log.read_text()
    elapsed = time.monotonic() - started
    uncommitted_view = read_sink(kafka_server.bootstrap, sink, "read_uncommitted")
    print(f"\n{kills} kills in {elapsed:.0f}s; a read_uncommitted consumer sees {len(uncommitted_view)} records "
          f"({len(uncommitted_view) - len(set(uncommitted_view))} repeats from aborted transactions)")
    assert kills == kills_wanted
    exactly_once_report(sent, read_sink(kafka_server.bootstrap, sink), f"exactly-once, kill -9 x{kills}")


def test_replay_exactly_once_is_all_or_nothing_even_when_killed(apache_kafka, tmp_path):
    """Kafka's behaviour, which evrelay relies on: a read_committed reader stops at the last
    stable offset (before an open transaction) and never sees an aborted one's records.
    tansu 0.6 hands such a reader both, so these guarantees are tested on Apache Kafka."""
    from confluent_kafka import Producer

    kafka_server = apache_kafka
    source = create_topic(kafka_server.bootstrap, f"eos-rep-a-{uuid.uuid4().hex[:6]}")
    sink = create_topic(kafka_server.bootstrap, f"eos-rep-b-{uuid.uuid4().hex[:6]}", partitions=2)
    producer = Producer({"bootstrap.servers": kafka_server.bootstrap})
    sent = []
    for phase in ("early", "late"):
        for i in range(1000):
            sent.append(f"{phase}-{i:04d}".encode())
            producer.produce(source, value=sent[-1])
        assert producer.flush(10) == 0
        time.sleep(4 if phase == "early" else 0)
    args = ["replay", f"kafka://{kafka_server.bootstrap}/{source}", f"kafka://{kafka_server.bootstrap}/{sink}",
            "--from", "beginning", "--exactly-once"]
    # At the original pace the replay waits ~4 s between the phases: kill it there.
    proc = spawn(*args, "--pace", "original", log=tmp_path / "replay.log")
    wait_until(lambda: sink_end(kafka_server.bootstrap, sink) >= 1000 or proc.poll() is not None, 120, "the first phase copied")
    assert proc.poll() is None, (tmp_path / "replay.log").read_text()
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert read_sink(kafka_server.bootstrap, sink) == [], "a killed exactly-once replay must leave nothing visible"
    rerun = evrelay(*args)  # fences the killed one's transactional id, aborting what it left open
    assert rerun.returncode == 0, rerun.err
    assert "replayed 2000 message(s)" in rerun.err
    exactly_once_report(sent, read_sink(kafka_server.bootstrap, sink), "replay --exactly-once after kill -9")
    uncommitted = read_sink(kafka_server.bootstrap, sink, "read_uncommitted")
    print(f"read_uncommitted sees {len(uncommitted)} records: {len(uncommitted) - 2000} from the aborted replay")
    assert len(uncommitted) >= 3000
