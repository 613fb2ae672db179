"""The floor of a kafka->redis bridge in Python: what bridging at-least-once costs with no
model at all, to set beside `evrelay bridge` and its two halves (bench/bridge_floor.py).

    python bench/kafka_redis_floor.py BOOTSTRAP TOPIC GROUP REDIS_PORT STREAM COUNT [WINDOW]

A consumer-group read with evrelay's librdkafka settings, one XADD per record in the
layout evrelay writes for a bridged message (`value` and its `h:evrelay-source` header,
RESP written by hand as evrelay does), replies parsed by hiredis, and the group's offsets
committed synchronously once Redis has confirmed the window, pipelined as the relay is:
window k is written, k+1 is consumed, then k is confirmed and committed. No Message
objects, no error handling beyond asserting that every reply is an entry ID: nothing a
real bridge could do without.
"""

import socket
import sys

import hiredis
from confluent_kafka.cimpl import Consumer, TopicPartition

bootstrap, topic, group, port, stream, count = sys.argv[1:7]
count, window = int(count), int(sys.argv[7]) if len(sys.argv) > 7 else 1000
consumer = Consumer({
    "bootstrap.servers": bootstrap, "group.id": group, "enable.auto.commit": False, "enable.auto.offset.store": False,
    "enable.partition.eof": True, "auto.offset.reset": "earliest", "session.timeout.ms": 6000,
    "heartbeat.interval.ms": 1500, "fetch.wait.max.ms": 100, "queued.max.messages.kbytes": 1024,
    "fetch.max.bytes": 1048576, "max.partition.fetch.bytes": 262144, "fetch.queue.backoff.ms": 10,
})
consumer.subscribe([topic])
redis = socket.create_connection(("127.0.0.1", int(port)))


def bulk(data: bytes) -> bytes:
    return b"$%d\r\n%s\r\n" % (len(data), data)


head = b"*7\r\n" + bulk(b"XADD") + bulk(stream.encode()) + bulk(b"*") + bulk(b"value")
header_name = bulk(b"h:evrelay-source")
prefix = f"kafka/{topic}/".encode()


def confirm_and_commit(sent: int, last: dict[int, int]) -> None:
    reader, replies = hiredis.Reader(), []
    while len(replies) < sent:
        reader.feed(redis.recv(1 << 18))
        replies += iter(reader.gets, False)
    assert set(map(type, replies)) == {bytes}, replies[:3]
    consumer.commit(offsets=[TopicPartition(topic, p, o + 1) for p, o in last.items()], asynchronous=False)


read, in_flight = 0, None
while True:
    records = consumer.consume(num_messages=min(window, count - read), timeout=0.05) if read < count else []
    commands, last = [], {}
    for record in records:
        if record.error() is not None:
            continue  # end-of-partition events
        value, partition, offset = record.value(), record.partition(), record.offset()
        source = b"%s%d/%d" % (prefix, partition, offset)
        commands.append(head + b"$%d\r\n%s\r\n%s$%d\r\n%s\r\n" % (len(value), value, header_name, len(source), source))
        last[partition] = offset
    read += len(commands)
    if in_flight is not None:
        confirm_and_commit(*in_flight)
        in_flight = None
    if commands:
        redis.sendall(b"".join(commands))
        in_flight = (len(commands), last)
    elif read >= count:
        break
consumer.close()
