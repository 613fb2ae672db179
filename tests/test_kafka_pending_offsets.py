"""A group reader that starts while a killed transactional member's offsets are pending.

Kafka holds the offsets a transaction sent (send_offsets_to_transaction) as pending until
the transaction commits or aborts; an OffsetFetch asking for stable offsets (librdkafka
does, under read_committed) gets UNSTABLE_OFFSET_COMMIT meanwhile, and librdkafka turns
that into "Local: Timed out". A transactional bridge killed -9 mid-transaction leaves such
offsets behind until the broker aborts the transaction at its timeout. A reader of the
same group started then must wait that out and read (evrelay/backends/kafka/offsets.py
`committed`, UNSTABLE_OFFSETS_WAIT), not exit 3.

The transaction is held open by a real confluent-kafka transactional producer in a child
process, killed -9 once its offsets are in the transaction: no race with a bridge's
commit, so the offsets are pending when the reader asks, every run.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid

import pytest

from tests.conftest import evrelay
from tests.test_bridge import produce_kafka
from tests.test_contract_kafka import create_topic

pytestmark = pytest.mark.kafka

TRANSACTION_TIMEOUT_MS = 12_000
"""The killed transaction's transaction.timeout.ms: the broker aborts it this long after it
began, plus up to its abort check interval (ApacheKafkaServer: 1 s)."""

READER_TIMEOUT = 3
"""The reader's --timeout: one offsets fetch gives up after this long (then, without the
wait for pending offsets, the reader exits 3)."""

HOLD_OPEN = """
import sys, time
from confluent_kafka import Consumer, Producer, TopicPartition
bootstrap, topic, group, offset, timeout_ms = sys.argv[1:]
producer = Producer({"bootstrap.servers": bootstrap, "transactional.id": "held-" + group,
                     "transaction.timeout.ms": int(timeout_ms)})
producer.init_transactions(30)
producer.begin_transaction()
metadata = Consumer({"bootstrap.servers": bootstrap, "group.id": group}).consumer_group_metadata()
producer.send_offsets_to_transaction([TopicPartition(topic, 0, int(offset))], metadata, 30)
print("offsets sent", flush=True)
time.sleep(3600)
"""


def test_group_reader_waits_for_offsets_a_killed_transaction_holds(apache_kafka, tmp_path):
    """Bound: the reader waits at most --timeout + UNSTABLE_OFFSETS_WAIT (3 + 30 s); the broker
    aborts the killed transaction within TRANSACTION_TIMEOUT_MS (12 s) of its start plus its
    `transaction.abort.timed.out.transaction.cleanup.interval.ms` (1 s in the test broker,
    10 s by default), so the wait ends after about 12-13 s. Without the wait the reader's
    first fetch times out after 3 s, long before the abort: exit 3, every run."""
    bootstrap = apache_kafka.bootstrap
    topic = create_topic(bootstrap, f"pending-{uuid.uuid4().hex[:6]}")
    group = f"pending-{uuid.uuid4().hex[:6]}"
    sent = produce_kafka(bootstrap, topic, 20)
    # The group's committed offset is 5: its reader has taken the first five.
    first = evrelay("tail", f"kafka://{bootstrap}/{topic}", "-g", group, "-n", "5", "-o", "raw")
    assert first.returncode == 0, first.err
    assert first.lines() == sent[:5]

    holder = subprocess.Popen([sys.executable, "-c", HOLD_OPEN, bootstrap, topic, group, "15", str(TRANSACTION_TIMEOUT_MS)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        line = holder.stdout.readline()  # type: ignore[union-attr]
        assert line == b"offsets sent\n", holder.stderr.read()  # type: ignore[union-attr]
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    killed = time.monotonic()

    out = tmp_path / "out.jsonl"
    reader = evrelay("bridge", f"kafka://{bootstrap}/{topic}", f"file:{out}", "-g", group,
                     "--timeout", f"{READER_TIMEOUT}s", "--idle-timeout", "2s", timeout=120)
    waited = time.monotonic() - killed
    print(f"\nthe reader ended {waited:.1f}s after the kill: {reader.err.strip()}")
    assert reader.returncode == 0, reader.err
    assert "pending in an open transaction" in reader.err, reader.err  # it did meet the pending offsets
    # The aborted transaction's offset (15) was never committed: the reader went on from 5.
    assert [json.loads(line)["value"].encode() for line in out.read_text().splitlines()] == sent[5:]
    assert "Traceback" not in reader.err
