"""The Kafka producers: the idempotent producer, batched, with per-message delivery
accounting; and the transactional one behind exactly-once bridges, which commits the
source group's offsets inside each transaction (send_offsets_to_transaction)."""

from __future__ import annotations

import functools
import threading
import time
from collections import deque
from collections.abc import Sequence
from itertools import repeat
from typing import TYPE_CHECKING, Any

from evrelay.backends.base import (
    DeliveryFailure,
    DeliveryReport,
    Message,
    Producer,
)
from evrelay.backends.kafka.codes import (
    TRANSIENT_CODES,
    error_name,
)
from evrelay.errors import EvrelayError, TransactionAborted, UsageError

if TYPE_CHECKING:
    from evrelay.backends.kafka import KafkaBackend


class KafkaProducer(Producer):
    """Queues into librdkafka; flush() waits for every delivery report."""

    def __init__(self, backend: KafkaBackend, topic: str, **extra_config: Any) -> None:
        from confluent_kafka.cimpl import Producer as KProducer

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
                # The callback of a produce() given none: send_values' plain values,
                # whose produce() then takes two or three positional arguments.
                "on_delivery": self._on_value_delivery,
                **extra_config,
            }
        )
        self.client = backend.make_client(KProducer, config)
        self._report = DeliveryReport()
        # Handed to librdkafka and not yet resolved by a flush(); with error-only delivery
        # reports, what a flush resolves without a failure report was delivered.
        self._unresolved = 0
        self._async_failures = 0
        idempotent = str(config.get("enable.idempotence")).lower() in ("true", "1") and "transactional.id" not in config
        self._probe = ReachabilityProbe(self.client, backend.settings.timeout, nudge_producer_id=idempotent)

    def _check_reachable(self, wait: bool, deadline: float | None = None) -> None:
        """BackendUnavailable (exit 3) once the probe found no broker in time, or a
        refused login; with `wait`, wait for its verdict (until `deadline`, a monotonic
        time, if given), serving librdkafka's callbacks meanwhile so that a refusal ends
        the wait at once, and a delivery too: a message the broker acknowledged is proof
        enough that it is there."""
        probe = self._probe
        if probe.done.is_set():
            if probe.failure is not None and not probe.reached:
                self.client.poll(0)  # serves error_cb: the reason librdkafka gave
                raise self.backend.unavailable(f"no metadata within {self.backend.settings.timeout:g}s", probe.failure)
            return
        if self._delivered_some():
            probe.reached_by_delivery()
            return
        while wait and not probe.done.is_set():
            if deadline is not None and deadline < probe.deadline and time.monotonic() >= deadline:
                # No verdict yet, and the caller stops waiting before the probe would give
                # one: its flush reports what is unconfirmed. (A caller waiting as long as
                # the probe gets the verdict: exit 3 when no broker answered.)
                return
            if not len(self.client):
                probe.ask()  # nothing in flight that could prove it: ask for metadata now
            self.client.poll(0.01)
            if self.backend._refusal is not None:
                probe.stop()
                raise self.backend.refused()
            if self._delivered_some():
                probe.reached_by_delivery()
                return
        if wait:
            self._check_reachable(wait=False)

    def _delivered_some(self) -> bool:
        """Whether a message handed over since the last flush() was acknowledged: what
        was handed over is either still in librdkafka's queue (its length also counts
        reports and events not yet served, so this errs towards False) or resolved, and
        the failures among the resolved ones have been reported."""
        return self._unresolved - len(self.client) - self._async_failures > 0

    def ready(self) -> None:
        self._check_reachable(wait=True)

    def _on_delivery(self, message: Message, err: Any, _msg: Any) -> None:
        if err is None:
            return
        name = error_name(err)
        permanent = False if err.fatal() else not (err.retriable() or name in TRANSIENT_CODES)
        self._report.failures.append(DeliveryFailure(message, f"{name}: {err.str()}", permanent))
        self._async_failures += 1

    def send(self, messages: Sequence[Message]) -> None:
        self._check_reachable(wait=False)
        if any(["\0" in name for m in messages if m.headers for name, _ in m.headers]):  # ~40 ns a message
            messages = self._refuse_nul_header_names(messages)
        self._produce_each(messages)
        self.client.poll(0)

    def _refuse_nul_header_names(self, messages: Sequence[Message]) -> list[Message]:
        """The messages whose header names librdkafka can take; the others are reported
        unfit. It takes a header name as a C string: 'h\\0nul' would arrive as 'h'."""
        fitting = []
        for message in messages:
            bad = next((name for name, _ in message.headers if "\0" in name), None)
            if bad is None:
                fitting.append(message)
            else:
                reason = f"Kafka header names cannot hold a NUL character (librdkafka would cut {bad!r} short)"
                self._report.failures.append(DeliveryFailure(message, reason, permanent=True, unfit=True))
        return fitting

    def send_values(self, values: Sequence[bytes], key: bytes | None = None, headers: Any = None) -> None:
        """Plain values (publish's line input): `produce(topic, value[, key])` called from
        C by map() for each value (no bytecode per value), its delivery failures reported
        to the producer-level callback. produce_batch costs more (it looks six keys up in
        a dict made for each value), and so does a Python loop passing a callback: 300,000
        values took 0.46, 0.31 and 0.28 s of CPU in bench/kafka_produce_loop.py that way.
        From a full queue or a value refused on the spot, the rest goes through
        _produce_one, which handles both."""
        if headers:
            super().send_values(values, key, headers)
            return
        from confluent_kafka.cimpl import KafkaException

        self._check_reachable(wait=False)
        produce, topic = self.client.produce, self.topic
        pending = iter(values)
        try:
            if key is None:
                deque(map(produce, repeat(topic), pending), 0)
            else:
                deque(map(produce, repeat(topic), pending, repeat(key)), 0)
        except (BufferError, KafkaException):
            # map() took the refused value from `pending`: it and the rest go one by one.
            refused = len(values) - sum(1 for _ in pending) - 1
            self._unresolved += refused
            for value in values[refused:]:
                message = Message(value, key)
                self._produce_one(produce, message, functools.partial(self._on_delivery, message))
        else:
            self._unresolved += len(values)
        self.client.poll(0)

    def _on_value_delivery(self, err: Any, record: Any) -> None:
        if err is None:
            return
        name = error_name(err)
        permanent = False if err.fatal() else not (err.retriable() or name in TRANSIENT_CODES)
        self._report.failures.append(DeliveryFailure(Message(record.value() or b"", record.key()), f"{name}: {err.str()}", permanent))
        self._async_failures += 1

    def _produce_each(self, messages: Sequence[Message]) -> None:
        """One produce() per message in one tight loop with positional arguments (cheaper
        than produce_batch, which takes neither headers nor timestamps and looks six keys
        up in a dict made for each message); from a full queue or a message refused on the
        spot, the rest goes through _produce_one, which handles both."""
        from confluent_kafka.cimpl import KafkaException

        produce, topic, on_delivery, partial = self.client.produce, self.topic, self._on_delivery, functools.partial
        queued = 0
        try:
            for message in messages:
                # produce(topic, value, key, partition (-1: the partitioner's), callback, on_delivery, timestamp, headers)
                produce(topic, message.value, message.key, -1, partial(on_delivery, message), None, message.timestamp or 0, message.headers or None)
                queued += 1
        except (BufferError, KafkaException):  # _produce_one waits for room, or reports the refusal
            self._unresolved += queued
            for message in messages[queued:]:
                self._produce_one(produce, message, partial(on_delivery, message))
            return
        self._unresolved += queued

    def _produce_one(self, produce: Any, message: Message, callback: Any) -> None:
        from confluent_kafka.cimpl import KafkaException

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
                name = error_name(error)
                transient = name in TRANSIENT_CODES
                self._report.failures.append(DeliveryFailure(message, f"{name}: {error.str()}", permanent=not transient))
                return

    def flush(self, timeout: float | None = None) -> DeliveryReport:
        # `timeout` bounds the whole call, the wait for the cluster's first answer too: an
        # interrupted publish to a broker that is not there asks for one second, not for
        # the connect timeout (10 s).
        deadline = time.monotonic() + timeout if timeout is not None and timeout >= 0 else None
        self._check_reachable(wait=True, deadline=deadline)
        left = max(deadline - time.monotonic(), 0.0) if deadline is not None else -1
        remaining = self.client.flush(left)
        report, self._report = self._report, DeliveryReport()
        report.delivered = self._unresolved - remaining - self._async_failures
        report.pending = remaining
        self._unresolved = remaining
        self._async_failures = 0
        return report

    def close(self) -> None:
        # Deliveries not flushed are abandoned (the caller has reported them as unconfirmed):
        # drop what never left the local queue instead of sending it after we gave up.
        self._probe.stop()
        if len(self.client):
            self.client.purge(in_queue=True, in_flight=False)
        self.client.flush(0)


