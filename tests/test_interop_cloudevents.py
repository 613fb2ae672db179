"""CloudEvents through evrelay, checked with the CloudEvents SDK from PyPI (its Kafka
protocol binding, both ways) and with django-broadcaster's own RedisStreamBackend writing
the `cloudevents` layout's field set (django-broadcaster installs from PyPI, so the test
uses it, not a copy of its format)."""

from __future__ import annotations

import datetime
import json
import time
import uuid

import pytest

from tests.conftest import evrelay

pytestmark = [pytest.mark.redis, pytest.mark.kafka]


@pytest.fixture
def names():
    tag = uuid.uuid4().hex[:8]
    return f"ce-{tag}", f"ce-{tag}"


def _django() -> None:
    """Django configured just enough to build (unsaved) django-broadcaster events."""
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(INSTALLED_APPS=["django_broadcaster"], DATABASES={}, USE_TZ=True)
        django.setup()


def _django_backend(redis_server, stream: str):
    _django()
    from django_broadcaster.backends import RedisStreamBackend

    return RedisStreamBackend({"host": "127.0.0.1", "port": redis_server.port, "db": 0, "stream_name": stream})


def _django_event(**extra):
    _django()
    from django_broadcaster.models import OutboxEvent

    event = OutboxEvent(
        event_type="com.example.order.created",
        source="/shop/orders",
        subject="order-7",
        data={"order": 7, "total": 12.5},
        **extra,
    )
    event.created_at = datetime.datetime(2026, 12, 1, 10, 0, 0, 123000, tzinfo=datetime.UTC)
    return event


def _consume(bootstrap: str, topic: str, count: int) -> list:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "direct", "enable.auto.commit": False})
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    consumer.assign([TopicPartition(topic, p, -2) for p in partitions])
    got = []
    deadline = time.monotonic() + 30
    while len(got) < count and time.monotonic() < deadline:
        got += [m for m in consumer.consume(100, 0.5) if m.error() is None]
    consumer.close()
    return got


def _produce(bootstrap: str, topic: str, kafka_message) -> None:
    from confluent_kafka import Producer

    producer = Producer({"bootstrap.servers": bootstrap})
    producer.produce(topic, value=kafka_message.value, key=kafka_message.key, headers=list(kafka_message.headers.items()))
    assert producer.flush(10) == 0


def _sdk_message(record):
    from cloudevents.core.bindings.kafka import KafkaMessage

    return KafkaMessage(headers={k: v for k, v in record.headers() or []}, key=record.key(), value=record.value())


def _sdk_event():
    from cloudevents.core.v1.event import CloudEvent

    return CloudEvent(
        attributes={
            "type": "com.example.order.created",
            "source": "/shop/orders",
            "id": "e-1",
            "subject": "order-7",
            "time": datetime.datetime(2026, 12, 1, 10, 0, tzinfo=datetime.UTC),
            "datacontenttype": "application/json",
            "traceparent": "00-abc-def-01",
        },
        data={"order": 7, "total": 12.5},
    )


def _same_event(event, expected) -> None:
    assert event.get_attributes() == expected.get_attributes()
    assert event.get_data() == expected.get_data()


