"""kcat's -J envelope and -K key-delimited lines: evrelay reads what kcat writes and writes
what kcat writes, checked against the real kcat on a real broker."""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest

from evrelay.envelope import Message, Position
from evrelay.kcat import decode_kcat_json, decode_keyed, encode_kcat_json
from tests.conftest import evrelay
from tests.test_contract_kafka import create_topic

KEYED_LINES = b"k1:v:1\nnokey\n:emptykey\nk\xff:bin\xfe\n"


def test_kcat_json_round_trips_binary_bytes_and_flat_headers():
    message = Message(b"bin\xfe", b"k\xff", [("h", b"1"), ("h", b"\xff")], 1700000000000, Position("kafka", "t", 3, 1))
    line = encode_kcat_json(message)
    assert line == b'{"topic":"t","partition":1,"offset":3,"tstype":"create","ts":1700000000000,"broker":-1,"headers":["h","1","h","\xff"],"key":"k\xff","payload":"bin\xfe"}\n'
    back = decode_kcat_json(line)
    assert (back.value, back.key, back.headers, back.timestamp) == (message.value, message.key, message.headers, message.timestamp)
    redis_like = encode_kcat_json(Message(b"v", None, [], None, Position("redis", "s", "1-0")))
    assert redis_like == b'{"topic":"s","partition":null,"offset":"1-0","tstype":"notavailable","ts":-1,"broker":-1,"key":null,"payload":"v"}\n'


def test_keyed_lines_split_at_the_first_delimiter_like_kcat():
    assert [(m.key, m.value) for m in map(lambda line: decode_keyed(line, b":"), KEYED_LINES.splitlines())] == [
        (b"k1", b"v:1"), (None, b"nokey"), (b"", b"emptykey"), (b"k\xff", b"bin\xfe"),
    ]


def run_kcat(kcat, *args: str, input: bytes | None = None) -> bytes:
    proc = subprocess.run([*kcat, *args], input=input, capture_output=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


@pytest.mark.kafka
def test_tail_writes_what_kcat_writes_and_publish_reads_it(kafka_server, kcat):
    b = kafka_server.bootstrap
    topic = create_topic(b, f"kc-{uuid.uuid4().hex[:6]}")
    run_kcat(kcat, "-b", b, "-P", "-t", topic, "-K:", "-H", "h1=v1", "-H", "h1=v2", input=KEYED_LINES)

    theirs = run_kcat(kcat, "-b", b, "-C", "-t", topic, "-J", "-e", "-q")
    ours = evrelay("tail", f"kafka://{b}/{topic}", "--from", "beginning", "-J")
    assert ours.returncode == 0, ours.err

    def without_broker(lines: bytes) -> list[dict]:
        rows = [json.loads(line.decode("utf-8", "surrogateescape")) for line in lines.splitlines()]
        for row in rows:
            row.pop("broker")
        return rows

    assert without_broker(ours.stdout) == without_broker(theirs)
    assert b"k\xff" in ours.stdout, "binary bytes are written as they are, like kcat"
    assert evrelay("tail", f"kafka://{b}/{topic}", "--from", "beginning", "-K:").stdout == run_kcat(kcat, "-b", b, "-C", "-t", topic, "-K:", "-e", "-q")

    copy = create_topic(b, f"kc-copy-{uuid.uuid4().hex[:6]}")
    run = evrelay("publish", f"kafka://{b}/{copy}", "-J", input=theirs)
    assert run.returncode == 0, run.err
    copied = run_kcat(kcat, "-b", b, "-C", "-t", copy, "-J", "-e", "-q")
    assert [(r["key"], r["payload"], r["headers"], r["ts"]) for r in without_broker(copied)] == [
        (r["key"], r["payload"], r["headers"], r["ts"]) for r in without_broker(theirs)
    ]

    keyed = create_topic(b, f"kc-keyed-{uuid.uuid4().hex[:6]}")
    assert evrelay("publish", f"kafka://{b}/{keyed}", "-K:", input=KEYED_LINES).returncode == 0
    assert run_kcat(kcat, "-b", b, "-C", "-t", keyed, "-K:", "-e", "-q") == b"k1:v:1\n:nokey\n:emptykey\nk\xff:bin\xfe\n"


def test_a_bad_kcat_line_names_its_line_number():
    run = evrelay("publish", "demo", "--input", "kcat", input='{"payload":"a"}\n{"key":"x"}\n')
    assert run.returncode == 1
    assert run.err.startswith("evrelay: error: stdin line 2: not a kcat -J line: needs a JSON object with 'payload'; the 1 message(s) before it were published")
    assert evrelay("tail", "demo", "-J", "-o", "json").returncode == 2
