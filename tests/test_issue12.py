"""Regression tests for the defects an adversarial pass found (issue 12).

Each test names its item; each failed before its fix. Real servers where one is involved.
"""

from __future__ import annotations

import json
import uuid

import pytest

from tests.conftest import evrelay
from tests.test_contract_kafka import create_topic


def assert_clean(run) -> None:
    assert "Traceback" not in run.err and "internal error" not in run.err, run.err


def produce_kafka(bootstrap: str, topic: str, records: list[dict]) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap})
    for record in records:
        producer.produce(topic, **record)
    assert producer.flush(10) == 0


def committed_offsets(bootstrap: str, topic: str, group: str, partitions: int) -> dict[int, int]:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False})
    try:
        found = consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
    finally:
        consumer.close()
    return {tp.partition: tp.offset for tp in found}


# --- item 2: Kafka ack never skips unacknowledged offsets, refuses unknown partitions ------


@pytest.mark.kafka
def test_kafka_ack_refuses_to_skip_and_unknown_partitions(kafka_server):
    topic = create_topic(kafka_server.bootstrap, f"ack-{uuid.uuid4().hex[:8]}", partitions=3)
    produce_kafka(kafka_server.bootstrap, topic, [{"value": b"v%d" % i, "partition": 2} for i in range(5)])
    address = f"kafka://{kafka_server.bootstrap}/{topic}"

    skipping = evrelay("ack", address, "-g", "fresh", "2:3")
    assert skipping.returncode == 2, skipping.err
    assert "2:0..2:2" in skipping.err and "--force" in skipping.err
    assert_clean(skipping)
    assert committed_offsets(kafka_server.bootstrap, topic, "fresh", 3)[2] < 0

    unknown = evrelay("ack", address, "-g", "fresh", "9:0")
    assert unknown.returncode == 2, unknown.err
    assert "no partition 9" in unknown.err

    in_order = evrelay("ack", address, "-g", "fresh", "2:0", "2:1")
    assert in_order.returncode == 0, in_order.err
    assert committed_offsets(kafka_server.bootstrap, topic, "fresh", 3)[2] == 2

    forced = evrelay("ack", address, "-g", "fresh", "2:3", "--force")
    assert forced.returncode == 0, forced.err
    assert committed_offsets(kafka_server.bootstrap, topic, "fresh", 3)[2] == 4


# --- item 17: ack takes only the backend's own ID form, and a missing group is an error --


def test_ack_on_local_refuses_a_kafka_style_id():
    evrelay("publish", "acks", "a")
    evrelay("tail", "acks", "-g", "g", "--no-ack", "-n", "1")
    run = evrelay("ack", "acks", "-g", "g", "0:5")
    assert run.returncode == 2, run.err
    assert "PARTITION:OFFSET" in run.err and "entry ID" in run.err


@pytest.mark.redis
def test_ack_on_a_missing_redis_group_fails(redis_server):
    stream = f"s-{uuid.uuid4().hex[:8]}"
    address = f"{redis_server.url}/{stream}"
    assert evrelay("publish", address, "a").returncode == 0
    run = evrelay("ack", address, "-g", "nosuch", "1-0")
    assert run.returncode == 1, run.err
    assert "group 'nosuch' does not exist" in run.err


# --- item 8: lag --max counts pending (delivered, not acked) entries ---------------------


def _lag_gate(address: str) -> None:
    assert evrelay("publish", address, "a", "b").returncode == 0
    took = evrelay("tail", address, "-g", "g", "--no-ack", "-n", "2")
    assert took.returncode == 0, took.err
    gate = evrelay("lag", address, "-g", "g", "--max", "0")
    assert gate.returncode == 4, gate.err
    assert "2 pending" in gate.err
    ids = [json.loads(line)["id"] for line in took.lines()]
    assert evrelay("ack", address, "-g", "g", *ids).returncode == 0
    assert evrelay("lag", address, "-g", "g", "--max", "0").returncode == 0


def test_lag_max_counts_pending_on_local():
    _lag_gate("lagging")


@pytest.mark.redis
def test_lag_max_counts_pending_on_redis(redis_server):
    _lag_gate(f"{redis_server.url}/lag-{uuid.uuid4().hex[:8]}")


# --- item 5: default consumer names are unique per process; dead readers' work is claimed --


