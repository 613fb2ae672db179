"""Where a Kafka read or a group starts: positions resolved to offsets, and offset commits.

`KafkaOffsets` is a part of `KafkaBackend` (a mixin, built on `KafkaClients`): it turns
evrelay's positions (beginning, end, offsets, times, last N) into per-partition offsets,
exact even on brokers that report stale high watermarks or answer ListOffsets at batch
granularity (it reads to find the true end), and commits and reads a group's offsets.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from evrelay.backends.kafka.codes import COORDINATOR_STARTING, OFFSET_BEGINNING, OFFSET_END, error_name
from evrelay.errors import EvrelayError, UsageError
from evrelay.positions import AtTime, Beginning, End, Last, Offset, PartitionOffsets, StreamPosition

if TYPE_CHECKING:
    from evrelay.backends.kafka.clients import KafkaClients as _Clients
else:
    _Clients = object


UNSTABLE_OFFSETS_WAIT = 30.0
"""Seconds more to wait for offsets a killed transaction holds pending (see `committed`)."""


class KafkaOffsets(_Clients):
    """Position resolution and offset commits for `KafkaBackend`."""

    def watermarks(self, client: Any, topic: str, partition: int) -> tuple[int, int]:
        from confluent_kafka.cimpl import KafkaException, TopicPartition

        try:
            return client.get_watermark_offsets(TopicPartition(topic, partition), timeout=self.settings.timeout, cached=False)
        except KafkaException as exc:
            raise self.unavailable(f"watermarks of {topic}[{partition}]", exc) from None

    def start_offsets(self, client: Any, topic: str, partitions: list[int], start: StreamPosition) -> dict[int, tuple[int, int | None]]:
        """Per partition: (offset to assign, minimum offset to show or None).

        Offsets are clamped into the partition's watermarks and then filtered client-side,
        which stays exact when a broker reports a stale high watermark.
        """
        from confluent_kafka.cimpl import KafkaException, TopicPartition

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
        from confluent_kafka.cimpl import KafkaError, TopicPartition

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
        from confluent_kafka.cimpl import KafkaException, TopicPartition

        try:
            client.commit(offsets=[TopicPartition(topic, p, o) for p, o in sorted(offsets.items())], asynchronous=False)
            return True
        except KafkaException as exc:
            if error_name(exc.args[0]) in ("UNKNOWN_MEMBER_ID", "ILLEGAL_GENERATION", "REBALANCE_IN_PROGRESS"):
                return False
            raise EvrelayError(f"creating group {group!r} on {topic!r} failed: {exc.args[0].str()}") from None

    def commit_offsets(self, client: Any, topic: str, offsets: dict[int, int], group: str) -> None:
        from confluent_kafka.cimpl import KafkaException, TopicPartition

        try:
            client.commit(offsets=[TopicPartition(topic, p, o) for p, o in sorted(offsets.items())], asynchronous=False)
        except KafkaException as exc:
            raise EvrelayError(f"committing offsets for group {group!r} on {topic!r} failed: {exc.args[0].str()}") from None

    def committed(self, client: Any, topic: str, partitions: list[int], group: str) -> dict[int, int]:
        from confluent_kafka.cimpl import KafkaException, TopicPartition

        started = time.monotonic()
        deadline = started + self.settings.timeout
        # A member of the group killed inside a transaction leaves its offsets pending
        # until the broker aborts it (a bridge's transaction lives up to 15 s, and the
        # broker looks every 10 s): librdkafka asks for stable offsets and times out
        # meanwhile. The broker did answer, so that is waited out, longer than an outage.
        unstable_deadline = started + self.settings.timeout + UNSTABLE_OFFSETS_WAIT
        warned = False
        while True:
            try:
                found = client.committed([TopicPartition(topic, p) for p in partitions], timeout=self.settings.timeout)
                return {tp.partition: tp.offset for tp in found}
            except KafkaException as exc:
                # Apache Kafka creates __consumer_offsets on the first group request and
                # answers NOT_COORDINATOR until its coordinator is loaded: wait for it.
                name = error_name(exc.args[0])
                if name in COORDINATOR_STARTING and time.monotonic() <= deadline:
                    time.sleep(0.2)
                    continue
                if name in ("_TIMED_OUT", "UNSTABLE_OFFSET_COMMIT") and time.monotonic() <= unstable_deadline:
                    if not warned:
                        warned = True
                        self.settings.warn(
                            f"kafka: the committed offsets of group {group!r} on {topic!r} are pending in an open "
                            f"transaction (a killed exactly-once member's?): waiting up to {UNSTABLE_OFFSETS_WAIT:g}s "
                            "for the broker to end it"
                        )
                    time.sleep(0.2)
                    continue
                raise self.unavailable(f"committed offsets of group {group!r}", exc) from None
