"""Defects found by the second adversarial pass (replay, ack, redrive, config, the local
store, file sinks, outages mid-bridge) and the items the first pass left alone: each test
failed before its fix. Real servers come from the session fixtures in tests/conftest.py."""

from __future__ import annotations

import subprocess
import time
import uuid
from dataclasses import dataclass

import pytest

from evrelay.backends.base import DeliveryFailure, DeliveryReport, canonical_endpoint
from evrelay.backends.kafka import KafkaBackend
from evrelay.backends.local import LocalBackend
from evrelay.backends.redis_streams import RedisStreamsBackend
from evrelay.errors import BackendUnavailable, ExitCode, NeverReached
from evrelay.relay import Backoff, Relay
from evrelay.routing import RoutedProducer
from tests.conftest import evrelay
from tests.fakes import FakeLog, FakeSink, messages


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


# --- a routed sink never reached: exit 3, as a plain sink ---------------------------------


@dataclass
class UnreadySink(FakeSink):
    """A fake destination whose ready() says its server cannot be reached."""

    unready: bool = False

    def ready(self) -> None:
        if self.unready:
            raise BackendUnavailable("fake sink: could not be reached", hint="is it running?")


def routed_relay(log, open_destination):
    sink = RoutedProducer("out-{key}", open_destination)
    return Relay(log, sink, sink_label="fake:out-{key}", backoff=Backoff(initial=0.001, cap=0.002)), sink


def keyed(count):
    batch = messages(count)
    for index, message in enumerate(batch):
        message.key = f"k{index % 2}".encode()
    return batch


def test_a_routed_sink_never_reached_ends_the_relay_with_exit_3_and_acks_nothing():
    log = FakeLog(keyed(4))
    relay, _ = routed_relay(log, lambda name: UnreadySink(unready=True))
    with pytest.raises(NeverReached) as raised:
        relay.run(window=2)
    assert raised.value.exit_code == ExitCode.UNAVAILABLE
    assert raised.value.message == "fake sink: could not be reached" and raised.value.hint == "is it running?"
    assert not isinstance(raised.value, BackendUnavailable)  # the relay's outage retries must not catch it
    assert log.acked == []


def test_a_routed_sink_that_answered_once_waits_out_a_later_outage():
    # The second destination opens while the server is down (its ready() would say so),
    # and its first flushes fail: that is an outage of a sink that worked, retried.
    log = FakeLog(keyed(4))
    opened = {}

    def open_destination(name):
        opened[name] = UnreadySink(unready=bool(opened), down_flushes=2 if opened else 0)
        return opened[name]

    relay, _ = routed_relay(log, open_destination)
    stats = relay.run(window=1)
    assert stats.delivered == stats.acked == 4
    assert stats.retries >= 2
    assert sorted(opened) == ["out-k0", "out-k1"]


@pytest.mark.kafka
def test_bridge_into_a_routed_kafka_sink_that_is_not_there_exits_3_like_a_plain_one(stream):
    # Before: the routed sink's first destination opened mid-run and its failure was
    # taken for an outage: warnings every few seconds, forever.
    assert evrelay("publish", stream, "-k", "k1", "a").returncode == 0
    runs = {}
    for sink in ("kafka://127.0.0.1:1/{key}", "kafka://127.0.0.1:1/plain"):
        try:
            runs[sink] = evrelay("bridge", stream, sink, "--timeout", "2s", timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"bridge into {sink} retried an unreachable sink for a minute")
    routed, plain = runs.values()
    assert routed.returncode == plain.returncode == 3, routed.err
    # The same error, up to the reason librdkafka gave last (it varies from run to run).
    error, plain_error = ([line.split("): ")[0] for line in run.err.splitlines() if line.startswith("evrelay: error:")] for run in (routed, plain))
    assert error == plain_error
    assert "could not be reached" in error[0]
    assert "retrying" not in routed.err
    assert evrelay("tail", stream, "-g", "evrelay-bridge-kafka-_key_", "--no-ack", "-o", "raw").out == "a\n"


