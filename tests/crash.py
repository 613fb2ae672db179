"""The crash-test harness shared by the bridge tests (tests/test_bridge.py for Kafka and
Redis, tests/test_bridge_nats.py for NATS): run the real `evrelay` CLI as a subprocess,
kill -9 it once the sink holds enough, start it again, and count what arrived (nothing
lost, duplicates bounded by the windows in flight when it died). Also the waits other
tests of background `evrelay` processes share: each waits for the thing it needs (a
message in the sink, a line on stdout), never a fixed sleep, so neither a slow nor a
fast machine changes what the test sees.

The figures (messages, kills, duplicates) are printed with -s.
"""

from __future__ import annotations

import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

from tests.conftest import REPO

WINDOW = 1000
"""The --window the crash tests run with: a kill -9 may deliver one window again."""


def spawn(*args: str, log: Path) -> subprocess.Popen:
    """`evrelay ARGS…` in the background, its stderr appended to `log`."""
    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.Popen([sys.executable, "-m", "evrelay", *args], stdout=subprocess.DEVNULL,
                            stderr=log.open("ab"), env=env)


def wait_until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def first_line_while_feeding(proc: subprocess.Popen, feed: Callable[[], object], *, timeout: float = 60,
                             every: float = 0.5) -> bytes:
    """The first line a follower (`tail -f --from end`, `-n 0`) prints, calling `feed()`
    (publish one new message) every `every` seconds until it prints one.

    Such a follower shows only what comes after it has found the end, and does not say
    when that is: one message published after a fixed sleep is missed when start-up takes
    longer (a loaded machine). Feeding until something shows needs no such guess; the
    caller still checks that the line is the new message, not an old one. b"" when the
    follower exited first."""
    lines: queue.Queue[bytes] = queue.Queue()
    threading.Thread(target=lambda: lines.put(proc.stdout.readline()), daemon=True).start()  # type: ignore[union-attr]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        feed()
        try:
            return lines.get(timeout=every)
        except queue.Empty:
            continue
    raise AssertionError(f"the follower printed nothing in {timeout:g}s of new messages")


def wait_until_waiting_for_input(proc: subprocess.Popen, timeout: float = 60) -> None:
    """Wait until `proc` has read everything written to its stdin pipe and is blocked
    reading more (Linux: the pipe holds no unread bytes and the process's main thread
    sleeps in a read, poll or select): it has handled all its input so far, however long
    its start-up took."""
    import array
    import fcntl
    import termios

    def waiting() -> bool:
        if proc.poll() is not None:
            return True
        unread = array.array("i", [0])
        fcntl.ioctl(proc.stdin.fileno(), termios.FIONREAD, unread)  # type: ignore[union-attr]
        try:
            sleeping_in = Path(f"/proc/{proc.pid}/wchan").read_text()
        except OSError:
            return False
        return unread[0] == 0 and any(call in sleeping_in for call in ("pipe", "poll", "select"))

    wait_until(waiting, timeout, "the process to read all its input")


def kill_thresholds(low: int, high: int, kills: int = 2) -> list[int]:
    """Where to kill the bridge: `kills` random progress marks between low and high, in order."""
    return sorted(random.sample(range(low, high), kills))


def phased_kill_thresholds(sizes: Sequence[int], repeats: int = WINDOW) -> list[int]:
    """One kill in each phase of the data but the last, at a random mark in its middle 60 %
    (its start raised by `repeats`, the copies a kill may add to the sink, per kill before
    it, so a kill never comes at once from copies alone; its end not, so it is reached without).

    The test feeds phase k+1 only after the k-th kill (run_with_kills' after_kill), so every
    kill comes while data is still to come: a bridge fast enough to move everything between
    two polls of the sink cannot land a kill after the end (with all the data there at once,
    a Kafka -> Redis run went from 5,307 to 12,000 between a poll and its kill)."""
    thresholds, before = [], 0
    for kills_before, size in enumerate(sizes[:-1]):
        low, high = before + size // 5 + kills_before * repeats, before + size * 4 // 5
        assert low < high, f"phases too small for {repeats} repeats a kill: {sizes}"
        thresholds.append(random.randrange(low, high))
        before += size
    return thresholds


