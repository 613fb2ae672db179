"""A bridge's sink written from a child process (evrelay/subprocess_producer.py), against a
real redis-server: failures mapped back to the parent's messages, errors kept as they are,
kill -9 of either process, signals, and no process left behind."""

from __future__ import annotations

import io
import json
import os
import signal
import time
import uuid
from pathlib import Path

import pytest

from evrelay.backends.base import Message
from evrelay.errors import BackendUnavailable
from tests.conftest import evrelay
from tests.crash import check_delivery, fill_redis_stream, redis_len, redis_values, spawn, wait_until
from tests.servers import free_port

pytestmark = pytest.mark.redis


def sink_processes(parent: int | None = None, *, tag: str | None = None) -> list[int]:
    """Live `evrelay.subprocess_producer` processes: children of `parent` when given, and
    started under this test's EVRELAY_TEST_TAG (other test runs on the machine may have
    their own)."""
    tag = tag or os.environ.get("EVRELAY_TEST_TAG")
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmdline = Path(f"/proc/{entry}/cmdline").read_bytes()
            stat = Path(f"/proc/{entry}/stat").read_text()
            environ = Path(f"/proc/{entry}/environ").read_bytes() if tag else b""
        except OSError:
            continue
        state, ppid = stat.rpartition(")")[2].split()[:2]
        if b"evrelay.subprocess_producer" not in cmdline or state == "Z":
            continue
        if (parent is None or int(ppid) == parent) and (tag is None or f"EVRELAY_TEST_TAG={tag}".encode() in environ.split(b"\0")):
            found.append(int(entry))
    return found


@pytest.fixture(autouse=True)
def no_sink_process_left_behind(monkeypatch):
    tag = uuid.uuid4().hex
    monkeypatch.setenv("EVRELAY_TEST_TAG", tag)  # inherited by the bridges and their sink processes
    monkeypatch.setenv("EVRELAY_BRIDGE_SINK_PROCESS", "1")  # opt-in: these tests are about the sink process
    yield
    wait_until(lambda: not sink_processes(tag=tag), 15, "the sink processes of this test to end")


def open_subprocess_producer(url: str):
    from evrelay.cli.common import Session
    from evrelay.subprocess_producer import SinkSpec, SubprocessProducer

    session = Session(stdout=io.BytesIO(), stderr=io.StringIO())
    address = session.address(url)
    warnings: list[str] = []
    spec = SinkSpec(address, address.stream, False, None, 5.0, False)
    return SubprocessProducer(spec, label=address.display, warn=warnings.append)


def test_failures_name_the_parents_messages_and_the_rest_is_delivered(redis_server):
    stream = f"fit-{uuid.uuid4().hex[:6]}"
    with open_subprocess_producer(f"redis://127.0.0.1:{redis_server.port}/0/{stream}?layout=fields") as producer:
        producer.ready()
        messages = [Message(b'{"a": "1"}'), Message(b"not json"), Message(b'{"b": "2"}'), Message(b"[1]")]
        producer.send(messages)
        report = producer.flush(30)
        assert report.delivered == 2 and report.pending == 0
        assert [f.message for f in report.failures] == [messages[1], messages[3]]  # the same objects
        assert all(f.permanent and f.unfit for f in report.failures)
        assert "layout 'fields'" in report.failures[0].reason
        # the next window is numbered from zero again
        again = [Message(b"nope"), Message(b'{"c": "3"}')]
        producer.send(again)
        report = producer.flush(30)
        assert report.delivered == 1 and [f.message for f in report.failures] == [again[0]]
    assert redis_len(redis_server.url, stream) == 3


def test_an_unreachable_sink_is_the_same_error_in_the_parent():
    with open_subprocess_producer(f"redis://127.0.0.1:{free_port()}/0/nowhere") as producer, pytest.raises(BackendUnavailable) as raised:
        producer.ready()
    assert "127.0.0.1" in raised.value.message


