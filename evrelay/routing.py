"""Routing: a sink whose topic/stream name is a template over each message.

`bridge kafka:events 'redis:events-{headers[region]}'` sends each message to the stream
its template names. `RoutedProducer` is a `Producer` like any other, so the relay's rules
(confirm before ack, retry outages, dead-letter what is refused for good) hold unchanged:
it opens one producer per destination on the sink's backend as names appear, and a message
whose template cannot be filled (no such header, no key, a value without that field) is
reported by `flush()` as refused for good, with the reason, so it goes to the dead-letter
address or stops the bridge, as a message the sink itself refuses would. A sink whose
first destination cannot be reached (or refuses the credentials) ends the run with exit 3,
as a plain sink does at start; once the sink's server has answered, losing it is an outage,
retried like any other.

Template fields: `{key}`, `{headers[NAME]}`, `{value[FIELD]}` (the value parsed as a JSON
object; `{value[a][b]}` goes deeper), `{topic}`/`{stream}` (the source's), `{partition}`,
`{backend}`.
"""

from __future__ import annotations

import string
from collections.abc import Callable, Sequence
from typing import Any

import orjson

from evrelay.backends.base import DeliveryFailure, DeliveryReport, Message, Producer
from evrelay.errors import BackendUnavailable, NeverReached, UsageError
from evrelay.templates import TemplateError, template_roots

ROUTE_FIELDS = ("key", "headers", "value", "topic", "stream", "partition", "backend")
MAX_OPEN_PRODUCERS = 256


def is_template(name: str | None) -> bool:
    return bool(name) and "{" in name  # type: ignore[operator]


class RouteError(Exception):
    """The template cannot be filled for one message; the text says what is missing."""


class _Headers:
    def __init__(self, message: Message) -> None:
        self.message = message

    def __getitem__(self, name: str) -> str:
        for header, value in reversed(self.message.headers):
            if header == name:
                return value.decode("utf-8", "surrogateescape")
        raise RouteError(f"no header {name!r}")


class _Value:
    def __init__(self, data: Any, path: str = "value") -> None:
        self.data = data
        self.path = path

    def __getitem__(self, name: str) -> Any:
        if not isinstance(self.data, dict):
            raise RouteError(f"{self.path} is not a JSON object")
        if name not in self.data:
            raise RouteError(f"{self.path} has no field {name!r}")
        item = self.data[name]
        return _Value(item, f"{self.path}[{name}]") if isinstance(item, dict) else item

    def __format__(self, spec: str) -> str:
        return format(orjson.dumps(self.data).decode(), spec)


class _Fields(dict):
    def __init__(self, message: Message) -> None:
        super().__init__()
        self.message = message

    def __missing__(self, name: str) -> Any:
        message = self.message
        position = message.position or message.origin
        if name == "key":
            if message.key is None:
                raise RouteError("the message has no key")
            return message.key.decode("utf-8", "surrogateescape")
        if name == "headers":
            return _Headers(message)
        if name == "value":
            try:
                return _Value(orjson.loads(message.value))
            except orjson.JSONDecodeError:
                raise RouteError("the value is not JSON") from None
        if position is None:
            raise RouteError(f"the message has no source {name}")
        if name in ("topic", "stream"):
            return position.stream
        if name == "partition":
            if position.partition is None:
                raise RouteError("the message has no partition")
            return position.partition
        if name == "backend":
            return position.backend
        raise RouteError(f"unknown field {{{name}}}")


class RouteTemplate:
    def __init__(self, template: str) -> None:
        self.template = template
        try:
            roots = set(template_roots(template))
        except TemplateError as exc:
            raise UsageError(f"sink template {template!r}: {exc}") from None
        unknown = sorted(roots - set(ROUTE_FIELDS))
        if unknown:
            raise UsageError(
                f"sink template {template!r}: unknown field {{{unknown[0]}}}; fields: "
                + ", ".join("{" + f + "}" for f in ("key", "headers[NAME]", "value[FIELD]", "topic", "stream", "partition", "backend"))
            )

    def render(self, message: Message) -> str:
        try:
            name = _NameFormatter().vformat(self.template, (), _Fields(message))
        except RouteError as exc:
            raise RouteError(f"route {self.template!r}: {exc}") from None
        if not name:
            raise RouteError(f"route {self.template!r}: the name is empty")
        return name


MESSAGE_FIELDS = frozenset({"key", "headers", "value"})
"""Fields whose text comes from whoever wrote the message, not from the operator."""