def run_with_kills(args: Sequence[str], *, log: Path, reached: Callable[[int], bool], thresholds: Sequence[int],
                   progress: Callable[[], object] | None = None, after_kill: Callable[[int], None] | None = None,
                   timeout: float = 300) -> int:
    """Run `evrelay ARGS` once per threshold, kill -9 each run as soon as `reached(threshold)`
    (a run that ends by itself first fails the test), then once more to its end, which must
    be exit 0.
    `progress()` describes the state after each kill; `after_kill(k)` runs after the k-th
    (from 1), before the next run starts. Returns the number of kills."""
    kills = 0
    for threshold in thresholds:
        proc = spawn(*args, log=log)
        wait_until(lambda t=threshold, p=proc: reached(t) or p.poll() is not None, 120, "progress")
        # A run that ended by itself was not killed: it failed (its exit would go unseen),
        # or the threshold was past the data (the test would prove nothing about kills).
        assert proc.poll() is None, f"evrelay ended (exit {proc.returncode}) before kill {kills + 1}:\n{log.read_text()}"
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        kills += 1
        print(f"\nkilled past {threshold}" + (f": {progress()}" if progress is not None else ""))
        if after_kill is not None:
            after_kill(kills)
    final = spawn(*args, log=log)
    assert final.wait(timeout=timeout) == 0, log.read_text()
    print(f"kills: {kills}")
    return kills


def stop_with_sigterm(args: Sequence[str], *, log: Path, reached: Callable[[], bool]) -> None:
    """Run `evrelay ARGS` until `reached()`, then SIGTERM it: a clean stop, exit 0."""
    proc = spawn(*args, log=log)
    wait_until(reached, 120, "progress")
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0, log.read_text()
    assert "(stopped)" in log.read_text()


def check_delivery(sent: list[bytes], received: list[bytes], *, max_duplicates: int, label: str) -> int:
    """Every sent value arrived, with at most `max_duplicates` extra copies; the duplicates."""
    counts = Counter(received)
    missing = set(sent) - set(counts)
    assert not missing, f"{label}: {len(missing)} message(s) lost, e.g. {sorted(missing)[:3]}"
    duplicates = len(received) - len(set(received))
    print(f"\n{label}: {len(sent)} messages, {len(received)} received, {duplicates} duplicates")
    assert duplicates <= max_duplicates, f"{label}: {duplicates} duplicates > window {max_duplicates}"
    return duplicates


# --- Redis at either end, read and written by redis-py (not by evrelay) ----------------------


def fill_redis_stream(url: str, stream: str, values: Sequence[bytes]) -> None:
    """XADD each value as the entry's `value` field, in pipelined batches."""
    import redis

    client = redis.Redis.from_url(url)
    for start in range(0, len(values), 5000):
        pipe = client.pipeline(transaction=False)
        for value in values[start : start + 5000]:
            pipe.xadd(stream, {"value": value})
        pipe.execute()
    client.close()


def redis_values(url: str, stream: str) -> list[bytes]:
    import redis

    client = redis.Redis.from_url(url, protocol=2)
    client.set_response_callback("XRANGE", lambda response, **_: response)
    values, cursor = [], "-"
    while True:
        rows = client.execute_command("XRANGE", stream, cursor, "+", "COUNT", 10000)
        values += [fields[1] for _, fields in rows]
        if len(rows) < 10000:
            break
        cursor = "(" + rows[-1][0].decode()
    client.close()
    return values


def redis_len(url: str, stream: str) -> int:
    import redis

    try:
        with redis.Redis.from_url(url, socket_connect_timeout=1) as client:
            return int(client.xlen(stream))
    except redis.RedisError:
        return -1
