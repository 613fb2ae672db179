"""Watching a bridge: Prometheus metrics (scraped and parsed by prometheus-client's own
parser), the live line on a terminal (a pty) and its absence off one."""

from __future__ import annotations

import os
import pty
import signal
import subprocess
import sys
import time
import urllib.request
import uuid

import pytest

from tests.conftest import REPO, evrelay
from tests.servers import free_port
from tests.test_contract_kafka import create_topic


def scrape(port: int) -> dict[tuple[str, str], float]:
    from prometheus_client.parser import text_string_to_metric_families

    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, sample.labels.get("kind", ""))] = sample.value
    return samples


def wait_for(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
            if value:
                return value
        except OSError:
            pass
        time.sleep(0.3)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.kafka
def test_bridge_serves_prometheus_metrics(kafka_server, redis_server, tmp_path):
    topic = create_topic(kafka_server.bootstrap, f"metrics-{uuid.uuid4().hex[:6]}")
    source = f"kafka://{kafka_server.bootstrap}/{topic}"
    assert evrelay("publish", source, "--input", "json", input='{"value":"a"}\n{"value":"bb"}\n{"value":"skip"}\n').returncode == 0
    port = free_port()
    sink = f"redis://127.0.0.1:{redis_server.port}/0/{topic}"
    log = tmp_path / "bridge.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "evrelay", "bridge", source, sink, "--metrics", f"127.0.0.1:{port}", "--filter", '.value != "skip"'],
        stdout=subprocess.DEVNULL, stderr=log.open("wb"), env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        def settled():
            samples = scrape(port)
            return samples if samples.get(("evrelay_acked_total", "")) == 3 and samples.get(("evrelay_lag_messages", "")) == 0 else None

        samples = wait_for(settled, 60, "the bridge to move 3 messages and report lag 0")
        assert samples[("evrelay_messages_in_total", "")] == 3
        assert samples[("evrelay_messages_out_total", "")] == 2
        assert samples[("evrelay_filtered_total", "")] == 1
        assert samples[("evrelay_bytes_in_total", "")] == 7
        assert samples[("evrelay_bytes_out_total", "")] == 3
        assert samples[("evrelay_window_seconds_count", "")] >= 1
        assert samples[("evrelay_lag_seconds", "")] == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    assert proc.returncode == 0, log.read_text()
    assert f"serving Prometheus metrics on http://127.0.0.1:{port}/metrics" in log.read_text()


def test_metrics_address_errors_are_usage_errors_before_connecting():
    run = evrelay("bridge", "kafka://127.0.0.1:1/t", "demo", "--metrics", "nope:port", "--timeout", "20s")
    assert run.returncode == 2 and "--metrics expects ADDR:PORT" in run.err


def test_the_live_line_shows_on_a_terminal_only():
    assert evrelay("publish", "demo", *[f"m{i}" for i in range(50)]).returncode == 0
    main, secondary = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "evrelay", "bridge", "demo", "copy", "--idle-timeout", "2s"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=secondary,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    os.close(secondary)
    chunks = []
    while True:
        try:
            chunk = os.read(main, 4096)
        except OSError:
            break
        if not chunk:
            break
        chunks.append(chunk)
    proc.wait(30)
    os.close(main)
    terminal = b"".join(chunks).decode()
    assert "\r\x1b[Kbridged 50 message(s)" in terminal, terminal
    assert "\r\x1b[Kbridged 50 message(s) from demo to copy in" in terminal, "the live line is cleared before the summary"
    piped = evrelay("bridge", "demo", "copy2", "--idle-timeout", "1s")
    assert "\x1b[K" not in piped.err and "\r" not in piped.err
