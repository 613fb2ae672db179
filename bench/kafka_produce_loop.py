"""The floor a Python publisher to Kafka can reach, measured beside `publish kafka:`: a
hand-written confluent-kafka loop reading FILE whole, splitting it into lines (empty ones
skipped) and handing them to librdkafka with produce_batch, 10,000 at a time, with one
delivery callback counting failures, then flush(). The same librdkafka settings evrelay
uses (linger.ms 5, batch.num.messages 10000, a queue large enough for the whole file,
delivery reports for failures only), plus KEY=VALUE arguments (e.g. enable.idempotence=false). Exits 1 when any message was
not delivered.

    python bench/kafka_produce_loop.py BOOTSTRAP TOPIC FILE [librdkafka.key=value ...]
"""

import sys

from confluent_kafka import Producer

bootstrap, topic, path = sys.argv[1:4]
config = {
    "bootstrap.servers": bootstrap,
    "enable.idempotence": True,
    "acks": "all",
    "linger.ms": 5,
    "batch.num.messages": 10000,
    "queue.buffering.max.messages": 500000,
    "delivery.report.only.error": True,  # the callback runs for failures only
}
for setting in sys.argv[4:]:
    name, _, value = setting.partition("=")
    config[name] = value

producer = Producer(config)
failed = 0


def on_delivery(err, _msg):
    global failed
    if err is not None:
        failed += 1


with open(path, "rb") as source:
    lines = [line for line in source.read().split(b"\n") if line]
for start in range(0, len(lines), 10_000):
    producer.produce_batch(topic, [{"value": value} for value in lines[start : start + 10_000]], on_delivery=on_delivery)
    producer.poll(0)
left = producer.flush(30)
if failed or left:
    print(f"{failed + left} of {len(lines)} not delivered", file=sys.stderr)
    sys.exit(1)
