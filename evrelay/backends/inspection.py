"""What inspection and group administration return: the rows behind `ls`, `info`,
`groups`, `lag`, `health`, `ack --list` and `replay -g`.

Backends fill these dataclasses in their own terms (positions as native text, times as
epoch milliseconds); `Table` is a finished output table, rows plus the columns a terminal
shows, which a backend builds when its columns differ from the default ones.

Part of the adapter interface: import these names from `evrelay.backends.base`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from evrelay.envelope import Position
from evrelay.positions import StreamPosition


@dataclass(slots=True)
class Health:
    healthy: bool
    detail: str
    latency_ms: float | None = None


@dataclass(slots=True)
class PartitionInfo:
    """One Kafka partition, or the whole of a stream (partition None)."""

    partition: int | None
    length: int | None
    first: str | None
    last: str | None
    first_time: int | None = None
    last_time: int | None = None


@dataclass(slots=True)
class GroupInfo:
    name: str
    consumers: int | None
    pending: int | None
    lag: int | None
    position: str | None = None
    """The group's committed / last-delivered position, in the backend's native form."""
    state: str | None = None


@dataclass(slots=True)
class StreamInfo:
    name: str
    length: int | None
    partitions: list[PartitionInfo] = field(default_factory=list)
    groups: list[GroupInfo] = field(default_factory=list)


@dataclass(slots=True)
class GroupLag:
    """Where a group stands on one partition (Kafka) or on the whole stream."""

    partition: int | None
    position: str | None
    """Committed (Kafka) or last-delivered (Redis, local) position; None: nothing yet."""
    end: str | None
    lag: int
    """Messages after the position: not yet delivered to the group."""
    pending: int | None = None
    """Delivered but not acked (Redis, local); None where there is no such thing (Kafka)."""
    oldest_time: int | None = None
    """Epoch ms of the oldest message the group has not finished with (pending, or not
    yet delivered): `lag --max-age` compares its age. None when there is none."""


@dataclass(slots=True)
class Table:
    """Rows for a command's output and the columns a terminal table shows (key, HEADER);
    `-o json` prints the rows whole."""

    rows: list[dict[str, Any]]
    columns: list[tuple[str, str]]


def _time_text(ms: int | None) -> str | None:
    from evrelay.timestamps import format_ms

    return format_ms(ms) if ms is not None else None


@dataclass(slots=True)
class PendingEntry:
    position: Position
    consumer: str
    idle_ms: int
    deliveries: int


@dataclass(slots=True)
class GroupSeekStep:
    partition: int | None
    current: str
    new: str
    affected: int | None
    """How many messages will be delivered again (positive) or skipped (negative)."""


@dataclass(slots=True)
class GroupSeekPlan:
    stream: str
    group: str
    target: StreamPosition
    steps: list[GroupSeekStep]
    native: Any = None
    """Backend-private data `apply_group_seek` needs (the resolved offsets or ID)."""
