"""Conversions applied to every message on its way into a sink (`--cloudevents MODE`).

One path for publish, bridge and replay: the sink's producer is wrapped in a
`TransformingProducer`, so each command only says which conversion it wants. A message
the conversion refuses is not sent and comes back from `flush()` as an `unfit`, permanent
failure naming the message the caller gave (the relay dead-letters it or stops on it, as
it would for a sink's own refusal).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from evrelay.backends.base import Consumer, DeliveryFailure, DeliveryReport, Message, Producer
from evrelay.errors import UsageError

Transform = Callable[[Message], Message]


def message_transform(cloudevents_mode: str | None) -> Transform | None:
    """The conversion the command-line options ask for, or None; UsageError for a bad one."""
    if cloudevents_mode is None:
        return None
    from evrelay import cloudevents

    try:
        return cloudevents.converter(cloudevents_mode)
    except ValueError as exc:
        raise UsageError(str(exc)) from None


def with_transform(producer: Producer, transform: Transform | None) -> Producer:
    return producer if transform is None else TransformingProducer(producer, transform)


def previewing(
    emit: Callable[[Sequence[Message]], None] | None, transform: Transform | None, warn: Callable[[str], None]
) -> Callable[[Sequence[Message]], None] | None:
    """A dry run's output showing messages as the conversion would send them; a refusal
    is a warning (a real run would dead-letter the message or stop)."""
    if emit is None or transform is None:
        return emit

    def show(messages: Sequence[Message]) -> None:
        converted = []
        for message in messages:
            try:
                converted.append(transform(message))
            except ValueError as exc:
                where = message.position.coordinates if message.position is not None else "a message"
                warn(f"{where} would be refused: {exc}")
        emit(converted)

    return show


class TransformingProducer(Producer):
    def __init__(self, inner: Producer, transform: Transform) -> None:
        self.inner = inner
        self.transform = transform
        self.transactional = inner.transactional  # type: ignore[misc]  # an exactly-once sink stays one
        self._originals: dict[int, tuple[Message, Message]] = {}  # id(converted) -> (converted, given)
        self._refused: list[DeliveryFailure] = []

    def send(self, messages: Sequence[Message]) -> None:
        converted = []
        for message in messages:
            try:
                out = self.transform(message)
            except ValueError as exc:
                self._refused.append(DeliveryFailure(message, str(exc), permanent=True, unfit=True))
                continue
            self._originals[id(out)] = (out, message)
            converted.append(out)
        if converted:
            self.inner.send(converted)

    def flush(self, timeout: float | None = None) -> DeliveryReport:
        report = self.inner.flush(timeout)
        for failure in report.failures:
            pair = self._originals.get(id(failure.message))
            if pair is not None:
                failure.message = pair[1]
        report.failures = self._refused + report.failures
        self._refused = []
        if not report.pending:
            self._originals.clear()
        return report

    def ready(self) -> None:
        self.inner.ready()

    def begin(self) -> None:
        self.inner.begin()

    def commit(self, source: Consumer, acked: Sequence[Message]) -> None:
        self.inner.commit(source, acked)

    def abort(self) -> None:
        self.inner.abort()

    def close(self) -> None:
        self.inner.close()