def test_unreachable_sink_from_the_start_exits_3_with_the_same_message_either_way():
    evrelay("publish", "unreach-src", "a", "b")
    sink = f"redis://127.0.0.1:{free_port()}/0/x"
    apart = evrelay("bridge", "unreach-src", sink, "-n", "1")
    inside = evrelay("bridge", "unreach-src", sink, "-n", "1", "--in-process")
    assert apart.returncode == inside.returncode == 3, apart.err
    error = [line for line in apart.err.splitlines() if line.startswith("evrelay: error")]
    assert error and error == [line for line in inside.err.splitlines() if line.startswith("evrelay: error")]
    assert "Traceback" not in apart.err


def bridge_args(redis_server, source: str, sink: str, *extra: str) -> list[str]:
    url = f"redis://127.0.0.1:{redis_server.port}/0"
    return ["bridge", f"{url}/{source}", f"{url}/{sink}", "--window", "500", *extra]


def the_sink_process_of(proc) -> int:
    wait_until(lambda: sink_processes(proc.pid), 30, "the bridge's sink process")
    (child,) = sink_processes(proc.pid)
    return child


def test_kill_9_of_the_sink_process_stops_the_bridge_with_nothing_acked_unconfirmed(redis_server, tmp_path):
    source, sink = f"k9c-{uuid.uuid4().hex[:6]}", f"k9c-out-{uuid.uuid4().hex[:6]}"
    sent = [f"v-{i:06d}".encode() for i in range(60_000)]
    fill_redis_stream(redis_server.url, source, sent)
    log = tmp_path / "bridge.log"
    proc = spawn(*bridge_args(redis_server, source, sink), log=log)
    child = the_sink_process_of(proc)
    wait_until(lambda: redis_len(redis_server.url, sink) >= 2000, 120, "progress")
    os.kill(child, signal.SIGKILL)
    assert proc.wait(timeout=60) == 1, log.read_text()
    text = log.read_text()
    assert f"(pid {child}) was killed by SIGKILL" in text and "Traceback" not in text
    assert redis_len(redis_server.url, sink) < len(sent)
    # What the first run acked is never read again: had it acked a window its sink process
    # had not confirmed, the restart would not bring it and it would be missing.
    again = evrelay(*bridge_args(redis_server, source, sink, "--idle-timeout", "2s"), timeout=300)
    assert again.returncode == 0, again.err
    check_delivery(sent, redis_values(redis_server.url, sink), max_duplicates=500, label="kill -9 of the sink process")


def test_kill_9_of_the_bridge_takes_its_sink_process_with_it(redis_server, tmp_path):
    source, sink = f"k9p-{uuid.uuid4().hex[:6]}", f"k9p-out-{uuid.uuid4().hex[:6]}"
    fill_redis_stream(redis_server.url, source, [b"x"] * 100)
    proc = spawn(*bridge_args(redis_server, source, sink), log=tmp_path / "bridge.log")
    child = the_sink_process_of(proc)
    wait_until(lambda: redis_len(redis_server.url, sink) == 100, 60, "the copy")
    proc.kill()
    proc.wait(timeout=30)
    wait_until(lambda: child not in sink_processes(), 10, "the sink process to die with its parent")


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 0)])
def test_signals_stop_both_processes_with_the_usual_exit_code(redis_server, tmp_path, signum, code):
    source, sink = f"sig-{uuid.uuid4().hex[:6]}", f"sig-out-{uuid.uuid4().hex[:6]}"
    fill_redis_stream(redis_server.url, source, [f"{i}".encode() for i in range(3000)])
    log = tmp_path / "bridge.log"
    proc = spawn(*bridge_args(redis_server, source, sink), log=log)
    child = the_sink_process_of(proc)
    wait_until(lambda: redis_len(redis_server.url, sink) == 3000, 60, "the copy")
    time.sleep(0.5)  # the last window's ack
    proc.send_signal(signum)  # the sink process, in a session of its own, gets no terminal signal
    assert proc.wait(timeout=60) == code, log.read_text()
    text = log.read_text()
    assert "bridged 3000 message(s)" in text and "3000 acked" in text, text
    wait_until(lambda: child not in sink_processes(), 10, "the sink process to end")


