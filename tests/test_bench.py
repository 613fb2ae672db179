"""The README's benchmark command keeps working (a tiny run: correctness, not speed)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.conftest import REPO


@pytest.mark.kafka
@pytest.mark.redis
@pytest.mark.slow
def test_benchmark_runs_and_reports_every_measure():
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "run.py"), "--messages", "2000", "--repeat", "1", "--memory-messages", "20000"],
        capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for measure in ("publish to Kafka", "tail from Kafka", "publish to Redis", "bridge Kafka → Redis",
                    "`evrelay --version`", "`evrelay tail --help`", "peak RSS",
                    "`--filter` passing half", "`--match-key` passing half"):
        assert measure in proc.stdout, proc.stdout


@pytest.mark.slow
def test_large_values_benchmark_runs():
    proc = subprocess.run(
        [sys.executable, str(REPO / "bench" / "large_values.py"), "--small", "2000", "--big-mb", "1", "--repeat", "1"],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "worst ratio" in proc.stdout and "read another stream" in proc.stdout
