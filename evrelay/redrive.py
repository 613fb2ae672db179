"""Dead-letter re-drive: send the messages a bridge dead-lettered back where they came from.

A dead letter (evrelay/relay.py) is the message as it was going to the sink plus, at the
end of its headers, `evrelay-error` (why), `evrelay-sink` (where it was going) and
`evrelay-source-address` (the address it was read from). `Redrive` strips those headers
and the bridge's provenance header, so what goes back is the original message, sends it
to the recorded source (or to `--to`), and acks in the dead-letter stream only what its
destination confirmed. Anything it cannot deliver, or that the selection left out, stays
in the dead-letter stream for next time.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from evrelay.backends.base import Consumer, Message, Producer
from evrelay.config import mask_url
from evrelay.errors import BackendUnavailable, EvrelayError
from evrelay.relay import ERROR_HEADER, PROVENANCE_HEADER, SINK_HEADER, SOURCE_ADDRESS_HEADER

MASKED = "********"


def original_message(letter: Message) -> Message:
    """The message before the bridge added provenance and the dead-letter headers."""
    headers = list(letter.headers)
    for name in (SOURCE_ADDRESS_HEADER, SINK_HEADER, ERROR_HEADER, PROVENANCE_HEADER):
        if headers and headers[-1][0] == name:
            headers.pop()
    return Message(letter.value, letter.key, headers, letter.timestamp)


def header(message: Message, name: str) -> str | None:
    for key, value in reversed(message.headers):
        if key == name:
            return value.decode("utf-8", "replace")
    return None


@dataclass(slots=True)
class RedriveStats:
    read: int = 0
    delivered: int = 0
    acked: int = 0
    left: int = 0
    """Read but not delivered: filtered out, no destination, or refused (stay in the DLQ)."""
    by_destination: dict[str, int] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)


class Redrive:
    """Moves dead letters to their destinations, a batch at a time.

    `producer_for(address)` opens (and caches) a producer for a destination address;
    `to` overrides every recorded source. `emit` instead of sending is a dry run."""

    def __init__(
        self,
        consumer: Consumer,
        producer_for: Callable[[str], Producer],
        *,
        to: str | None = None,
        selection=None,
        emit: Callable[[str, Sequence[Message]], None] | None = None,
        confirm_timeout: float = 30.0,
    ) -> None:
        self.consumer = consumer
        self.producer_for = producer_for
        self.to = to
        self.selection = selection
        self.emit = emit
        self.confirm_timeout = confirm_timeout
        self.cumulative_acks = consumer.cumulative_acks
        self.stats = RedriveStats()
        self._gapped: set[tuple[str, int | None]] = set()

    def destination(self, letter: Message) -> str | None:
        if self.to is not None:
            return self.to
        address = header(letter, SOURCE_ADDRESS_HEADER)
        if address is None:
            self._problem(letter, "records no source address (dead-lettered before evrelay recorded one); give --to SINK")
            return None
        if MASKED in address:
            self._problem(letter, f"its source address {address!r} had a password, which is not recorded; give --to SINK or use a profile")
            return None
        shown = mask_url(address)
        if shown != address:
            # evrelay records addresses with their secrets masked: one carrying a secret
            # was written by someone else (forged, or another tool). Neither print it nor
            # connect with credentials a message chose.
            self._problem(letter, f"its source address {shown!r} carries credentials, which evrelay never records; give --to SINK or use a profile")
            return None
        return address

    def _problem(self, letter: Message, text: str) -> None:
        where = letter.position.coordinates if letter.position else "a dead letter"
        if len(self.stats.problems) < 20:
            self.stats.problems.append(f"{where} {text}")

    def handle(self, batch: list[Message]) -> None:
        self.stats.read += len(batch)
        chosen = list(range(len(batch)))
        if self.selection is not None:
            result = self.selection.select(batch)
            chosen = sorted(set(result.origins))
            for index, reason in result.errors:
                self._problem(batch[index], f"was left in place: {reason}")
        groups: dict[str, list[int]] = {}
        for index in chosen:
            address = self.destination(batch[index])
            if address is not None:
                groups.setdefault(address, []).append(index)
        delivered: set[int] = set()
        for address, indices in groups.items():
            messages = [original_message(batch[i]) for i in indices]
            if self.emit is not None:
                self.emit(address, messages)
                delivered.update(indices)
                continue
            delivered.update(self._send(address, indices, messages, batch))
        for address, indices in groups.items():
            count = sum(1 for i in indices if i in delivered)
            if count:
                self.stats.by_destination[address] = self.stats.by_destination.get(address, 0) + count
        self.stats.delivered += len(delivered)
        self.stats.left += len(batch) - len(delivered)
        if self.emit is None:
            self._ack([m for i, m in enumerate(batch) if i in delivered], batch, delivered)

    def _send(self, address: str, indices: list[int], messages: list[Message], batch: list[Message]) -> set[int]:
        try:
            producer = self.producer_for(address)
            producer.send(messages)
            report = producer.flush(self.confirm_timeout)
        except EvrelayError as exc:
            for i in indices:
                self._problem(batch[i], f"was not sent to {address}: {exc.message}")
            return set()
        failed = {id(f.message): f.reason for f in report.failures}
        if report.pending:
            raise BackendUnavailable(f"{address} did not confirm {report.pending} message(s) in time; nothing of them was acked in the dead-letter stream")
        ok = set()
        for i, message in zip(indices, messages, strict=True):
            if id(message) in failed:
                self._problem(batch[i], f"was refused by {address}: {failed[id(message)]}")
            else:
                ok.add(i)
        return ok

    def _ack(self, done: list[Message], batch: list[Message], delivered: set[int]) -> None:
        """Ack what was delivered. Where acks are cumulative (a Kafka commit covers every
        offset before it), acking past a message left behind would lose it: stop acking
        that partition at the first one left behind."""
        if self.cumulative_acks:
            done = []
            for i, message in enumerate(batch):
                position = message.position
                part = (position.stream, position.partition) if position is not None else ("", None)
                if part in self._gapped:
                    continue
                if i in delivered:
                    done.append(message)
                else:
                    self._gapped.add(part)
        if done:
            self.consumer.ack(done)
            self.stats.acked += len(done)
