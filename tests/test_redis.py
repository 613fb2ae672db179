"""Redis Streams through the CLI against a real redis-server: foreign entries, interop with
redis-py and redis-cli, groups with pending and claim, trimming, failures."""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from evrelay.backends.base import BackendSettings
from evrelay.backends.redis_streams import RedisStreamsBackend
from tests.conftest import REPO, evrelay
from tests.crash import first_line_while_feeding

pytestmark = pytest.mark.redis


@pytest.fixture
def stream():
    return f"s-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def raw(redis_server):
    import redis

    client = redis.Redis.from_url(redis_server.url, protocol=2)
    # Field lists as the server sends them (redis-py would fold duplicates into a dict).
    client.set_response_callback("XRANGE", lambda response, **_: response)
    yield client
    client.close()


@pytest.fixture
def profile(redis_server, stream):
    Path("evrelay.toml").write_text(
        f'default_profile = "r"\n[profiles.r]\nbackend = "redis"\nurl = "{redis_server.url}"\nstream = "{stream}"\n'
    )
    return "r"


def envelopes(run) -> list[dict]:
    assert run.returncode == 0, run.err
    return [json.loads(line) for line in run.lines()]


def redis_cli(server, *args: str) -> str:
    binary = shutil.which("redis-cli")
    if binary is None:
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail("CI=true and redis-cli is missing (apt-get install redis-tools)")
        pytest.skip("redis-cli is not installed")
    return subprocess.run([binary, "-p", str(server.port), *args], capture_output=True, check=True, timeout=10).stdout.decode("utf-8", "replace")


def test_foreign_entries_are_shown_readably(redis_server, raw, stream, profile):
    raw.xadd(stream, {"order": "42", "amount": "9.99"})
    raw.execute_command("XADD", stream, "*", "blob", b"\xff\xfe", "n", "1")
    raw.execute_command("XADD", stream, "*", "tag", "a", "tag", "b")
    raw.execute_command("XADD", stream, "*", "value", "only")
    redis_cli(redis_server, "XADD", stream, "*", "from", "redis-cli")
    got = envelopes(evrelay("tail", profile, "--from", "beginning"))
    assert [json.loads(e["value"]) for e in got[:3]] == [
        {"order": "42", "amount": "9.99"},
        {"blob": {"b64": base64.b64encode(b"\xff\xfe").decode()}, "n": "1"},
        [["tag", "a"], ["tag", "b"]],
    ]
    assert got[3]["value"] == "only"
    assert json.loads(got[4]["value"]) == {"from": "redis-cli"}
    assert all(e["stream"] == stream and e["backend"] == "redis" for e in got)


def test_what_evrelay_publishes_reads_back_exactly_with_redis_py_and_redis_cli(redis_server, raw, stream, profile):
    line = {"value_b64": base64.b64encode(b"\x00\xffbin").decode(), "key": "k1",
            "headers": [["h", "1"], ["h", {"b64": base64.b64encode(b"\x81").decode()}], ["z", "2"]]}
    assert evrelay("publish", profile, "--input", "json", input=json.dumps(line)).returncode == 0
    assert evrelay("publish", profile, "plain").returncode == 0
    entries = raw.execute_command("XRANGE", stream, "-", "+")
    assert [fields for _, fields in entries] == [
        [b"value", b"\x00\xffbin", b"key", b"k1", b"h:h", b"1", b"h:h", b"\x81", b"h:z", b"2"],
        [b"value", b"plain"],
    ]
    assert "plain" in redis_cli(redis_server, "XRANGE", stream, "-", "+")
    # and back through evrelay, byte for byte
    first = envelopes(evrelay("tail", profile, "--from", "beginning"))[0]
    assert (first["value_b64"], first["key"], first["headers"]) == (line["value_b64"], "k1", line["headers"])


def test_inline_url_with_db_and_stream(redis_server, stream):
    url = f"redis://127.0.0.1:{redis_server.port}/3/{stream}"
    assert evrelay("publish", url, "in-db-3").returncode == 0
    assert evrelay("tail", url, "-o", "raw").stdout == b"in-db-3\n"
    assert evrelay("tail", f"redis://127.0.0.1:{redis_server.port}/{stream}").returncode == 1  # db 0: not there