@pytest.mark.parametrize("extra", [(), ("--no-provenance",)], ids=["provenance", "no-provenance"])
def test_the_sink_process_writes_what_the_bridge_writes_in_process(redis_server, extra):
    """The child makes the relay's copies (provenance header, routing by source stream):
    byte for byte what an in-process sink gets, headers and keys included."""
    tag = uuid.uuid4().hex[:6]
    envelopes = [
        '{"value": "a", "key": "k1", "headers": [["h", "1"], ["evrelay-source", "old/hop"]]}',
        '{"value": "b", "key": "k2", "headers": [["h", "2"], ["h", "3"]]}',
        '{"value_b64": "AP8=", "key": "k3", "headers": []}',
    ]
    evrelay("publish", f"same-{tag}", "--input", "json", input="\n".join(envelopes) + "\n")
    url = f"redis://127.0.0.1:{redis_server.port}/0"
    got = {}
    for mode, flags in (("apart", ()), ("inside", ("--in-process",))):
        run = evrelay("bridge", f"same-{tag}", f"{url}/{mode}-{{stream}}-{{key}}", "-g", f"g-{mode}", "--idle-timeout", "1s", *extra, *flags)
        assert run.returncode == 0, run.err
        got[mode] = [
            (json.loads(line).get("value"), json.loads(line).get("value_b64"), json.loads(line).get("headers"))
            for key in ("k1", "k2", "k3")
            for line in evrelay("tail", f"{url}/{mode}-same-{tag}-{key}", "--from", "beginning", "-o", "json").lines()
        ]
    assert got["apart"] == got["inside"] and len(got["apart"]) == 3
    if not extra:
        assert ["evrelay-source", "old/hop"] not in got["apart"][0][2]
        assert got["apart"][0][2][-1][0] == "evrelay-source"


def test_a_routing_template_naming_the_source_stream_is_refused_in_the_sink_process(redis_server):
    """The loop guard of a sink name template: the bridge tells its sink process that the
    sink is on the source's server (it cannot ask the source backend itself)."""
    url = f"redis://127.0.0.1:{redis_server.port}/0"
    source = f"loop-{uuid.uuid4().hex[:6]}"
    fill_redis_stream(redis_server.url, source, [b"x"])
    for flags in ((), ("--in-process",)):
        run = evrelay("bridge", f"{url}/{source}", url + "/{stream}", "--idle-timeout", "1s", *flags)
        assert run.returncode == 1, run.err
        assert "that would relay into itself" in run.err
    assert redis_len(redis_server.url, source) == 1


def test_the_sink_process_is_opt_in(redis_server, monkeypatch):
    """Measured on 2 cores, the sink process was no faster overall (README, Performance,
    third round): a bridge writes in-process unless asked with --sink-process (or
    EVRELAY_BRIDGE_SINK_PROCESS=1)."""
    tag = uuid.uuid4().hex[:6]
    url = f"redis://127.0.0.1:{redis_server.port}/0"
    evrelay("publish", f"{url}/optin-{tag}", "a")
    monkeypatch.delenv("EVRELAY_BRIDGE_SINK_PROCESS")
    plain = evrelay("-v", "bridge", f"{url}/optin-{tag}", f"{url}/optin-out-{tag}", "-n", "1", "--from", "beginning")
    assert plain.returncode == 0, plain.err
    assert "from process" not in plain.err
    asked = evrelay("-v", "bridge", f"{url}/optin-{tag}", f"{url}/optin-out2-{tag}", "-n", "1", "--from", "beginning", "--sink-process")
    assert asked.returncode == 0, asked.err
    assert "from process" in asked.err