def _consumer_rule(address: str) -> None:
    assert evrelay("publish", address, "a", "b", "c").returncode == 0
    # A reader takes two messages and leaves them pending (in flight, as far as anyone knows).
    first = evrelay("tail", address, "-g", "g", "--no-ack", "-n", "2", "-o", "raw")
    assert first.lines() == [b"a", b"b"], first.err
    # A second reader on the same host must not take that work for its own...
    second = evrelay("tail", address, "-g", "g", "-n", "3", "--idle-timeout", "2s", "-o", "raw")
    assert second.returncode == 0, second.err
    assert second.lines() == [b"c"], second.err
    # ...until it has been idle past the bound: then a restarted reader recovers it.
    third = evrelay("tail", address, "-g", "g", "-n", "3", "--idle-timeout", "2s", "--claim-idle", "1ms", "-o", "raw")
    assert third.returncode == 0, third.err
    assert third.lines() == [b"a", b"b"], third.err
    assert evrelay("lag", address, "-g", "g", "--max", "0").returncode == 0


def test_default_consumer_names_are_unique_per_process_on_local():
    _consumer_rule("consumers")


@pytest.mark.redis
def test_default_consumer_names_are_unique_per_process_on_redis(redis_server):
    _consumer_rule(f"{redis_server.url}/cons-{uuid.uuid4().hex[:8]}")


# --- item 1: --idle-timeout counts only idleness ----------------------------------------


@pytest.mark.kafka
def test_idle_timeout_does_not_count_the_kafka_group_join(kafka_server):
    topic = create_topic(kafka_server.bootstrap, f"idle-{uuid.uuid4().hex[:8]}")
    produce_kafka(kafka_server.bootstrap, topic, [{"value": b"m%d" % i} for i in range(5)])
    # The join alone takes seconds; the clock must not run before the group assigned us.
    run = evrelay("tail", f"kafka://{kafka_server.bootstrap}/{topic}", "-g", "new", "-f", "--idle-timeout", "1s", "-o", "raw")
    assert run.returncode == 0, run.err
    assert run.lines() == [b"m%d" % i for i in range(5)], run.err


