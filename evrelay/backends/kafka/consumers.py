"""Kafka consumers: plain reads by direct partition assignment, and consumer-group reads."""

from __future__ import annotations

import collections
import heapq
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from evrelay.backends.base import (
    Consumer,
    Message,
    Position,
    ReadSpec,
    default_consumer_name,
)
from evrelay.backends.kafka.codes import (
    AUTH_CODES,
    OFFSET_END,
    error_name,
)
from evrelay.errors import (
    NotFoundError,
    UnsupportedError,
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

if TYPE_CHECKING:
    from evrelay.backends.kafka import KafkaBackend


def record_to_message(record: Any, topic: str, receipt: Consumer | None) -> Message:
    """A confluent-kafka record as a Message (a null value stays None: a tombstone; a null
    header value is empty bytes)."""
    headers = record.headers()
    return Message(
        record.value(),
        record.key(),
        [(name, value if value is not None else b"") for name, value in headers] if headers else [],
        record.timestamp()[1],
        Position("kafka", topic, record.offset(), record.partition()),
        receipt,
    )


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
        self.at_eof: set[int] = set()
        """Partitions whose last event was an EOF: read to their end, nothing new since."""

    def _poll(self, max_messages: int, timeout: float) -> list[Any]:
        """consume() in short slices: it waits for a *full* batch or its timeout, so one long
        call holds back a partial batch (and the end-of-data events) for the whole timeout."""
        from confluent_kafka.cimpl import KafkaException

        deadline = time.monotonic() + timeout
        try:
            while True:
                left = deadline - time.monotonic()
                records = self.client.consume(num_messages=max_messages, timeout=max(min(left, 0.05), 0))
                if records or left <= 0.05:
                    # Records and end-of-partition events say nothing about the connection:
                    # they may have been queued before it was lost. Only a probe clears it.
                    return records
        except KafkaException as exc:
            raise self.backend.unavailable("consuming", exc) from None

    def _poll_for_read(self, max_messages: int, timeout: float) -> list[Any]:
        """_poll for read(); when it brought nothing, BackendUnavailable if the brokers
        have been gone for a while (only in read(): keepalive() polls while the relay
        waits out that very outage, and must not raise it again)."""
        raw = self._poll(max_messages, timeout)
        if not raw:
            self.backend.check_connection(self.client, self.topic)
        return raw

    def _convert(self, raw: list[Any], receipt: Consumer | None) -> list[Message]:
        """Messages from a consume() batch; errors and EOF events update partition state."""
        if not self._filtering():
            return self._convert_plain(raw, receipt)
        out: list[Message] = []
        topic = self.topic
        states = self.states
        at_eof = self.at_eof
        for record in raw:
            error = record.error()
            if error is not None:
                self._on_error(record, error)
                continue
            partition = record.partition()
            at_eof.discard(partition)
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
            out.append(record_to_message(record, topic, receipt))
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
        """The common case, no partition filters active: the hot loop of tail and bridge."""
        topic = self.topic
        out: list[Message] = []
        at_eof = self.at_eof
        for record in raw:
            error = record.error()
            if error is None:
                out.append(record_to_message(record, topic, receipt))
                if at_eof:
                    at_eof.discard(record.partition())
            else:
                self._on_error(record, error)
        return out

    def _on_error(self, record: Any, error: Any) -> None:
        from confluent_kafka.cimpl import KafkaError

        code = error.code()
        if code == KafkaError._PARTITION_EOF:
            self.at_eof.add(record.partition())
            state = self.states.get(record.partition())
            if state is not None:
                state.skip_until_eof = False
            if not self.follow:
                self._finish(record.partition())
            return
        name = error_name(error)
        if name in ("UNKNOWN_TOPIC_OR_PART", "_UNKNOWN_TOPIC", "_UNKNOWN_PARTITION"):
            raise NotFoundError(f"Kafka topic {self.topic!r} does not exist (any more) on {self.backend.bootstrap}")
        if name in AUTH_CODES or error.fatal():
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
        self.backend = backend
        self.spec = spec
        self.topic = spec.stream
        self.follow = spec.follow
        self.partitions: list[int] = []
        self.last: int | None = None
        self.backlog: collections.deque[Message] | None = None
        self.waiting_for_topic = False
        self.values_only = spec.values_only
        self.client = backend.new_consumer(None)
        try:
            self._assign(spec)
        except NotFoundError:
            if not spec.follow:
                self.client.close()
                raise
            # Like `tail -f` on a file that is not there yet: wait for it (-f only).
            self.waiting_for_topic = True
            backend.settings.warn(
                f"Kafka topic {self.topic!r} does not exist (yet) on {backend.bootstrap}; waiting for it to be created"
            )
        except BaseException:
            self.client.close()
            raise

    def _assign(self, spec: ReadSpec) -> None:
        from confluent_kafka.cimpl import TopicPartition

        backend = self.backend
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
        self.partitions = partitions

    def _topic_appeared(self, timeout: float) -> bool:
        """While waiting for the topic: look again (about once a second)."""
        time.sleep(min(max(timeout, 0.0), 1.0))
        try:
            self._assign(self.spec)
        except NotFoundError:
            return False
        self.waiting_for_topic = False
        self.backend.settings.warn(f"Kafka topic {self.topic!r} now exists; reading it")
        return True

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

    @property
    def caught_up(self) -> bool:
        return all(p in self.at_eof or self.states[p].done for p in self.partitions)

    def _partition_finished(self, partition: int) -> None:
        """EOF (non-follow) or the --to bound reached: stop fetching it; all done, exhausted.

        While the last-N backlog is being collected, EOF only ends the collection."""
        from confluent_kafka.cimpl import TopicPartition

        if self.follow:
            self.client.pause([TopicPartition(self.topic, partition)])
        if self.last is None and self._all_done():
            self.exhausted = True

    def read(self, max_messages: int, timeout: float) -> list[Message]:
        if self.waiting_for_topic and not self._topic_appeared(timeout):
            return []
        if self.last is not None:
            return self._read_last(max_messages, timeout)
        if self.exhausted:
            return []
        raw = self._poll_for_read(max_messages, timeout)
        if self.values_only and not self._filtering():
            return self._values(raw)  # type: ignore[return-value]
        return self._convert(raw, None)

    def _values(self, raw: list[Any]) -> list[bytes | None]:
        """The values alone (ReadSpec.values_only): a Message and a Position per record
        cost ~0.85 us, most of `tail -o raw`'s own CPU (0.25 of 0.5 s for 300,000)."""
        values: list[bytes | None] = []
        append = values.append
        at_eof = self.at_eof
        for record in raw:
            error = record.error()
            if error is None:
                append(record.value())
                if at_eof:
                    at_eof.discard(record.partition())
            else:
                self._on_error(record, error)
        return values

    def _read_last(self, max_messages: int, timeout: float) -> list[Message]:
        """The last N across partitions, merged by timestamp: read each to EOF, keep N."""
        from confluent_kafka.cimpl import TopicPartition

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

    cumulative_acks = True

    def __init__(self, backend: KafkaBackend, spec: ReadSpec) -> None:
        super().__init__()
        self.backend = backend
        self.topic = spec.stream
        self.follow = spec.follow
        self.group = spec.group or ""
        if spec.partitions:
            raise UnsupportedError("--partition is not supported with a consumer group (the group assigns partitions)")
        if isinstance(spec.start, Last):
            raise UsageError("a new consumer group cannot start at 'the last N'; use --from with a position or time")
        self.client = backend.new_consumer(
            self.group, **{"client.id": spec.consumer_name or default_consumer_name()}
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
            self.incremental = backend.incremental_rebalance
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
            self.at_eof.discard(tp.partition)
        if self.incremental:
            client.incremental_assign(partitions)  # the partitions added, not the whole set
        else:
            client.assign(partitions)

    @property
    def caught_up(self) -> bool:
        """Joined the group, and every partition it gave us is read to its end."""
        return self.ever_assigned and not self.stash and self.assigned <= self.at_eof

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
            self.at_eof.discard(tp.partition)
        if self.incremental:
            client.incremental_unassign(partitions)
        else:
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
        return self._convert(self._poll_for_read(max_messages, timeout), self)

    def keepalive(self) -> None:
        """Stay in the group (max.poll.interval.ms) without taking more: pause, then poll.
        A message that still arrives (a partition assigned meanwhile) is kept for read()."""
        if not self.paused:
            self.client.pause(self.client.assignment())
            self.paused = True
        self.stash += self._convert(self._poll(100, 0), self)

    def ack(self, messages: Sequence[Message]) -> None:
        from confluent_kafka.cimpl import KafkaException, TopicPartition

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

    def group_metadata(self) -> Any:
        """The group's generation and member, for offsets committed inside a transaction."""
        return self.client.consumer_group_metadata()

    def reject(self, messages: Sequence[Message]) -> None:
        from confluent_kafka.cimpl import KafkaException, TopicPartition

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
