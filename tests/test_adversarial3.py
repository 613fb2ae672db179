"""Defects found by the third adversarial pass, and the ones the first two saw and left
alone: Redis ACL refusals (NOPERM) on sinks and sources, Redis error replies classified
whichever parser read them, ... Each test failed before its fix. Real servers come from
tests/conftest.py (a redis-server of this module's own where a test changes its ACL or
its memory limit, so no other test meets them)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid

import pytest

from evrelay.backends.base import Message
from evrelay.backends.redis_streams import RedisStreamsBackend, reply_code
from evrelay.errors import BackendUnavailable, ExitCode, PermissionDenied
from tests.conftest import evrelay, start_server
from tests.crash import wait_until

PASSWORD = "s3cret-acl-pw"


@pytest.fixture(scope="module")
def acl_redis():
    """A redis-server whose ACL users and memory limit these tests change."""
    from tests.servers import RedisServer

    server = start_server(RedisServer)
    yield server
    server.stop()


@pytest.fixture
def stream():
    return f"adv3-{uuid.uuid4().hex[:8]}"


def redis_cli(server, *args: str) -> str:
    return subprocess.run(["redis-cli", "-p", str(server.port), *args], capture_output=True, text=True, check=True).stdout.strip()


def acl_user(server, *rules: str) -> str:
    """A new ACL user with the password PASSWORD and these rules; its redis:// url prefix."""
    name = f"u{uuid.uuid4().hex[:6]}"
    assert redis_cli(server, "ACL", "SETUSER", name, "on", f">{PASSWORD}", "~*", "&*", *rules) == "OK"
    return f"redis://{name}:{PASSWORD}@127.0.0.1:{server.port}"


def pending_count(server, stream: str, group: str) -> int:
    out = redis_cli(server, "XPENDING", stream, group)
    return int(out.splitlines()[0])


# --- item 1: NOPERM is an ACL's refusal, not an outage ----------------------------------------


def _refused_line(run, command: str, user: str) -> None:
    errors = [line for line in run.err.splitlines() if line.startswith("evrelay: error:")]
    assert len(errors) == 1, run.err
    assert command in errors[0] and "ACL" in errors[0] and user in errors[0] and "NOPERM" in errors[0], run.err
    assert PASSWORD not in run.err + run.out
    assert "Traceback" not in run.err


def test_publish_to_a_redis_user_without_xadd_exits_3_naming_the_acl(acl_redis, stream):
    # before: exit 1, "1 of 1 message(s) ... were not delivered (... refused the credentials ...)"
    url = acl_user(acl_redis, "+@all", "-xadd")
    run = evrelay("publish", f"{url}/{stream}", "hello", timeout=60)
    assert run.returncode == ExitCode.UNAVAILABLE, run.err
    _refused_line(run, f"XADD to {stream!r}", url.split("//")[1].split(":")[0])


@pytest.mark.parametrize("where", ["--in-process", "--sink-process"])
def test_bridge_into_a_sink_that_never_may_write_exits_3_at_once(acl_redis, stream, where):
    # before: "retrying in 0.5s ... 1s ... 8s" forever, as if the sink were down
    redis_cli(acl_redis, "XADD", stream, "*", "value", "one")
    sink = acl_user(acl_redis, "+@all", "-xadd")
    started = time.monotonic()
    run = evrelay("bridge", f"{acl_redis.url}/{stream}", f"{sink}/{stream}-out", "-g", "g", "--from", "beginning",
                  "--idle-timeout", "60", where, timeout=90)
    assert run.returncode == ExitCode.UNAVAILABLE, run.err
    assert time.monotonic() - started < 45
    _refused_line(run, "XADD", sink.split("//")[1].split(":")[0])
    assert "retrying" not in run.err
    assert pending_count(acl_redis, stream, "g") == 1  # read, refused, not acked