@pytest.mark.redis
def test_idle_timeout_does_not_count_a_stopped_sink(tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    import redis

    from tests.conftest import REPO, start_server
    from tests.servers import RedisServer

    assert evrelay("publish", "outbox", *[f"a{i}" for i in range(20)]).returncode == 0
    sink = start_server(RedisServer)
    client = redis.Redis.from_url(sink.url)
    try:
        env = dict(os.environ, PYTHONPATH=str(REPO))
        bridge = subprocess.Popen(
            [sys.executable, "-m", "evrelay", "bridge", "outbox", f"{sink.url}/inbox", "--window", "10",
             "--idle-timeout", "2s", "--timeout", "1s"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env,
        )
        deadline = time.monotonic() + 30
        while client.xlen("inbox") < 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert client.xlen("inbox") == 20
        os.kill(sink.proc.pid, signal.SIGSTOP)  # the sink hangs: no reply, no error
        assert evrelay("publish", "outbox", *[f"b{i}" for i in range(50)]).returncode == 0
        time.sleep(5)
        os.kill(sink.proc.pid, signal.SIGCONT)
        _, err = bridge.communicate(timeout=60)
        assert bridge.returncode == 0, err.decode()
        assert client.xlen("inbox") == 70, err.decode()
        assert evrelay("lag", "outbox", "-g", "evrelay-bridge-redis-inbox", "--max", "0").returncode == 0
    finally:
        try:
            os.kill(sink.proc.pid, signal.SIGCONT)
        except ProcessLookupError:
            pass
        sink.stop()


def _released_on_clean_close(backend, stream: str) -> None:
    from evrelay.backends.base import Message, ReadSpec

    with backend.producer(stream) as producer:
        producer.publish([Message(b"a"), Message(b"b"), Message(b"c")])
    with backend.consumer(ReadSpec(stream, group="g", consumer_name="first")) as first:
        taken = first.read(3, 1.0)
        assert [m.value for m in taken] == [b"a", b"b", b"c"]
        first.ack(taken[:1])
    # A clean close hands back what it took and did not ack: the next reader gets it at
    # once (a claim bound of 5 minutes would otherwise hold it back).
    with backend.consumer(ReadSpec(stream, group="g", consumer_name="second")) as second:
        again = second.claim_idle(300_000, 10) or second.read(10, 1.0)
        assert [m.value for m in again] == [b"b", b"c"]


def test_a_clean_close_hands_back_unacked_messages_on_local():
    from evrelay.backends.base import BackendSettings
    from evrelay.backends.local import LocalBackend

    with LocalBackend({}, BackendSettings()) as backend:
        _released_on_clean_close(backend, "handback")


@pytest.mark.redis
def test_a_clean_close_hands_back_unacked_messages_on_redis(redis_server):
    from evrelay.backends.base import BackendSettings
    from evrelay.backends.redis_streams import RedisStreamsBackend

    with RedisStreamsBackend({"url": redis_server.url}, BackendSettings(timeout=5)) as backend:
        _released_on_clean_close(backend, f"hb-{uuid.uuid4().hex[:8]}")


# --- item 3: a closed stdout stops tail at once; only whole messages written are acked ---


@pytest.mark.parametrize("mode", ["json", "pretty", "raw"])
def test_tail_group_stops_at_once_when_stdout_reader_goes(mode):
    import subprocess
    import sys
    import time

    from tests.conftest import REPO

    big = ["x" * 100_000 + str(i) for i in range(30)]
    assert evrelay("publish", "big", "-q", input="\n".join(big)).returncode == 0
    started = time.monotonic()
    pipeline = subprocess.run(
        ["bash", "-c", f'"{sys.executable}" -m evrelay tail big -g g -f -o {mode} | head -n 1 >/dev/null; '
         'echo "${PIPESTATUS[0]}" >&2'],
        capture_output=True, timeout=60, env={**__import__("os").environ, "PYTHONPATH": str(REPO)},
    )
    elapsed = time.monotonic() - started
    err = pipeline.stderr.decode()
    assert err.strip().splitlines()[-1] == "0", err
    assert "Traceback" not in err and "error" not in err, err
    assert elapsed < 15, f"evrelay kept running {elapsed:.1f}s after head exited"
    lag = json.loads(evrelay("lag", "big", "-g", "g", "-o", "json").out)
    acked = 30 - lag["lag"] - lag["pending"]
    # One 100 KB message can reach head; the next cannot be whole in a 64 KB pipe.
    assert acked <= 1, lag


# --- item 4: SIGTERM makes publish flush what it read, then exit 143 with counts ---------


@pytest.mark.kafka
def test_publish_flushes_on_sigterm(kafka_server):
    import os
    import signal
    import subprocess
    import sys

    from tests.conftest import REPO

    topic = create_topic(kafka_server.bootstrap, f"term-{uuid.uuid4().hex[:8]}")
    # A long linger keeps accepted messages queued in the client, as a slow broker does.
    address = f"kafka://{kafka_server.bootstrap}/{topic}?linger.ms=20000"
    proc = subprocess.Popen(
        [sys.executable, "-m", "evrelay", "publish", address],
        stdin=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=str(REPO)),
    )
    proc.stdin.write(b"".join(b"line %d\n" % i for i in range(2000)))
    proc.stdin.flush()
    from tests.crash import wait_until_waiting_for_input

    wait_until_waiting_for_input(proc)  # all 2,000 read and queued (was: a 3 s sleep)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err.decode()
    assert "terminated: 2000 message(s) were published" in err.decode()
    info = evrelay("info", f"kafka://{kafka_server.bootstrap}/{topic}", "-o", "json")
    assert json.loads(info.out)["length"] == 2000, info.err


# --- item 6: a null value (tombstone) stays null, distinct from empty --------------------


NULL_AND_EMPTY = '{"value": null, "key": "gone"}\n{"value": "", "key": "empty"}\n'


@pytest.mark.kafka
def test_kafka_tombstones_round_trip_as_null(kafka_server):
    from confluent_kafka import Consumer, TopicPartition

    topic = create_topic(kafka_server.bootstrap, f"tomb-{uuid.uuid4().hex[:8]}")
    address = f"kafka://{kafka_server.bootstrap}/{topic}"
    published = evrelay("publish", address, "--input", "json", input=NULL_AND_EMPTY)
    assert published.returncode == 0, published.err
    consumer = Consumer({"bootstrap.servers": kafka_server.bootstrap, "group.id": "verify"})
    consumer.assign([TopicPartition(topic, 0, -2)])
    got = []
    for _ in range(40):
        got += [m for m in consumer.consume(10, 0.5) if m.error() is None]
        if len(got) >= 2:
            break
    consumer.close()
    assert [(m.key(), m.value()) for m in got] == [(b"gone", None), (b"empty", b"")]
    # ...and a tombstone written by confluent-kafka reads back as null.
    produce_kafka(kafka_server.bootstrap, topic, [{"key": b"k", "value": None}])
    tailed = evrelay("tail", address, "--from", "beginning", "-o", "json")
    values = [json.loads(line)["value"] for line in tailed.lines()]
    assert values == [None, "", None], tailed.out


def test_local_and_file_keep_null_distinct_from_empty(tmp_path):
    import sqlite3

    from evrelay.backends.local.store import SCHEMA

    # A store made by an older evrelay (value NOT NULL) is migrated on open.
    store = tmp_path / "home" / "data" / "evrelay" / "local.db"
    store.parent.mkdir(parents=True)
    with sqlite3.connect(store) as db:
        db.executescript(SCHEMA.replace("value BLOB,", "value BLOB NOT NULL,"))
    assert evrelay("publish", "tombs", "--input", "json", input=NULL_AND_EMPTY).returncode == 0
    tailed = evrelay("tail", "tombs", "-o", "json")
    assert [json.loads(line)["value"] for line in tailed.lines()] == [None, ""]
    copied = evrelay("bridge", "tombs", "file:copy.jsonl", "--idle-timeout", "1s")
    assert copied.returncode == 0, copied.err
    again = evrelay("tail", "file:copy.jsonl", "--from", "beginning", "-o", "json")
    assert [json.loads(line)["value"] for line in again.lines()] == [None, ""]


@pytest.mark.redis
def test_redis_refuses_a_null_value_clearly(redis_server):
    run = evrelay("publish", f"{redis_server.url}/tombs", "--input", "json", input=NULL_AND_EMPTY)
    # Refused up front like every message a Redis layout cannot represent (exit 2 since the
    # layouts of issue 11; exit 1 when this test was written): never turned into "".
    assert run.returncode in (1, 2), run.err
    assert "1 of 2 message(s)" in run.err and "null value (tombstone) cannot be written" in run.err
    assert_clean(run)


# --- item 7: replay --pace follows timestamps across partitions --------------------------


@pytest.mark.kafka
def test_paced_replay_is_in_timestamp_order_across_partitions(kafka_server):
    import time

    topic = create_topic(kafka_server.bootstrap, f"pace-{uuid.uuid4().hex[:8]}", partitions=2)
    base = int(time.time() * 1000) - 60_000
    records = [{"value": b"p%d-%d" % (i % 2, i), "partition": i % 2, "timestamp": base + 10 * i} for i in range(40)]
    records.sort(key=lambda r: r["partition"])  # each partition written as a block
    produce_kafka(kafka_server.bootstrap, topic, records)
    run = evrelay("replay", f"kafka://{kafka_server.bootstrap}/{topic}", "file:out.jsonl", "--from", "beginning", "--pace", "100x")
    assert run.returncode == 0, run.err
    with open("out.jsonl") as lines:
        stamps = [json.loads(line)["timestamp"] for line in lines]
    assert len(stamps) == 40
    assert stamps == sorted(stamps)


# --- item 17: replay and range wording ----------------------------------------------------


@pytest.mark.kafka
def test_replay_group_does_not_create_a_missing_kafka_group(kafka_server):
    topic = create_topic(kafka_server.bootstrap, f"rg-{uuid.uuid4().hex[:8]}")
    produce_kafka(kafka_server.bootstrap, topic, [{"value": b"x"}])
    run = evrelay("replay", f"kafka://{kafka_server.bootstrap}/{topic}", "-g", "ghost", "--from", "beginning", "--yes")
    assert run.returncode == 1, run.err
    assert "'ghost'" in run.err and "does not exist" in run.err
    assert committed_offsets(kafka_server.bootstrap, topic, "ghost", 1)[0] < 0


def test_moving_a_group_forward_says_skipped():
    evrelay("publish", "fwd", "a", "b", "c", "d")
    evrelay("tail", "fwd", "-g", "g", "-n", "0")
    run = evrelay("replay", "fwd", "-g", "g", "--from", "end", "--yes")
    assert run.returncode == 0, run.err
    assert "4 message(s) skipped" in run.err and "-4" not in run.err


def test_to_before_from_is_refused():
    evrelay("publish", "range", "a")
    for args in (["--from", "-1m", "--to", "-2h"], ["--from", "5-0", "--to", "1-0"]):
        run = evrelay("tail", "range", *args)
        assert run.returncode == 2, run.err
        assert "is before --from" in run.err
    replay = evrelay("replay", "range", "file:x.jsonl", "--from", "-1m", "--to", "-2h")
    assert replay.returncode == 2 and "is before --from" in replay.err


def test_bridge_dry_run_shows_positions():
    evrelay("publish", "dry", "a")
    run = evrelay("bridge", "dry", "file:never.jsonl", "--dry-run", "-o", "json")
    assert run.returncode == 0, run.err
    (envelope,) = [json.loads(line) for line in run.lines()]
    assert envelope["stream"] == "dry" and envelope["id"]


def test_group_follow_with_n_zero_follows():
    import subprocess
    import sys

    evrelay("publish", "nzero", "old")
    proc = subprocess.Popen([sys.executable, "-m", "evrelay", "tail", "nzero", "-g", "g", "-f", "-n", "0", "-o", "raw"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env={**__import__("os").environ, "PYTHONPATH": str(__import__("tests.conftest").conftest.REPO)})
    try:
        assert proc.stdout.readline() == b"old\n"
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(timeout=30)


# --- item 9: no secret is printed, by any command, in either URL form --------------------

SECRET = "c@n4ry-s3cret"


def _secret_free(run) -> None:
    text = run.out + run.err
    for fragment in ("c@n4ry", "n4ry", "s3cret", "c%40n4ry"):
        assert fragment not in text, text


def test_secrets_are_masked_everywhere(redis_server, kafka_server):
    from urllib.parse import quote

    from tests.servers import free_port

    dead = free_port()
    kafka_url = (f"kafka://127.0.0.1:{dead}/t?security.protocol=SASL_PLAINTEXT&sasl.mechanism=PLAIN"
                 f"&sasl.username=u&sasl.password={quote(SECRET, safe='')}")
    kafka_raw = kafka_url.replace(quote(SECRET, safe=""), SECRET)
    redis_url = f"redis://u:{SECRET}@127.0.0.1:{dead}/0/s"
    with open("evrelay.toml", "w") as config:
        config.write(
            f'[profiles.k]\nbackend = "kafka"\nbootstrap_servers = "127.0.0.1:{dead}"\ntopic = "t"\n'
            f'[profiles.k.options]\n"security.protocol" = "SASL_PLAINTEXT"\n"sasl.mechanism" = "PLAIN"\n'
            f'"sasl.username" = "u"\n"sasl.password" = "{SECRET}"\n'
            f'[profiles.r]\nbackend = "redis"\nurl = "redis://u:{SECRET}@127.0.0.1:{dead}/0"\nstream = "s"\n'
        )
    for config_args in (["config", "list"], ["config", "show"], ["config", "show", "k"], ["config", "show", "r"]):
        run = evrelay(*config_args)
        assert run.returncode == 0, run.err
        _secret_free(run)
    for address in (kafka_url, kafka_raw, redis_url, "k", "r"):
        for args in (
            ["health", address],
            ["tail", address, "--timeout", "2s"],
            ["publish", address, "x", "--timeout", "2s"],
            ["info", address],
            ["lag", address, "-g", "g"],
            ["bridge", address, "file:out.jsonl", "--idle-timeout", "1s", "--timeout", "2s"],
        ):
            run = evrelay(*args, "-v", "--timeout", "2s", timeout=120) if "--timeout" not in args else evrelay(*args, "-v", timeout=120)
            assert run.returncode != 0, (args, run.err)
            _secret_free(run)


# --- item 10: header names and values are checked before they reach a C library ---------


@pytest.mark.kafka
def test_undecodable_header_name_is_a_usage_error_not_a_crash(kafka_server):
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    topic = create_topic(kafka_server.bootstrap, f"hdr-{uuid.uuid4().hex[:8]}")
    address = f"kafka://{kafka_server.bootstrap}/{topic}"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    # Raw bytes in argv, as a shell passes $'\xffname=v'.
    for header in (b"\xffname=v", b"n\xc3=v"):
        proc = subprocess.run([sys.executable, "-m", "evrelay", "publish", address, "-H", header, "a"],
                              capture_output=True, env=env, timeout=60)
        err = proc.stderr.decode("utf-8", "replace")
        assert proc.returncode == 2, err
        assert "-H/--header" in err and "UTF-8" in err
    # Binary header values are fine: they are bytes on the wire.
    ok = subprocess.run([sys.executable, "-m", "evrelay", "publish", address, "-H", b"bin=\xff\xfe", "a"],
                        capture_output=True, env=env, timeout=60)
    assert ok.returncode == 0, ok.stderr.decode()


@pytest.mark.kafka
def test_fuzzed_publish_options_never_crash_the_kafka_client(kafka_server):
    """Hypothesis drives argv-like header, key and value text (bytes as the shell passes
    them: undecodable ones arrive as surrogates; NULs, control and astral characters)
    through the CLI's own parsing into a real Kafka producer: every input is either
    refused with a usage error or delivered; none may kill the process."""
    import os

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from evrelay.backends.base import BackendSettings, Message
    from evrelay.backends.kafka import KafkaBackend
    from evrelay.cli.common import parse_headers
    from evrelay.errors import UsageError

    topic = create_topic(kafka_server.bootstrap, f"fuzz-{uuid.uuid4().hex[:8]}")
    argv = st.one_of(st.binary(max_size=12), st.text(max_size=12).map(os.fsencode)).filter(lambda b: b"\0" not in b)
    backend = KafkaBackend({"bootstrap_servers": kafka_server.bootstrap}, BackendSettings(timeout=10))
    sent = []
    with backend.producer(topic) as producer:

        @settings(max_examples=200, deadline=None, suppress_health_check=list(HealthCheck))
        @given(st.lists(argv, max_size=3), argv, argv)
        def check(headers, key, value):
            try:
                parsed = parse_headers([os.fsdecode(h) for h in headers])
            except UsageError:
                return
            producer.send([Message(value, key, parsed)])
            sent.append(value)

        check()
        report = producer.flush(30)
    assert report.delivered == len(sent) and not report.failures, report


def test_fuzzed_tail_options_give_usage_errors_only():
    """--from/--to, --timeout, --format and -o text: a value or a UsageError, never a crash."""
    import io

    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from evrelay.cli.common import parse_duration, parse_position_option
    from evrelay.errors import UsageError
    from evrelay.output import make_writer

    @settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
    @given(st.text(max_size=30), st.sampled_from(["pretty", "json", "raw", None, "x"]))
    def check(text, mode):
        for parse in (lambda: parse_position_option(text, "--from"), lambda: parse_duration(text, "--timeout"),
                      lambda: make_writer(None, text, out=io.BytesIO(), stdout_is_tty=False),
                      lambda: make_writer(mode, None, out=io.BytesIO(), stdout_is_tty=False)):
            try:
                parse()
            except UsageError:
                pass

    check()


# --- item 13: global options before the command ------------------------------------------


def test_global_options_before_the_command(tmp_path):
    config = tmp_path / "elsewhere.toml"
    config.write_text('default_profile = "a"\n[profiles.a]\nbackend = "local"\n[profiles.b]\nbackend = "local"\n')
    listed = evrelay("--config", str(config), "config", "list", "-o", "json")
    assert listed.returncode == 0, listed.err
    assert {json.loads(line)["name"] for line in listed.lines()} >= {"a", "b"}
    assert evrelay("--config", str(config), "--profile", "b", "-q", "publish", "g1", "x").returncode == 0
    tailed = evrelay("-v", "--config", str(config), "--profile", "b", "tail", "b:g1", "-o", "raw")
    assert tailed.returncode == 0, tailed.err
    assert tailed.lines() == [b"x"]
    # After the command still works, and wins.
    after = evrelay("tail", "b:g1", "-o", "raw", "--config", str(config), "-v")
    assert after.lines() == [b"x"], after.err
    assert evrelay("--config", str(config), "config", "path").out.strip() == str(config)


# --- item 17: config set / add refuse what could not work --------------------------------


def test_config_set_and_add_refuse_invalid_backend_and_profile_names():
    assert evrelay("config", "add", "good", "-b", "local").returncode == 0
    for args, text in (
        (["config", "set", "default_profile", "nosuch"], "not a profile"),
        (["config", "set", "good.backend", "kafak"], "kafka"),
        (["config", "add", "bad:name", "-b", "local"], "profile name"),
        (["config", "add", "other", "-b", "bogus"], "bogus"),
    ):
        run = evrelay(*args)
        assert run.returncode == 2, (args, run.err)
        assert text in run.err
        assert_clean(run)


# --- item 15: each of these gets its exit code and a sentence, not "internal error" -------


@pytest.mark.parametrize(
    ("command", "code", "text"),
    [
        ("tail s >&-", 1, "cannot write to stdout: it is closed"),
        ("info s >&-", 1, "cannot write to stdout: it is closed"),
        ("info s >/dev/full", 1, "cannot write to stdout: No space left on device"),
        ("tail s -o pretty >/dev/full", 1, "cannot write to stdout: No space left on device"),
        ("config list >/dev/full", 1, "cannot write to stdout: No space left on device"),
        ("tail $'s\\xff'", 2, "is not valid UTF-8"),
        ("publish $'s\\xff' x", 2, "is not valid UTF-8"),
        ("tail s -g $'g\\xff'", 2, "is not valid UTF-8"),
        ("tail s -n 99999999999999999999999", 2, "is not in the range"),
        ("bridge s file:o.jsonl --window 99999999999999999999", 2, "is not in the range"),
        ("tail s --from 99999999999999999999999", 2, "too large"),
        ("tail s --from 1-99999999999999999999999", 2, "too large"),
        ("tail s -n abc", 2, "is not a valid int"),
    ],
)
def test_hostile_invocations_get_a_sentence_and_their_exit_code(command, code, text):
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    assert evrelay("publish", "s", "a").returncode == 0
    run = subprocess.run(["bash", "-c", f'"{sys.executable}" -m evrelay {command}'], capture_output=True,
                         env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=60)
    err = run.stderr.decode("utf-8", "replace")
    assert run.returncode == code, err
    assert text in err
    assert "internal error" not in err and "Traceback" not in err


def test_a_local_path_of_the_wrong_type_is_a_config_error():
    with open("evrelay.toml", "w") as config:
        config.write('[profiles.p]\nbackend = "local"\npath = 5\n')
    run = evrelay("publish", "p:x", "a")
    assert run.returncode == 2 and "path must be a file path" in run.err


# --- item 14: Kafka tail -f waits for a missing topic ------------------------------------


@pytest.mark.kafka
def test_kafka_tail_follow_waits_for_a_missing_topic(kafka_server):
    import os
    import subprocess
    import sys
    import time

    from tests.conftest import REPO

    topic = f"later-{uuid.uuid4().hex[:8]}"
    address = f"kafka://{kafka_server.bootstrap}/{topic}"
    missing = evrelay("tail", address)
    assert missing.returncode == 1 and "does not exist" in missing.err
    proc = subprocess.Popen([sys.executable, "-m", "evrelay", "tail", address, "-f", "--expect", "1", "--timeout", "40s", "-o", "raw"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=str(REPO)))
    time.sleep(3)
    assert proc.poll() is None, proc.stderr.read().decode()
    create_topic(kafka_server.bootstrap, topic)
    produce_kafka(kafka_server.bootstrap, topic, [{"value": b"arrived"}])
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err.decode()
    assert out == b"arrived\n"
    assert "waiting for it to be created" in err.decode()


# --- item 11: out-of-range timestamps are refused at input, with the line number ---------


def test_out_of_range_timestamps_are_refused_at_input():
    lines = '{"value": "ok", "timestamp": 1700000000000}\n{"value": "far", "timestamp": 300000000000000}\n'
    run = evrelay("publish", "file:archive.jsonl", "--input", "json", input=lines)
    assert run.returncode == 1, run.err
    assert "stdin line 2" in run.err and "out of range" in run.err
    # What was written is readable back: the archive is not broken.
    back = evrelay("tail", "file:archive.jsonl", "--from", "beginning", "-o", "raw")
    assert back.returncode == 0 and back.lines() == [b"ok"], back.err
    negative = evrelay("publish", "ts", "--input", "json", input='{"value": "x", "timestamp": -5}\n')
    assert negative.returncode == 1 and "stdin line 1" in negative.err


def test_config_files_in_missing_or_blocked_directories(tmp_path):
    new = tmp_path / "new" / "dir" / "c.toml"
    added = evrelay("config", "add", "p", "-b", "local", "--config", str(new))
    assert added.returncode == 0, added.err
    assert evrelay("--config", str(new), "config", "set", "default_profile", "p").returncode == 0
    blocker = tmp_path / "afile"
    blocker.write_text("")
    for args in (["config", "init"], ["config", "add", "q", "-b", "local"]):
        run = evrelay(*args, "--config", str(blocker / "c.toml"))
        assert run.returncode == 2, run.err
        assert f"{blocker} is a file, not a directory" in run.err
        assert_clean(run)
