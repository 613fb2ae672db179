"""`tail -g -f` on a Redis source whose server goes away: since the Kafka source-outage
fix, a following tail waits the outage out with a warning (as a bridge does) instead of
ending with exit 3, and reads on once the server is back, losing nothing (a persistent
redis-server: its group and entries survive the restart)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid

import pytest

from tests.conftest import REPO, evrelay, start_server
from tests.crash import wait_until


@pytest.mark.redis
def test_a_following_group_tail_waits_out_a_redis_restart_and_reads_on(tmp_path):
    from tests.servers import RedisServer

    server = start_server(lambda: RedisServer(persistent=True))
    source = f"{server.url}/follow-{uuid.uuid4().hex[:6]}"
    out, log = tmp_path / "out.txt", tmp_path / "stderr.log"
    tail = None
    try:
        assert evrelay("publish", source, "first").returncode == 0
        env = dict(os.environ, PYTHONPATH=str(REPO))
        with out.open("wb") as stdout, log.open("wb") as stderr:
            tail = subprocess.Popen(
                [sys.executable, "-m", "evrelay", "tail", source, "-g", "g", "--from", "beginning", "-f", "-o", "raw"],
                stdout=stdout, stderr=stderr, env=env,
            )
        wait_until(lambda: out.read_bytes() == b"first\n", 30, "the first message")
        server.kill()
        wait_until(lambda: "retrying in" in log.read_text(), 30, f"an outage warning (stderr: {log.read_text()!r})")
        assert tail.poll() is None, log.read_text()
        server.start()
        assert evrelay("publish", source, "second").returncode == 0
        wait_until(lambda: out.read_bytes() == b"first\nsecond\n", 60, f"the message sent after the restart (stderr: {log.read_text()!r})")
        tail.send_signal(signal.SIGTERM)
        assert tail.wait(timeout=30) == 0, log.read_text()
        assert "Traceback" not in log.read_text()
    finally:
        if tail is not None and tail.poll() is None:
            tail.kill()
            tail.wait()
        server.__exit__(None, None, None)
