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

import logging
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

from evrelay.backends.base import (
    Backend,
    Capability,
    ClientLibrary,
    Consumer,
    GroupInfo,
    GroupLag,
    GroupSeekPlan,
    GroupSeekStep,
    Health,
    PartitionInfo,
    Position,
    Producer,
    ReadSpec,
    StreamInfo,
    Table,
)
from evrelay.backends.kafka.codes import (
    ACTIVE_GROUP_STATES,
    AUTH_CODES,
    COORDINATOR_STARTING,
    OFFSET_BEGINNING,
    OFFSET_END,
    OFFSET_INVALID,
    client_logger,
    error_name,
    plain_client_error,
    refuse_entry_id,
)
from evrelay.errors import (
    AddressError,
    BackendUnavailable,
    ConfigError,
    EvrelayError,
    GroupBusyError,
    NotFoundError,
    UsageError,
)
from evrelay.positions import (
    AtTime,
    Beginning,
    End,
    Last,
    Offset,
    PartitionOffsets,
    Stored,
    StreamPosition,
)


class _Redacting(logging.Filter):
    """Masks secrets in librdkafka's log lines (shown with -v)."""

    def __init__(self, redact: Any) -> None:
        super().__init__()
        self.redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = self.redact(record.getMessage()), ()
        return True


