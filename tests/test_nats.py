"""NATS JetStream through the CLI against a real nats-server: addresses and profiles,
stream creation, every position form, groups (ack, claim, rewind), inspection, interop
with nats-py as a plain client, credentials, and the missing-client hint."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
import uuid
from pathlib import Path

import pytest

from evrelay.backends.nats.mapping import HEADERS_HEADER, KEY_B64_HEADER, KEY_HEADER
from evrelay.timestamps import format_ms
from tests.conftest import REPO, evrelay
from tests.crash import first_line_while_feeding
from tests.servers import NatsServer

pytestmark = pytest.mark.nats


@pytest.fixture
def stream():
    return f"s-{uuid.uuid4().hex[:8]}"


@pytest.fixture
def address(nats_server, stream):
    """The stream's inline address, creating it on first publish, with a short ack_wait."""
    return f"{nats_server.url}/{stream}?create=true&ack_wait=2s"


def envelopes(run) -> list[dict]:
    assert run.returncode == 0, run.err
    return [json.loads(line) for line in run.lines()]


def run_nats(url: str, coro_fn):
    """Run `coro_fn(nc)` with a plain nats-py client (a client evrelay did not write)."""
    import nats

    async def main():
        nc = await nats.connect(url)
        try:
            return await coro_fn(nc)
        finally:
            await nc.close()

    return asyncio.run(main())


# --- publish, create, positions ----------------------------------------------------------


def test_publish_to_a_missing_stream_is_refused_unless_create_is_asked(nats_server, stream):
    run = evrelay("publish", f"{nats_server.url}/{stream}", "a")
    assert run.returncode == 1
    assert f"NATS stream {stream!r} does not exist" in run.err and "create=true" in run.err
    assert "Traceback" not in run.err
    run = evrelay("publish", f"{nats_server.url}/{stream}?create=true", "a", "b")
    assert run.returncode == 0, run.err
    assert f"created NATS stream {stream!r}" in run.err
    # A profile says it once for every command.
    Path("evrelay.toml").write_text(
        f'[profiles.n]\nbackend = "nats"\nurl = "{nats_server.url}"\nstream = "{stream}"\n'
        f'[profiles.fresh]\nbackend = "nats"\nurl = "{nats_server.url}"\ncreate = true\nsubject = "fresh.in"\n'
    )
    assert evrelay("publish", "n", "c").returncode == 0
    assert [e["value"] for e in envelopes(evrelay("tail", "n", "-o", "json"))] == ["a", "b", "c"]
    fresh = f"f-{uuid.uuid4().hex[:6]}"
    assert evrelay("publish", f"fresh:{fresh}", "x").returncode == 0

    async def subjects(nc):
        info = await nc.jetstream().stream_info(fresh)
        return info.config.subjects

    assert run_nats(nats_server.url, subjects) == ["fresh.in"]


def test_unknown_option_and_bad_names_are_usage_errors(nats_server, address, stream):
    assert evrelay("publish", address, "a").returncode == 0
    run = evrelay("tail", f"{nats_server.url}/{stream}?colour=red")
    assert run.returncode == 2 and "unknown nats option 'colour'" in run.err
    run = evrelay("tail", f"{nats_server.url}/a.b")
    assert run.returncode == 2 and "not a valid NATS stream name" in run.err
    run = evrelay("tail", f"{nats_server.url}/{stream}", "--from", "1700000000000-0")
    assert run.returncode == 2
    run = evrelay("tail", f"{nats_server.url}/{stream}", "--from", "stored")
    assert run.returncode == 2 and "needs a consumer group" in run.err
    run = evrelay("tail", f"{nats_server.url}/{stream}?max_ack_pending=lots")
    assert run.returncode == 2 and "max_ack_pending" in run.err


