"""`kafka`: Apache Kafka (and Kafka-protocol brokers) through confluent-kafka / librdkafka.

Features
    Publishing with the idempotent producer (`enable.idempotence`, `acks=all`), batched
    (`produce_batch` for header-less messages), every delivery report checked; keys,
    ordered and repeated headers, binary values, and the given timestamp kept. Plain reads
    assign partitions directly and start anywhere: beginning, end, an offset for every
    partition, `PARTITION:OFFSET,...`, a time (`offsets_for_times`), or the last N across
    partitions merged by timestamp. End of data comes from partition EOF events, not from
    watermarks alone (some brokers report stale high watermarks). Group reads commit only
    what has been acked, synchronously, never ahead of the output.

Connection string
    kafka://[USER:PASSWORD@]HOST:PORT[,HOST:PORT]/TOPIC[?librdkafka.key=value&...]
    (USER:PASSWORD become sasl.username / sasl.password; give security.protocol and
    sasl.mechanism in the query, e.g. ?security.protocol=SASL_SSL&sasl.mechanism=SCRAM-SHA-512)

Options
    bootstrap_servers  "host:port[,host:port]" (or a list)
    options            a table passed to librdkafka as is (TLS, SASL, tuning), e.g.
                       "security.protocol" = "SASL_SSL", "sasl.password" = "${KAFKA_PASSWORD}"

TLS and SASL
    librdkafka's settings in `options`: security.protocol (SSL, SASL_PLAINTEXT, SASL_SSL),
    ssl.ca.location, sasl.mechanism (PLAIN, SCRAM-SHA-256, SCRAM-SHA-512), sasl.username,
    sasl.password. Certificates are verified unless the profile sets
    enable.ssl.certificate.verification = false, which is warned about on every run. A
    refused password or an untrusted certificate ends the command at once with exit 3 and
    one line naming the profile.

librdkafka's own log lines reach stderr only with -v.
"""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import unquote, urlsplit

from evrelay.backends.base import (
    Backend,
    Capability,
    ClientLibrary,
    Consumer,
    Health,
    Producer,
    ReadSpec,
    canonical_endpoint,
)
from evrelay.backends.kafka.admin import KafkaAdmin
from evrelay.backends.kafka.clients import KafkaClients, _Redacting
from evrelay.backends.kafka.codes import client_logger, refuse_entry_id
from evrelay.backends.kafka.offsets import KafkaOffsets
from evrelay.errors import AddressError, BackendUnavailable, ConfigError, UsageError
from evrelay.positions import Stored

_TOPIC_NAME = re.compile(r"[A-Za-z0-9._-]{1,249}")


def valid_topic(name: str) -> str:
    """The name, when Kafka can hold a topic of that name; otherwise a usage error (exit 2)
    before any broker is asked (the broker's answer was "Broker: Invalid topic", exit 1)."""
    if not _TOPIC_NAME.fullmatch(name) or name in (".", ".."):
        raise UsageError(
            f"{name!r} is not a valid Kafka topic name (1 to 249 of the ASCII letters, digits, '.', '_' and '-')"
        )
    return name


