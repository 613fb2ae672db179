"""The `local` backend beyond the contract: several processes at once, following, trimming."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from evrelay.backends.base import ReadSpec
from evrelay.backends.local import LocalBackend
from evrelay.envelope import Message
from evrelay.positions import Beginning
from tests.conftest import REPO, evrelay


def spawn(*args: str, stdin: bytes | None = None) -> subprocess.Popen:
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "evrelay", *args], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)


def test_concurrent_writers_and_group_readers_lose_and_duplicate_nothing():
    writers = [spawn("publish", "shared", "-q") for _ in range(4)]
    for n, proc in enumerate(writers):
        proc.stdin.write(b"".join(f"w{n}-{i}\n".encode() for i in range(500)))
        proc.stdin.close()
    readers = [spawn("tail", "shared", "-g", "crew", "--consumer", f"r{n}", "-f", "--idle-timeout", "3s", "-o", "json")
               for n in range(3)]
    for proc in writers:
        assert proc.wait(timeout=60) == 0, proc.stderr.read()
    received: list[dict] = []
    for proc in readers:
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
        received += [json.loads(line) for line in out.splitlines()]
    expected = {f"w{n}-{i}" for n in range(4) for i in range(500)}
    assert sorted(e["value"] for e in received) == sorted(expected)
    ids = [e["id"] for e in evrelay_all("shared")]
    assert len(ids) == len(set(ids)) == 2000
    # IDs increase in commit order
    parsed = [tuple(map(int, i.split("-"))) for i in ids]
    assert parsed == sorted(parsed)


def evrelay_all(stream: str) -> list[dict]:
    run = evrelay("tail", stream, "--from", "beginning", "-o", "json")
    return [json.loads(line) for line in run.lines()]


def test_follow_wakes_within_a_fraction_of_a_second_and_idles_cheaply(tmp_path):
    path = str(tmp_path / "f.db")
    with LocalBackend({"path": path}) as backend:
        consumer = backend.consumer(ReadSpec("s", start=Beginning(), follow=True))
        cpu_before = time.process_time()
        assert consumer.read(10, 1.0) == []
        idle_cpu = time.process_time() - cpu_before
        # Another connection (as another process would be) commits.
        LocalBackend({"path": path}).producer("s").publish([Message(b"x")])
        started = time.monotonic()
        got = consumer.read(10, 5.0)
        assert [m.value for m in got] == [b"x"]
        assert time.monotonic() - started < 0.5
    # One second of following must cost far less than a second of CPU (no busy loop).
    assert idle_cpu < 0.3


def test_max_len_trims_oldest(tmp_path):
    with LocalBackend({"path": str(tmp_path / "t.db"), "max_len": 3}) as backend:
        backend.producer("s").publish([Message(str(i).encode()) for i in range(5)])
        backend.producer("s").publish([Message(b"5")])
        with backend.consumer(ReadSpec("s", start=Beginning())) as consumer:
            assert [m.value for m in consumer.read(10, 0.1)] == [b"3", b"4", b"5"]


def test_ids_stay_monotonic_when_the_clock_goes_back(tmp_path, monkeypatch):
    import evrelay.backends.local.producer as local

    with LocalBackend({"path": str(tmp_path / "c.db")}) as backend:
        monkeypatch.setattr(local, "now_ms", lambda: 2_000_000_000_000)
        backend.producer("s").publish([Message(b"a"), Message(b"b")])
        monkeypatch.setattr(local, "now_ms", lambda: 1_000_000_000_000)
        backend.producer("s").publish([Message(b"c")])
        with backend.consumer(ReadSpec("s", start=Beginning())) as consumer:
            ids = [m.position.id for m in consumer.read(10, 0.1)]
    assert ids == ["2000000000000-0", "2000000000000-1", "2000000000000-2"]
