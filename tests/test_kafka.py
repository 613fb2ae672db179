"""Kafka through the CLI against a real broker: interop with clients we did not write,
every --from form, partitions, groups, failures."""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import REPO, evrelay
from tests.test_contract_kafka import create_topic

pytestmark = pytest.mark.kafka


@pytest.fixture
def topic(kafka_server):
    return create_topic(kafka_server.bootstrap, f"cli-{uuid.uuid4().hex[:8]}")


@pytest.fixture
def profile(kafka_server, topic):
    Path("evrelay.toml").write_text(
        f'[profiles.k]\nbackend = "kafka"\nbootstrap_servers = "{kafka_server.bootstrap}"\ntopic = "{topic}"\n'
        '[profiles.k.options]\n"linger.ms" = 2\n'
    )
    return "k"


def envelopes(run) -> list[dict]:
    assert run.returncode == 0, run.err
    return [json.loads(line) for line in run.lines()]


def produce_directly(bootstrap: str, topic: str, records: list[dict]) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap})
    for record in records:
        producer.produce(topic, **record)
    assert producer.flush(10) == 0


def consume_directly(bootstrap: str, topic: str, count: int) -> list:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "direct", "enable.auto.commit": False})
    consumer.assign([TopicPartition(topic, 0, -2)])
    got = []
    deadline = time.monotonic() + 20
    while len(got) < count and time.monotonic() < deadline:
        for message in consumer.consume(100, 0.5):
            if message.error() is None:
                got.append(message)
    consumer.close()
    return got


def test_tail_reads_what_confluent_kafka_wrote_exactly(kafka_server, topic):
    records = [
        {"value": b"\xff\x00binary", "key": b"\xfe", "headers": [("a", b"1"), ("a", b"2"), ("b", b"\x80"), ("a", b"3")], "timestamp": 1_700_000_000_123},
        {"value": "ünïcode".encode(), "key": None, "headers": None, "timestamp": 1_700_000_001_000},
        {"value": b"", "key": b"k", "headers": [("empty", b"")], "timestamp": 1_700_000_002_000},
    ]
    produce_directly(kafka_server.bootstrap, topic, records)
    got = envelopes(evrelay("tail", f"kafka://{kafka_server.bootstrap}/{topic}", "--from", "beginning", "-o", "json"))
    assert len(got) == 3
    first, second, third = got
    assert base64.b64decode(first["value_b64"]) == b"\xff\x00binary"
    assert base64.b64decode(first["key_b64"]) == b"\xfe"
    assert first["headers"] == [["a", "1"], ["a", "2"], ["b", {"b64": base64.b64encode(b"\x80").decode()}], ["a", "3"]]
    assert first["timestamp"] == "2023-11-14T22:13:20.123Z"
    assert (first["backend"], first["topic"], first["partition"], first["offset"]) == ("kafka", topic, 0, 0)
    assert second["value"] == "ünïcode" and "key" not in second and second["headers"] == []
    assert third["value"] == "" and third["headers"] == [["empty", ""]]


def test_confluent_kafka_reads_what_evrelay_published_exactly(kafka_server, topic):
    lines = [
        {"value_b64": base64.b64encode(b"\x00\xffbin").decode(), "key": "order-1",
         "headers": [["h", "1"], ["h", {"b64": base64.b64encode(b"\x81").decode()}], ["x", "y"]],
         "timestamp": "2024-01-02T03:04:05.678Z"},
        {"value": "plain"},
    ]
    sent = evrelay("publish", f"kafka://{kafka_server.bootstrap}/{topic}", "--input", "json",
                   input="\n".join(json.dumps(line) for line in lines))
    assert sent.returncode == 0, sent.err
    got = consume_directly(kafka_server.bootstrap, topic, 2)
    assert got[0].value() == b"\x00\xffbin" and got[0].key() == b"order-1"
    assert got[0].headers() == [("h", b"1"), ("h", b"\x81"), ("x", b"y")]
    assert got[0].timestamp()[1] == 1_704_164_645_678
    assert got[1].value() == b"plain" and got[1].key() is None