class KafkaBackend(KafkaAdmin, KafkaOffsets, KafkaClients, Backend):
    """The Kafka backend: the adapter interface over confluent-kafka. Its client
    construction, position resolution and inspection live in the mixins it is built from
    (clients.py, offsets.py, admin.py); producers and consumers in producer.py and
    consumers.py."""

    name = "kafka"
    stream_noun = "topic"
    client_library = ClientLibrary("confluent_kafka", "confluent-kafka")
    stream_key = "topic"
    target_option = "bootstrap_servers"
    required_options = frozenset({"bootstrap_servers"})
    message_id_syntax = "PARTITION:OFFSET (0:41), several as 0:41,1:17"
    cumulative_ack = True
    ack_help = (
        "acks are cumulative per partition: committing an offset acks everything before\n"
        "it. evrelay commits, per partition, the highest offset reached without a gap from the\n"
        "group's committed position; offsets after a gap stay unacked (and are reported)."
    )
    group_help = (
        "a group is cluster-wide (deleting it drops its offsets on every topic) and must\n"
        "have no live members."
    )
    group_seek_help = "groups must have no live members."
    lag_columns = [("partition", "PARTITION"), ("position", "COMMITTED"), ("end", "END"), ("lag", "LAG")]
    partitioned = True
    sink_in_own_process = True
    option_names = frozenset({"bootstrap_servers", "options"})
    capabilities = frozenset(
        {
            Capability.PUBLISH,
            Capability.READ,
            Capability.FOLLOW,
            Capability.GROUPS,
            Capability.SEEK_POSITION,
            Capability.SEEK_TIME,
            Capability.GROUP_SEEK,
            Capability.GROUP_DELETE,
            Capability.KEEP_TIMESTAMP,
            Capability.INSPECT,
            Capability.PARTITIONS,
            Capability.EXACTLY_ONCE,
        }
    )

    @classmethod
    def check_client(cls) -> None:
        # Only confluent-kafka's C extension is needed to publish and read: loading it
        # alone skips the package's ~40 ms of imports (see extension.py).
        from evrelay.backends.kafka.extension import load

        try:
            load()
        except ImportError:
            super().check_client()  # the ordinary import: its failure names the pip command

    def __init__(self, options: dict[str, Any], settings: Any = None) -> None:
        super().__init__(options, settings)
        servers = self.options.get("bootstrap_servers")
        if isinstance(servers, list):
            servers = ",".join(str(s) for s in servers)
        if not servers or not isinstance(servers, str):
            raise ConfigError("a kafka profile needs bootstrap_servers = \"host:port[,host:port]\"")
        self.bootstrap = servers
        self.client_options = self.table_option("options", "librdkafka settings")
        from evrelay.config import is_secret_key

        self.secret_values = [str(v) for k, v in self.client_options.items() if is_secret_key(k) and v]
        """Option values never to print: librdkafka may quote them in its errors and logs."""

        # librdkafka logs through a Python logger with -v only (to stderr, secrets masked).
        self._logger = client_logger() if self.settings.verbose else None
        if self._logger is not None and self.secret_values:
            self._logger.addFilter(_Redacting(self.redact))
        self._admin: Any = None
        self._last_error: str | None = None
        self._refusal: str | None = None
        """The first authentication or TLS failure librdkafka reported: retrying cannot help."""
        self._disconnected_since: float | None = None
        """When librdkafka last reported losing its brokers (monotonic), until a broker
        answers again: librdkafka reconnects silently, so readers ask about it (see
        KafkaClients.check_connection) to report an outage instead of waiting in silence."""
        self._warn_about_verification()

    @classmethod
    def options_from_url(cls, url: str) -> tuple[dict[str, Any], str | None]:
        parts = urlsplit(url)
        if not parts.netloc:
            raise AddressError(f"{url!r}: expected kafka://HOST:PORT[,HOST:PORT]/TOPIC")
        topic = parts.path.strip("/") or None
        if topic and "/" in topic:
            raise AddressError(f"{url!r}: a Kafka topic name cannot contain '/'")
        userinfo, at, hosts = parts.netloc.rpartition("@")
        options: dict[str, Any] = {"bootstrap_servers": hosts}
        if at:
            # kafka://USER:PASSWORD@HOST:PORT/TOPIC: SASL credentials (the query names the mechanism).
            username, colon, password = userinfo.partition(":")
            credentials = {"sasl.username": unquote(username)}
            if colon:
                credentials["sasl.password"] = unquote(password)
            options["options"] = credentials
        return options, topic

    @classmethod
    def options_from_query(cls, query: dict[str, str]) -> dict[str, Any]:
        """`?acks=all&client.id=me`: librdkafka settings (the `options` table)."""
        if "layout" in query:
            raise ConfigError("layout is a Redis option (how stream fields map to messages); a Kafka record has value, key and headers, no field layout")
        return {"options": dict(query)}

    def describe(self) -> str:
        return f"kafka {self.bootstrap}"

    def endpoints(self) -> frozenset[tuple[str, int]]:
        """The bootstrap servers, spelled canonically (`localhost:9092` is `127.0.0.1:9092`)."""
        found = set()
        for server in self.bootstrap.split(","):
            server = server.strip().rpartition("://")[2]  # librdkafka takes PLAINTEXT://host:port too
            if server:
                parts = urlsplit("//" + server)
                try:
                    port = parts.port
                except ValueError:
                    port = None
                found.add(canonical_endpoint(parts.hostname or server, port, 9092))
        return frozenset(found)

    def location(self) -> tuple[Any, ...]:
        return (self.name, tuple(sorted(self.endpoints())))

    def same_place(self, other: Backend) -> bool:
        # Bootstrap lists name brokers of a cluster: two lists sharing a broker are one
        # cluster (kafka://a:9092,b:9092 and kafka://b:9092), whatever else they list.
        return isinstance(other, KafkaBackend) and bool(self.endpoints() & other.endpoints())

    # --- life cycle ----------------------------------------------------------------------

    def open(self) -> None:
        # Clients are created by producer()/consumer(); they check reachability themselves.
        pass

    def close(self) -> None:
        self._admin = None

    def health_check(self) -> Health:
        started = time.perf_counter()
        try:
            metadata = self.metadata(self.admin())
        except BackendUnavailable as exc:
            return Health(False, exc.message)
        brokers = len(metadata.brokers)
        return Health(True, f"{brokers} broker(s), {len(metadata.topics)} topic(s)", (time.perf_counter() - started) * 1000)

    # --- producing -----------------------------------------------------------------------

    def producer(self, stream: str) -> Producer:
        from evrelay.backends.kafka.producer import KafkaProducer

        return KafkaProducer(self, valid_topic(stream))

    def refuse_exactly_once(self, source: Backend | None) -> None:
        if source is None:
            return  # a replay: one transaction holds the whole copy
        if not isinstance(source, KafkaBackend):
            raise UsageError(
                f"--exactly-once into Kafka needs a Kafka source: the progress of a {source.name} source "
                "(its acks) cannot be committed inside a Kafka transaction, so a crash between the two could "
                "repeat a window; without the flag the bridge is at-least-once (a crash repeats at most one "
                "window, and the evrelay-source header lets readers drop the repeats)"
            )
        if not self.same_place(source):
            raise UsageError(
                f"--exactly-once needs the source and the sink on one Kafka cluster ({source.bootstrap} is not "
                f"{self.bootstrap}): a transaction cannot span two clusters"
            )

    def exactly_once_producer(self, stream: str, *, transaction_id: str, max_transaction_seconds: float = 60.0) -> Producer:
        from evrelay.backends.kafka.producer import KafkaTransactionalProducer

        return KafkaTransactionalProducer(self, stream, transaction_id, timeout_ms=int(max_transaction_seconds * 1000))

    # --- consuming -----------------------------------------------------------------------

    def consumer(self, spec: ReadSpec) -> Consumer:
        if spec.stream:
            valid_topic(spec.stream)
        for position in (spec.start, spec.stop):
            if position is not None:
                refuse_entry_id(position)
        from evrelay.backends.kafka.consumers import KafkaGroupConsumer, KafkaPartitionConsumer

        if spec.group:
            return KafkaGroupConsumer(self, spec)
        if isinstance(spec.start, Stored):
            raise UsageError("--from stored needs a consumer group (-g GROUP)")
        return KafkaPartitionConsumer(self, spec)
