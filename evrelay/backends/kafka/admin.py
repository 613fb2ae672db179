"""Kafka inspection and group administration: ls, info, groups, lag, ack, group seeks and deletes.

`KafkaAdmin` is a part of `KafkaBackend` (a mixin, built on `KafkaClients` and
`KafkaOffsets`): what the inspection commands show (partitions with their low and high
offsets, groups with members, state and lag), how Kafka's cumulative acks work for `ack`
(a commit up to a message), and moving or deleting a group, which Kafka allows only while
the group has no live members.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from evrelay.backends.base import (
    GroupInfo,
    GroupLag,
    GroupSeekPlan,
    GroupSeekStep,
    PartitionInfo,
    Position,
    StreamInfo,
    Table,
)
from evrelay.backends.kafka.codes import ACTIVE_GROUP_STATES, OFFSET_INVALID, refuse_entry_id
from evrelay.errors import GroupBusyError, NotFoundError, UsageError
from evrelay.positions import PartitionOffsets, Stored, StreamPosition

if TYPE_CHECKING:
    from evrelay.backends.kafka.offsets import KafkaOffsets as _Offsets
else:
    _Offsets = object


class KafkaAdmin(_Offsets):
    """Inspection and group administration for `KafkaBackend`."""

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
        from confluent_kafka.cimpl import TopicPartition

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
        from confluent_kafka.cimpl import KafkaException

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
        from confluent_kafka.cimpl import KafkaException

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
        from confluent_kafka.cimpl import KafkaError, KafkaException

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
