"""The README's benchmark command keeps working (a tiny run: correctness, not speed)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.kafka
@pytest.mark.redis
@pytest.mark.nats
@pytest.mark.slow
def test_benchmark_runs_and_reports_every_measure():
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--messages", "2000", "--repeat", "1", "--memory-messages", "20000"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ")]
    for measure in ("`publish kafka:` (idempotent", "`publish kafka:?enable.idempotence=false`", "`tail kafka: -o raw`",
                    "`tail kafka: -o json`", "`tail redis: -o raw`", "`tail redis: -o json`", "`publish redis:`",
                    "bridge kafka->redis, marginal rate", "bridge redis->kafka, marginal rate", "bridge start-up",
                    "`evrelay --version`", "`evrelay tail --help`", "tail of 20,000 messages, peak RSS",
                    "bridge of 20,000 messages, peak RSS", "bridge kafka->redis, `--filter` passing half",
                    "bridge kafka->redis, `--match-key` passing half", "`publish kafka:?enable.idempotence=false` vs the Python floor",
                    "`publish nats:`", "`tail nats: -o raw`", "`tail nats: -o json`"):
        row = next((r for r in rows if r.startswith(f"| {measure}")), None)
        assert row is not None, f"{measure} missing:\n{proc.stdout}"
        if "marginal rate" not in row:  # with 2,000 messages, join noise can swamp the difference
            assert "not measured" not in row, row


@pytest.mark.kafka
@pytest.mark.redis
@pytest.mark.slow
def test_benchmark_only_bridge_reports_the_bridges_and_nothing_else():
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--messages", "2000", "--repeat", "1", "--only-bridge"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and not line.startswith(("| measure", "| ---"))]
    assert [r.split(" | ")[0] for r in rows] == [
        "| bridge kafka->redis, marginal rate", "| bridge redis->kafka, marginal rate",
        "| bridge kafka->redis sink process, marginal rate", "| bridge redis->kafka sink process, marginal rate",
    ], proc.stdout


@pytest.mark.kafka
@pytest.mark.redis
@pytest.mark.slow
def test_bridge_cpu_benchmark_reports_both_processes_of_both_bridges():
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bridge_cpu.py"), "--messages", "2000", "--repeat", "1"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = {line.split(" | ")[0]: line.split(" | ") for line in proc.stdout.splitlines() if line.startswith("| bridge ")}
    assert sorted(rows) == [
        "| bridge kafka->redis, in-process", "| bridge kafka->redis, two processes",
        "| bridge redis->kafka, in-process", "| bridge redis->kafka, two processes",
    ], proc.stdout
    for row in rows.values():  # bridge process, sink process, both, critical path: numbers
        assert all(float(cell) == float(cell) for cell in row[1:5]), row
    assert float(rows["| bridge kafka->redis, in-process"][2]) == 0  # no sink process


@pytest.mark.slow
def test_large_values_benchmark_runs():
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "large_values.py"), "--small", "2000", "--big-mb", "1", "--repeat", "1"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "worst ratio" in proc.stdout and "read another stream" in proc.stdout


@pytest.mark.kafka
@pytest.mark.slow
def test_benchmark_only_kafka_with_a_baseline_reports_kafka_rows_and_before_after():
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--messages", "2000", "--repeat", "1", "--only-kafka", "--baseline", str(REPO)],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and not line.startswith(("| measure", "| ---"))]
    names = [r.split(" | ")[0][2:] for r in rows]
    assert names == [
        "`publish kafka:` (idempotent, acks=all)", "`publish kafka:?enable.idempotence=false`",
        "the Python floor (confluent-kafka produce() loop) vs plain kcat",
        "`publish kafka:?enable.idempotence=false` vs the Python floor",
        "`publish kafka:?enable.idempotence=false` of one message (the fixed start)",
        "`publish kafka:?enable.idempotence=false` of one message, this tree vs --baseline",
        "`tail kafka: -o raw`", "`tail kafka: -o json`",
        "`publish kafka:` (idempotent), this tree vs --baseline", "`publish kafka:?enable.idempotence=false`, this tree vs --baseline",
        "`tail kafka: -o raw`, this tree vs --baseline",
    ], proc.stdout
    assert all("(CPU " in r for r in rows), proc.stdout


@pytest.mark.nats
@pytest.mark.slow
def test_benchmark_only_nats_reports_the_nats_rows_beside_a_baseline():
    # --baseline: the checkout itself stands in for an older tree (a directory holding evrelay/).
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--messages", "500", "--repeat", "1", "--only-nats", "--baseline", str(REPO)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line for line in proc.stdout.splitlines() if line.startswith("| ") and not line.startswith(("| measure", "| ---"))]
    assert [r.split(" | ")[0] for r in rows] == [
        f"| {measure}, {unit}" for unit in ("wall", "CPU") for measure in ("`publish nats:`", "`tail nats: -o raw`", "`tail nats: -o json`")
    ], proc.stdout
    assert all(len(r.split(" | ")) == 7 for r in rows), proc.stdout  # evrelay, baseline, peer, ratio, target, verdict


@pytest.mark.kafka
@pytest.mark.redis
@pytest.mark.slow
def test_bridge_floor_benchmark_moves_everything_and_reports_floor_beside_bridge():
    # bridge_floor.py checks after its first round that every sink (floors included) holds
    # exactly the messages it was given, and exits non-zero otherwise.
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "bridge_floor.py"), "--messages", "1500", "--repeat", "1", "--window", "500"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = [line.split(" | ") for line in proc.stdout.splitlines() if line.startswith("| ") and not line.startswith(("| contender", "| ---"))]
    assert [row[0][2:] for row in rows] == [
        "tail kafka", "publish redis", "kafka->redis floor", "kafka->redis bridge",
        "tail redis", "publish kafka", "redis->kafka floor", "redis->kafka bridge",
    ], proc.stdout
    assert all(float(row[1]) == float(row[1]) for row in rows), proc.stdout  # CPU per message: a number