class ReachabilityProbe:
    """Tells whether the cluster answers within the timeout, so that the producer fails
    fast (exit 3) when no broker does, without holding back the input meanwhile: kcat
    queues its first messages while librdkafka connects, and so do we (the first
    connection and metadata round trip took 50-60 ms, a quarter of kcat's whole 300k
    publish).

    A delivered message proves it for free (the producer says so: `reached_by_delivery`).
    Otherwise a thread of its own asks for the cluster's metadata: when the producer asks
    for a verdict with nothing in flight (`ask`: an empty input, say), a second before the
    deadline, or at once for an idempotent producer (`nudge_producer_id`, below). Asking
    at once every time would cost more than the round trip: confluent-kafka builds
    list_topics' answer from classes of its admin module, whose import brings in the
    whole package (~40 ms of CPU, the very imports extension.py avoids). list_topics
    releases the GIL and serves no callbacks, so the thread never runs delivery callbacks
    behind the main thread's back.

    Why an idempotent producer gets a second metadata request: librdkafka (2.10 and
    later) drops the bootstrap connection when the first metadata answer names the
    cluster's brokers, and runs its producer-ID state machine at that answer, when no
    named broker is connected yet; it then retries on a 500 ms timer, and every message
    waits for the ID (`debug=eos`: "No brokers available for Idempotent producer", the ID
    acquired 500 ms later). Any later metadata answer runs the machine again, so a second
    request, which librdkafka sends once a named broker is up, gets the ID at once.
    Seen as evrelay's and kcat's idempotent publishes on tansu taking either ~0.6 s or
    ~0.9 s for the same 300,000 lines, and a single message 0.5 s.
    """

    SLICE = 0.25
    """Seconds per metadata request: how soon stop() is honoured."""
    LEAD = 1.0
    """How long before the deadline the thread asks unprompted."""

    def __init__(self, client: Any, timeout: float, *, nudge_producer_id: bool = False) -> None:
        self.client = client
        self.deadline = time.monotonic() + timeout
        self.done = threading.Event()
        self.failure: BaseException | None = None
        self.reached = False
        """True once the cluster answered: metadata came, or a message was delivered."""
        self.nudge_producer_id = nudge_producer_id
        self._asked = threading.Event()
        if nudge_producer_id:
            self._asked.set()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="evrelay-kafka-probe", daemon=True)
        self._thread.start()

    def ask(self) -> None:
        """Ask for metadata now instead of waiting for a delivery."""
        self._asked.set()

    def reached_by_delivery(self) -> None:
        self.reached = True
        self.done.set()
        if not self.nudge_producer_id:
            self._stopped = True
            self._asked.set()

    def _run(self) -> None:
        from confluent_kafka.cimpl import KafkaException

        try:
            self._asked.wait(max(self.deadline - self.LEAD - time.monotonic(), 0))
            while not self._stopped:
                left = self.deadline - time.monotonic()
                try:
                    self.client.list_topics(timeout=max(min(left, self.SLICE), 0.05))
                    break
                except KafkaException as exc:
                    if time.monotonic() >= self.deadline:
                        self.failure = exc
                        return
            else:
                return
            self.reached = True
            self.done.set()
            if self.nudge_producer_id and not self._stopped:
                try:
                    self.client.list_topics(timeout=self.SLICE)
                except KafkaException:
                    pass  # only a nudge: the verdict is in
        finally:
            self.done.set()

    def stop(self) -> None:
        """Ends the probe before the client is torn down (it must not outlive it)."""
        self._stopped = True
        self._asked.set()
        self._thread.join()