def test_tail_every_position_form(address, stream):
    assert evrelay("publish", address, *[f"m{i}" for i in range(1, 6)]).returncode == 0
    time.sleep(0.05)
    cut = format_ms(int(time.time() * 1000))
    time.sleep(0.05)
    assert evrelay("publish", address, "m6", "m7").returncode == 0

    def tail(*args: str) -> list[str]:
        run = evrelay("tail", address, "-o", "raw", *args)
        assert run.returncode == 0, run.err
        return run.out.split()

    assert tail() == [f"m{i}" for i in range(1, 8)]
    assert tail("-n", "2") == ["m6", "m7"]
    assert tail("--from", "beginning", "-n", "3") == ["m1", "m2", "m3"]
    assert tail("--from", "3", "--to", "5") == ["m3", "m4", "m5"]
    assert tail("--from", cut) == ["m6", "m7"]
    assert tail("--from", "beginning", "--to", cut) == [f"m{i}" for i in range(1, 6)]
    assert tail("--from", "-1h", "-n", "1") == ["m1"]
    assert tail("--from", "end") == []
    run = evrelay("tail", address, "--format", "{id} {stream} {value}", "--from", "7")
    assert run.out.strip() == f"7 {stream} m7"


def test_reads_of_many_full_batches_are_whole_ordered_and_prompt(address):
    """A plain read sends its next pull request while the last batch is printed (5,000 a
    batch): 30,000 messages end on whole batches and mid-batch, with --to and -n cutting
    inside the batch read ahead. A read-ahead request counted wrongly waited for the
    client's 30 s timeout between batches (when the request had delivered in full before
    the next read: -o json, slower to print, makes that the rule)."""
    lines = [f"m{i}" for i in range(1, 30_001)]
    assert evrelay("publish", address, "-q", input="\n".join(lines) + "\n").returncode == 0

    def tail(*args: str) -> list[str]:
        started = time.monotonic()
        run = evrelay("tail", address, "-o", "raw", *args)
        assert run.returncode == 0, run.err
        assert time.monotonic() - started < 15, f"tail {args} took {time.monotonic() - started:.1f}s"
        return run.out.split()

    started = time.monotonic()
    everything = evrelay("tail", address, "--from", "beginning", "-o", "json")
    assert time.monotonic() - started < 15, f"tail -o json took {time.monotonic() - started:.1f}s"
    assert [envelope["value"] for envelope in envelopes(everything)] == lines
    assert tail("--from", "beginning") == lines
    assert tail("--from", "beginning", "--to", "10000") == lines[:10_000]
    assert tail("--from", "2", "--to", "7003") == lines[1:7003]
    assert tail("--from", "beginning", "-n", "5001") == lines[:5001]
    assert tail("--from", "5001") == lines[5000:]


