"""A Kafka source whose broker goes away mid-bridge: the outage is reported while it is
waited out, as for a Redis or NATS source (README, bridge, Outages). A broker of its own
(tansu: quick to start, empty on every start), killed and started again on the same port."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, evrelay, start_server
from tests.crash import wait_until


def _outage_warnings(log: Path) -> list[str]:
    return [line for line in log.read_text().splitlines() if line.startswith("evrelay: warning: source:") and "retrying in" in line]


@pytest.mark.parametrize("command", ["bridge", "tail -g"])
def test_a_kafka_source_that_goes_away_is_reported_while_it_is_waited_out(tmp_path, command):
    # Before: librdkafka's connection errors went to error_cb, shown only with -v, and
    # consume() just returned nothing: bridge and `tail -g -f` waited for minutes without
    # a word (and with only the bridge fixed, tail ended with exit 3 after 7 s).
    from tests.servers import TansuServer

    broker = start_server(TansuServer)
    source = f"kafka://{broker.bootstrap}/ks"
    out, log = tmp_path / "out.jsonl", tmp_path / "stderr.log"
    bridge = None
    try:
        sent = evrelay("publish", source, "first", timeout=120)
        assert sent.returncode == 0, sent.stderr
        env = dict(os.environ, PYTHONPATH=str(REPO))
        if command == "bridge":
            args, stdout = ["bridge", source, f"file:{out}", "-f"], subprocess.DEVNULL
        else:
            args, stdout = ["tail", source, "-g", "watchers", "-f", "-o", "raw"], out.open("wb")
        with log.open("wb") as stderr:
            bridge = subprocess.Popen([sys.executable, "-m", "evrelay", *args], stdout=stdout, stderr=stderr, env=env)
        wait_until(lambda: out.exists() and b"first" in out.read_bytes(), 60, "message bridged")

        broker.kill()
        killed = time.monotonic()
        wait_until(lambda: _outage_warnings(log), 45, f"outage warning (stderr: {log.read_text()!r})")
        first_warning_after = time.monotonic() - killed
        wait_until(lambda: len(_outage_warnings(log)) >= 2, 30, "repeated outage warning")
        warning = _outage_warnings(log)[0]
        assert f"Kafka at {broker.bootstrap} could not be reached" in warning, warning
        assert "'ks'" in warning, warning
        assert first_warning_after < 30, first_warning_after
        assert bridge.poll() is None, log.read_text()

        # The broker comes back, empty (tansu keeps nothing across a restart, so the
        # group's positions point past its new data and nothing more is tested to arrive):
        # the command is still running, and a SIGTERM ends it cleanly.
        broker.start()
        time.sleep(3)
        assert bridge.poll() is None, log.read_text()
        bridge.send_signal(signal.SIGTERM)
        assert bridge.wait(timeout=60) == 0, log.read_text()
        assert "Traceback" not in log.read_text()
    finally:
        if bridge is not None and bridge.poll() is None:
            bridge.kill()
            bridge.wait()
        broker.__exit__(None, None, None)