@pytest.mark.kafka
def test_bridge_into_a_routed_kafka_sink_refusing_the_credentials_exits_3(apache_kafka, stream):
    assert evrelay("publish", stream, "-k", "k1", "a").returncode == 0
    sink = (f"kafka://plain-user:not-it@{apache_kafka.address('SASL')}/{{key}}"
            "?security.protocol=SASL_PLAINTEXT&sasl.mechanism=PLAIN")
    try:
        run = evrelay("bridge", stream, sink, "--timeout", "10s", timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("bridge retried a sink refusing the credentials for a minute")
    assert run.returncode == 3, run.err
    assert "refused the credentials" in run.err and "not-it" not in run.err


# --- a Redis source that goes away mid-bridge -----------------------------------------------


@pytest.mark.redis
def test_a_redis_source_outage_mid_bridge_is_waited_out_not_exit_3(tmp_path, stream):
    # Before: the group reader's keepalive (refreshing its in-flight entries) and the
    # --idle-timeout check (its backlog) asked the dead server and their error escaped
    # the relay's outage wait: exit 3 a moment after the source went down.
    from tests.crash import spawn, wait_until
    from tests.servers import RedisServer

    log = tmp_path / "bridge.log"
    with RedisServer(persistent=True) as source:
        address = f"redis://127.0.0.1:{source.port}/0/{stream}"
        assert evrelay("publish", address, "a", "b").returncode == 0
        proc = spawn("bridge", address, f"{stream}-copy", "--idle-timeout", "3s", "-v", log=log)
        try:
            wait_until(lambda: "created consumer group" in log.read_text(), 60, "the bridge to start")
            wait_until(lambda: evrelay("info", f"{stream}-copy", "-o", "json").returncode == 0, 60, "first copies")
            source.kill()
            time.sleep(8)  # past a keepalive refresh (every 5 s) and the idle timeout
            assert proc.poll() is None, log.read_text()
            source.restart()
            assert evrelay("publish", address, "c").returncode == 0
            assert proc.wait(timeout=120) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
    text = log.read_text()
    assert "retrying in" in text and "Traceback" not in text
    copied = evrelay("tail", f"{stream}-copy", "-o", "raw").out.split()
    assert sorted(copied) == ["a", "b", "c"]


def test_an_ack_refused_by_a_source_that_went_away_is_retried_not_fatal():
    failures = iter([True, True])

    def source_down_twice(batch):
        if next(failures, False):
            raise BackendUnavailable("fake source: connection refused")

    sink = FakeSink()
    log = FakeLog(messages(10), on_ack=source_down_twice)
    stats = Relay(log, sink, sink_label="fake:sink", backoff=Backoff(initial=0.001, cap=0.002)).run(window=5)
    assert log.acked == list(range(10)) and not log.pending
    assert stats.acked == 10 and stats.errors["source_unavailable"] == 2
    assert sink.values == [f"m{i}".encode() for i in range(10)]  # sent once: the retry is of the ack alone


# --- the local store: a damaged file ---------------------------------------------------------


def _damage(path, *, from_offset: int) -> None:
    import sqlite3

    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")  # everything into the main file
    data = bytearray(path.read_bytes())
    for start in range(from_offset, len(data), 4096):  # the head of every page from there on
        data[start : start + 200] = b"\xff" * 200
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("where", ["header", "pages"])
def test_a_damaged_local_store_is_named_not_an_internal_error(isolated_env, where):
    # Before: "internal error: DatabaseError: file is not a database" (or "database disk
    # image is malformed") from every command, and "this is a bug in evrelay".
    store = isolated_env / "store.db"
    address = f"{store}"
    config = isolated_env / "evrelay.toml"
    config.write_text(f'default_profile = "l"\n[profiles.l]\nbackend = "local"\npath = "{address}"\n')
    assert evrelay("publish", "x", "a", "b", "c").returncode == 0
    _damage(store, from_offset=0 if where == "header" else 4096)
    for command in (["tail", "x"], ["ls"], ["info", "x"], ["groups", "x"], ["tail", "x", "-g", "g"], ["bridge", "x", "y", "--idle-timeout", "1s"]):
        run = evrelay(*command)
        assert run.returncode == 1, (command, run.err)
        assert "internal error" not in run.err and "Traceback" not in run.err, (command, run.err)
        assert f"the local store {store} is damaged or is not an SQLite database" in run.err, (command, run.err)
        assert "evrelay: hint: move it aside" in run.err


# --- file sinks: a full disk ------------------------------------------------------------------


def test_a_file_sink_on_a_full_device_names_the_file_not_stdout():
    # Before: "cannot write to stdout: No space left on device" (stdout was fine).
    run = evrelay("publish", "file:/dev/full", "a")
    assert run.returncode == 1
    assert run.err.startswith("evrelay: error: cannot write to /dev/full: No space left on device"), run.err
    assert "stdout" not in run.err


def _evrelay_with_file_limit(limit: int, *args: str, input: bytes = b"") -> subprocess.CompletedProcess:
    import os
    import resource
    import sys

    from tests.conftest import REPO

    def limit_file_size() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run([sys.executable, "-m", "evrelay", *args], input=input, capture_output=True, env=env,
                          preexec_fn=limit_file_size, timeout=60)


@pytest.mark.redis
def test_a_file_sink_past_its_size_limit_keeps_whole_lines_and_acks_nothing_it_did_not_write(isolated_env, redis_server, stream):
    # Before: the batch that crossed RLIMIT_FSIZE left half an envelope at the end of the
    # file, and every later reader of it failed on that line. (The source is a server:
    # the limit applies to every file the process writes, a local store's too.)
    target = isolated_env / "out.jsonl"
    source = f"{redis_server.url}/{stream}"
    big = "x" * 3000
    assert evrelay("publish", source, big, big, big).returncode == 0
    limit = 4096
    first = _evrelay_with_file_limit(limit, "bridge", source, f"file:{target}", "--window", "1", "--idle-timeout", "1s")
    assert first.returncode == 1, first.stderr
    assert b"cannot write to" in first.stderr and b"File too large" in first.stderr and b"Traceback" not in first.stderr
    lines = target.read_bytes().splitlines(keepends=True)
    assert len(lines) <= 1 and all(line.endswith(b"\n") for line in lines)  # whole envelopes only
    assert evrelay("tail", f"file:{target}", "-o", "raw").out == (big + "\n") * len(lines)
    # What was not written was not acked: the same bridge, with room, copies the rest.
    again = evrelay("bridge", source, f"file:{target}", "--idle-timeout", "1s")
    assert again.returncode == 0, again.err
    assert evrelay("tail", f"file:{target}", "-o", "raw").out == (big + "\n") * 3


# --- Redis: a claimed message handed out twice ------------------------------------------------


@pytest.mark.redis
def test_messages_taken_over_from_a_failed_redis_bridge_are_delivered_once(isolated_env, redis_server, stream):
    # Before: the restarted bridge claimed the entries its predecessor left pending, which
    # put them in its own pending list, and then its first read (own pending entries,
    # from 0) handed them out again: every message twice.
    source = f"{redis_server.url}/{stream}"
    assert evrelay("publish", source, "a", "b", "c").returncode == 0
    failed = evrelay("bridge", source, "file:/dev/full", "-g", "g", "--idle-timeout", "1s")
    assert failed.returncode == 1, failed.err
    target = isolated_env / "out.jsonl"
    again = evrelay("bridge", source, f"file:{target}", "-g", "g", "--idle-timeout", "1s")
    assert again.returncode == 0, again.err
    assert "took over 3 message(s)" in again.err
    assert evrelay("tail", f"file:{target}", "-o", "raw").out.split() == ["a", "b", "c"]


@pytest.mark.redis
def test_a_bridge_whose_own_pending_entries_were_trimmed_delivers_the_new_ones_once(isolated_env, redis_server, stream):
    # Before: the first read of its own pending entries found only trimmed ones, went on
    # to new entries, and the next read resumed the pending part from its cursor and
    # handed those new entries out again: d e d e.
    import redis

    source = f"{redis_server.url}/{stream}"
    assert evrelay("publish", source, "a", "b").returncode == 0
    assert evrelay("tail", source, "-g", "g", "--consumer", "c", "--no-ack", "-o", "raw").out == "a\nb\n"
    with redis.Redis.from_url(redis_server.url) as client:
        client.xtrim(stream, maxlen=0)
    assert evrelay("publish", source, "d", "e").returncode == 0
    target = isolated_env / "out.jsonl"
    # --claim-idle 0: no XAUTOCLAIM at start, which on Redis 7 drops trimmed entries from
    # the pending list silently (whatever their idle time), before this read could see them.
    run = evrelay("bridge", source, f"file:{target}", "-g", "g", "--consumer", "c", "--idle-timeout", "1s", "--claim-idle", "0")
    assert run.returncode == 0, run.err
    assert "2 pending entr(ies) of group 'g' were deleted from the stream" in run.err
    assert evrelay("tail", f"file:{target}", "-o", "raw").out.split() == ["d", "e"]


# --- Redis out of memory mid-bridge ----------------------------------------------------------


@pytest.mark.redis
def test_a_redis_sink_out_of_memory_is_waited_out_not_dead_lettered(isolated_env, stream):
    # Before: XADD's "OOM command not allowed" counted as a refusal for good: with
    # --dead-letter the messages went there (without, the bridge stopped); the server
    # only needed memory. Now it is retried with backoff, and nothing is acked meanwhile.
    import redis

    from tests.crash import redis_values, spawn, wait_until
    from tests.servers import RedisServer

    values = [f"{i:05d}-" + "v" * 200 for i in range(5000)]
    assert evrelay("publish", "src", input="\n".join(values) + "\n").returncode == 0
    log = isolated_env / "bridge.log"
    dead = isolated_env / "dlq.jsonl"
    with RedisServer() as sink, redis.Redis.from_url(sink.url) as client:
        client.config_set("maxmemory-policy", "noeviction")
        client.config_set("maxmemory", int(client.info("memory")["used_memory"]) + 300_000)
        proc = spawn("bridge", "src", f"{sink.url}/{stream}", "--dead-letter", f"file:{dead}", "--idle-timeout", "2s", log=log)
        try:
            wait_until(lambda: "OOM" in log.read_text() or proc.poll() is not None, 60, "the sink to fill up")
            assert proc.poll() is None, log.read_text()
            assert 0 < client.xlen(stream) < len(values)
            client.config_set("maxmemory", 0)
            assert proc.wait(timeout=120) == 0, log.read_text()
        finally:
            if proc.poll() is None:
                proc.kill()
        held = [v.decode() for v in redis_values(sink.url, stream)]
    text = log.read_text()
    assert "not delivered (Redis (XADD): OOM" in text and "retrying in" in text, text
    assert sorted(held) == values  # every message once: none diverted, none lost, none twice
    assert not dead.exists() or dead.read_bytes() == b""


@dataclass
class FullSink(FakeSink):
    """Refuses every message for the moment (a full server) for its first `full_flushes` flushes."""

    full_flushes: int = 0

    def flush(self, timeout=None):
        if self.full_flushes > 0:
            self.full_flushes -= 1
            failures = [DeliveryFailure(m, "fake: OOM", permanent=False) for m in self.queued]
            self.queued.clear()
            self._unconfirmed_batches = 0
            return DeliveryReport(failures=failures)
        return super().flush(timeout)


def test_a_sink_refusing_messages_for_the_moment_is_retried_with_growing_waits():
    # Before: the backoff was reset after every answer from the sink, refusals included,
    # so a full sink was retried every 0.5 s for as long as it stayed full.
    warnings = []
    sink = FullSink(full_flushes=4)
    relay = Relay(FakeLog(messages(3)), sink, sink_label="fake:sink", warn=warnings.append, backoff=Backoff(initial=0.001, cap=0.004))
    stats = relay.run(window=3)
    assert stats.delivered == stats.acked == 3
    assert [w.rpartition("retrying in ")[2].split("s ")[0] for w in warnings] == ["0.001", "0.002", "0.004", "0.004"]


def test_a_sink_holding_messages_unconfirmed_is_reported_while_the_relay_waits():
    # Before: a Kafka or NATS sink going down left the bridge waiting in silence (their
    # clients keep the messages and retry by themselves): minutes without a word.
    warnings = []
    sink = FakeSink(unconfirmed_flushes=40)

    def slow_flush(timeout=None, flush=sink.flush):
        time.sleep(0.01)
        return flush(timeout)

    sink.flush = slow_flush
    relay = Relay(FakeLog(messages(3)), sink, sink_label="fake:sink", warn=warnings.append)
    relay.PENDING_WARNING_EVERY = 0.1
    stats = relay.run(window=3)
    assert stats.delivered == stats.acked == 3
    assert warnings and all(w.startswith("sink: 3 message(s) not confirmed after ") and w.endswith("still waiting (nothing is acked meanwhile)") for w in warnings), warnings
    assert 2 <= len(warnings) <= 5, warnings


# --- config: keys and files a user gets wrong -------------------------------------------------


def test_config_set_refuses_an_options_key_on_a_backend_without_options(isolated_env):
    # Before: `config set local.options.foo 1` wrote the key, and from then on every
    # command failed on the config file (unknown local option 'options'), exit 2.
    config = isolated_env / "c.toml"
    assert evrelay("--config", str(config), "config", "init").returncode == 0
    before = config.read_text()
    run = evrelay("--config", str(config), "config", "set", "local.options.foo", "1")
    assert run.returncode == 2 and "the local backend takes no key 'options'" in run.err, run.err
    assert config.read_text() == before
    assert evrelay("--config", str(config), "ls").returncode == 0
    assert evrelay("--config", str(config), "config", "add", "k", "-b", "kafka", "bootstrap_servers=localhost:9092").returncode == 0
    assert evrelay("--config", str(config), "config", "set", "k.options.sasl.mechanism", "PLAIN").returncode == 0
    assert 'sasl.mechanism' in config.read_text()


@pytest.mark.parametrize("how", ["--config", "EVRELAY_CONFIG"])
def test_a_config_path_that_is_a_directory_says_so(isolated_env, how):
    # Before: "config file /tmp (from --config) does not exist".
    args, env = (["--config", str(isolated_env)], None) if how == "--config" else ([], {"EVRELAY_CONFIG": str(isolated_env)})
    run = evrelay(*args, "ls", env=env)
    assert run.returncode == 2
    assert f"config file {isolated_env} (from {'$' if how != '--config' else ''}{how}) is a directory, not a TOML file" in run.err, run.err


# --- redrive: a dead letter whose recorded source carries a secret ------------------------------


@pytest.mark.parametrize(
    "address",
    ["redis://u:Can4ry-S3cret@127.0.0.1:1/0/s", "kafka://127.0.0.1:1/t?sasl.password=Can4ry-S3cret", "nats://Can4ry-S3cret@127.0.0.1:1/t"],
)
def test_redrive_never_prints_nor_uses_credentials_a_dead_letter_carries(address):
    # Before: a letter whose evrelay-source-address was written by someone else (evrelay
    # records addresses masked) made redrive connect with those credentials and print
    # them: "was not sent to redis://u:Can4ry-S3cret@...".
    assert evrelay("publish", "dlq", "-H", f"evrelay-source-address={address}", "x").returncode == 0
    for extra in ([], ["--dry-run"], ["-v"]):
        run = evrelay("redrive", "dlq", "--timeout", "2s", *extra)
        assert "Can4ry-S3cret" not in run.out + run.err, run.err
        assert "carries credentials, which evrelay never records; give --to SINK" in run.err, run.err
        assert "could not be reached" not in run.err  # it did not try
    assert evrelay("tail", "dlq", "-o", "raw").out == "x\n"  # left in place


# --- ack: garbage on stdin --------------------------------------------------------------------


def test_ack_from_stdin_with_a_garbage_line_says_nothing_was_acked():
    # Before: "stdin line 2: not valid JSON (...)", leaving the user to guess whether
    # line 1 was acked (it was not: every line is checked first).
    assert evrelay("publish", "s", "a", "b").returncode == 0
    pending = evrelay("tail", "s", "-g", "g", "--no-ack", "-o", "json").out.splitlines()
    for garbage in ("garbage", '{"value":"no position"}', pending[1].replace('"stream":"s"', '"stream":"other"')):
        run = evrelay("ack", "s", "-g", "g", input=f"{pending[0]}\n{garbage}\n")
        assert run.returncode == 1
        (line,) = run.err.splitlines()
        assert line.startswith("evrelay: error: stdin line 2: ") and line.endswith("nothing was acked (every line is checked before the first ack)"), line
    assert evrelay("ack", "s", "-g", "g", "--list").err.startswith("2 pending")