def test_follow_from_end_sees_a_new_message_and_expect_gates(address):
    assert evrelay("publish", address, "old").returncode == 0
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=str(REPO))
    follower = subprocess.Popen(
        [sys.executable, "-m", "evrelay", "tail", address, "-f", "--from", "end", "-o", "raw", "--expect", "1", "--timeout", "30s"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    first = first_line_while_feeding(follower, lambda: evrelay("publish", address, "new"))
    out, err = follower.communicate(timeout=60)
    assert follower.returncode == 0, err
    assert first + out == b"new\n"  # --expect 1: the first new message, and it stops there
    run = evrelay("tail", address, "--from", "end", "--expect", "1", "--timeout", "1s")
    assert run.returncode == 4


def test_follow_waits_for_a_stream_that_does_not_exist_yet(address):
    import subprocess
    import sys

    env = dict(os.environ, PYTHONPATH=str(REPO))
    follower = subprocess.Popen(
        [sys.executable, "-m", "evrelay", "tail", address, "-f", "-o", "raw", "--expect", "2", "--timeout", "30s"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    time.sleep(2.0)
    assert follower.poll() is None, follower.communicate()[1]
    assert evrelay("publish", address, "first", "second").returncode == 0
    out, err = follower.communicate(timeout=60)
    assert follower.returncode == 0, err
    assert out.split() == [b"first", b"second"]


def test_key_headers_and_binary_survive_a_json_round_trip(address):
    lines = [
        {"value_b64": base64.b64encode(b"\xff\x00bin").decode(), "key_b64": base64.b64encode(b"\xfe").decode(),
         "headers": [["a", "1"], ["a", "2"], ["bin", {"b64": "gIE="}], [" spaced", " x "]]},
        {"value": "", "key": "", "headers": [["empty", ""]]},
        {"value": "héllo", "key": "ключ", "headers": [["trace-id", "abc"]]},
    ]
    payload = "".join(json.dumps(line) + "\n" for line in lines)
    assert evrelay("publish", address, "--input", "json", input=payload).returncode == 0
    got = envelopes(evrelay("tail", address, "-o", "json"))
    for sent, back in zip(lines, got, strict=True):
        for field in ("value", "value_b64", "key", "key_b64", "headers"):
            assert back.get(field) == sent.get(field), (field, sent, back)


# --- interop with a client nobody here wrote -----------------------------------------------


def test_messages_published_by_nats_py_read_exactly(nats_server, address, stream):
    assert evrelay("publish", address, "first").returncode == 0

    async def publish(nc):
        js = nc.jetstream()
        await js.publish(stream, b"\x00\xffraw bytes")
        await js.publish(stream, b'{"order": 7}', headers={"Nats-Msg-Id": "order-7", "tenant": "acme"})
        await nc.publish(stream, b"core publish, captured by the stream")
        await nc.flush()

    run_nats(nats_server.url, publish)
    time.sleep(0.2)
    got = envelopes(evrelay("tail", address, "--from", "2", "-o", "json"))
    assert base64.b64decode(got[0]["value_b64"]) == b"\x00\xffraw bytes" and got[0]["headers"] == []
    assert got[1]["value"] == '{"order": 7}' and "key" not in got[1]
    assert got[1]["headers"] == [["Nats-Msg-Id", "order-7"], ["tenant", "acme"]]
    assert got[2]["value"] == "core publish, captured by the stream"
    assert [g["id"] for g in got] == [2, 3, 4]


def test_evrelay_messages_read_exactly_by_a_plain_nats_py_subscriber(nats_server, address, stream):
    lines = [
        {"value": "plain", "key": "user-1", "headers": [["source", "ci"], ["attempt", "2"]]},
        {"value_b64": base64.b64encode(b"\x80\x81").decode(), "headers": [["a", "1"], ["a", "2"]]},
    ]
    payload = "".join(json.dumps(line) + "\n" for line in lines)
    assert evrelay("publish", address, "--input", "json", input=payload).returncode == 0

    async def read(nc):
        js = nc.jetstream()
        sub = await js.pull_subscribe(stream, durable=None, stream=stream)
        msgs = await sub.fetch(2, timeout=5)
        core = await js.get_msg(stream, 1)
        return [(m.data, m.headers) for m in msgs], (core.data, core.headers)

    (first, second), stored = run_nats(nats_server.url, read)
    assert first == (b"plain", {KEY_HEADER: "user-1", "source": "ci", "attempt": "2"})
    assert stored == first
    data, headers = second
    assert data == b"\x80\x81"
    # Repeated names: the exact list in Evrelay-Headers, the first value natively.
    assert headers["a"] == "1"
    assert json.loads(headers[HEADERS_HEADER]) == [["a", "MQ=="], ["a", "Mg=="]]
    assert KEY_B64_HEADER not in headers and KEY_HEADER not in headers


# --- groups --------------------------------------------------------------------------------


def test_group_no_ack_then_ack_by_envelope_and_by_claim(nats_server, stream):
    # An ack_wait of its own, longer than the fixture's 2 s: claimed messages are due again
    # after ack_wait, and under load the next `ack --claim` process took longer than 2 s to
    # start (it then rightly claimed b and c again: 6 failures in 6 runs beside 8 busy loops).
    ack_wait = 5.0
    address = f"{nats_server.url}/{stream}?create=true&ack_wait={ack_wait:g}s"
    assert evrelay("publish", address, "a", "b", "c").returncode == 0
    taken = evrelay("tail", address, "-g", "billing", "--no-ack", "-o", "json")
    assert [e["value"] for e in envelopes(taken)] == ["a", "b", "c"]
    assert "created consumer group 'billing'" in taken.err
    lag = envelopes(evrelay("lag", address, "-g", "billing", "-o", "json"))
    assert lag[0]["pending"] == 3 and lag[0]["lag"] == 0
    first = taken.stdout.splitlines()[0] + b"\n"
    run = evrelay("ack", address, "-g", "billing", input=first)
    assert run.returncode == 0 and "acked 1 of 1" in run.err
    # The two left unacked are due for redelivery after the group's ack_wait: then a claim
    # takes them. When exactly is the server's business (its redelivery timer ran late
    # under load: a claim 5.5 s after the tail found nothing), so claim until both came.
    time.sleep(ack_wait)
    claimed_lines: list[bytes] = []
    claiming = None
    deadline = time.monotonic() + 60
    while len(claimed_lines) < 2 and time.monotonic() < deadline:
        started = time.monotonic()
        claimed = evrelay("ack", address, "-g", "billing", "--claim", "--min-idle", "5s", "-o", "json")
        assert claimed.returncode == 0, claimed.err
        if claimed.lines() and claiming is None:
            claiming = started
        claimed_lines += claimed.lines()
    assert sorted(json.loads(line)["value"] for line in claimed_lines) == ["b", "c"]
    again = evrelay("ack", address, "-g", "billing", "--claim", "--min-idle", "5s", "-o", "json")
    if time.monotonic() - claiming < ack_wait:  # claimed no earlier than `claiming`: not due yet
        assert again.out == ""
    else:  # so slow a machine that they may be due again: then only they are claimed again
        assert {e["value"] for e in envelopes(again)} <= {"b", "c"}
    run = evrelay("ack", address, "-g", "billing", input=b"".join(line + b"\n" for line in claimed_lines))
    assert "acked 2 of 2" in run.err
    lag = envelopes(evrelay("lag", address, "-g", "billing", "-o", "json"))
    assert lag[0]["pending"] == 0
    assert evrelay("tail", address, "-g", "billing", "-o", "raw").out == ""


def test_ack_takes_the_sequence_numbers_tail_prints(address):
    """`ack ID...` parses IDs through the backend: NATS stream sequences, no piping needed."""
    assert evrelay("publish", address, "a", "b", "c").returncode == 0
    taken = evrelay("tail", address, "-g", "billing", "--no-ack", "--format", "{id}")
    ids = taken.out.split()
    assert ids == ["1", "2", "3"], taken.err
    run = evrelay("ack", address, "-g", "billing", *ids[:2])
    assert run.returncode == 0 and "acked 2 of 2" in run.err, run.err
    lag = envelopes(evrelay("lag", address, "-g", "billing", "-o", "json"))
    assert lag[0]["pending"] == 1
    bad = evrelay("ack", address, "-g", "billing", "1700000000000-0")
    assert bad.returncode == 2
    assert "'1700000000000-0' is an entry ID; nats messages are acked by a stream sequence number (42)" in bad.err


def test_a_live_reader_keeps_what_it_holds_and_a_killed_ones_comes_back(nats_server, stream):
    import signal
    import subprocess
    import sys

    address = f"{nats_server.url}/{stream}?create=true&ack_wait=1s"
    assert evrelay("publish", address, "v0", "v1").returncode == 0
    env = dict(os.environ, PYTHONPATH=str(REPO))
    live = subprocess.Popen(
        [sys.executable, "-m", "evrelay", "tail", address, "-g", "w", "-f", "--no-ack", "-o", "raw"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            lag = evrelay("lag", address, "-g", "w", "-o", "json")
            if lag.returncode == 0 and json.loads(lag.out)["pending"] >= 2:
                break
            time.sleep(0.2)
        # Three times the group's ack_wait: the live reader's in-progress acks keep
        # JetStream from handing its messages to anyone else.
        time.sleep(3.0)
        assert evrelay("tail", address, "-g", "w", "-o", "raw").out == ""
    finally:
        live.send_signal(signal.SIGKILL)
        held = live.communicate(timeout=30)[0].decode().split()
    assert held == ["v0", "v1"]
    # Killed: after ack_wait its messages go to the next reader.
    deadline = time.monotonic() + 20
    again: list[str] = []
    while len(again) < 2 and time.monotonic() < deadline:
        again += evrelay("tail", address, "-g", "w", "-o", "raw").out.split()
        time.sleep(0.3)
    assert sorted(again) == ["v0", "v1"]


def test_group_rewind_by_time_redelivers_that_window(address):
    assert evrelay("publish", address, "old1", "old2").returncode == 0
    time.sleep(0.05)
    cut = format_ms(int(time.time() * 1000))
    time.sleep(0.05)
    assert evrelay("publish", address, "new1", "new2").returncode == 0
    assert evrelay("tail", address, "-g", "rw", "-o", "raw").out.split() == ["old1", "old2", "new1", "new2"]
    plan = evrelay("replay", address, "-g", "rw", "--from", cut, "--yes", "-o", "json")
    assert plan.returncode == 0, plan.err
    assert envelopes(plan)[0]["affected"] == 2
    assert evrelay("tail", address, "-g", "rw", "-o", "raw").out.split() == ["new1", "new2"]
    assert evrelay("replay", address, "-g", "rw", "--from", "beginning", "--yes").returncode == 0
    assert evrelay("tail", address, "-g", "rw", "-o", "raw").out.split() == ["old1", "old2", "new1", "new2"]


def test_group_with_to_is_refused(address):
    assert evrelay("publish", address, "a").returncode == 0
    run = evrelay("tail", address, "-g", "g", "--to", "end")
    assert run.returncode == 2 and "the nats backend does not support ending a group read at a position (--to with -g)" in run.err
    assert "-n or --idle-timeout" in run.err


# --- inspection ------------------------------------------------------------------------------


def test_ls_info_groups_lag_and_health(nats_server, address, stream):
    assert evrelay("publish", address, "a", "b", "c").returncode == 0
    assert evrelay("tail", address, "-g", "readers", "-n", "1", "-o", "raw").out == "a\n"
    listed = {row["name"]: row for row in envelopes(evrelay("ls", nats_server.url, "-o", "json"))}
    assert listed[stream]["length"] == 3
    info = envelopes(evrelay("info", address, "-o", "json"))[0]
    assert info["backend"] == "nats" and info["length"] == 3
    assert info["partitions"][0]["first"] == "1" and info["partitions"][0]["last"] == "3"
    assert info["partitions"][0]["first_time"].endswith("Z")
    assert [g["name"] for g in info["groups"]] == ["readers"]
    (group,) = envelopes(evrelay("groups", address, "-o", "json"))
    assert (group["name"], group["lag"], group["pending"], group["position"]) == ("readers", 2, 0, "1")
    assert evrelay("lag", address, "-g", "readers", "--max", "5").returncode == 0
    assert evrelay("lag", address, "-g", "readers", "--max", "1").returncode == 4
    health = evrelay("health", nats_server.url, "-o", "json")
    assert health.returncode == 0 and "JetStream" in envelopes(health)[0]["detail"]


def test_health_wait_until_the_server_comes_up(nats_server):  # nats_server: skip where nats-server is missing
    import subprocess
    import sys

    server = NatsServer()
    env = dict(os.environ, PYTHONPATH=str(REPO))
    waiter = subprocess.Popen(
        [sys.executable, "-m", "evrelay", "health", server.url, "--wait", "60s"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    try:
        time.sleep(2.0)
        assert waiter.poll() is None, "health --wait must keep waiting while the server is down"
        with server:
            _, err = waiter.communicate(timeout=60)
    finally:
        if waiter.poll() is None:
            waiter.kill()
    assert waiter.returncode == 0, err
    assert evrelay("health", server.url, "--wait", "1s").returncode == 4


# --- credentials and the client library ----------------------------------------------------------


def test_credentials_in_the_url_work_and_are_never_printed(nats_server):
    with NatsServer(user="relay", password="s3cret-pw") as server:
        good = f"nats://relay:s3cret-pw@127.0.0.1:{server.port}/auth?create=true"
        run = evrelay("publish", good, "x", "-v")
        assert run.returncode == 0, run.err
        assert "s3cret-pw" not in run.err
        bad = f"nats://relay:wrong-pw@127.0.0.1:{server.port}/auth"
        run = evrelay("tail", bad, "-v")
        assert run.returncode == 3
        assert "refused the credentials" in run.err
        assert "wrong-pw" not in run.err and "s3cret-pw" not in run.err


def test_a_missing_nats_py_gives_the_install_command(tmp_path, nats_server):
    shim = tmp_path / "shim"
    shim.mkdir()
    (shim / "nats.py").write_text("raise ImportError(\"No module named 'nats'\")\n")
    env = {"PYTHONPATH": f"{shim}{os.pathsep}{REPO}"}
    run = evrelay("tail", f"{nats_server.url}/anything", env=env)
    assert run.returncode == 2, run.err
    assert "nats-py" in run.err and "pip install 'evrelay[nats]'" in run.err
    assert "internal error" not in run.err and "Traceback" not in run.err
    # Nothing else needs it: --help does not import it.
    assert evrelay("--help", env=env).returncode == 0


def test_a_null_value_is_refused_by_the_producer(nats_server, stream):
    from evrelay.backends.base import BackendSettings, Message
    from evrelay.backends.nats import NatsBackend

    with (
        NatsBackend({"url": nats_server.url, "create": True}, BackendSettings(timeout=5)) as backend,
        backend.producer(stream) as producer,
    ):
        producer.send([Message(None, b"k"), Message(b"kept")])  # type: ignore[arg-type]
        report = producer.flush(10)
    assert report.delivered == 1
    (failure,) = report.failures
    assert failure.permanent and "tombstone" in failure.reason


# --- byte-exact round trips through every other backend --------------------------------------


@pytest.mark.parametrize("other", ["local", "file", "redis", "kafka"])
def test_tricky_messages_round_trip_byte_exact_through_every_backend(request, nats_server, other, tmp_path):
    from tests.contract import AWKWARD

    def sink_address() -> str:
        name = f"rt-{uuid.uuid4().hex[:8]}"
        if other == "local":
            return name
        if other == "file":
            return f"file:{tmp_path / name}.jsonl"
        if other == "redis":
            return f"redis://127.0.0.1:{request.getfixturevalue('redis_server').port}/0/{name}"
        from tests.test_contract_kafka import create_topic

        bootstrap = request.getfixturevalue("kafka_server").bootstrap
        return f"kafka://{bootstrap}/{create_topic(bootstrap, name)}"

    def envelope(message) -> dict:
        out = {"value_b64": base64.b64encode(message.value).decode()}
        if message.key is not None:
            out["key_b64"] = base64.b64encode(message.key).decode()
        out["headers"] = [[n, {"b64": base64.b64encode(v).decode()}] for n, v in message.headers]
        return out

    first = f"{nats_server.url}/rt-{uuid.uuid4().hex[:8]}?create=true"
    last = f"{nats_server.url}/rt-{uuid.uuid4().hex[:8]}?create=true"
    middle = sink_address()
    payload = "".join(json.dumps(envelope(m)) + "\n" for m in AWKWARD)
    assert evrelay("publish", first, "--input", "json", input=payload).returncode == 0
    for source, sink in ((first, middle), (middle, last)):
        out = evrelay("tail", source, "-n", str(len(AWKWARD)), "-o", "json")
        assert out.returncode == 0, out.err
        run = evrelay("publish", sink, "--input", "json", input=out.stdout)
        assert run.returncode == 0, run.err
    from evrelay.envelope import decode_envelope

    back = [decode_envelope(line) for line in evrelay("tail", last, "-o", "json").lines()]
    assert [(m.value, m.key, m.headers) for m in back] == [(m.value, m.key, m.headers) for m in AWKWARD]


def test_group_names_nats_does_not_allow_still_work(address, tmp_path):
    """A bridge's default group (`evrelay-bridge-file-copy.jsonl`) or `-g team.billing`
    contain dots, which JetStream consumer names may not: they map to a durable name."""
    assert evrelay("publish", address, "a", "b").returncode == 0
    assert evrelay("tail", address, "-g", "team.billing", "-n", "1", "-o", "raw").out == "a\n"
    assert [g["name"] for g in envelopes(evrelay("groups", address, "-o", "json"))] == ["team.billing"]
    lag = envelopes(evrelay("lag", address, "-g", "team.billing", "-o", "json"))
    assert lag[0]["lag"] == 1
    copy = tmp_path / "copy.jsonl"
    run = evrelay("bridge", address, f"file:{copy}", "--idle-timeout", "1s")
    assert run.returncode == 0, run.err
    assert [json.loads(line)["value"] for line in copy.read_text().splitlines()] == ["a", "b"]


def test_an_unconfirmed_message_stays_pending_across_flushes_until_its_ack_comes(nats_server, stream):
    """A flush that times out must not forget what it was waiting for: the relay flushes
    again while anything is pending and acks the source when nothing is."""
    import signal

    from evrelay.backends.base import BackendSettings, Message
    from evrelay.backends.nats import NatsBackend
    from evrelay.backends.nats.producer import NatsProducer

    def freeze(server: NatsServer) -> None:
        assert server.proc is not None
        server.proc.send_signal(signal.SIGSTOP)
        deadline = time.monotonic() + 10
        while Path(f"/proc/{server.proc.pid}/stat").read_text().split(")")[-1].split()[0] != "T":
            assert time.monotonic() < deadline, "nats-server did not stop"
            time.sleep(0.01)

    with NatsServer() as server, NatsBackend({"url": server.url, "create": True}, BackendSettings(timeout=5)) as backend:
        producer = backend.producer(stream)
        assert isinstance(producer, NatsProducer)
        assert server.proc is not None
        freeze(server)
        try:
            producer.send([Message(b"held up")])
            assert producer.flush(0.5).pending == 1
            assert producer.flush(0.5).pending == 1
        finally:
            server.proc.send_signal(signal.SIGCONT)
        report = producer.flush(10)
        assert (report.delivered, report.pending, report.failures) == (1, 0, [])
        producer.UNCONFIRMED_AFTER = 0.2
        freeze(server)
        try:
            producer.send([Message(b"never confirmed")])
            time.sleep(0.3)
            report = producer.flush(0.2)
        finally:
            server.proc.send_signal(signal.SIGCONT)
        assert report.pending == 0 and len(report.failures) == 1 and not report.failures[0].permanent
        producer.close()


def test_a_stream_made_by_another_program_with_wildcard_subjects(nats_server):
    name = f"ORDERS{uuid.uuid4().hex[:6]}"

    async def create(nc):
        await nc.jetstream().add_stream(name=name, subjects=[f"{name}.>"])

    run_nats(nats_server.url, create)
    address = f"{nats_server.url}/{name}"
    run = evrelay("publish", address, "x")
    assert run.returncode == 2 and f"{name}.>" in run.err and "subject" in run.err
    assert evrelay("publish", f"{address}?subject={name}.new", "created").returncode == 0
    assert evrelay("publish", f"{address}?subject={name}.paid", "paid").returncode == 0
    assert evrelay("tail", address, "-o", "raw").out.split() == ["created", "paid"]


def test_a_message_over_the_servers_max_payload_is_refused_by_name(address):
    big = "x" * (1024 * 1024 + 1)
    run = evrelay("publish", address, "--input", "raw", input=big)
    assert run.returncode == 1, run.err
    assert "max_payload" in run.err and "Traceback" not in run.err
    assert evrelay("publish", address, "small").returncode == 0


def test_caught_up_only_when_the_server_says_there_is_nothing(nats_server, stream):
    """What --idle-timeout counts as idleness (issue 12): an answered empty read, not a
    read that brought messages, nor one the server never answered (an outage)."""
    import signal

    from evrelay.backends.base import BackendSettings, Message, ReadSpec
    from evrelay.backends.nats import NatsBackend
    from evrelay.positions import Beginning

    with NatsServer() as server, NatsBackend({"url": server.url, "create": True}, BackendSettings(timeout=1)) as backend:
        with backend.producer(stream) as producer:
            assert producer.publish([Message(b"a"), Message(b"b")], timeout=10).ok
        for spec in (ReadSpec(stream, start=Beginning(), follow=True), ReadSpec(stream, group="g", follow=True)):
            with backend.consumer(spec) as consumer:
                assert len(consumer.read(10, 0.3)) == 2
                assert not consumer.caught_up
                assert consumer.read(10, 0.3) == []
                assert consumer.caught_up
                consumer.ack([])
                assert server.proc is not None
                server.proc.send_signal(signal.SIGSTOP)
                try:
                    assert consumer.read(10, 0.3) == []
                    assert not consumer.caught_up
                finally:
                    server.proc.send_signal(signal.SIGCONT)


def test_bridging_a_stream_into_itself_is_refused_whatever_the_options(address, nats_server, stream):
    assert evrelay("publish", address, "a").returncode == 0
    run = evrelay("bridge", address, f"{nats_server.url}/{stream}", "--idle-timeout", "1s")
    assert run.returncode == 2 and "into itself" in run.err


# --- main's cross-backend scenarios, run on NATS too ------------------------------------------


def test_lag_max_age_gates_on_the_oldest_unconsumed_message(address):
    from tests.test_lag_age import test_max_age_gates_on_the_oldest_unconsumed_message as scenario

    scenario(address)


def test_an_unacked_message_counts_as_unconsumed_for_max_age(address):
    assert evrelay("publish", address, "a", "b").returncode == 0
    assert evrelay("tail", address, "-g", "ops", "--no-ack", "-o", "raw").lines() == [b"a", b"b"]
    time.sleep(1.2)
    run = evrelay("lag", address, "-g", "ops", "--max-age", "1s", "-o", "json")
    assert run.returncode == 4, run.err
    [row] = [json.loads(line) for line in run.lines()]
    assert (row["lag"], row["pending"]) == (0, 2) and row["age_s"] >= 1.0


def test_delete_group_asks_then_deletes_and_the_group_starts_over(address):
    from tests.test_group_delete import test_delete_group_asks_then_deletes_and_the_group_starts_over as scenario

    scenario(address)


def test_a_pattern_reads_every_matching_nats_stream(nats_server):
    tag = uuid.uuid4().hex[:6]
    for stream, value in ((f"eu{tag}", "e1"), (f"us{tag}", "u1"), (f"eu{tag}", "e2"), (f"pay{tag}", "p1")):
        assert evrelay("publish", f"{nats_server.url}/{stream}?create=true", value).returncode == 0
        time.sleep(0.01)
    run = evrelay("tail", f"{nats_server.url}/~(eu|us){tag}", "--from", "beginning", "-o", "raw")
    assert run.returncode == 0, run.err
    assert sorted(run.out.split()) == ["e1", "e2", "u1"]