def test_kcat_interop_both_directions(kafka_server, topic, kcat):
    # kcat writes, evrelay reads
    produced = subprocess.run([*kcat, "-b", kafka_server.bootstrap, "-P", "-t", topic, "-K", ":", "-H", "src=kcat", "-H", "src=again"],
                              input=b"k1:v1\nk2:v2\n", capture_output=True, timeout=30)
    assert produced.returncode == 0, produced.stderr
    got = envelopes(evrelay("tail", f"kafka://{kafka_server.bootstrap}/{topic}", "--from", "beginning"))
    assert [(e["key"], e["value"], e["headers"]) for e in got] == [
        ("k1", "v1", [["src", "kcat"], ["src", "again"]]),
        ("k2", "v2", [["src", "kcat"], ["src", "again"]]),
    ]
    # evrelay writes, kcat reads
    assert evrelay("publish", f"kafka://{kafka_server.bootstrap}/{topic}", "-k", "k3", "-H", "a=1", "-H", "a=2", "v3").returncode == 0
    read = subprocess.run([*kcat, "-b", kafka_server.bootstrap, "-C", "-t", topic, "-o", "2", "-e", "-q", "-J"],
                          capture_output=True, timeout=30)
    assert read.returncode == 0, read.stderr
    (record,) = [json.loads(line) for line in read.stdout.splitlines()]
    assert (record["key"], record["payload"], record["headers"]) == ("k3", "v3", ["a", "1", "a", "2"])


def test_partitions_last_n_merged_by_time_and_every_from_form(kafka_server):
    topic = create_topic(kafka_server.bootstrap, f"parts-{uuid.uuid4().hex[:8]}", partitions=3)
    address = f"kafka://{kafka_server.bootstrap}/{topic}"
    for i in range(12):
        assert evrelay("publish", address, "-k", f"key-{i % 4}", f"m{i:02d}", "-q").returncode == 0
        time.sleep(0.02)
    everything = envelopes(evrelay("tail", address, "--from", "beginning"))
    assert sorted(e["value"] for e in everything) == [f"m{i:02d}" for i in range(12)]
    assert len({e["partition"] for e in everything}) > 1
    by_key = {}
    for e in everything:
        by_key.setdefault(e["key"], set()).add(e["partition"])
    assert all(len(parts) == 1 for parts in by_key.values()), "same key, same partition"
    # default: the last 10 across partitions, in time order
    last = envelopes(evrelay("tail", address))
    assert [e["value"] for e in last] == [f"m{i:02d}" for i in range(2, 12)]
    assert [e["value"] for e in envelopes(evrelay("tail", address, "-n", "3"))] == ["m09", "m10", "m11"]
    # --partition restricts
    p = everything[0]["partition"]
    only = envelopes(evrelay("tail", address, "--from", "beginning", "--partition", str(p)))
    assert {e["partition"] for e in only} == {p} and len(only) == sum(e["partition"] == p for e in everything)
    # PARTITION:OFFSET and a bare offset
    from_one = envelopes(evrelay("tail", address, "--from", f"{p}:1"))
    assert [e["offset"] for e in from_one] == [e["offset"] for e in only][1:]
    bare = envelopes(evrelay("tail", address, "--from", "1"))
    assert len(bare) == 12 - len({e["partition"] for e in everything})
    # --to is inclusive, per partition
    upto = envelopes(evrelay("tail", address, "--from", f"{p}:0", "--to", f"{p}:1"))
    assert [e["offset"] for e in upto] == [0, 1]
    # times: RFC 3339 and relative
    cut = everything[5]["timestamp"]
    after_cut = envelopes(evrelay("tail", address, "--from", cut))
    assert sorted(e["value"] for e in after_cut) == sorted(e["value"] for e in everything if e["timestamp"] >= cut)
    assert len(envelopes(evrelay("tail", address, "--from", "-1h"))) == 12
    assert envelopes(evrelay("tail", address, "--to", "2000-01-01T00:00:00Z")) == []
    assert envelopes(evrelay("tail", address, "--from", "end")) == []
    # a stream ID is not a Kafka position
    wrong = evrelay("tail", address, "--from", "1700000000000-0")
    assert wrong.returncode == 2 and "Kafka positions are offsets" in wrong.err


def test_group_read_twice_commits_only_what_was_printed(profile):
    evrelay("publish", profile, *[f"g{i}" for i in range(7)], "-q")
    first = evrelay("tail", profile, "-g", "readers", "-n", "3", "-o", "raw")
    assert first.lines() == [b"g0", b"g1", b"g2"], first.err
    second = evrelay("tail", profile, "-g", "readers", "-o", "raw")
    assert second.lines() == [b"g3", b"g4", b"g5", b"g6"]
    assert evrelay("tail", profile, "-g", "readers", "-o", "raw").stdout == b""
    peek = evrelay("tail", profile, "-g", "peekers", "-n", "2", "--no-ack", "-o", "raw")
    assert peek.lines() == [b"g0", b"g1"]
    assert evrelay("tail", profile, "-g", "peekers", "-n", "2", "-o", "raw").lines() == [b"g0", b"g1"]
    stored = evrelay("tail", profile, "-g", "peekers", "--from", "stored", "-o", "raw")
    assert stored.lines() == [b"g2", b"g3", b"g4", b"g5", b"g6"]


