"""The floor of a redis->kafka bridge in Python: what bridging at-least-once costs with no
model at all, to set beside `evrelay bridge` and its two halves (bench/bridge_floor.py).

    python bench/redis_kafka_floor.py REDIS_PORT STREAM GROUP BOOTSTRAP TOPIC COUNT [WINDOW]

XREADGROUP (RESP by hand, replies parsed by hiredis) of entries with a lone `value` field
(what `publish redis:` writes), one produce() per entry with what evrelay's bridge sends:
the value, the `evrelay-source` header and the entry's timestamp, with evrelay's producer
settings (idempotent, acks=all, error-only delivery reports); once librdkafka has
resolved the window (flush), one XACK of its IDs. Pipelined as the relay is: window k is
produced, k+1 is read, then k is flushed and acked. No Message objects, no error handling
beyond counting failed deliveries.
"""

import socket
import sys

import hiredis
from confluent_kafka.cimpl import Producer

port, stream, group, bootstrap, topic, count = sys.argv[1:7]
count, window = int(count), int(sys.argv[7]) if len(sys.argv) > 7 else 1000
producer = Producer({
    "bootstrap.servers": bootstrap, "enable.idempotence": True, "acks": "all", "linger.ms": 5,
    "batch.num.messages": 10000, "queue.buffering.max.messages": 500000, "partitioner": "murmur2_random",
    "message.timeout.ms": 30000, "delivery.report.only.error": True,
})
redis = socket.create_connection(("127.0.0.1", int(port)))
reader = hiredis.Reader()


def command(*parts: bytes) -> bytes:
    return b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)


def call(payload: bytes):
    redis.sendall(payload)
    while (reply := reader.gets()) is False:
        reader.feed(redis.recv(1 << 18))
    return reply


call(command(b"XGROUP", b"CREATE", stream.encode(), group.encode(), b"0"))
prefix = f"redis/{stream}/".encode()
failed = []
on_error = failed.append
produce = producer.produce


def flush_and_ack(ids: list[bytes]) -> None:
    producer.flush(30)
    assert not failed, failed[:3]
    call(command(b"XACK", stream.encode(), group.encode(), *ids))


read, in_flight = 0, None
while True:
    want = str(min(window, count - read)).encode()
    reply = call(command(b"XREADGROUP", b"GROUP", group.encode(), b"floor", b"COUNT", want, b"STREAMS", stream.encode(), b">")) if read < count else None
    ids = []
    for entry_id, fields in reply[0][1] if reply else ():
        produce(topic, fields[1], None, -1, lambda err, msg: on_error(err), None, int(entry_id.split(b"-")[0]),
                [("evrelay-source", prefix + entry_id)])
        ids.append(entry_id)
    producer.poll(0)
    read += len(ids)
    if in_flight is not None:
        flush_and_ack(in_flight)
        in_flight = None
    if ids:
        in_flight = ids
    elif read >= count:
        break
