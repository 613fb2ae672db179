"""`evrelay stats`: a range summarised (per minute, sizes, keys, headers) on real backends."""

from __future__ import annotations

import json
import time
import uuid

import pytest

from evrelay.envelope import Message
from evrelay.summary import RangeSummary
from tests.conftest import evrelay
from tests.test_contract_kafka import create_topic


def test_summary_counts_minutes_sizes_keys_and_headers():
    summary = RangeSummary()
    base = 1_700_000_040_000  # a minute boundary
    summary.add([Message(b"x" * n, b"k%d" % (n % 2), [("h", b"1"), ("h", b"2")], base + n * 30_000) for n in range(1, 11)])
    summary.add([Message(b"", None, [("t", b"")], base + 9 * 60_000)])
    record = summary.record()
    assert record["messages"] == 11 and record["bytes"] == 55
    assert [count for _, count in record["per_minute"]] == [1, 2, 2, 2, 2, 1, 0, 0, 0, 1]
    assert record["value_size"] == {"p50": 5, "p90": 9, "p99": 10, "max": 10}
    assert record["top_keys"] == [["k1", 5], ["k0", 5]] and record["without_key"] == 1
    assert record["header_names"] == [["h", 10], ["t", 1]]
    bars, step, peak = summary.chart()
    assert (bars, step, peak) == ("▄████▄   ▄", 1, 2)
    assert summary.chart(width=5) == ("▆█▆ ▂", 2, 4)


def lines_over_minutes(count: int, minutes: int) -> str:
    now = int(time.time() * 1000) - minutes * 60_000
    return "".join(
        json.dumps({"value": "v" * (i % 50 + 1), "key": f"k{i % 3}", "headers": [["region", "eu"]] if i % 2 else [],
                    "timestamp": now + (i * minutes * 60_000) // count}) + "\n"
        for i in range(count)
    )


@pytest.mark.kafka
def test_stats_on_kafka_uses_record_timestamps(kafka_server):
    topic = create_topic(kafka_server.bootstrap, f"stats-{uuid.uuid4().hex[:6]}")
    address = f"kafka://{kafka_server.bootstrap}/{topic}"
    assert evrelay("publish", address, "--input", "json", input=lines_over_minutes(300, 30)).returncode == 0
    run = evrelay("stats", address, "--from", "-1h", "-o", "json")
    assert run.returncode == 0, run.err
    record = json.loads(run.stdout)
    assert record["messages"] == 300
    assert sum(count for _, count in record["per_minute"]) == 300 and 29 <= len(record["per_minute"]) <= 31
    assert record["top_keys"] == [["k0", 100], ["k1", 100], ["k2", 100]]
    assert record["header_names"] == [["region", 150]]
    assert record["value_size"]["max"] == 50
    text = evrelay("stats", address, "--from", "-1h", "-o", "table", "--match-key", "k1").out
    assert f"{address} (-1h .. end): 100 message(s)" in text and "messages per minute (peak" in text


@pytest.mark.redis
def test_stats_on_redis_counts_a_time_range(redis_server):
    address = f"redis://127.0.0.1:{redis_server.port}/0/stats-{uuid.uuid4().hex[:6]}"
    assert evrelay("publish", address, "a", "bb", "-k", "one", "-H", "x=1").returncode == 0
    record = json.loads(evrelay("stats", address, "-o", "json").stdout)
    assert (record["messages"], record["bytes"], record["top_keys"], record["header_names"]) == (2, 3, [["one", 2]], [["x", 2]])
    assert json.loads(evrelay("stats", address, "--from", "end", "-o", "json").stdout)["messages"] == 0