def test_positions_and_times_map_to_ids(profile, raw, stream):
    # a and b two hours old (IDs given), c written now: `--from -1h` splits them however
    # long the machine takes between the publish and the tail (a 1.1 s gap with
    # `--from -1s` failed 7 times in 10 under load).
    two_hours_ago = int(time.time() * 1000) - 2 * 3600 * 1000
    raw.xadd(stream, {"value": "a"}, id=f"{two_hours_ago}-0")
    raw.xadd(stream, {"value": "b"}, id=f"{two_hours_ago + 1}-0")
    assert evrelay("publish", profile, "c").returncode == 0
    got = envelopes(evrelay("tail", profile, "--from", "beginning"))
    assert [e["value"] for e in got] == ["a", "b", "c"]
    ids = [e["id"] for e in got]
    assert envelopes(evrelay("tail", profile, "--from", "-1h")) == got[2:]
    assert envelopes(evrelay("tail", profile, "--from", "-3h")) == got
    assert [e["value"] for e in envelopes(evrelay("tail", profile, "--from", ids[1], "--to", ids[2]))] == ["b", "c"]
    assert [e["value"] for e in envelopes(evrelay("tail", profile, "--to", got[1]["timestamp"]))] == ["a", "b"]
    assert [e["value"] for e in envelopes(evrelay("tail", profile, "-n", "2"))] == ["b", "c"]
    assert envelopes(evrelay("tail", profile, "--from", "end")) == []
    assert evrelay("tail", profile, "--from", "0:1").returncode == 2


def test_max_len_trims_approximately(redis_server, raw, stream):
    Path("evrelay.toml").write_text(f'[profiles.r]\nbackend = "redis"\nurl = "{redis_server.url}"\nmax_len = 10\n')
    evrelay("publish", f"r:{stream}", input="".join(f"{i}\n" for i in range(2000)))
    assert 10 <= raw.xlen(stream) < 2000


def test_follow_wakes_on_new_entries(redis_server, profile, raw, stream):
    raw.xadd(stream, {"value": "old"})
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "evrelay", "tail", profile, "-f", "--from", "end", "-o", "raw", "--idle-timeout", "5s"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert first_line_while_feeding(proc, lambda: raw.xadd(stream, {"value": "new"})) == b"new\n"
    finally:
        proc.kill()
        proc.wait()


