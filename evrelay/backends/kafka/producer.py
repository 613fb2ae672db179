"""The Kafka producers: the idempotent producer, batched, with per-message delivery
accounting; and the transactional one behind exactly-once bridges, which commits the
source group's offsets inside each transaction (send_offsets_to_transaction)."""

from __future__ import annotations

import functools
import threading
import time
from collections.abc import Sequence
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
                **extra_config,
            }
        )
        self.client = backend.make_client(KProducer, config)
        self._report = DeliveryReport()
        # Handed to librdkafka and not yet resolved by a flush(); with error-only delivery
        # reports, what a flush resolves without a failure report was delivered.
        self._unresolved = 0
        self._async_failures = 0
        self._probe = ReachabilityProbe(self.client, backend.settings.timeout)

    def _check_reachable(self, wait: bool) -> None:
        """BackendUnavailable (exit 3) once the probe found no broker in time, or a
        refused login; with `wait`, wait for its verdict, serving librdkafka's error
        callbacks meanwhile so a refusal ends the wait at once."""
        probe = self._probe
        while wait and not probe.done.wait(0.05):
            self.client.poll(0)
            if self.backend._refusal is not None:
                probe.stop()
                raise self.backend.refused()
        if probe.failure is not None:
            self.client.poll(0)  # serves error_cb: the reason librdkafka gave
            raise self.backend.unavailable(f"no metadata within {self.backend.settings.timeout:g}s", probe.failure)

    def _on_delivery(self, message: Message, err: Any, _msg: Any) -> None:
        if err is None:
            return
        name = error_name(err)
        permanent = False if err.fatal() else not (err.retriable() or name in TRANSIENT_CODES)
        self._report.failures.append(DeliveryFailure(message, f"{name}: {err.str()}", permanent))
        self._async_failures += 1

    def send(self, messages: Sequence[Message]) -> None:
        self._check_reachable(wait=False)
        on_delivery = self._on_delivery
        partial = functools.partial
        if all(not m.headers and m.timestamp is None for m in messages):
            # The common case in one pass: produce_batch takes neither headers nor timestamps.
            self._produce_batch(
                [{"value": m.value, "key": m.key, "callback": partial(on_delivery, m)} for m in messages]
            )
        elif all(m.headers or m.timestamp is not None for m in messages):
            self._produce_each(messages)  # a bridge's windows: every message has its provenance header
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
        self._check_reachable(wait=False)
        if key is None:
            batch = [{"value": value} for value in values]
        else:
            batch = [{"value": value, "key": key} for value in values]
        self._produce_batch(batch, on_delivery=self._on_value_delivery)
        self.client.poll(0)

    def _on_value_delivery(self, err: Any, record: Any) -> None:
        if err is None:
            return
        name = error_name(err)
        permanent = False if err.fatal() else not (err.retriable() or name in TRANSIENT_CODES)
        self._report.failures.append(DeliveryFailure(Message(record.value() or b"", record.key()), f"{name}: {err.str()}", permanent))
        self._async_failures += 1

    def _produce_each(self, messages: Sequence[Message]) -> None:
        """One produce() per message (produce_batch takes neither headers nor timestamps)
        in one tight loop with positional arguments; from a full queue or a message
        refused on the spot, the rest goes through _produce_one, which handles both."""
        from confluent_kafka import KafkaException

        produce, topic, on_delivery, partial = self.client.produce, self.topic, self._on_delivery, functools.partial
        queued = 0
        try:
            for message in messages:
                # produce(topic, value, key, partition (-1: the partitioner's), callback, on_delivery, timestamp, headers)
                produce(topic, message.value, message.key, -1, partial(on_delivery, message), None, message.timestamp or 0, message.headers)
                queued += 1
        except (BufferError, KafkaException):  # _produce_one waits for room, or reports the refusal
            self._unresolved += queued
            for message in messages[queued:]:
                self._produce_one(produce, message, partial(on_delivery, message))
            return
        self._unresolved += queued

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
                name = error_name(error)
                transient = name in TRANSIENT_CODES
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
                if error_name(error) == "_QUEUE_FULL":
                    retry.append(entry)
                else:
                    callback = entry.get("callback")
                    message = callback.args[0] if callback is not None else Message(entry["value"], entry.get("key"))
                    self._report.failures.append(DeliveryFailure(message, f"{error_name(error)}: {error}", permanent=True))
            batch = retry
            if batch:
                self.client.poll(0.05)  # the local queue is full: let deliveries drain it

    def flush(self, timeout: float | None = None) -> DeliveryReport:
        self._check_reachable(wait=True)
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
        self._probe.stop()
        if len(self.client):
            self.client.purge(in_queue=True, in_flight=False)
        self.client.flush(0)


class ReachabilityProbe:
    """Asks the cluster for metadata in a thread of its own, so that the producer fails
    fast (exit 3) when no broker answers, without holding back the input meanwhile: kcat
    queues its first messages while librdkafka connects, and so do we (the first
    connection and metadata round trip took 50-60 ms, a quarter of kcat's whole 300k
    publish). list_topics releases the GIL and serves no callbacks, so the thread
    never runs delivery callbacks behind the main thread's back."""

    SLICE = 0.25
    """Seconds per metadata request: how soon stop() is honoured."""

    def __init__(self, client: Any, timeout: float) -> None:
        self.client = client
        self.deadline = time.monotonic() + timeout
        self.done = threading.Event()
        self.failure: BaseException | None = None
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="evrelay-kafka-probe", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        from confluent_kafka import KafkaException

        try:
            while not self._stopped:
                left = self.deadline - time.monotonic()
                try:
                    self.client.list_topics(timeout=max(min(left, self.SLICE), 0.05))
                    return
                except KafkaException as exc:
                    if time.monotonic() >= self.deadline:
                        self.failure = exc
                        return
        finally:
            self.done.set()

    def stop(self) -> None:
        """Ends the probe before the client is torn down (it must not outlive it)."""
        self._stopped = True
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
        from confluent_kafka import KafkaException

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
        from confluent_kafka import KafkaException

        try:
            self.client.begin_transaction()
        except KafkaException as exc:
            raise self._failure("beginning a transaction", exc) from None
        self.open = True

    def commit(self, source: Any, acked: Sequence[Message]) -> None:
        from confluent_kafka import KafkaException, TopicPartition

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
        from confluent_kafka import KafkaException

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