class KafkaTransactionalProducer(KafkaProducer):
    """Exactly-once into Kafka from a Kafka consumer group on the same cluster.

    Each window is one transaction: the messages, and the source group's offsets past
    them (send_offsets_to_transaction, fenced by the group's generation, KIP-447), commit
    together or not at all. The transactional.id is stable across restarts, so
    init_transactions() in a restarted bridge aborts what a killed one left open at once
    instead of leaving read_committed consumers waiting for the transaction timeout.
    """

    transactional = True

    def __init__(self, backend: KafkaBackend, topic: str, transaction_id: str, *, timeout_ms: int = 60000) -> None:
        from confluent_kafka.cimpl import KafkaException

        super().__init__(
            backend,
            topic,
            **{
                "transactional.id": transaction_id,
                "transaction.timeout.ms": timeout_ms,
                "message.timeout.ms": min(timeout_ms - 5000, 300000),
            },
        )
        self.transaction_id = transaction_id
        self.open = False
        try:
            self.client.init_transactions(max(backend.settings.timeout, 30.0))
        except KafkaException as exc:
            raise backend.unavailable(f"initialising transactions as {transaction_id!r}", exc) from None

    def begin(self) -> None:
        from confluent_kafka.cimpl import KafkaException

        try:
            self.client.begin_transaction()
        except KafkaException as exc:
            raise self._failure("beginning a transaction", exc) from None
        self.open = True

    def commit(self, source: Any, acked: Sequence[Message]) -> None:
        from confluent_kafka.cimpl import KafkaException, TopicPartition

        from evrelay.backends.kafka.consumers import KafkaGroupConsumer

        if acked and not isinstance(source, KafkaGroupConsumer):
            raise UsageError("exactly-once into Kafka needs a Kafka consumer group as the source")
        highest: dict[tuple[str, int], int] = {}
        for message in acked:
            position = message.position
            if position is not None and position.partition is not None:
                where = (position.stream, position.partition)
                highest[where] = max(highest.get(where, -1), int(position.id))
        offsets = [TopicPartition(topic, partition, offset + 1) for (topic, partition), offset in sorted(highest.items())]
        timeout = max(self.backend.settings.timeout, 30.0)
        try:
            if offsets:
                self.client.send_offsets_to_transaction(offsets, source.group_metadata(), timeout)
            while True:
                try:
                    self.client.commit_transaction(timeout)
                    break
                except KafkaException as exc:
                    if not exc.args[0].retriable():
                        raise
        except KafkaException as exc:
            error = exc.args[0]
            if error.txn_requires_abort():
                self.abort()
                raise TransactionAborted(f"the transaction was aborted ({error_name(error)}: {error.str()})") from None
            raise self._failure("committing a transaction", exc) from None
        self.open = False

    def abort(self) -> None:
        from confluent_kafka.cimpl import KafkaException

        if not self.open:
            return
        try:
            self.client.abort_transaction(max(self.backend.settings.timeout, 30.0))
        except KafkaException as exc:
            raise self._failure("aborting a transaction", exc) from None
        finally:
            self.open = False
        self._report = DeliveryReport()
        self._unresolved = 0
        self._async_failures = 0

    def _failure(self, what: str, exc: Any) -> EvrelayError:
        error = exc.args[0]
        if error.fatal():
            return EvrelayError(
                f"{what} on Kafka as transactional id {self.transaction_id!r} failed for good "
                f"({error_name(error)}: {error.str()}); another bridge with the same id probably took over",
                hint="give each exactly-once bridge of a group its own --consumer NAME",
            )
        return self.backend.unavailable(what, exc)

    def close(self) -> None:
        # An open transaction is abandoned: the broker aborts it, or the next bridge with
        # this transactional.id does at once (init_transactions).
        self._probe.stop()
        self.client.flush(0)