def test_bridge_whose_sink_acl_changes_mid_run_stops_with_exit_3_and_loses_nothing(acl_redis, stream):
    """A sink that wrote and then says NOPERM (an ACL changed under a running bridge):
    an error, as redis-cli would give, not retries that never end; nothing unwritten is
    acked, and a bridge run again once the ACL allows it delivers the rest."""
    user_url = acl_user(acl_redis, "+@all")
    user = user_url.split("//")[1].split(":")[0]
    source, sink = f"{acl_redis.url}/{stream}", f"{user_url}/{stream}-out"
    for n in range(3):
        redis_cli(acl_redis, "XADD", stream, "*", "value", f"m{n}")
    bridge = subprocess.Popen(
        [sys.executable, "-m", "evrelay", "bridge", source, sink, "-g", "g", "--from", "beginning"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_until(lambda: redis_cli(acl_redis, "XLEN", f"{stream}-out") == "3", timeout=60, what="the first 3 bridged")
        redis_cli(acl_redis, "ACL", "SETUSER", user, "-xadd")
        for n in range(3, 6):
            redis_cli(acl_redis, "XADD", stream, "*", "value", f"m{n}")
        _, err = bridge.communicate(timeout=60)
    finally:
        if bridge.poll() is None:
            bridge.kill()
            bridge.wait()
    assert bridge.returncode == ExitCode.UNAVAILABLE, err
    assert "ACL" in err and "NOPERM" in err and PASSWORD not in err and "Traceback" not in err
    assert redis_cli(acl_redis, "XLEN", f"{stream}-out") == "3"
    assert pending_count(acl_redis, stream, "g") >= 1  # refused, so not acked
    redis_cli(acl_redis, "ACL", "SETUSER", user, "+xadd")
    run = evrelay("bridge", source, sink, "-g", "g", "--idle-timeout", "3", timeout=90)
    assert run.returncode == 0, run.err
    values = redis_cli(acl_redis, "XRANGE", f"{stream}-out", "-", "+").split()
    assert {f"m{n}" for n in range(6)} <= set(values)


@pytest.mark.parametrize(("denied", "read"), [("xreadgroup", False), ("xack", True)])
def test_a_group_source_refused_by_its_acl_exits_3_and_keeps_what_it_did_not_ack(acl_redis, stream, tmp_path, denied, read):
    # before: exit 1, "Redis (acking for group 'g'): this user has no permissions ..." (the
    # code cut off by redis-py's parser, so not even recognised as a refusal)
    redis_cli(acl_redis, "XADD", stream, "*", "value", "one")
    url = acl_user(acl_redis, "+@all", f"-{denied}")
    out = tmp_path / "out.jsonl"
    run = evrelay("bridge", f"{url}/{stream}", f"file:{out}", "-g", "g", "--from", "beginning", "--idle-timeout", "30", timeout=90)
    assert run.returncode == ExitCode.UNAVAILABLE, run.err
    _refused_line(run, "group 'g'", url.split("//")[1].split(":")[0])
    assert (out.exists() and out.read_text().count("\n") == 1) is read
    assert pending_count(acl_redis, stream, "g") == (1 if read else 0)


# --- item 4: error replies classified whichever parser read them ------------------------------


def _parser_classes():
    from redis import _parsers

    return {"python": _parsers._RESP2Parser, "hiredis": _parsers._HiredisParser}


@pytest.mark.parametrize("parser", ["python", "hiredis"])
def test_redis_error_replies_are_classified_the_same_with_either_parser(acl_redis, stream, monkeypatch, parser):
    """OOM is transient (retried), NOPERM a refusal (exit 3), on the producer's pipelined
    XADD path and on plain commands, with redis-py's pure-Python parser and with hiredis.
    Before: the producer read raw hiredis replies but redis-py's parser cuts the code off
    (OutOfMemoryError("command not allowed ...")), so without hiredis an OOM was taken as a
    permanent rejection and a NOPERM as an unknown error (exit 1)."""
    options = {"parser_class": _parser_classes()[parser]}  # redis-py imported with hiredis, first
    if parser == "python":
        monkeypatch.setitem(sys.modules, "hiredis", None)  # the producer's own fast path too
    denied = RedisStreamsBackend({"url": acl_user(acl_redis, "+@all", "-xadd"), "options": options})
    with pytest.raises(PermissionDenied, match="NOPERM"):
        denied.command("XADD", stream, "*", "value", "x")
    producer = denied.producer(stream)
    producer.send([Message(b"x")])
    with pytest.raises(PermissionDenied, match="XADD"):
        producer.flush(10)
    producer.close()
    denied.close()

    full = RedisStreamsBackend({"url": acl_redis.url, "options": options})
    redis_cli(acl_redis, "CONFIG", "SET", "maxmemory", "1")
    try:
        with pytest.raises(Exception) as raised:
            full.client.execute_command("XADD", stream, "*", "value", "x")
        assert reply_code(raised.value) == "OOM"
        assert full.is_transient_reply(raised.value)
        producer = full.producer(stream)
        producer.send([Message(b"x"), Message(b"y")])
        report = producer.flush(10)
        assert len(report.failures) == 2 and not any(f.permanent for f in report.failures), report.failures
        producer.close()
    finally:
        redis_cli(acl_redis, "CONFIG", "SET", "maxmemory", "0")
    with pytest.raises(Exception) as raised:
        full.client.execute_command("XREADGROUP", "GROUP", "nogroup", "c", "STREAMS", stream, ">")
    assert reply_code(raised.value) == "NOGROUP"
    assert not full.is_transient_reply(raised.value)
    full.close()


def test_reply_code_of_what_is_not_an_error_reply():
    import redis

    assert reply_code(redis.ConnectionError("Connection refused")) == ""
    assert reply_code(ValueError("OOM")) == ""
    assert not isinstance(PermissionDenied("x"), BackendUnavailable)  # never retried as an outage


# --- tail --to T -n N: the count was dropped ---------------------------------------------------


@pytest.fixture(params=["local", "file", "redis", "kafka", "nats"])
def filled_address(request, tmp_path, stream):
    """An address of each backend holding the values 0..5."""
    kind = request.param
    if kind == "local":
        address = stream
    elif kind == "file":
        address = f"file:{tmp_path / 'in.jsonl'}"
    elif kind == "redis":
        address = f"{request.getfixturevalue('redis_server').url}/{stream}"
    elif kind == "kafka":
        from tests.test_contract_kafka import create_topic

        bootstrap = request.getfixturevalue("kafka_server").bootstrap
        address = f"kafka://{bootstrap}/{create_topic(bootstrap, stream, partitions=1)}"
    else:
        address = f"{request.getfixturevalue('nats_server').url}/{stream}?create=true"
    run = evrelay("publish", address, *[str(n) for n in range(6)], timeout=120)
    assert run.returncode == 0, run.err
    return address.split("?")[0]


def test_tail_to_a_time_with_a_count_prints_that_many(filled_address):
    # before: `--to T -n 2` printed the whole range (here 6 messages; 300 in the report's run)
    future = "2099-01-01T00:00:00Z"
    run = evrelay("tail", filled_address, "--to", future, "-n", "2", "-o", "raw", timeout=120)
    assert run.returncode == 0, run.err
    assert run.out.split() == ["0", "1"]
    run = evrelay("tail", filled_address, "--to", future, "-o", "raw", timeout=120)
    assert run.out.split() == [str(n) for n in range(6)]  # without -n: the whole range up to --to


# --- a framework's own worker after a bridge killed with kill -9 -------------------------------


@pytest.mark.slow
def test_taskiq_tasks_bridged_through_a_kill_9_all_run_on_taskiq_redis_worker(redis_server, tmp_path, stream):
    """taskiq-redis kicks 1,500 tasks; a bridge with the taskiq layout copies them to a
    second stream and is killed with SIGKILL twice on the way; taskiq's own Receiver
    then runs every task (a repeat allowed, none lost, none it cannot parse)."""
    import asyncio

    from tests.crash import phased_kill_thresholds, run_with_kills
    from tests.test_interop_taskiq import TASK, _kick, _redis_broker

    total = 1500
    phases = [500, 500, 500]  # kicked one by one after each kill: every kill comes part-way
    source, sink = f"{stream}-src", f"{stream}-dst"

    def kick(phase: int) -> None:
        first = sum(phases[:phase])
        asyncio.run(_kick(_redis_broker(redis_server.url, source, worker=False), [(n, 0) for n in range(first, first + phases[phase])]))

    kick(0)
    args = ("bridge", f"{redis_server.url}/{source}?layout=taskiq", f"{redis_server.url}/{sink}?layout=taskiq",
            "-g", "relay", "--window", "100", "--idle-timeout", "3")
    log = tmp_path / "bridge.log"
    run_with_kills(args, log=log, reached=lambda t: int(redis_cli(redis_server, "XLEN", sink)) >= t,
                   thresholds=phased_kill_thresholds(phases, repeats=100), after_kill=kick, timeout=180)
    assert "Traceback" not in log.read_text()

    async def work() -> tuple[set[int], int, int]:
        from taskiq.receiver import Receiver

        broker = _redis_broker(redis_server.url, sink, worker=True)
        ran: list[int] = []

        @broker.task(task_name=TASK)
        async def add(a: int, b: int) -> int:
            ran.append(a + b)
            return a + b

        await broker.startup()
        receiver = Receiver(broker, run_startup=False)
        received = 0

        async def consume() -> None:
            nonlocal received
            async for message in broker.listen():
                received += 1
                await receiver.callback(message)
                if len(set(ran)) >= total:
                    return

        try:
            await asyncio.wait_for(consume(), 120)
        finally:
            await broker.shutdown()
        return set(ran), len(ran), received

    ran, runs, received = asyncio.run(work())
    assert ran == set(range(total)), f"{total - len(ran)} task(s) lost"
    assert runs == received, f"{received - runs} delivery(ies) taskiq could not run"
    assert runs - total <= 2 * 100  # at most a window again per kill


# --- a group moved to a future time ------------------------------------------------------------


@pytest.mark.parametrize("kind", ["local", "redis"])
def test_a_group_moved_to_a_future_time_still_gets_new_messages(request, stream, kind):
    """`replay -g G --from 2099-01-01T00:00:00Z` took the time as an entry ID: the group
    sat past every entry written until 2099, got nothing new and its lag said 0. Now a
    time after the last entry means the end of the stream, as Kafka's offsets_for_times
    answers (and as Kafka and NATS already did here)."""
    address = stream if kind == "local" else f"{request.getfixturevalue('redis_server').url}/{stream}"
    assert evrelay("publish", address, "old").returncode == 0
    assert evrelay("tail", address, "-g", "g", "-o", "raw").out == "old\n"
    run = evrelay("replay", address, "-g", "g", "--from", "2099-01-01T00:00:00Z", "--yes")
    assert run.returncode == 0, run.err
    assert evrelay("publish", address, "new").returncode == 0
    lag = evrelay("lag", address, "-g", "g", "-o", "json")
    assert json.loads(lag.out)["lag"] == 1, lag.out
    assert evrelay("tail", address, "-g", "g", "-o", "raw").out == "new\n"
    # a plain read from a future time: nothing yet (not an error), and a past time still counts
    assert evrelay("tail", address, "--from", "2099-01-01T00:00:00Z", "-o", "raw").out == ""
    assert evrelay("tail", address, "--from", "-1d", "-o", "raw").out == "old\nnew\n"


def test_a_nats_group_moved_past_the_last_sequence_is_planned_as_the_end(nats_server, stream):
    """`replay -g G --from 999999` on a NATS stream of 1 message planned "999997 message(s)
    skipped" and a group at 999998; the server itself starts such a consumer at the end, so
    the plan now says what happens: the end, nothing skipped, and new messages arrive."""
    address = f"{nats_server.url}/{stream}"
    assert evrelay("publish", f"{address}?create=true", "old").returncode == 0
    assert evrelay("tail", address, "-g", "g", "-o", "raw").out == "old\n"
    run = evrelay("replay", address, "-g", "g", "--from", "999999", "--yes", "-o", "json")
    assert run.returncode == 0, run.err
    plan = json.loads(run.out.splitlines()[0])
    assert (plan["new"], plan["affected"]) == ("1", 0), run.out
    assert "skipped" not in run.err, run.err
    assert evrelay("publish", address, "new").returncode == 0
    assert evrelay("tail", address, "-g", "g", "-o", "raw").out == "new\n"


# --- a header name Kafka cannot hold -----------------------------------------------------------


def test_a_nul_in_a_header_name_is_refused_by_a_kafka_sink_not_cut_short(kafka_server, redis_server, stream, tmp_path):
    """librdkafka takes header names as C strings: 'h\\0nul' was published as 'h', exit 0
    (a redis, local, NATS or file source can hold such a name). Now the message is refused
    as unfit, naming the header; the others of the batch go through."""
    address = f"kafka://{kafka_server.bootstrap}/{stream}"
    lines = [
        json.dumps({"value": "fine", "headers": [["h", "x"]]}),
        json.dumps({"value": "bad", "headers": [["h\x00nul", "x"]]}),
    ]
    run = evrelay("publish", address, "--input", "json", input="\n".join(lines) + "\n", timeout=120)
    assert run.returncode == 2, run.err  # as for any message a sink cannot represent
    assert "1 of 2" in run.err and "NUL" in run.err and "'h\\x00nul'" in run.err, run.err
    out = evrelay("tail", address, "--from", "beginning", "-o", "json", timeout=120)
    assert [(e["value"], e["headers"]) for e in map(json.loads, out.lines())] == [("fine", [["h", "x"]])]
    # bridged from Redis, where the name is an ordinary field `h:h\0nul`: dead-lettered, not cut
    import redis

    with redis.Redis.from_url(redis_server.url) as client:
        client.xadd(f"{stream}-r", {"value": "bad", "h:h\x00nul": "x"})
    dead = tmp_path / "dead.jsonl"
    run = evrelay("bridge", f"{redis_server.url}/{stream}-r", address, "--from", "beginning", "--idle-timeout", "3",
                  "--dead-letter", f"file:{dead}", timeout=120)
    assert run.returncode == 0, run.err
    assert [json.loads(line)["headers"][0] for line in dead.read_text().splitlines()] == [["h\x00nul", "x"]]


def test_health_of_redis_for_a_user_without_info_is_healthy(acl_redis):
    # after the NOPERM change and before this one: exit 3 "refused INFO" for a server that answers
    url = acl_user(acl_redis, "+@all", "-info")
    run = evrelay("health", f"{url}/0/s")
    assert run.returncode == 0, run.err
    assert "redis ?" in run.out + run.err and PASSWORD not in run.out + run.err
    denied = acl_user(acl_redis, "+@all", "-ping", "-info")
    run = evrelay("health", f"{denied}/0/s")
    assert run.returncode != 0 and "NOPERM" in run.out + run.err and "Traceback" not in run.err


def test_a_topic_name_kafka_cannot_hold_is_a_usage_error_before_any_broker_is_asked():
    # before: publish exit 1 "TOPIC_EXCEPTION: Broker: Invalid topic"; tail exit 1 with
    # the raw KafkaError{code=TOPIC_EXCEPTION,val=17,...}; no broker is needed to know
    for args in (("publish", "kafka://127.0.0.1:9/ünï", "x"), ("tail", "kafka://127.0.0.1:9/bad topic!", "-n", "1")):
        run = evrelay(*args)
        assert run.returncode == ExitCode.USAGE, run.err
        assert "is not a valid Kafka topic name" in run.err and "Traceback" not in run.err


@pytest.mark.slow
def test_faststream_kafka_messages_bridged_through_a_kill_9_all_reach_a_faststream_redis_subscriber(kafka_server, redis_server, tmp_path, stream):
    """FastStream's KafkaBroker publishes 1,000 messages (JSON body, a header, a
    correlation id); a bridge into a Redis stream in FastStream's own format is killed
    with SIGKILL twice on the way; FastStream's Redis subscriber then gets every one,
    intact (repeats allowed, no loss, nothing it cannot decode)."""
    import asyncio

    from faststream.redis import StreamSub

    from tests.crash import phased_kill_thresholds, run_with_kills
    from tests.test_contract_kafka import create_topic
    from tests.test_interop_faststream import _kafka_broker, _redis_broker

    total = 1000
    phases = [400, 400, 200]  # published one by one after each kill: every kill comes part-way
    topic = create_topic(kafka_server.bootstrap, stream, partitions=2)

    async def publish(first: int, count: int) -> None:
        broker = _kafka_broker(kafka_server.bootstrap)
        async with broker:
            await broker.start()
            for n in range(first, first + count):
                await broker.publish({"n": n}, topic=topic, headers={"x-trace": f"t{n}"}, correlation_id=f"c{n}")

    def publish_phase(phase: int) -> None:
        asyncio.run(publish(sum(phases[:phase]), phases[phase]))

    publish_phase(0)
    sink = f"{stream}-fs"
    args = ("bridge", f"kafka://{kafka_server.bootstrap}/{topic}", f"{redis_server.url}/{sink}?layout=faststream",
            "-g", "relay", "--from", "beginning", "--window", "50", "--idle-timeout", "5")
    log = tmp_path / "bridge.log"
    run_with_kills(args, log=log, reached=lambda t: int(redis_cli(redis_server, "XLEN", sink)) >= t,
                   thresholds=phased_kill_thresholds(phases, repeats=100), after_kill=publish_phase, timeout=180)
    written = int(redis_cli(redis_server, "XLEN", sink))

    async def receive() -> list[tuple]:
        from faststream.redis.annotations import RedisStreamMessage

        broker = _redis_broker(redis_server.url)
        received: list[tuple] = []
        done = asyncio.Event()

        @broker.subscriber(stream=StreamSub(sink, last_id="0"))
        async def handle(body: dict, message: RedisStreamMessage) -> None:
            received.append((body["n"], message.headers.get("x-trace"), message.correlation_id))
            if len(received) >= written:
                done.set()

        async with broker:
            await broker.start()
            await asyncio.wait_for(done.wait(), 120)
        return received

    received = asyncio.run(receive())
    assert {n for n, _, _ in received} == set(range(total)), "lost"
    assert all(trace == f"t{n}" and corr == f"c{n}" for n, trace, corr in received)
    assert written - total <= 2 * 50 * 2  # a window again per partition per kill at most