class KafkaBackend(Backend):
    name = "kafka"
    stream_noun = "topic"
    client_library = ClientLibrary("confluent_kafka", "confluent-kafka")
    stream_key = "topic"
    target_option = "bootstrap_servers"
    required_options = frozenset({"bootstrap_servers"})
    message_id_syntax = "PARTITION:OFFSET (0:41), several as 0:41,1:17"
    cumulative_ack = True
    lag_columns = [("partition", "PARTITION"), ("position", "COMMITTED"), ("end", "END"), ("lag", "LAG")]
    partitioned = True
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

        self._logger = client_logger(self.settings.verbose)
        if self.secret_values:
            self._logger.addFilter(_Redacting(self.redact))
        self._admin: Any = None
        self._last_error: str | None = None
        self._refusal: str | None = None
        """The first authentication or TLS failure librdkafka reported: retrying cannot help."""
        self._warn_about_verification()

    def _warn_about_verification(self) -> None:
        origin = self.settings.origin or f"Kafka at {self.bootstrap}"
        if str(self.client_options.get("enable.ssl.certificate.verification", "true")).lower() in ("false", "0"):
            self.settings.warn(
                f"TLS certificate verification is off for {origin} (enable.ssl.certificate.verification = false): "
                "anyone on the network path can pose as the broker"
            )
        elif str(self.client_options.get("ssl.endpoint.identification.algorithm", "https")).lower() == "none":
            self.settings.warn(
                f"TLS host name verification is off for {origin} (ssl.endpoint.identification.algorithm = none)"
            )

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

    # --- client construction -----------------------------------------------------------------

    def redact(self, text: str) -> str:
        from evrelay.config import mask_secrets

        return mask_secrets(text, self.secret_values)

    def _error_cb(self, err: Any) -> None:
        self._last_error = self.redact(f"{error_name(err)}: {err.str() if hasattr(err, 'str') else err}")
        if error_name(err) in AUTH_CODES and self._refusal is None:
            self._refusal = self.redact(error_name(err) + ": " + plain_client_error(err.str() if hasattr(err, "str") else str(err)))
        if self.settings.verbose:
            self.settings.warn(f"kafka: {self._last_error}")

    def client_config(self, **overrides: Any) -> dict[str, Any]:
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap,
            "client.id": self.settings.client_name,
            "logger": self._logger,
            # Without -v nothing of librdkafka's logging is wanted: some of it (e.g. BGQUEUE
            # while a transactional client is destroyed) bypasses the logger and hits stderr.
            "log_level": 7 if self.settings.verbose else 0,
            "error_cb": self._error_cb,
            "socket.connection.setup.timeout.ms": max(int(self.settings.timeout * 1000), 1000),
        }
        config.update(overrides)
        config.update(self.client_options)
        return config

    def unavailable(self, what: str, exc: BaseException | None = None) -> BackendUnavailable:
        if self._refusal is not None:
            return self.refused()
        detail = self._last_error or ""
        if not detail and exc is not None and exc.args:
            error = exc.args[0]
            detail = error.str() if hasattr(error, "str") else str(error)
        refused = any(code in detail for code in AUTH_CODES)
        reason = "refused the credentials" if refused else "could not be reached"
        text = f"Kafka at {self.bootstrap} {reason} ({what})"
        if detail:
            text += f": {self.redact(detail)}"
        return BackendUnavailable(text, hint=None if refused else "is the broker running, and is bootstrap_servers right?")

    def refused(self) -> BackendUnavailable:
        """The broker refused the credentials, or its certificate was not trusted: one
        sentence naming the profile (never the secret), and what to check."""
        assert self._refusal is not None
        code, _, detail = self._refusal.partition(": ")
        origin = self.settings.origin or "these settings"
        if code == "_SSL":
            return BackendUnavailable(
                f"Kafka at {self.bootstrap}: the TLS handshake for {origin} failed ({detail})",
                hint="check ssl.ca.location (the CA that signed the broker's certificate) and the host name in bootstrap_servers",
            )
        return BackendUnavailable(
            f"Kafka at {self.bootstrap} refused the credentials of {origin} ({detail})",
            hint="check sasl.mechanism, sasl.username and sasl.password",
        )

    def make_client(self, factory: Any, config: dict[str, Any]) -> Any:
        """A confluent-kafka client; options librdkafka rejects are a config error (exit 2)."""
        from confluent_kafka import KafkaException

        try:
            return factory(config)
        except KafkaException as exc:
            error = exc.args[0]
            detail = error.str() if hasattr(error, "str") else str(error)
            raise ConfigError(f"librdkafka rejected the Kafka options: {self.redact(detail)}") from None
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"invalid Kafka options: {self.redact(str(exc))}") from None

    def admin(self) -> Any:
        if self._admin is None:
            from confluent_kafka.admin import AdminClient

            self._admin = self.make_client(AdminClient, self.client_config())
        return self._admin

    def metadata(self, client: Any, topic: str | None = None) -> Any:
        """Cluster (or one topic's) metadata; BackendUnavailable when the broker is not there."""
        from confluent_kafka import KafkaException

        # In slices, serving librdkafka's error callbacks in between: a refused password or
        # an untrusted certificate ends the wait at once instead of after the full timeout.
        deadline = time.monotonic() + self.settings.timeout
        while True:
            left = deadline - time.monotonic()
            try:
                return client.list_topics(topic, timeout=max(min(left, 0.5), 0.05))
            except KafkaException as exc:
                if not hasattr(client, "assignment") or not client.assignment():
                    client.poll(0)  # serves error_cb; a consumer with partitions would fetch instead
                if self._refusal is not None:
                    raise self.refused() from None
                if time.monotonic() >= deadline:
                    raise self.unavailable(f"no metadata within {self.settings.timeout:g}s", exc) from None

    def topic_partitions(self, client: Any, topic: str) -> list[int]:
        """Partition numbers of an existing topic (NotFoundError if it does not exist).

        `client` must be a consumer made with allow.auto.create.topics=false: a metadata
        request from it never creates the topic it asks about.
        """
        metadata = self.metadata(client, topic)
        info = metadata.topics.get(topic)
        if info is None or info.error is not None:
            name = error_name(info.error) if info is not None and info.error is not None else ""
            if info is None or name in ("UNKNOWN_TOPIC_OR_PART", "UNKNOWN_TOPIC_ID", "_UNKNOWN_TOPIC"):
                raise NotFoundError(f"Kafka topic {topic!r} does not exist on {self.bootstrap}")
            if name in AUTH_CODES:
                raise self.unavailable(f"topic {topic!r}: {name}")
            raise EvrelayError(f"Kafka topic {topic!r}: {info.error}")
        return sorted(info.partitions)

    @property
    def incremental_rebalance(self) -> bool:
        """True when group members get and give up partitions one by one (KIP-848's
        `group.protocol=consumer`, or a cooperative assignor) instead of all at once:
        librdkafka then needs incremental_assign/unassign in the rebalance callbacks."""
        protocol = str(self.client_options.get("group.protocol", "classic")).lower()
        strategy = str(self.client_options.get("partition.assignment.strategy", "")).lower()
        return protocol == "consumer" or strategy.startswith("cooperative")

    def new_consumer(self, group: str | None, **overrides: Any) -> Any:
        from confluent_kafka import Consumer as KConsumer

        config = self.client_config(
            **{
                "group.id": group or "evrelay-reader",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": True,
                "allow.auto.create.topics": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 6000,
                "heartbeat.interval.ms": 1500,
                "fetch.wait.max.ms": 100,
                # Streaming, not accumulating: prefetch at most ~1 MB per partition, so a
                # tail of a million messages stays near the memory of a small one
                # (benchmarked: 1.2x the RSS of a 10k tail, with no loss of speed).
                "queued.max.messages.kbytes": 1024,
                "fetch.max.bytes": 1048576,
                "max.partition.fetch.bytes": 262144,
                # librdkafka postpones the next fetch by 1 s when the local queue is over its
                # threshold, which stalls a consumer that converts in Python; retry sooner.
                "fetch.queue.backoff.ms": 10,
                **overrides,
            }
        )
        if str(config.get("group.protocol", "classic")).lower() == "consumer":
            # KIP-848's protocol (Kafka 4): the broker owns session and heartbeat timing,
            # and librdkafka refuses a client that sets them, so our classic defaults
            # would make `?group.protocol=consumer` unusable. Its groups skip the
            # classic join round (and a broker's group.initial.rebalance.delay.ms).
            for name in ("session.timeout.ms", "heartbeat.interval.ms"):
                if name not in self.client_options:
                    config.pop(name, None)
        return self.make_client(KConsumer, config)

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

        return KafkaProducer(self, stream)

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
        if set(source.bootstrap.split(",")) != set(self.bootstrap.split(",")):
            raise UsageError(
                f"--exactly-once needs the source and the sink on one Kafka cluster ({source.bootstrap} is not "
                f"{self.bootstrap}): a transaction cannot span two clusters"
            )

    def exactly_once_producer(self, stream: str, *, transaction_id: str, max_transaction_seconds: float = 60.0) -> Producer:
        from evrelay.backends.kafka.producer import KafkaTransactionalProducer

        return KafkaTransactionalProducer(self, stream, transaction_id, timeout_ms=int(max_transaction_seconds * 1000))

    # --- consuming -----------------------------------------------------------------------

    def consumer(self, spec: ReadSpec) -> Consumer:
        for position in (spec.start, spec.stop):
            if position is not None:
                refuse_entry_id(position)
        from evrelay.backends.kafka.consumers import KafkaGroupConsumer, KafkaPartitionConsumer

        if spec.group:
            return KafkaGroupConsumer(self, spec)
        if isinstance(spec.start, Stored):
            raise UsageError("--from stored needs a consumer group (-g GROUP)")
        return KafkaPartitionConsumer(self, spec)

    def watermarks(self, client: Any, topic: str, partition: int) -> tuple[int, int]:
        from confluent_kafka import KafkaException, TopicPartition

        try:
            return client.get_watermark_offsets(TopicPartition(topic, partition), timeout=self.settings.timeout, cached=False)
        except KafkaException as exc:
            raise self.unavailable(f"watermarks of {topic}[{partition}]", exc) from None

    def start_offsets(self, client: Any, topic: str, partitions: list[int], start: StreamPosition) -> dict[int, tuple[int, int | None]]:
        """Per partition: (offset to assign, minimum offset to show or None).

        Offsets are clamped into the partition's watermarks and then filtered client-side,
        which stays exact when a broker reports a stale high watermark.
        """
        from confluent_kafka import KafkaException, TopicPartition

        if isinstance(start, Beginning):
            return {p: (OFFSET_BEGINNING, None) for p in partitions}
        if isinstance(start, End):
            return {p: (OFFSET_END, None) for p in partitions}
        if isinstance(start, (Offset, PartitionOffsets)):
            wanted = {p: start.offset for p in partitions} if isinstance(start, Offset) else start.as_dict()
            unknown = sorted(set(wanted) - set(partitions))
            if unknown:
                raise UsageError(f"topic {topic!r} has no partition {unknown[0]} (partitions: {', '.join(map(str, partitions))})")
            result = {}
            for partition, offset in wanted.items():
                low, high = self.watermarks(client, topic, partition)
                result[partition] = (max(low, min(offset, high)), offset)
            return result
        if isinstance(start, AtTime):
            try:
                found = client.offsets_for_times(
                    [TopicPartition(topic, p, start.ms) for p in partitions], timeout=self.settings.timeout
                )
            except KafkaException as exc:
                raise self.unavailable("offsets_for_times", exc) from None
            return {tp.partition: (tp.offset if tp.offset >= 0 else OFFSET_END, None) for tp in found}
        if isinstance(start, Last):
            result = {}
            for partition in partitions:
                low, high = self.watermarks(client, topic, partition)
                result[partition] = (max(low, high - start.count), None)
            return result
        raise UsageError(f"--from {start} does not apply to Kafka")

    def _scan(self, topic: str, starts: dict[int, int], until_time: int | None = None) -> dict[int, int]:
        """Exact offsets by reading: from each start, the offset of the first record with a
        timestamp >= until_time (or, without a time, the partition's end as its EOF event
        reports it). Brokers that answer ListOffsets at batch granularity or with a stale
        high watermark are corrected here; on Kafka itself this returns at once."""
        from confluent_kafka import KafkaError, TopicPartition

        found: dict[int, int] = {}
        client = self.new_consumer(None)
        try:
            client.assign([TopicPartition(topic, p, o) for p, o in starts.items()])
            deadline = time.monotonic() + max(self.settings.timeout, 10.0)
            while len(found) < len(starts) and time.monotonic() < deadline:
                for record in client.consume(num_messages=10000, timeout=0.5):
                    partition = record.partition()
                    if partition in found:
                        continue
                    error = record.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            found[partition] = record.offset()
                        continue
                    if until_time is not None and record.timestamp()[1] >= until_time:
                        found[partition] = record.offset()
            missing = sorted(set(starts) - set(found))
            if missing:
                raise self.unavailable(f"finding the end of {topic}[{missing[0]}] timed out")
        finally:
            client.close()
        return found

    def end_offsets(self, topic: str, partitions: list[int]) -> dict[int, int]:
        """The true end (next offset) of each partition, not trusting the high watermark."""
        client = self.new_consumer(None)
        try:
            starts = {p: self.watermarks(client, topic, p)[1] for p in partitions}
        finally:
            client.close()
        return self._scan(topic, starts)

    def resolve_offsets(self, topic: str, partitions: list[int], position: StreamPosition) -> dict[int, int]:
        """Concrete offsets for a position, exact even on brokers with stale watermarks."""
        if not partitions:
            return {}
        ends = self.end_offsets(topic, partitions)
        client = self.new_consumer(None)
        try:
            lows = {p: self.watermarks(client, topic, p)[0] for p in partitions}
            if isinstance(position, Beginning):
                return lows
            if isinstance(position, End):
                return ends
            if isinstance(position, (Offset, PartitionOffsets)):
                wanted = {p: position.offset for p in partitions} if isinstance(position, Offset) else position.as_dict()
                return {p: max(lows[p], min(wanted.get(p, ends[p]), ends[p])) for p in partitions}
            if isinstance(position, AtTime):
                rough = self.start_offsets(client, topic, partitions, position)
                starts = {p: (o if o >= 0 else ends[p]) for p, (o, _) in rough.items()}
            else:
                raise UsageError(f"{position} cannot place a Kafka consumer group; use a position or a time")
        finally:
            client.close()
        return self._scan(topic, starts, until_time=position.ms)

    def commit_start(self, client: Any, topic: str, offsets: dict[int, int], group: str) -> bool:
        """Commit a new group's start; False when the group already has live members (a
        concurrent reader created it first: its start stands, and ours must not override)."""
        from confluent_kafka import KafkaException, TopicPartition

        try:
            client.commit(offsets=[TopicPartition(topic, p, o) for p, o in sorted(offsets.items())], asynchronous=False)
            return True
        except KafkaException as exc:
            if error_name(exc.args[0]) in ("UNKNOWN_MEMBER_ID", "ILLEGAL_GENERATION", "REBALANCE_IN_PROGRESS"):
                return False
            raise EvrelayError(f"creating group {group!r} on {topic!r} failed: {exc.args[0].str()}") from None

    def commit_offsets(self, client: Any, topic: str, offsets: dict[int, int], group: str) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        try:
            client.commit(offsets=[TopicPartition(topic, p, o) for p, o in sorted(offsets.items())], asynchronous=False)
        except KafkaException as exc:
            raise EvrelayError(f"committing offsets for group {group!r} on {topic!r} failed: {exc.args[0].str()}") from None

    # --- groups and inspection (used by the replay/ack/inspection commands) ---------------

    def committed(self, client: Any, topic: str, partitions: list[int], group: str) -> dict[int, int]:
        from confluent_kafka import KafkaException, TopicPartition

        deadline = time.monotonic() + self.settings.timeout
        while True:
            try:
                found = client.committed([TopicPartition(topic, p) for p in partitions], timeout=self.settings.timeout)
                return {tp.partition: tp.offset for tp in found}
            except KafkaException as exc:
                # Apache Kafka creates __consumer_offsets on the first group request and
                # answers NOT_COORDINATOR until its coordinator is loaded: wait for it.
                if error_name(exc.args[0]) not in COORDINATOR_STARTING or time.monotonic() > deadline:
                    raise self.unavailable(f"committed offsets of group {group!r}", exc) from None
                time.sleep(0.2)

    @classmethod
    def parse_message_ids(cls, texts: Sequence[str], stream: str) -> list[Position]:
        from evrelay.positions import PartitionOffsets, parse_position

        positions = []
        for text in texts:
            try:
                parsed = parse_position(text)
            except ValueError:
                parsed = None
            if not isinstance(parsed, PartitionOffsets):
                raise cls.not_a_message_id(text)
            positions += [Position(cls.name, stream, offset, partition) for partition, offset in parsed.offsets]
        return positions

    @classmethod
    def ack_shortfall_reason(cls) -> str:
        return "an earlier offset of their partition was not acked (Kafka acks are cumulative)"

    @classmethod
    def stream_table(cls, streams: Sequence[StreamInfo]) -> Table:
        rows = [{"name": info.name, "partitions": len(info.partitions), "length": info.length} for info in streams]
        return Table(rows, [("name", "TOPIC"), ("partitions", "PARTITIONS")])

    @classmethod
    def info_table(cls, details: StreamInfo) -> Table:
        rows = [{"partition": p.partition, "length": p.length, "low": p.first, "high": p.last} for p in details.partitions]
        return Table(rows, [("partition", "PARTITION"), ("low", "LOW"), ("high", "HIGH"), ("length", "MESSAGES")])

    def ack(self, stream: str, group: str, positions: Sequence[Position], *, force: bool = False) -> int:
        """Kafka acks are cumulative per partition: from the group's committed offset (the
        partition's first offset when nothing is committed), the offsets given without a
        gap are acked and the commit moves past the last of them. A commit that would
        skip offsets nobody acked is refused unless `force` (then it moves past the
        highest offset given). Returns how many of `positions` are now acked."""
        given: dict[int, set[int]] = {}
        for position in positions:
            if position.partition is None:
                raise UsageError(f"{position} is not a Kafka position (PARTITION:OFFSET)")
            given.setdefault(position.partition, set()).add(int(position.id))
        if not given:
            return 0
        client = self.new_consumer(group)
        try:
            partitions = self.topic_partitions(client, stream)
            unknown = sorted(set(given) - set(partitions))
            if unknown:
                raise UsageError(
                    f"topic {stream!r} has no partition {unknown[0]} (partitions: {', '.join(map(str, partitions))})"
                )
            committed = self.committed(client, stream, sorted(given), group)
            moves: dict[int, int] = {}
            acked = 0
            for partition, offsets in sorted(given.items()):
                current = committed.get(partition, OFFSET_INVALID)
                if current < 0:
                    current = self.watermarks(client, stream, partition)[0]
                if force:
                    nxt = max(max(offsets) + 1, current)
                else:
                    lowest = min(offsets)
                    if lowest > current:
                        raise UsageError(
                            f"acking {partition}:{lowest} would commit past {partition}:{current}..{partition}:{lowest - 1}, "
                            f"which group {group!r} has not acked (Kafka acks are cumulative)",
                            hint="ack those first, or give --force to skip them",
                        )
                    nxt = current
                    while nxt in offsets:
                        nxt += 1
                if nxt > current:
                    moves[partition] = nxt
                acked += sum(1 for offset in offsets if offset < nxt)
            if moves:
                self.commit_offsets(client, stream, moves, group)
        finally:
            client.close()
        return acked

    def group_lag(self, stream: str, group: str) -> list[GroupLag]:
        partitions, lows, ends = self.topic_extent(stream)
        rows = self._lag_rows(stream, group, partitions, lows, ends, oldest=True)
        if rows is None:
            raise NotFoundError(f"consumer group {group!r} has no committed offsets on Kafka topic {stream!r}")
        return rows

    def topic_extent(self, stream: str) -> tuple[list[int], dict[int, int], dict[int, int]]:
        """Partitions, low watermarks and true ends (by EOF, not the high watermark)."""
        client = self.new_consumer(None)
        try:
            partitions = self.topic_partitions(client, stream)
            lows = {p: self.watermarks(client, stream, p)[0] for p in partitions}
        finally:
            client.close()
        return partitions, lows, self.end_offsets(stream, partitions)

    def _lag_rows(
        self, stream: str, group: str, partitions: list[int], lows: dict[int, int], ends: dict[int, int], *, oldest: bool = False
    ) -> list[GroupLag] | None:
        client = self.new_consumer(group)
        try:
            committed = self.committed(client, stream, partitions, group)
        finally:
            client.close()
        if all(offset < 0 for offset in committed.values()):
            return None
        rows = []
        starts = {}
        for p in partitions:
            position = committed.get(p, OFFSET_INVALID)
            start = position if position >= 0 else lows[p]
            if ends[p] > start:
                starts[p] = start
            rows.append(GroupLag(p, str(position) if position >= 0 else None, str(ends[p]), max(ends[p] - start, 0)))
        if oldest:
            times = self.first_timestamps(stream, starts)
            for row in rows:
                row.oldest_time = times.get(row.partition)  # type: ignore[arg-type]
        return rows

    def first_timestamps(self, topic: str, starts: dict[int, int]) -> dict[int, int]:
        """The timestamp of the record at each partition's start offset (the first one
        the group has not committed)."""
        from confluent_kafka import TopicPartition

        found: dict[int, int] = {}
        if not starts:
            return found
        client = self.new_consumer(None)
        try:
            client.assign([TopicPartition(topic, p, o) for p, o in starts.items()])
            deadline = time.monotonic() + max(self.settings.timeout, 10.0)
            while len(found) < len(starts) and time.monotonic() < deadline:
                for record in client.consume(num_messages=len(starts) * 100, timeout=0.5):
                    partition = record.partition()
                    if record.error() is None and partition not in found and record.offset() >= starts[partition]:
                        found[partition] = record.timestamp()[1]
            missing = sorted(set(starts) - set(found))
            if missing:
                raise self.unavailable(f"reading the oldest unconsumed record of {topic}[{missing[0]}] timed out")
        finally:
            client.close()
        return found

    def list_streams(self) -> list[StreamInfo]:
        metadata = self.metadata(self.admin())
        return [
            StreamInfo(name, None, [PartitionInfo(p, None, None, None) for p in sorted(info.partitions)])
            for name, info in sorted(metadata.topics.items())
            if not name.startswith("__")
        ]

    def stream_info(self, stream: str) -> StreamInfo:
        partitions, lows, ends = self.topic_extent(stream)
        parts = [PartitionInfo(p, max(ends[p] - lows[p], 0), str(lows[p]), str(ends[p])) for p in partitions]
        groups = self._group_infos(stream, partitions, lows, ends)
        return StreamInfo(stream, sum(part.length or 0 for part in parts), parts, groups)

    def group_infos(self, stream: str) -> list[GroupInfo]:
        return self._group_infos(stream, *self.topic_extent(stream))

    def _group_infos(self, stream: str, partitions: list[int], lows: dict[int, int], ends: dict[int, int]) -> list[GroupInfo]:
        """Groups with committed offsets on this topic: members, state and total lag."""
        from confluent_kafka import KafkaException

        try:
            listing = self.admin().list_consumer_groups(request_timeout=self.settings.timeout).result()
        except KafkaException as exc:
            raise self.unavailable("listing consumer groups", exc) from None
        infos = []
        for name in sorted(g.group_id for g in listing.valid):
            rows = self._lag_rows(stream, name, partitions, lows, ends)
            if rows is None:
                continue  # no offsets on this topic: a group of another topic
            members, state = self.group_members(name)
            position = ",".join(f"{r.partition}:{r.position}" for r in rows if r.position is not None)
            infos.append(GroupInfo(name, members, None, sum(r.lag for r in rows), position, state))
        return infos

    @staticmethod
    def _busy(group: str, members: int | None, doing: str = "moving") -> GroupBusyError:
        count = f"{members} " if members else ""
        return GroupBusyError(
            f"consumer group {group!r} has {count}live member(s); stop them before {doing} it "
            "(Kafka only lets an empty group's offsets be changed)"
        )

    def group_members(self, group: str) -> tuple[int | None, str | None]:
        """(members, state). Some brokers report an active group with no member list:
        then members is None and the state tells."""
        from confluent_kafka import KafkaException

        try:
            described = self.admin().describe_consumer_groups([group], request_timeout=self.settings.timeout)[group].result()
        except KafkaException:
            return None, None
        state = getattr(described.state, "name", str(described.state)).lower()
        members = len(described.members)
        if not members and state in ACTIVE_GROUP_STATES:
            return None, state
        return members, state

    def group_delete_scope(self, stream: str, group: str) -> str:
        client = self.new_consumer(group)
        try:
            partitions = self.topic_partitions(client, stream)
            committed = self.committed(client, stream, partitions, group)
        finally:
            client.close()
        if all(offset < 0 for offset in committed.values()):
            raise NotFoundError(f"consumer group {group!r} has no committed offsets on Kafka topic {stream!r}")
        members, state = self.group_members(group)
        if members or state in ACTIVE_GROUP_STATES:
            raise self._busy(group, members, "deleting")
        return (f"consumer group {group!r} on the whole Kafka cluster: its committed offsets on topic {stream!r} "
                "and on every other topic it reads (Kafka groups are not per topic)")

    def delete_group(self, stream: str, group: str) -> None:
        from confluent_kafka import KafkaError, KafkaException

        try:
            self.admin().delete_consumer_groups([group], request_timeout=self.settings.timeout)[group].result()
        except KafkaException as exc:
            code = exc.args[0].code() if exc.args and hasattr(exc.args[0], "code") else None
            if code == KafkaError.GROUP_ID_NOT_FOUND:
                raise NotFoundError(f"consumer group {group!r} does not exist on Kafka") from None
            if code == KafkaError.NON_EMPTY_GROUP:
                raise self._busy(group, None, "deleting") from None
            raise self.unavailable(f"deleting consumer group {group!r}", exc) from None

    def plan_group_seek(self, stream: str, group: str, target: StreamPosition) -> GroupSeekPlan:
        refuse_entry_id(target)
        members, state = self.group_members(group)
        if members or state in ACTIVE_GROUP_STATES:
            raise self._busy(group, members)
        client = self.new_consumer(group)
        try:
            partitions = self.topic_partitions(client, stream)
            current = self.committed(client, stream, partitions, group)
            lows = {p: self.watermarks(client, stream, p)[0] for p in partitions}
        finally:
            client.close()
        if all(offset < 0 for offset in current.values()):
            # Committing here would create it: a typo in the name must not make a new group.
            raise NotFoundError(
                f"consumer group {group!r} does not exist on Kafka topic {stream!r} (no committed offsets); "
                f"a group is created by reading: `evrelay tail ... -g {group} --from POSITION`"
            )
        if isinstance(target, Stored):
            raise UsageError("moving a group to 'stored' changes nothing; give a position or a time")
        if isinstance(target, PartitionOffsets):  # only the partitions named move
            missing = sorted(set(target.as_dict()) - set(partitions))
            if missing:
                raise UsageError(f"topic {stream!r} has no partition {missing[0]}")
            partitions = sorted(target.as_dict())
        target_offsets = self.resolve_offsets(stream, partitions, target)
        steps = []
        for partition in partitions:
            old = current.get(partition, OFFSET_INVALID)
            new = target_offsets[partition]
            old_effective = old if old >= 0 else lows[partition]
            steps.append(GroupSeekStep(partition, str(old) if old >= 0 else "none", str(new), old_effective - new))
        return GroupSeekPlan(stream, group, target, steps, native=target_offsets)

    def apply_group_seek(self, plan: GroupSeekPlan) -> None:
        client = self.new_consumer(plan.group)
        try:
            # A member that joined after the plan was made: the broker refuses the commit.
            if not self.commit_start(client, plan.stream, plan.native, plan.group):
                raise self._busy(plan.group, None)
        finally:
            client.close()
