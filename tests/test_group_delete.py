"""`groups ADDRESS --delete GROUP`: confirmation, --yes, and a reader starting over, per backend."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid

import pytest

from tests.conftest import REPO, evrelay
from tests.test_contract_kafka import create_topic
from tests.test_lag_age import address  # noqa: F401  (the local/redis/kafka fixture)


def test_delete_group_asks_then_deletes_and_the_group_starts_over(address):  # noqa: F811
    assert evrelay("publish", address, "a", "b").returncode == 0
    assert evrelay("tail", address, "-g", "old", "-o", "raw").lines() == [b"a", b"b"]
    assert [json.loads(line)["name"] for line in evrelay("groups", address, "-o", "json").lines()] == ["old"]

    refused = evrelay("groups", address, "--delete", "old")  # stdin is not a terminal
    assert refused.returncode == 2 and "add --yes" in refused.err
    assert "delete consumer group 'old'" in refused.err

    run = evrelay("groups", address, "--delete", "old", "--yes")
    assert run.returncode == 0, run.err
    assert f"deleted consumer group 'old' on {address}" in run.err
    assert evrelay("groups", address, "-o", "json").lines() == []
    run = evrelay("tail", address, "-g", "old", "-o", "raw")
    assert run.lines() == [b"a", b"b"] and "created consumer group 'old'" in run.err

    missing = evrelay("groups", address, "--delete", "nope", "--yes")
    assert missing.returncode == 1 and "nope" in missing.err and "Traceback" not in missing.err


@pytest.mark.kafka
def test_a_kafka_group_with_live_members_is_not_deleted(kafka_server):
    topic = create_topic(kafka_server.bootstrap, f"del-{uuid.uuid4().hex[:6]}")
    target = f"kafka://{kafka_server.bootstrap}/{topic}"
    assert evrelay("publish", target, "a").returncode == 0
    reader = subprocess.Popen([sys.executable, "-m", "evrelay", "tail", target, "-g", "live", "-f", "-o", "raw"],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env={**os.environ, "PYTHONPATH": str(REPO)})
    try:
        assert reader.stdout.readline() == b"a\n"  # it has joined and committed
        time.sleep(0.5)
        run = evrelay("groups", target, "--delete", "live", "--yes")
        assert run.returncode == 1, run.err
        assert "live member(s); stop them before deleting it" in run.err
    finally:
        reader.terminate()
        reader.wait(30)
    assert evrelay("groups", target, "--delete", "live", "--yes").returncode == 0