def test_new_group_starts_at_from(profile):
    evrelay("publish", profile, "old1", "old2", "-q")
    assert evrelay("tail", profile, "-g", "fresh", "--from", "end", "-o", "raw").stdout == b""
    evrelay("publish", profile, "new1", "-q")
    assert evrelay("tail", profile, "-g", "fresh", "-o", "raw").lines() == [b"new1"]


def test_unreachable_broker_exits_3_quickly_and_quietly():
    for args in (["publish", "kafka://127.0.0.1:1/t", "x"], ["tail", "kafka://127.0.0.1:1/t"]):
        started = time.monotonic()
        run = evrelay(*args, "--timeout", "2s")
        elapsed = time.monotonic() - started
        assert run.returncode == 3, run.err
        assert run.stdout == b""
        assert elapsed < 8
        lines = run.err.strip().splitlines()
        assert lines[0].startswith("evrelay: error: Kafka at 127.0.0.1:1 could not be reached"), run.err
        assert "librdkafka" not in run.err and "FAIL|" not in run.err and "Traceback" not in run.err


@pytest.mark.parametrize("lines", [0, 1], ids=["empty-source", "one-message"])
def test_a_bridge_into_an_unreachable_cluster_exits_3(tmp_path, lines):
    """The sink's reachability check runs in the background (kafka/producer.py), but a
    bridge or replay still fails fast with exit 3 when its sink cannot be reached: it
    must neither retry forever as if the sink had gone down mid-run nor report 'bridged 0'
    and exit 0 (both did, after the check moved into a thread)."""
    source = tmp_path / "in.jsonl"
    source.write_text('{"value":"x"}\n' * lines)
    for command in (["bridge"], ["replay", "--from", "beginning"]):
        started = time.monotonic()
        run = evrelay(*command, f"file:{source}", "kafka://127.0.0.1:1/t", "--timeout", "1s", timeout=30)
        assert run.returncode == 3, (command, run.err)
        assert time.monotonic() - started < 15
        assert run.err.startswith("evrelay: error: Kafka at 127.0.0.1:1 could not be reached"), run.err
        assert "retrying" not in run.err and "Traceback" not in run.err