def test_a_sink_process_that_cannot_start_is_a_clear_error(monkeypatch):
    """Before: Popen's OSError reached the 'internal error' path."""
    import sys

    from evrelay.errors import EvrelayError

    monkeypatch.setattr(sys, "executable", "/nonexistent/python3")
    with pytest.raises(EvrelayError, match=r"could not start the process writing to .*try --in-process"):
        open_subprocess_producer("redis://127.0.0.1:1/0/s")


def test_a_spec_that_cannot_be_handed_over_leaves_no_sink_process(monkeypatch):
    """Before: the child, started, waited for its spec until the bridge exited (the
    autouse fixture waits 15 s for this test's sink processes to end)."""
    import pickle

    import evrelay.subprocess_producer as module

    def refuse(*args, **kwargs):
        raise pickle.PicklingError("cannot pickle this spec")

    monkeypatch.setattr(module.pickle, "dumps", refuse)
    with pytest.raises(pickle.PicklingError):
        open_subprocess_producer("redis://127.0.0.1:1/0/s")
    wait_until(lambda: not sink_processes(), 5, "the sink process to end")


def test_close_does_not_wait_for_a_child_stuck_writing_a_large_answer(redis_server):
    """A window whose answer is over the pipe's 1 MB (here 30,000 unfit messages, a failure
    each) and a bridge closing without reading it (stopped mid-window, an error): the
    child blocks writing the answer and never reads `C`. Before: close() waited the full
    15 s and then killed it; now it drains the answer while it waits."""
    stream = f"big-{uuid.uuid4().hex[:6]}"
    producer = open_subprocess_producer(f"redis://127.0.0.1:{redis_server.port}/0/{stream}?layout=fields")
    producer.ready()
    producer.send([Message(b"not json %d" % i) for i in range(30_000)])
    time.sleep(1.0)  # the child has written what fits and is blocked on the rest
    started = time.monotonic()
    producer.close()
    took = time.monotonic() - started
    assert producer.process.returncode == 0, "killed, not ended"
    assert took < 10, f"close() took {took:.1f}s"


def test_close_with_both_pipes_full_neither_process_waits_for_the_other(redis_server):
    """As above with a second window queued behind the first: the pipe to the child is
    full too, so a blocking `C` would have held the parent while the child held on to
    its answer (before the fix: a wait of the full 15 s, then a kill)."""
    stream = f"big-{uuid.uuid4().hex[:6]}"
    producer = open_subprocess_producer(f"redis://127.0.0.1:{redis_server.port}/0/{stream}?layout=fields")
    producer.ready()
    producer.send([Message(b"not json %d" % i) for i in range(30_000)])
    time.sleep(1.0)
    # One more window of exactly the pipe's capacity, frame included: the pipe to the child is full.
    import fcntl
    import marshal

    from evrelay.subprocess_producer import FRAME

    capacity = fcntl.fcntl(producer._to_child, getattr(fcntl, "F_GETPIPE_SZ", 1032))
    filler = Message(b"")
    overhead = FRAME.size + len(marshal.dumps([(filler.value, filler.key, filler.headers, filler.timestamp, filler.fields, None)]))
    filler.value = b"x" * (capacity - overhead)
    producer.send([filler])
    os.set_blocking(producer._to_child, False)
    with pytest.raises(BlockingIOError):
        os.write(producer._to_child, b"C")  # the pipe is full indeed
    os.set_blocking(producer._to_child, True)
    import threading

    closing = threading.Thread(target=producer.close, daemon=True)
    closing.start()
    closing.join(10)
    if closing.is_alive():  # before the fix: both processes blocked for good
        producer.process.kill()
        pytest.fail("close() blocked writing `C` into the full pipe while the child blocked writing its answer")
    assert producer.process.returncode == 0
