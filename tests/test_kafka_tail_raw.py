"""`tail kafka: -o raw` reads the values alone (ReadSpec.values_only, issue 16): the same
bytes as before, in each partition's order, with every range and count, and without
building a Message per record."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from tests.conftest import REPO, evrelay
from tests.test_contract_kafka import create_topic

pytestmark = pytest.mark.kafka

VALUES = [b"plain", "caf\u00e9 \u2603".encode(), b"\x00\xff\xfebinary", b"", None, b'{"id": 5}', b"last"]


@pytest.fixture(scope="module")
def topic(kafka_server):
    from confluent_kafka import Producer

    name = create_topic(kafka_server.bootstrap, f"raw-{uuid.uuid4().hex[:8]}", partitions=3)
    producer = Producer({"bootstrap.servers": kafka_server.bootstrap})
    for partition in range(3):
        for value in VALUES:
            producer.produce(name, value=value, key=b"k", headers=[("h", b"v")], partition=partition)
    assert producer.flush(20) == 0
    return name


def expected(values) -> bytes:
    return b"".join((value or b"") + b"\n" for value in values)


def test_raw_values_per_partition_and_in_every_range(kafka_server, topic):
    address = f"kafka://{kafka_server.bootstrap}/{topic}"
    for partition in range(3):
        run = evrelay("tail", address, "--partition", str(partition), "--from", "beginning", "-o", "raw")
        assert run.returncode == 0, run.err
        assert run.stdout == expected(VALUES)
    everything = evrelay("tail", address, "--from", "beginning", "-o", "raw")
    assert sorted(everything.stdout.split(b"\n")[:-1]) == sorted(expected(VALUES * 3).split(b"\n")[:-1])
    counted = evrelay("tail", address, "--partition", "1", "--from", "beginning", "-n", "2", "-o", "raw")
    assert counted.stdout == expected(VALUES[:2])
    bounded = evrelay("tail", address, "--partition", "2", "--from", "2", "--to", "4", "-o", "raw")
    assert bounded.stdout == expected(VALUES[2:5])
    last = evrelay("tail", address, "--partition", "0", "-n", "3", "-o", "raw")  # the last N: merged by time
    assert last.stdout == expected(VALUES[-3:])
    followed = evrelay("tail", address, "--partition", "0", "--from", "beginning", "-f", "--idle-timeout", "2s", "-o", "raw")
    assert followed.returncode == 0, followed.err
    assert followed.stdout == expected(VALUES)


PROBE = """
import sys
import evrelay.backends.kafka.consumers as consumers
made = 0
convert = consumers.record_to_message
def counting(*args):
    global made
    made += 1
    return convert(*args)
consumers.record_to_message = counting
from evrelay.cli import main
try:
    main(sys.argv[1:])
except SystemExit:
    pass
sys.stderr.write("MESSAGES=%d\\n" % made)
"""


def test_raw_builds_no_message_per_record_and_json_still_does(kafka_server, topic):
    address = f"kafka://{kafka_server.bootstrap}/{topic}"
    env = dict(os.environ, PYTHONPATH=str(REPO))
    made = {}
    for mode in ("raw", "json"):
        proc = subprocess.run([sys.executable, "-c", PROBE, "tail", address, "--from", "beginning", "-o", mode],
                              capture_output=True, env=env, timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert len(proc.stdout.splitlines()) == len(VALUES) * 3
        made[mode] = int(proc.stderr.decode().rsplit("MESSAGES=", 1)[1])
    assert made == {"raw": 0, "json": len(VALUES) * 3}
