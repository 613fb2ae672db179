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
    kafka://HOST:PORT[,HOST:PORT]/TOPIC[?librdkafka.key=value&...]

Options
    bootstrap_servers  "host:port[,host:port]" (or a list)
    options            a table passed to librdkafka as is (TLS, SASL, tuning), e.g.
                       "security.protocol" = "SASL_SSL", "sasl.password" = "${KAFKA_PASSWORD}"

librdkafka's own log lines reach stderr only with -v.
"""

from __future__ import annotations

import collections
import functools
import heapq
import logging
import time
from collections.abc import Sequence
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from evrelay.backends.base import (
    Backend,
    Capability,
    Consumer,
    DeliveryFailure,
    DeliveryReport,
    GroupInfo,
    GroupLag,
    GroupSeekPlan,
    GroupSeekStep,
    Health,
    Message,
    PartitionInfo,
    Position,
    Producer,
    ReadSpec,
    StreamInfo,
)
from evrelay.errors import (
    AddressError,
    BackendUnavailable,
    ConfigError,
    EvrelayError,
    GroupBusyError,
    NotFoundError,
    UnsupportedError,
    UsageError,
)
from evrelay.positions import (
    AtTime,
    Beginning,
    End,
    EntryId,
    Last,
    Offset,
    PartitionOffsets,
    Stored,
    StreamPosition,
)

OFFSET_BEGINNING = -2
OFFSET_END = -1
OFFSET_INVALID = -1001

# Transient delivery errors: sending again later can succeed (outages, timeouts, leader moves).
_TRANSIENT_CODES = {
    "_MSG_TIMED_OUT",
    "_TIMED_OUT",
    "_TRANSPORT",
    "_ALL_BROKERS_DOWN",
    "_RESOLVE",
    "_PURGE_QUEUE",
    "_PURGE_INFLIGHT",
    "REQUEST_TIMED_OUT",
    "NOT_LEADER_FOR_PARTITION",
    "NOT_LEADER_OR_FOLLOWER",
    "LEADER_NOT_AVAILABLE",
    "NOT_ENOUGH_REPLICAS",
    "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
    "NETWORK_EXCEPTION",
    "COORDINATOR_NOT_AVAILABLE",
    "_QUEUE_FULL",
}
_ACTIVE_GROUP_STATES = {"stable", "preparing_rebalance", "completing_rebalance"}
_AUTH_CODES = {
    "_AUTHENTICATION",
    "SASL_AUTHENTICATION_FAILED",
    "TOPIC_AUTHORIZATION_FAILED",
    "GROUP_AUTHORIZATION_FAILED",
    "CLUSTER_AUTHORIZATION_FAILED",
    "_SSL",
}


def _client_logger(verbose: bool) -> logging.Logger:
    """librdkafka logs through this logger: to stderr with -v, nowhere otherwise."""
    logger = logging.getLogger("evrelay.librdkafka")
    logger.propagate = False
    if not logger.handlers:
        handler: logging.Handler = logging.StreamHandler() if verbose else logging.NullHandler()
        handler.setFormatter(logging.Formatter("librdkafka: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.DEBUG if verbose else logging.CRITICAL + 1)
    return logger


def _error_name(err: Any) -> str:
    try:
        return err.name()
    except Exception:
        return str(err)


def _entry_id_refused(position: StreamPosition) -> None:
    if isinstance(position, EntryId):
        raise UsageError(f"{position} is a stream ID; Kafka positions are offsets (42) or PARTITION:OFFSET (0:42)")


class KafkaBackend(Backend):
    name = "kafka"
    stream_noun = "topic"
    url_schemes = ("kafka",)
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
            Capability.KEEP_TIMESTAMP,
            Capability.INSPECT,
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
        extra = self.options.get("options") or {}
        if not isinstance(extra, dict):
            raise ConfigError("kafka 'options' must be a table of librdkafka settings")
        self.client_options = {str(k): v for k, v in extra.items()}
        self._logger = _client_logger(self.settings.verbose)
        self._admin: Any = None
        self._last_error: str | None = None

    @classmethod
    def options_from_url(cls, url: str) -> tuple[dict[str, Any], str | None]:
        parts = urlsplit(url)
        if not parts.netloc:
            raise AddressError(f"{url!r}: expected kafka://HOST:PORT[,HOST:PORT]/TOPIC")
        topic = parts.path.strip("/") or None
        if topic and "/" in topic:
            raise AddressError(f"{url!r}: a Kafka topic name cannot contain '/'")
        options: dict[str, Any] = {"bootstrap_servers": parts.netloc}
        query = dict(parse_qsl(parts.query))
        if query:
            options["options"] = query
        return options, topic

    def describe(self) -> str:
        return f"kafka {self.bootstrap}"

    # --- client construction -----------------------------------------------------------------

    def _error_cb(self, err: Any) -> None:
        self._last_error = f"{_error_name(err)}: {err.str() if hasattr(err, 'str') else err}"
        if self.settings.verbose:
            self.settings.warn(f"kafka: {self._last_error}")

    def client_config(self, **overrides: Any) -> dict[str, Any]:
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap,
            "client.id": self.settings.client_name,
            "logger": self._logger,
            "error_cb": self._error_cb,
            "socket.connection.setup.timeout.ms": max(int(self.settings.timeout * 1000), 1000),
        }
        config.update(overrides)
        config.update(self.client_options)
        return config

    def unavailable(self, what: str, exc: BaseException | None = None) -> BackendUnavailable:
        detail = self._last_error or ""
        if not detail and exc is not None and exc.args:
            error = exc.args[0]
            detail = error.str() if hasattr(error, "str") else str(error)
        refused = any(code in detail for code in _AUTH_CODES)
        reason = "refused the credentials" if refused else "could not be reached"
        text = f"Kafka at {self.bootstrap} {reason} ({what})"
        if detail:
            text += f": {detail}"
        return BackendUnavailable(text, hint=None if refused else "is the broker running, and is bootstrap_servers right?")

    def make_client(self, factory: Any, config: dict[str, Any]) -> Any:
        """A confluent-kafka client; options librdkafka rejects are a config error (exit 2)."""
        from confluent_kafka import KafkaException

        try:
            return factory(config)
        except KafkaException as exc:
            error = exc.args[0]
            detail = error.str() if hasattr(error, "str") else str(error)
            raise ConfigError(f"librdkafka rejected the Kafka options: {detail}") from None
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"invalid Kafka options: {exc}") from None

    def admin(self) -> Any:
        if self._admin is None:
            from confluent_kafka.admin import AdminClient

            self._admin = self.make_client(AdminClient, self.client_config())
        return self._admin

    def metadata(self, client: Any, topic: str | None = None) -> Any:
        """Cluster (or one topic's) metadata; BackendUnavailable when the broker is not there."""
        from confluent_kafka import KafkaException

        try:
            return client.list_topics(topic, timeout=self.settings.timeout)
        except KafkaException as exc:
            raise self.unavailable(f"no metadata within {self.settings.timeout:g}s", exc) from None

    def topic_partitions(self, client: Any, topic: str) -> list[int]:
        """Partition numbers of an existing topic (NotFoundError if it does not exist).

        `client` must be a consumer made with allow.auto.create.topics=false: a metadata
        request from it never creates the topic it asks about.
        """
        metadata = self.metadata(client, topic)
        info = metadata.topics.get(topic)
        if info is None or info.error is not None:
            name = _error_name(info.error) if info is not None and info.error is not None else ""
            if info is None or name in ("UNKNOWN_TOPIC_OR_PART", "UNKNOWN_TOPIC_ID", "_UNKNOWN_TOPIC"):
                raise NotFoundError(f"Kafka topic {topic!r} does not exist on {self.bootstrap}")
            if name in _AUTH_CODES:
                raise self.unavailable(f"topic {topic!r}: {name}")
            raise EvrelayError(f"Kafka topic {topic!r}: {info.error}")
        return sorted(info.partitions)

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
        return KafkaProducer(self, stream)

    # --- consuming -----------------------------------------------------------------------

    def consumer(self, spec: ReadSpec) -> Consumer:
        for position in (spec.start, spec.stop):
            if position is not None:
                _entry_id_refused(position)
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
            if _error_name(exc.args[0]) in ("UNKNOWN_MEMBER_ID", "ILLEGAL_GENERATION", "REBALANCE_IN_PROGRESS"):
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

        try:
            found = client.committed([TopicPartition(topic, p) for p in partitions], timeout=self.settings.timeout)
        except KafkaException as exc:
            raise self.unavailable(f"committed offsets of group {group!r}", exc) from None
        return {tp.partition: tp.offset for tp in found}

    def ack(self, stream: str, group: str, positions: Sequence[Position]) -> int:
        """Kafka acks are cumulative per partition: from the group's committed offset, the
        offsets given without a gap are acked and the commit moves past the last of them.
        Returns how many of `positions` are now acked (at or below the new commit)."""
        given: dict[int, set[int]] = {}
        for position in positions:
            if position.partition is None:
                raise UsageError(f"{position} is not a Kafka position (PARTITION:OFFSET)")
            given.setdefault(position.partition, set()).add(int(position.id))
        if not given:
            return 0
        client = self.new_consumer(group)
        try:
            self.topic_partitions(client, stream)
            committed = self.committed(client, stream, sorted(given), group)
            moves: dict[int, int] = {}
            acked = 0
            for partition, offsets in given.items():
                current = committed.get(partition, OFFSET_INVALID)
                if current < 0:
                    current = min(offsets)  # nothing committed yet: start at the lowest given
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
        rows = self._lag_rows(stream, group, partitions, lows, ends)
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
        self, stream: str, group: str, partitions: list[int], lows: dict[int, int], ends: dict[int, int]
    ) -> list[GroupLag] | None:
        client = self.new_consumer(group)
        try:
            committed = self.committed(client, stream, partitions, group)
        finally:
            client.close()
        if all(offset < 0 for offset in committed.values()):
            return None
        rows = []
        for p in partitions:
            position = committed.get(p, OFFSET_INVALID)
            start = position if position >= 0 else lows[p]
            rows.append(GroupLag(p, str(position) if position >= 0 else None, str(ends[p]), max(ends[p] - start, 0)))
        return rows

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
    def _busy(group: str, members: int | None) -> GroupBusyError:
        count = f"{members} " if members else ""
        return GroupBusyError(
            f"consumer group {group!r} has {count}live member(s); stop them before moving it "
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
        if not members and state in _ACTIVE_GROUP_STATES:
            return None, state
        return members, state

    def plan_group_seek(self, stream: str, group: str, target: StreamPosition) -> GroupSeekPlan:
        _entry_id_refused(target)
        members, state = self.group_members(group)
        if members or state in _ACTIVE_GROUP_STATES:
            raise self._busy(group, members)
        client = self.new_consumer(group)
        try:
            partitions = self.topic_partitions(client, stream)
            current = self.committed(client, stream, partitions, group)
            lows = {p: self.watermarks(client, stream, p)[0] for p in partitions}
        finally:
            client.close()
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


class KafkaProducer(Producer):
    """Queues into librdkafka; flush() waits for every delivery report."""

    def __init__(self, backend: KafkaBackend, topic: str) -> None:
        from confluent_kafka import Producer as KProducer

        self.backend = backend
        self.topic = topic
        config = backend.client_config(
            **{
                "enable.idempotence": True,
                "acks": "all",
                "linger.ms": 5,
                "batch.num.messages": 10000,
                "queue.buffering.max.messages": 500000,
                "partitioner": "murmur2_random",  # the Java client's partitioner: same key, same partition
                "message.timeout.ms": 30000,
                # Success needs no report: once flush() has resolved everything, whatever
                # did not fail was delivered. Saves a Python callback per message.
                "delivery.report.only.error": True,
            }
        )
        self.client = backend.make_client(KProducer, config)
        self.backend.metadata(self.client)  # fail fast (exit 3) when the cluster is unreachable
        self._report = DeliveryReport()
        # Handed to librdkafka and not yet resolved by a flush(); with error-only delivery
        # reports, what a flush resolves without a failure report was delivered.
        self._unresolved = 0
        self._async_failures = 0

    def _on_delivery(self, message: Message, err: Any, _msg: Any) -> None:
        if err is None:
            return
        name = _error_name(err)
        permanent = False if err.fatal() else not (err.retriable() or name in _TRANSIENT_CODES)
        self._report.failures.append(DeliveryFailure(message, f"{name}: {err.str()}", permanent))
        self._async_failures += 1

    def send(self, messages: Sequence[Message]) -> None:
        on_delivery = self._on_delivery
        partial = functools.partial
        if all(not m.headers and m.timestamp is None for m in messages):
            # The common case in one pass: produce_batch takes neither headers nor timestamps.
            self._produce_batch(
                [{"value": m.value, "key": m.key, "callback": partial(on_delivery, m)} for m in messages]
            )
        else:
            batch: list[dict[str, Any]] = []
            produce = self.client.produce
            for message in messages:
                callback = partial(on_delivery, message)
                if message.headers or message.timestamp is not None:
                    if batch:  # keep the order: what was batched before this one goes first
                        self._produce_batch(batch)
                        batch = []
                    self._produce_one(produce, message, callback)
                else:
                    batch.append({"value": message.value, "key": message.key, "callback": callback})
            if batch:
                self._produce_batch(batch)
        self.client.poll(0)

    def send_values(self, values: Sequence[bytes], key: bytes | None = None, headers: Any = None) -> None:
        """Plain values (publish's line input): one produce_batch, one error callback for
        the batch, no per-value Python objects besides the dict produce_batch needs."""
        if headers:
            super().send_values(values, key, headers)
            return
        if key is None:
            batch = [{"value": value} for value in values]
        else:
            batch = [{"value": value, "key": key} for value in values]
        self._produce_batch(batch, on_delivery=self._on_value_delivery)
        self.client.poll(0)

    def _on_value_delivery(self, err: Any, record: Any) -> None:
        if err is None:
            return
        name = _error_name(err)
        permanent = False if err.fatal() else not (err.retriable() or name in _TRANSIENT_CODES)
        self._report.failures.append(DeliveryFailure(Message(record.value() or b"", record.key()), f"{name}: {err.str()}", permanent))
        self._async_failures += 1

    def _produce_one(self, produce: Any, message: Message, callback: Any) -> None:
        from confluent_kafka import KafkaException

        while True:
            try:
                produce(
                    self.topic,
                    value=message.value,
                    key=message.key,
                    headers=message.headers,
                    timestamp=message.timestamp if message.timestamp is not None else 0,
                    on_delivery=callback,
                )
                self._unresolved += 1
                return
            except BufferError:
                self.client.poll(0.05)  # the local queue is full: let deliveries drain it
            except KafkaException as exc:
                # Refused before it left (e.g. MSG_SIZE_TOO_LARGE): this message only.
                error = exc.args[0]
                name = _error_name(error)
                transient = name in _TRANSIENT_CODES
                self._report.failures.append(DeliveryFailure(message, f"{name}: {error.str()}", permanent=not transient))
                return

    def _produce_batch(self, batch: list[dict[str, Any]], on_delivery: Any = None) -> None:
        from confluent_kafka import KafkaError

        extra = {"on_delivery": on_delivery} if on_delivery is not None else {}
        while batch:
            try:
                queued = self.client.produce_batch(self.topic, batch, **extra)
            except BufferError:
                queued = 0
                for entry in batch:
                    entry["_error"] = KafkaError(KafkaError._QUEUE_FULL)
            self._unresolved += queued
            if queued == len(batch):
                return
            retry = []
            for entry in batch:
                error = entry.pop("_error", None)
                if error is None:
                    continue
                if _error_name(error) == "_QUEUE_FULL":
                    retry.append(entry)
                else:
                    callback = entry.get("callback")
                    message = callback.args[0] if callback is not None else Message(entry["value"], entry.get("key"))
                    self._report.failures.append(DeliveryFailure(message, f"{_error_name(error)}: {error}", permanent=True))
            batch = retry
            if batch:
                self.client.poll(0.05)  # the local queue is full: let deliveries drain it

    def flush(self, timeout: float | None = None) -> DeliveryReport:
        remaining = self.client.flush(timeout if timeout is not None else -1)
        report, self._report = self._report, DeliveryReport()
        report.delivered = self._unresolved - remaining - self._async_failures
        report.pending = remaining
        self._unresolved = remaining
        self._async_failures = 0
        return report

    def close(self) -> None:
        # Deliveries not flushed are abandoned (the caller has reported them as unconfirmed):
        # drop what never left the local queue instead of sending it after we gave up.
        if len(self.client):
            self.client.purge(in_queue=True, in_flight=False)
        self.client.flush(0)


class _PartitionState:
    __slots__ = ("done", "max_offset", "max_time", "min_offset", "min_time", "skip_until_eof")

    def __init__(self) -> None:
        self.done = False
        # Starting at "end": a broker with a stale high watermark hands out older records
        # first; everything before the partition's first EOF event is not "new".
        self.skip_until_eof = False
        self.min_offset: int | None = None
        self.min_time: int | None = None
        self.max_offset: int | None = None
        self.max_time: int | None = None


class _KafkaReader(Consumer):
    """Shared by plain and group reads: polling, EOF bookkeeping, message conversion."""

    backend: KafkaBackend
    client: Any
    topic: str
    follow: bool

    def __init__(self) -> None:
        self.states: dict[int, _PartitionState] = {}

    def _poll(self, max_messages: int, timeout: float) -> list[Any]:
        """consume() in short slices: it waits for a *full* batch or its timeout, so one long
        call holds back a partial batch (and the end-of-data events) for the whole timeout."""
        from confluent_kafka import KafkaException

        deadline = time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                records = self.client.consume(num_messages=max_messages, timeout=max(min(left, 0.05), 0))
                if records or left <= 0.05:
                    return records
        except KafkaException as exc:
            raise self.backend.unavailable("consuming", exc) from None

    def _convert(self, raw: list[Any], receipt: Consumer | None) -> list[Message]:
        """Messages from a consume() batch; errors and EOF events update partition state."""
        if not self._filtering():
            return self._convert_plain(raw, receipt)
        out: list[Message] = []
        topic = self.topic
        states = self.states
        for record in raw:
            error = record.error()
            if error is not None:
                self._on_error(record, error)
                continue
            partition = record.partition()
            offset = record.offset()
            timestamp = record.timestamp()[1]
            state = states.get(partition)
            if state is not None:
                if state.done or state.skip_until_eof:
                    continue
                if state.min_offset is not None:
                    if offset < state.min_offset:
                        continue
                    state.min_offset = None
                if state.min_time is not None:
                    if timestamp < state.min_time:
                        continue
                    state.min_time = None
                if (state.max_offset is not None and offset > state.max_offset) or (
                    state.max_time is not None and timestamp > state.max_time
                ):
                    self._finish(partition)
                    continue
            headers = record.headers()
            out.append(
                Message(
                    record.value() or b"",
                    record.key(),
                    [(name, value if value is not None else b"") for name, value in headers] if headers else [],
                    timestamp,
                    Position("kafka", topic, offset, partition),
                    receipt,
                )
            )
            if state is not None and state.max_offset is not None and offset >= state.max_offset:
                self._finish(partition)
        return out

    def _filtering(self) -> bool:
        # A partition finished in a non-follow read is paused and past its EOF, so only a
        # follow read can still receive records it must drop.
        return any(
            (state.done and self.follow)
            or state.skip_until_eof
            or state.min_offset is not None
            or state.min_time is not None
            or state.max_offset is not None
            or state.max_time is not None
            for state in self.states.values()
        )

    def _convert_plain(self, raw: list[Any], receipt: Consumer | None) -> list[Message]:
        """The common case, no partition filters active: the per-message hot loop of tail
        and bridge, kept to attribute calls and one allocation per object."""
        topic = self.topic
        out: list[Message] = []
        append = out.append
        for record in raw:
            error = record.error()
            if error is not None:
                self._on_error(record, error)
                continue
            headers = record.headers()
            append(
                Message(
                    record.value() or b"",
                    record.key(),
                    [(name, value if value is not None else b"") for name, value in headers] if headers else [],
                    record.timestamp()[1],
                    Position("kafka", topic, record.offset(), record.partition()),
                    receipt,
                )
            )
        return out

    def _on_error(self, record: Any, error: Any) -> None:
        from confluent_kafka import KafkaError

        code = error.code()
        if code == KafkaError._PARTITION_EOF:
            state = self.states.get(record.partition())
            if state is not None:
                state.skip_until_eof = False
            if not self.follow:
                self._finish(record.partition())
            return
        name = _error_name(error)
        if name in ("UNKNOWN_TOPIC_OR_PART", "_UNKNOWN_TOPIC", "_UNKNOWN_PARTITION"):
            raise NotFoundError(f"Kafka topic {self.topic!r} does not exist (any more) on {self.backend.bootstrap}")
        if name in _AUTH_CODES or error.fatal():
            raise self.backend.unavailable(f"reading {self.topic!r}", None)
        # Transient trouble (a broker restarting, a rebalance): librdkafka retries by itself.
        if self.backend.settings.verbose:
            self.backend.settings.warn(f"kafka: {name}: {error.str()}")

    def _finish(self, partition: int) -> None:
        state = self.states.setdefault(partition, _PartitionState())
        if not state.done:
            state.done = True
            self._partition_finished(partition)

    def _partition_finished(self, partition: int) -> None:
        pass

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
            self.client = None


class KafkaPartitionConsumer(_KafkaReader):
    """A plain read: partitions assigned directly, no group state touched."""

    def __init__(self, backend: KafkaBackend, spec: ReadSpec) -> None:
        super().__init__()
        from confluent_kafka import TopicPartition

        self.backend = backend
        self.topic = spec.stream
        self.follow = spec.follow
        self.client = backend.new_consumer(None)
        try:
            partitions = backend.topic_partitions(self.client, self.topic)
            if spec.partitions:
                missing = sorted(set(spec.partitions) - set(partitions))
                if missing:
                    raise UsageError(f"topic {self.topic!r} has no partition {missing[0]} (partitions: {', '.join(map(str, partitions))})")
                partitions = sorted(spec.partitions)
            start = spec.start
            # PARTITION:OFFSET in --from or --to names the partitions to read.
            for named in (start, spec.stop):
                if isinstance(named, PartitionOffsets):
                    missing = sorted(set(named.as_dict()) - set(partitions))
                    if missing:
                        raise UsageError(f"topic {self.topic!r} has no partition {missing[0]} (partitions: {', '.join(map(str, partitions))})")
                    partitions = [p for p in partitions if p in named.as_dict()]
            self.last = start.count if isinstance(start, Last) else None
            offsets = backend.start_offsets(self.client, self.topic, partitions, start)
            for partition, (offset, minimum) in offsets.items():
                state = self.states.setdefault(partition, _PartitionState())
                state.min_offset = minimum
                state.skip_until_eof = offset == OFFSET_END
                if isinstance(start, AtTime):
                    state.min_time = start.ms
            self._apply_stop(spec.stop, partitions)
            self.client.assign([TopicPartition(self.topic, p, offsets[p][0]) for p in partitions])
        except BaseException:
            self.client.close()
            raise
        self.partitions = partitions
        self.backlog: collections.deque[Message] | None = None

    def _apply_stop(self, stop: StreamPosition | None, partitions: list[int]) -> None:
        if stop is None or isinstance(stop, End):
            return
        if isinstance(stop, Offset):
            for p in partitions:
                self.states[p].max_offset = stop.offset
        elif isinstance(stop, PartitionOffsets):
            bounds = stop.as_dict()
            for p in partitions:
                if p in bounds:
                    self.states[p].max_offset = bounds[p]
        elif isinstance(stop, AtTime):
            for p in partitions:
                self.states[p].max_time = stop.ms
        else:
            raise UsageError(f"--to {stop} does not apply; use end, an offset, PARTITION:OFFSET or a time")

    def _all_done(self) -> bool:
        return all(self.states[p].done for p in self.partitions)

    def _partition_finished(self, partition: int) -> None:
        """EOF (non-follow) or the --to bound reached: stop fetching it; all done, exhausted.

        While the last-N backlog is being collected, EOF only ends the collection."""
        from confluent_kafka import TopicPartition

        if self.follow:
            self.client.pause([TopicPartition(self.topic, partition)])
        if self.last is None and self._all_done():
            self.exhausted = True

    def read(self, max_messages: int, timeout: float) -> list[Message]:
        if self.last is not None:
            return self._read_last(max_messages, timeout)
        if self.exhausted:
            return []
        return self._convert(self._poll(max_messages, timeout), None)

    def _read_last(self, max_messages: int, timeout: float) -> list[Message]:
        """The last N across partitions, merged by timestamp: read each to EOF, keep N."""
        from confluent_kafka import TopicPartition

        if self.backlog is None:
            keep: dict[int, collections.deque[Message]] = {p: collections.deque(maxlen=self.last) for p in self.partitions}
            follow, self.follow = self.follow, False
            eof = set()
            deadline = time.monotonic() + max(self.backend.settings.timeout, 30.0)
            while len(eof) < len(self.partitions) and time.monotonic() < deadline:
                for message in self._convert(self._poll(10000, 0.5), None):
                    keep[message.position.partition].append(message)  # type: ignore[union-attr]
                eof = {p for p in self.partitions if self.states[p].done}
            self.follow = follow
            merged = heapq.nsmallest(
                sum(len(d) for d in keep.values()),
                (m for d in keep.values() for m in d),
                key=lambda m: (m.timestamp or 0, m.position.partition, m.position.id),  # type: ignore[union-attr]
            )
            self.backlog = collections.deque(merged[-self.last :] if self.last else [])
            if follow:
                for p in self.partitions:
                    self.states[p].done = False
                self.client.resume([TopicPartition(self.topic, p) for p in self.partitions])
        out = [self.backlog.popleft() for _ in range(min(max_messages, len(self.backlog)))]
        if not self.backlog:
            self.last = None
            if not self.follow:
                self.exhausted = True
        return out


class KafkaGroupConsumer(_KafkaReader):
    """A consumer-group read: subscribe, start a new group at the spec's position, commit
    synchronously only what has been acked."""

    def __init__(self, backend: KafkaBackend, spec: ReadSpec) -> None:
        super().__init__()
        self.backend = backend
        self.topic = spec.stream
        self.follow = spec.follow
        self.group = spec.group or ""
        if spec.stop is not None:
            raise UnsupportedError("--to is not supported with a Kafka consumer group; use -n or --idle-timeout")
        if spec.partitions:
            raise UnsupportedError("--partition is not supported with a consumer group (the group assigns partitions)")
        if isinstance(spec.start, Last):
            raise UsageError("a new consumer group cannot start at 'the last N'; use --from with a position or time")
        self.client = backend.new_consumer(
            self.group, **{"client.id": spec.consumer_name or backend.settings.client_name}
        )
        try:
            partitions = backend.topic_partitions(self.client, self.topic)
            committed = backend.committed(self.client, self.topic, partitions, self.group)
            self.created = all(offset < 0 for offset in committed.values())
            unset = [p for p, offset in committed.items() if offset < 0]
            if unset:
                # Place the new group (or its new partitions) at --from and commit that at
                # once, so the group keeps this start even if it reads nothing now.
                start = spec.start if not isinstance(spec.start, Stored) else Beginning()
                offsets = backend.resolve_offsets(self.topic, unset, start)
                if not backend.commit_start(self.client, self.topic, offsets, self.group):
                    self.created = False  # another member created and joined it first
            self.assigned: set[int] = set()
            self.ever_assigned = False
            self.paused = False
            self.stash: list[Message] = []
            self.client.subscribe([self.topic], on_assign=self._on_assign, on_revoke=self._on_revoke)
        except BaseException:
            self.client.close()
            raise

    def _on_assign(self, client: Any, partitions: list[Any]) -> None:
        self.ever_assigned = True
        for tp in partitions:
            self.states.setdefault(tp.partition, _PartitionState()).done = False
            self.assigned.add(tp.partition)
        client.assign(partitions)

    def close(self) -> None:
        # Leaving a group while its join is still in progress leaves a ghost member on
        # some brokers (tansu 0.6 then never completes the next rebalance): finish joining
        # first. Anything fetched meanwhile is not acked, so it is simply read again later.
        if self.client is not None and not self.ever_assigned:
            deadline = time.monotonic() + 15.0
            while not self.ever_assigned and time.monotonic() < deadline:
                self.client.poll(0.2)
        super().close()

    def _on_revoke(self, client: Any, partitions: list[Any]) -> None:
        for tp in partitions:
            self.assigned.discard(tp.partition)
        client.unassign()

    def _partition_finished(self, partition: int) -> None:
        if not self.follow and self.assigned and all(self.states.get(p) and self.states[p].done for p in self.assigned):
            self.exhausted = True

    def read(self, max_messages: int, timeout: float) -> list[Message]:
        if self.paused:
            self.client.resume(self.client.assignment())
            self.paused = False
        if self.stash:
            out, self.stash = self.stash[:max_messages], self.stash[max_messages:]
            return out
        if self.exhausted:
            return []
        return self._convert(self._poll(max_messages, timeout), self)

    def keepalive(self) -> None:
        """Stay in the group (max.poll.interval.ms) without taking more: pause, then poll.
        A message that still arrives (a partition assigned meanwhile) is kept for read()."""
        if not self.paused:
            self.client.pause(self.client.assignment())
            self.paused = True
        self.stash += self._convert(self._poll(100, 0), self)

    def ack(self, messages: Sequence[Message]) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        highest: dict[int, int] = {}
        for message in messages:
            position = message.position
            if position is not None and position.partition is not None:
                highest[position.partition] = max(highest.get(position.partition, -1), int(position.id))
        if not highest:
            return
        offsets = [TopicPartition(self.topic, p, o + 1) for p, o in highest.items()]
        try:
            self.client.commit(offsets=offsets, asynchronous=False)
        except KafkaException as exc:
            # Typically a rebalance took the partition away: the new owner re-reads from
            # the last commit, so nothing is lost (at-least-once).
            self.backend.settings.warn(f"kafka: commit for group {self.group!r} failed: {exc.args[0]}")

    def reject(self, messages: Sequence[Message]) -> None:
        from confluent_kafka import KafkaException, TopicPartition

        lowest: dict[int, int] = {}
        for message in messages:
            position = message.position
            if position is not None and position.partition is not None:
                lowest[position.partition] = min(lowest.get(position.partition, 2**62), int(position.id))
        for partition, offset in lowest.items():
            try:
                self.client.seek(TopicPartition(self.topic, partition, offset))
            except KafkaException:
                pass  # not assigned any more: the next owner starts at the last commit anyway