@pytest.mark.parametrize("mode", ["binary", "structured"])
def test_django_broadcaster_events_reach_kafka_as_sdk_readable_cloudevents(redis_server, kafka_server, names, mode):
    from cloudevents.core.bindings import kafka as binding
    from cloudevents.core.formats.json import JSONFormat

    stream, topic = names
    event = _django_event(publisher_config={"tenant": "acme"})
    assert _django_backend(redis_server, stream).publish(event)
    run = evrelay(
        "bridge", f"{redis_server.url}/{stream}?layout=cloudevents", f"kafka://{kafka_server.bootstrap}/{topic}",
        "--cloudevents", mode, "--no-provenance", "-n", "1", "--timeout", "30s", timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.err
    (record,) = _consume(kafka_server.bootstrap, topic, 1)
    message = _sdk_message(record)
    read = binding.from_binary if mode == "binary" else binding.from_structured
    got = read(message, JSONFormat())
    expected = event.to_cloud_event()
    attributes = got.get_attributes()
    for name in ("type", "source", "id", "subject", "datacontenttype", "specversion"):
        assert attributes[name] == expected[name], name
    assert attributes["time"].isoformat() == expected["time"]
    assert got.get_data() == expected["data"]
    if mode == "binary":
        assert message.headers["tenant"] == b"acme"  # django-broadcaster's extra field, as a header
        assert "ce_type" in message.headers
    else:
        assert message.headers["content-type"] == b"application/cloudevents+json"


def test_sdk_binary_and_structured_events_convert_both_ways_on_kafka(kafka_server, names):
    from cloudevents.core.bindings import kafka as binding
    from cloudevents.core.formats.json import JSONFormat

    source, _ = names
    sdk_event = _sdk_event()
    _produce(kafka_server.bootstrap, source, binding.to_binary(sdk_event, JSONFormat()))
    _produce(kafka_server.bootstrap, source, binding.to_structured(sdk_event, JSONFormat()))
    for mode, read in (("structured", binding.from_structured), ("binary", binding.from_binary)):
        sink = f"{source}-{mode}"
        run = evrelay(
            "replay", f"kafka://{kafka_server.bootstrap}/{source}", f"kafka://{kafka_server.bootstrap}/{sink}",
            "--from", "beginning", "--cloudevents", mode, timeout=120,
        )  # fmt: skip
        assert run.returncode == 0, run.err
        records = _consume(kafka_server.bootstrap, sink, 2)
        assert len(records) == 2
        for record in records:
            _same_event(read(_sdk_message(record), JSONFormat()), sdk_event)


def test_cloudevents_layout_round_trip_and_writing_from_binary_headers(redis_server, kafka_server, names):
    """django-broadcaster writes -> tail -o json -> publish with the layout's own encoding
    (raw fields removed) gives the same field set; a binary-mode SDK event from Kafka is
    written as django-broadcaster's fields too."""
    import redis
    from cloudevents.core.bindings import kafka as binding
    from cloudevents.core.formats.json import JSONFormat

    stream, topic = names
    assert _django_backend(redis_server, stream).publish(_django_event())
    tail = evrelay("tail", f"{redis_server.url}/{stream}?layout=cloudevents", "-o", "json")
    (envelope,) = [json.loads(line) for line in tail.lines()]
    assert json.loads(envelope["value"])["type"] == "com.example.order.created"
    written = envelope.pop("fields")
    run = evrelay("publish", f"{redis_server.url}/{stream}-copy?layout=cloudevents", "--input", "json", input=json.dumps(envelope))
    assert run.returncode == 0, run.err
    client = redis.Redis.from_url(redis_server.url, decode_responses=True)
    (_, copied), = client.xrange(f"{stream}-copy")
    assert list(copied.items()) == [tuple(pair) for pair in written]

    _produce(kafka_server.bootstrap, topic, binding.to_binary(_sdk_event(), JSONFormat()))
    run = evrelay(
        "bridge", f"kafka://{kafka_server.bootstrap}/{topic}", f"{redis_server.url}/{stream}-k?layout=cloudevents",
        "-n", "1", "--timeout", "30s", timeout=120,
    )  # fmt: skip
    assert run.returncode == 0, run.err
    (_, fields), = client.xrange(f"{stream}-k")
    client.close()
    assert (fields["event_id"], fields["event_type"], fields["source"], fields["timestamp"]) == (
        "e-1", "com.example.order.created", "/shop/orders", "2026-12-01T10:00:00Z",
    )  # fmt: skip
    event = json.loads(fields["cloud_event"])
    assert event["data"] == {"order": 7, "total": 12.5} and event["traceparent"] == "00-abc-def-01"
    assert fields["evrelay-source"].startswith("kafka/")  # the provenance header, as an extra field


def test_cloudevents_bad_input_is_a_usage_error_and_nothing_is_written(redis_server, names):
    import redis

    stream, _ = names
    run = evrelay("publish", f"{redis_server.url}/{stream}", "--cloudevents", "binary", "plain text")
    assert run.returncode == 2, run.err
    assert "not a CloudEvent" in run.err
    run = evrelay("publish", f"{redis_server.url}/{stream}", "--cloudevents", "binery", "x")
    assert run.returncode == 2 and "--cloudevents must be one of binary, structured" in run.err
    run = evrelay("publish", f"{redis_server.url}/{stream}?layout=cloudevents", '{"no": "specversion"}')
    assert run.returncode == 2 and "not a CloudEvent" in run.err
    client = redis.Redis.from_url(redis_server.url)
    assert client.exists(stream) == 0
    client.close()


def test_pretty_output_summarises_cloudevents_and_decodes_json_in_fields(redis_server, names):
    stream, _ = names
    assert _django_backend(redis_server, stream).publish(_django_event())
    pretty = evrelay("tail", f"{redis_server.url}/{stream}?layout=cloudevents", "-o", "pretty")
    assert pretty.returncode == 0, pretty.err
    assert "CloudEvent type=com.example.order.created source=/shop/orders id=" in pretty.out
    assert "subject=order-7 time=2026-12-01T10:00:00.123000+00:00" in pretty.out
    # Read without the layout, the entry is its fields; the JSON inside cloud_event is decoded.
    plain = evrelay("tail", f"{redis_server.url}/{stream}", "-o", "pretty")
    assert '"cloud_event": {' in plain.out and '"specversion": "1.0"' in plain.out
    shown = evrelay("tail", f"{redis_server.url}/{stream}", "--format", "{fields[event_type]} {fields[source]}|{offset:08d}|")
    assert shown.out == "com.example.order.created /shop/orders||\n"