class _NameFormatter(string.Formatter):
    """Fills a template, refusing text from the message that would not stay one name:
    a key `../../etc/x` in `file:/data/out-{key}.jsonl` would write outside /data."""

    def get_field(self, field_name: str, args: Any, kwargs: Any) -> Any:
        self.from_message = field_name.split("[")[0].split(".")[0] in MESSAGE_FIELDS
        return super().get_field(field_name, args, kwargs)

    def format_field(self, value: Any, format_spec: str) -> str:
        text = super().format_field(value, format_spec)
        if self.from_message and (text in (".", "..") or any(c in text for c in "/\\\0")):
            raise RouteError(f"{text!r} from the message cannot be part of a name (a path separator, NUL, '.' or '..')")
        return text


def open_sink(backend: Any, stream: str, source_backend: Any = None, *, same_place: bool | None = None) -> Producer:
    """The producer for a sink: a plain one, or a RoutedProducer when the name is a template.
    With the source's backend, a template that names a message's own source stream on the
    same server refuses that message (`bridge s '{stream}'` would relay into itself forever);
    `same_place` says so instead where the source backend is not at hand (a sink process)."""
    if is_template(stream):
        if same_place is None:
            same_place = source_backend is not None and backend.same_place(source_backend)
        return RoutedProducer(stream, backend.producer, same_place=same_place)
    return backend.producer(stream)


class RoutedProducer(Producer):
    """Sends each message to the stream its template names, through one producer per
    destination (`open_producer(name)`), flushed together."""

    def __init__(self, template: str, open_producer: Callable[[str], Producer], *, same_place: bool = False) -> None:
        self.route = RouteTemplate(template)
        self.same_place = same_place
        """The sink is on the source's server: a name equal to a message's source stream loops."""
        self.open_producer = open_producer
        self.producers: dict[str, Producer] = {}
        self.unroutable: list[DeliveryFailure] = []
        self.sent_to: dict[str, int] = {}
        self._busy: set[str] = set()
        """Destinations sent to since the last flush (not to be closed before it)."""
        self.reached = False
        """The sink's server has answered once: from then on, unreachable is an outage."""

    def _producer(self, name: str) -> Producer:
        producer = self.producers.get(name)
        if producer is None:
            if len(self.producers) >= MAX_OPEN_PRODUCERS:
                # Idle destinations are closed (after their deliveries were confirmed) so
                # a template with many distinct names does not exhaust connections.
                for old in [n for n in self.producers if n not in self._busy][: MAX_OPEN_PRODUCERS // 2]:
                    self.producers.pop(old).close()
            producer = self.open_producer(name)
            if not self.reached:
                # The relay asks a plain sink ready() before its first read, and a sink
                # unreachable from the start is exit 3, not retried; a routed sink's first
                # destination opens only now, so it is asked here, with the same answer.
                try:
                    producer.ready()
                except BackendUnavailable as exc:
                    producer.close()
                    raise NeverReached.from_unavailable(exc) from None
                self.reached = True
            self.producers[name] = producer
        return producer

    def send(self, messages: Sequence[Message]) -> None:
        by_name: dict[str, list[Message]] = {}
        for message in messages:
            try:
                name = self.route.render(message)
                source = message.position or message.origin
                if self.same_place and source is not None and source.stream == name:
                    raise RouteError(f"route {self.route.template!r} names {name!r}, the stream the message came from: that would relay into itself")
                by_name.setdefault(name, []).append(message)
            except RouteError as exc:
                self.unroutable.append(DeliveryFailure(message, str(exc), permanent=True))
        for name, batch in by_name.items():
            try:
                producer = self._producer(name)
            except UsageError as exc:
                # The sink refuses the name the message made (NATS: no dots; Kafka: no
                # spaces): that message is refused for good, the bridge goes on.
                reason = f"route {self.route.template!r}: {exc.message}"
                self.unroutable += [DeliveryFailure(message, reason, permanent=True) for message in batch]
                continue
            self._busy.add(name)
            producer.send(batch)
            self.sent_to[name] = self.sent_to.get(name, 0) + len(batch)

    def flush(self, timeout: float | None = None) -> DeliveryReport:
        report = DeliveryReport(failures=self.unroutable)
        self.unroutable = []
        for producer in self.producers.values():
            part = producer.flush(timeout)
            report.delivered += part.delivered
            report.failures += part.failures
            report.pending += part.pending
        self._busy = set()
        return report

    def close(self) -> None:
        for producer in self.producers.values():
            producer.close()
        self.producers.clear()