def test_unreachable_broker_is_reported_at_the_next_line_of_a_slow_pipe():
    """Input is read while librdkafka connects (the reachability check runs beside it), so
    an unreachable cluster is reported once the check has failed and the next line comes:
    exit 3, nothing printed on stdout, no traceback."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    started = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "evrelay", "publish", "kafka://127.0.0.1:1/t", "--timeout", "1s"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    time.sleep(2.5)  # past --timeout with nothing read yet
    assert proc.poll() is None
    out, err = proc.communicate(b"x\n", timeout=30)
    assert proc.returncode == 3, err
    assert out == b"" and time.monotonic() - started < 15
    assert err.decode().startswith("evrelay: error: Kafka at 127.0.0.1:1 could not be reached"), err
    assert b"Traceback" not in err


def test_verbose_shows_client_logs():
    run = evrelay("tail", "kafka://127.0.0.1:1/t", "--timeout", "1s", "-v")
    assert run.returncode == 3
    assert "librdkafka:" in run.err


def test_missing_topic_is_reported_and_not_created(kafka_server):
    name = f"missing-{uuid.uuid4().hex[:8]}"
    run = evrelay("tail", f"kafka://{kafka_server.bootstrap}/{name}")
    assert run.returncode == 1 and f"Kafka topic {name!r} does not exist" in run.err and run.stdout == b""
    run = evrelay("tail", f"kafka://{kafka_server.bootstrap}/{name}", "-g", "g")
    assert run.returncode == 1 and "does not exist" in run.err
    from confluent_kafka.admin import AdminClient

    topics = AdminClient({"bootstrap.servers": kafka_server.bootstrap}).list_topics(timeout=10).topics
    assert name not in topics


def test_publish_flushes_and_reports_on_ctrl_c(kafka_server, topic):
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "evrelay", "publish", f"kafka://{kafka_server.bootstrap}/{topic}"],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    proc.stdin.write(b"".join(f"line{i}\n".encode() for i in range(500)))
    proc.stdin.flush()
    # Ctrl-C once publish has read the 500 lines and waits for more, not after a guessed
    # sleep that a slow start outlasts. (Not "once the broker has 500": tansu's high
    # watermark lags behind what it holds.)
    from tests.crash import wait_until_waiting_for_input

    wait_until_waiting_for_input(proc)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert b"500 message(s) were published" in err
    assert len(consume_directly(kafka_server.bootstrap, topic, 500)) == 500


def test_options_librdkafka_rejects_are_a_config_error(kafka_server):
    Path("evrelay.toml").write_text(
        f'[profiles.k]\nbackend = "kafka"\nbootstrap_servers = "{kafka_server.bootstrap}"\n'
        '[profiles.k.options]\n"fetch.max.bytes" = 10\n"no.such.setting" = 1\n'
    )
    for args in (["tail", "k:x"], ["publish", "k:x", "v"]):
        run = evrelay(*args)
        assert run.returncode == 2, run.err
        assert "librdkafka rejected the Kafka options" in run.err and "Traceback" not in run.err


def test_profile_options_reach_librdkafka_and_can_turn_idempotence_off(kafka_server, topic):
    """The user's librdkafka options come last: librdkafka itself refuses acks=1 beside
    the idempotent producer evrelay sets by default, and accepts it once the user turns
    idempotence off (the benchmark's `publish kafka:?enable.idempotence=false`)."""
    base = f"kafka://{kafka_server.bootstrap}/{topic}"
    refused = evrelay("publish", f"{base}?acks=1", "x")
    assert refused.returncode == 2, refused.err
    assert "acks" in refused.err and "idempotence" in refused.err, refused.err
    sent = evrelay("publish", f"{base}?enable.idempotence=false&acks=1", "a", "b", "-q")
    assert sent.returncode == 0, sent.err
    assert [r.value() for r in consume_directly(kafka_server.bootstrap, topic, 2)] == [b"a", b"b"]


def test_group_protocol_consumer_option_is_accepted_by_librdkafka():
    """`?group.protocol=consumer` (KIP-848) reaches librdkafka: the classic session and
    heartbeat defaults evrelay sets are left out for it (librdkafka refuses them), while
    a user's own explicit setting still gets librdkafka's own refusal."""
    from evrelay.backends.kafka import KafkaBackend
    from evrelay.errors import ConfigError

    backend = KafkaBackend({"bootstrap_servers": "127.0.0.1:9", "options": {"group.protocol": "consumer"}})
    backend.new_consumer("g").close()
    explicit = KafkaBackend({"bootstrap_servers": "127.0.0.1:9", "options": {"group.protocol": "consumer", "session.timeout.ms": 6000}})
    with pytest.raises(ConfigError, match=r"session\.timeout\.ms"):
        explicit.new_consumer("g")


def test_group_read_with_an_incremental_rebalance_protocol(kafka_server, topic):
    """A cooperative assignor (as KIP-848's group.protocol=consumer) hands partitions out
    incrementally: the group reader must take them with incremental_assign, or librdkafka
    fails the read with _STATE ("Failed to set assignment")."""
    base = f"kafka://{kafka_server.bootstrap}/{topic}"
    assert evrelay("publish", base, "a", "b", "c", "-q").returncode == 0
    read = evrelay("tail", f"{base}?partition.assignment.strategy=cooperative-sticky", "-g", "coop", "-n", "3", "-o", "raw", "--timeout", "40s")
    assert read.returncode == 0, read.err
    assert sorted(read.out.split()) == ["a", "b", "c"]


def test_a_closed_group_reader_has_committed_every_ack_and_nothing_past_it(kafka_server, topic):
    """Acked window by window, then closed: the group's committed offset is right after
    the last ack (the next reader starts there), never past it."""
    from confluent_kafka import Consumer, TopicPartition

    from evrelay.backends.base import BackendSettings, ReadSpec
    from evrelay.backends.kafka import KafkaBackend

    produce_directly(kafka_server.bootstrap, topic, [{"value": f"m{i}".encode()} for i in range(30)])
    group = f"async-{uuid.uuid4().hex[:6]}"
    with KafkaBackend({"bootstrap_servers": kafka_server.bootstrap}, BackendSettings(timeout=10)) as backend:
        reader = backend.consumer(ReadSpec(topic, group=group))
        got: list = []
        deadline = time.monotonic() + 30
        while len(got) < 30 and time.monotonic() < deadline:
            got += reader.read(30 - len(got), 0.5)
        assert [m.value for m in got] == [f"m{i}".encode() for i in range(30)]
        for start in range(0, 20, 5):  # acked window by window, the last 10 not at all
            reader.ack(got[start:start + 5])
        reader.close()
    probe = Consumer({"bootstrap.servers": kafka_server.bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        (committed,) = probe.committed([TopicPartition(topic, 0)], timeout=10)
    finally:
        probe.close()
    assert committed.offset == 20