def test_group_read_ack_pending_and_claim_after_a_killed_reader(redis_server, profile, stream):
    evrelay("publish", profile, *[f"j{i}" for i in range(6)])
    env = dict(os.environ, PYTHONPATH=str(REPO))
    # A reader that prints but never acks (and then dies) leaves its entries pending.
    proc = subprocess.Popen([sys.executable, "-m", "evrelay", "tail", profile, "-g", "workers", "--consumer", "doomed",
                             "-n", "4", "--no-ack", "-f", "-o", "raw"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    lines = [proc.stdout.readline() for _ in range(4)]
    assert lines == [b"j0\n", b"j1\n", b"j2\n", b"j3\n"]
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    backend = RedisStreamsBackend({"url": redis_server.url}, BackendSettings())
    with backend:
        pending = backend.pending(stream, "workers")
        assert [(p.consumer, p.deliveries) for p in pending] == [("doomed", 1)] * 4
        claimed = backend.claim(stream, "workers", "rescuer", min_idle_ms=0)
        assert [m.value for m in claimed] == [b"j0", b"j1", b"j2", b"j3"]
        assert {p.consumer for p in backend.pending(stream, "workers")} == {"rescuer"}
        assert backend.ack(stream, "workers", [m.position for m in claimed[:3]]) == 3
        assert [str(p.position) for p in backend.pending(stream, "workers")] == [str(claimed[3].position)]
    # Another consumer of the group gets only what was never delivered.
    rest = evrelay("tail", profile, "-g", "workers", "--consumer", "other", "-o", "raw")
    assert rest.lines() == [b"j4", b"j5"]


def test_group_creation_is_announced_and_a_vanished_group_is_an_error(redis_server, raw, profile, stream):
    evrelay("publish", profile, "x")
    first = evrelay("tail", profile, "-g", "g1", "-o", "raw")
    assert first.stdout == b"x\n" and "created consumer group 'g1'" in first.err
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen([sys.executable, "-m", "evrelay", "tail", profile, "-g", "g1", "-f", "-o", "raw"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    # Destroy the group once the reader follows it (it printed a new message), not after a
    # guessed sleep: a reader started after the DESTROY would create the group afresh.
    assert first_line_while_feeding(proc, lambda: raw.xadd(stream, {"value": "y"})) == b"y\n"
    raw.execute_command("XGROUP", "DESTROY", stream, "g1")
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 1
    assert b"no longer exists" in err and b"not recreating it" in err
    groups = raw.execute_command("XINFO", "GROUPS", stream)
    assert groups == [], "the group must not be recreated behind the user's back"


def test_a_group_readers_ack_is_one_xack_answered_later_and_still_names_a_vanished_group(redis_server, raw, profile, stream):
    """A bridge acks every window: one XACK, no XINFO beside it, its answer read on the
    next call rather than waited for; acking twice is harmless, and acking into a
    destroyed group is still an error that names the group."""
    from evrelay.backends.base import ReadSpec
    from evrelay.errors import NotFoundError

    def calls(command: str) -> int:
        return sum(v["calls"] for k, v in raw.info("commandstats").items() if k.startswith(f"cmdstat_{command}"))

    evrelay("publish", profile, "a", "b", "c")
    backend = RedisStreamsBackend({"url": redis_server.url}, BackendSettings())
    with backend:
        reader = backend.consumer(ReadSpec(stream, group="acks", consumer_name="me"))
        messages = reader.read(10, 0.5)
        assert [m.value for m in messages] == [b"a", b"b", b"c"]
        xack, xinfo = calls("xack"), calls("xinfo")
        reader.ack(messages[:2])
        assert reader.read(10, 0.1) == []  # reads the XACK's answer first
        assert (calls("xack"), calls("xinfo")) == (xack + 1, xinfo)
        assert [str(p.position) for p in backend.pending(stream, "acks")] == [str(messages[2].position)]
        reader.ack(messages[:2])  # already acked: nothing to say
        reader.settle_acks()
        raw.execute_command("XGROUP", "DESTROY", stream, "acks")
        reader.ack(messages[2:])
        # The words of a read that finds the group gone (before, the ack's were its own:
        # "group 'acks' does not exist", and tail -f -g said either, depending on timing).
        with pytest.raises(NotFoundError, match=r"consumer group 'acks' on Redis stream .* no longer exists .* not recreating it"):
            reader.settle_acks()
        reader.close()


def test_a_closed_group_reader_has_settled_its_last_ack(redis_server, raw, profile, stream):
    """The last window's XACK is answered before the reader hands back what is still
    pending and closes: nothing it acked stays pending."""
    from evrelay.backends.base import ReadSpec

    evrelay("publish", profile, *[f"m{i}" for i in range(5)])
    backend = RedisStreamsBackend({"url": redis_server.url}, BackendSettings())
    with backend:
        reader = backend.consumer(ReadSpec(stream, group="closing", consumer_name="me"))
        messages = reader.read(10, 0.5)
        reader.ack(messages[:3])
        reader.close()
        pending = backend.pending(stream, "closing")
    assert [str(p.position) for p in pending] == [str(m.position) for m in messages[3:]]


def test_the_inline_xadd_encodings_write_what_the_layout_says(redis_server, raw, stream):
    """The producer's hand-made RESP (no header, the lone provenance header of a bridged
    message, key and several headers) is byte for byte the layout's own encoding, and
    Redis stores exactly those fields."""
    from evrelay.envelope import Message

    cases = [
        Message(b"plain"),
        Message(b'{"id": 1}', headers=[("evrelay-source", b"kafka/src/2/5")]),
        Message(b"\xff\x00bin", headers=[("evrelay-source", b"\xfe")]),
        Message(b"v", b"k", [("a", b"1"), ("evrelay-source", b"redis/s/1-0")]),
        Message(b"v", b"k", [("only", b"one")]),
    ]
    backend = RedisStreamsBackend({"url": redis_server.url}, BackendSettings())
    with backend:
        producer = backend.producer(stream)
        for message in cases:
            assert producer._command(message) == producer._layout_command(message)
        producer.send(cases)
        assert producer.flush().delivered == len(cases)
        producer.close()
    stored = [[tuple(fields[i:i + 2]) for i in range(0, len(fields), 2)] for _, fields in raw.execute_command("XRANGE", stream, "-", "+")]
    layout = backend.layout
    expected = [layout.encode(m) for m in cases]
    assert stored == [[tuple(flat[i:i + 2]) for i in range(0, len(flat), 2)] for flat in expected]


def test_unreachable_server_exits_3():
    started = time.monotonic()
    run = evrelay("tail", "redis://127.0.0.1:1/s", "--timeout", "2s")
    assert run.returncode == 3 and run.stdout == b""
    assert time.monotonic() - started < 8
    assert run.err.startswith("evrelay: error: Redis at 127.0.0.1:1 could not be reached")
    assert "Traceback" not in run.err


def test_refused_credentials_exit_3_and_never_print_the_password(redis_server, raw, stream):
    raw.execute_command("ACL", "SETUSER", "alice", "on", ">right-password", "~*", "+@all")
    good = f"redis://alice:right-password@127.0.0.1:{redis_server.port}/0/{stream}"
    assert evrelay("publish", good, "ok").returncode == 0
    bad = f"redis://alice:wrong-password@127.0.0.1:{redis_server.port}/0/{stream}"
    for args in (["tail", bad], ["publish", bad, "x"], ["tail", bad, "-v"]):
        run = evrelay(*args)
        assert run.returncode == 3, run.err
        assert "refused the credentials" in run.err
        assert "wrong-password" not in run.err + run.out
    Path("evrelay.toml").write_text(
        f'[profiles.r]\nbackend = "redis"\nurl = "redis://alice:${{RPW}}@127.0.0.1:{redis_server.port}/0"\nstream = "{stream}"\n'
    )
    run = evrelay("tail", "r", "-o", "raw", env={"RPW": "right-password"})
    assert run.stdout == b"ok\n", run.err
    shown = evrelay("config", "show", "r", env={"RPW": "right-password"})
    assert "right-password" not in shown.out + shown.err


def test_the_fast_xadd_encoder_writes_the_documented_field_layout(redis_server):
    """RedisProducer encodes XADD itself for speed; it must say exactly what
    the evrelay layout (the documented mapping) says, binary and duplicates included."""
    from evrelay.backends.redis_streams.layouts import EvrelayLayout
    from evrelay.envelope import Message

    def resp(*parts: bytes) -> bytes:
        return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)

    backend = RedisStreamsBackend({"url": redis_server.url, "max_len": 50}, BackendSettings())
    with backend:
        producer = backend.producer("layout")
        for message in (
            Message(b"v"),
            Message(b"\xff\x00", b"\xfe", [("a", b"1"), ("a", b"\x80"), ("\u00e9", b"")]),
            Message(b"", None, [("only", b"header")]),
        ):
            fields = [f if isinstance(f, bytes) else f.encode() for f in EvrelayLayout().encode(message)]
            assert producer._command(message) == resp(b"XADD", b"layout", b"MAXLEN", b"~", b"50", b"*", *fields)
        producer.close()


def test_a_multi_stream_group_reader_closes_every_stream_when_one_fails(redis_server, raw, stream):
    """`tail 'redis:~...' -g G`: one stream's last XACK failing late (its group was
    destroyed meanwhile) is still reported, and the other streams' readers are closed
    all the same: what they read and did not ack is handed back (pending, idle for a
    year, for the next reader to claim at once), not left with a reader that is gone."""
    from evrelay.backends.base import ReadSpec
    from evrelay.envelope import Message
    from evrelay.errors import NotFoundError
    from evrelay.multi import MultiConsumer, StreamSource

    names = [f"{stream}-a", f"{stream}-b"]
    backend = RedisStreamsBackend({"url": redis_server.url}, BackendSettings())
    with backend:
        for name in names:
            producer = backend.producer(name)
            producer.publish([Message(b"x"), Message(b"y")])
            producer.close()
        reader = MultiConsumer([StreamSource(name, backend, stream=name) for name in names], ReadSpec(None, group="g", consumer_name="me"))
        got: list = []
        deadline = time.monotonic() + 10
        while len(got) < 4 and time.monotonic() < deadline:
            got += reader.read(10, 0.2)
        assert len(got) == 4
        raw.execute_command("XGROUP", "DESTROY", names[0], "g")
        reader.ack([m for m in got if m.position.stream == names[0]])  # answered 0: read at close
        with pytest.raises(NotFoundError, match=r"consumer group 'g' on Redis stream .* no longer exists"):
            reader.close()
        rows = raw.xpending_range(names[1], "g", "-", "+", 10)
        assert len(rows) == 2
        assert all(row["time_since_delivered"] > 10**9 for row in rows), rows
