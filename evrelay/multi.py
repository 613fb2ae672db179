"""Reading several topics/streams as one: `tail kafka:orders kafka:payments`, and patterns
(`kafka:~orders\\..*`, `redis:~orders-.*`) that are looked up again while following.

`MultiConsumer` is a `Consumer` over one consumer per stream, so tail, bridge and stats
use it like any other. Reads take from every stream in turn (each message keeps its own
position, which names its stream); acks go back to the consumer that read the message.
A stream a pattern finds later is read from its beginning: everything in it is new to
this reader. A plain read of the last N (tail's default) merges the streams' last N by
timestamp and keeps the last N overall.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace

from evrelay.backends.base import Backend, Consumer, Message, ReadSpec
from evrelay.errors import AddressError, NotFoundError
from evrelay.positions import Beginning, Last

PATTERN_PREFIX = "~"
REDISCOVER_EVERY = 5.0


def stream_pattern(name: str | None) -> re.Pattern[str] | None:
    """The compiled `~REGEX` of an address's stream part, or None for a plain name."""
    if not name or not name.startswith(PATTERN_PREFIX):
        return None
    try:
        return re.compile(name[len(PATTERN_PREFIX) :])
    except re.error as exc:
        raise AddressError(f"{name!r} is not a valid pattern: {exc}") from None


@dataclass
class StreamSource:
    """One address of a multi-stream read: its backend, and a fixed stream or a pattern."""

    label: str
    backend: Backend
    stream: str | None = None
    pattern: re.Pattern[str] | None = None
    open: dict[str, Consumer] = field(default_factory=dict)

    def streams(self) -> list[str]:
        if self.pattern is None:
            return [self.stream] if self.stream else []
        return self.backend.matching_streams(self.pattern)


class MultiConsumer(Consumer):
    def __init__(
        self,
        sources: Sequence[StreamSource],
        spec: ReadSpec,
        *,
        rediscover_every: float = REDISCOVER_EVERY,
        warn: Callable[[str], None] = lambda text: None,
    ) -> None:
        self.sources = list(sources)
        self.spec = spec
        self.rediscover_every = rediscover_every
        self.warn = warn
        self.consumers: list[Consumer] = []
        self._ids: set[int] = set()
        self.by_stream: dict[tuple[str, str], Consumer] = {}
        self.turn = 0
        self.next_discovery = 0.0
        self.merged_last: list[Message] | None = None
        self._discover(initial=True)
        if not self.consumers and not spec.follow:
            labels = ", ".join(source.label for source in self.sources)
            raise NotFoundError(f"no topic/stream matches {labels}; -f waits for one to appear")
        self.created = any(c.created for c in self.consumers) if self.consumers else None
        self.cumulative_acks = any(c.cumulative_acks for c in self.consumers)

    @property
    def stream_count(self) -> int:
        return len(self.consumers)

    def _discover(self, initial: bool = False) -> None:
        self.next_discovery = time.monotonic() + self.rediscover_every
        for source in self.sources:
            for stream in source.streams():
                if stream in source.open:
                    continue
                # A stream found while following is new: read all of it, from the start.
                spec = replace(self.spec, stream=stream) if initial else replace(self.spec, stream=stream, start=Beginning())
                consumer = source.backend.consumer(spec)
                source.open[stream] = consumer
                self.consumers.append(consumer)
                self._ids.add(id(consumer))
                self.by_stream[(source.backend.name, stream)] = consumer
                if not initial:
                    self.warn(f"now also reading {stream!r} (it matches {source.label})")

    def read(self, max_messages: int, timeout: float) -> list[Message]:
        if self.merged_last is None and isinstance(self.spec.start, Last) and not self.spec.follow and not self.spec.group:
            self.merged_last = self._merge_last(self.spec.start.count)
        if self.merged_last is not None:
            batch, self.merged_last = self.merged_last[:max_messages], self.merged_last[max_messages:]
            self.exhausted = not self.merged_last
            return batch
        if self.spec.follow and any(s.pattern is not None for s in self.sources) and time.monotonic() >= self.next_discovery:
            self._discover()
        deadline = time.monotonic() + timeout
        got: list[Message] = []
        while True:
            live = [c for c in self.consumers if not c.exhausted]
            for consumer in self.consumers:
                if consumer.exhausted:
                    # Kafka's behaviour: a rebalance waits for every member of the group to
                    # rejoin, so a member that has read all it will read must still answer
                    # (else a sibling in the same group waits up to max.poll.interval.ms).
                    consumer.keepalive()
            if not live:
                self.exhausted = not self.spec.follow
                if self.spec.follow:
                    time.sleep(max(min(0.1, deadline - time.monotonic()), 0))
                return got
            for _ in range(len(live)):
                consumer = live[self.turn % len(live)]
                self.turn += 1
                got += consumer.read(max_messages - len(got), 0.0)
                if len(got) >= max_messages:
                    return got
            left = deadline - time.monotonic()
            if got or left <= 0:
                return got
            # Nothing anywhere: wait on one stream for a little, then look at all again.
            consumer = live[self.turn % len(live)]
            self.turn += 1
            got += consumer.read(max_messages, min(left, 0.05 if len(live) > 1 else left))
            if got or time.monotonic() >= deadline:
                return got

    def _merge_last(self, count: int) -> list[Message]:
        everything: list[Message] = []
        for consumer in self.consumers:
            while not consumer.exhausted:
                everything += consumer.read(max(count, 1), 0.5)
        everything.sort(key=lambda m: m.timestamp if m.timestamp is not None else 0)
        return everything[-count:] if count else []

    def _owner(self, message: Message) -> Consumer | None:
        if message.receipt is not None and id(message.receipt) in self._ids:
            return message.receipt
        position = message.position
        return self.by_stream.get((position.backend, position.stream)) if position is not None else None

    def _split(self, messages: Sequence[Message]) -> dict[int, tuple[Consumer, list[Message]]]:
        parts: dict[int, tuple[Consumer, list[Message]]] = {}
        for message in messages:
            owner = self._owner(message)
            if owner is not None:
                parts.setdefault(id(owner), (owner, []))[1].append(message)
        return parts

    def ack(self, messages: Sequence[Message]) -> None:
        for consumer, part in self._split(messages).values():
            consumer.ack(part)

    def reject(self, messages: Sequence[Message]) -> None:
        for consumer, part in self._split(messages).values():
            consumer.reject(part)

    def keepalive(self) -> None:
        for consumer in self.consumers:
            consumer.keepalive()

    def claim_idle(self, min_idle_ms: int, count: int) -> list[Message]:
        claimed: list[Message] = []
        for consumer in self.consumers:
            if len(claimed) >= count:
                break
            claimed += consumer.claim_idle(min_idle_ms, count - len(claimed))
        return claimed

    def close(self) -> None:
        # Every reader is closed even when one fails (e.g. its last XACK is answered with
        # an error only now): the others still settle their acks and hand back what they
        # read and did not ack. The first failure is raised once all are closed.
        failure: BaseException | None = None
        for consumer in self.consumers:
            try:
                consumer.close()
            except Exception as exc:
                failure = failure or exc
        if failure is not None:
            raise failure
