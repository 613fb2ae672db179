"""How the Kafka backend builds its confluent-kafka clients: configuration, security, errors.

`KafkaClients` is a part of `KafkaBackend` (a mixin): it lays the profile's librdkafka
settings over evrelay's defaults, keeps secrets out of every error and log line
(librdkafka may quote them), turns librdkafka's error callbacks into one-line refusals
(credentials, TLS) or outages, and makes the admin client, plain consumers and metadata
requests the rest of the backend uses.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from evrelay.backends.base import BackendSettings
from evrelay.backends.kafka.codes import AUTH_CODES, error_name, plain_client_error
from evrelay.errors import BackendUnavailable, ConfigError, EvrelayError, NotFoundError

if TYPE_CHECKING:
    import logging

CONNECTION_LOST_CODES = {"_TRANSPORT", "_ALL_BROKERS_DOWN", "_RESOLVE"}
"""librdkafka's error callbacks for a broker connection lost or not made."""
OUTAGE_AFTER = 5.0
"""Seconds of lost connection before a reader asks a broker whether it is back: long
enough for librdkafka's own reconnect after an idle disconnect or a leader move."""
PROBE_TIMEOUT = 2.0


class _Redacting:
    """Masks secrets in librdkafka's log lines (shown with -v). A logging filter need only
    have this `filter` method: not subclassing logging.Filter spares every Kafka command
    without -v the import of logging (and of traceback with it: ~5 ms of CPU)."""

    def __init__(self, redact: Any) -> None:
        self.redact = redact

    def filter(self, record: logging.LogRecord) -> bool:
        record.msg, record.args = self.redact(record.getMessage()), ()
        return True


class KafkaClients:
    """Client construction for `KafkaBackend`, which sets the attributes below in `__init__`."""

    settings: BackendSettings
    bootstrap: str
    client_options: dict[str, Any]
    secret_values: list[str]
    _logger: logging.Logger | None
    _admin: Any
    _last_error: str | None
    _refusal: str | None
    _disconnected_since: float | None

    def _warn_about_verification(self) -> None:
        origin = self.settings.origin or f"Kafka at {self.bootstrap}"
        if str(self.client_options.get("enable.ssl.certificate.verification", "true")).lower() in ("false", "0"):
            self.settings.warn(
                f"TLS certificate verification is off for {origin} (enable.ssl.certificate.verification = false): "
                "anyone on the network path can pose as the broker"
            )
        elif str(self.client_options.get("ssl.endpoint.identification.algorithm", "https")).lower() == "none":
            self.settings.warn(
                f"TLS host name verification is off for {origin} (ssl.endpoint.identification.algorithm = none)"
            )

    def redact(self, text: str) -> str:
        from evrelay.config import mask_secrets

        return mask_secrets(text, self.secret_values)

    def _error_cb(self, err: Any) -> None:
        self._last_error = self.redact(f"{error_name(err)}: {err.str() if hasattr(err, 'str') else err}")
        if error_name(err) in AUTH_CODES and self._refusal is None:
            self._refusal = self.redact(error_name(err) + ": " + plain_client_error(err.str() if hasattr(err, "str") else str(err)))
        if error_name(err) in CONNECTION_LOST_CODES and self._disconnected_since is None:
            self._disconnected_since = time.monotonic()
        if self.settings.verbose:
            self.settings.warn(f"kafka: {self._last_error}")

    def check_connection(self, client: Any, topic: str) -> None:
        """BackendUnavailable when the connection has been lost for OUTAGE_AFTER seconds
        and a metadata request still gets no answer (only an answered probe clears a lost
        connection: records and end-of-partition events may have been queued before it
        was lost, and librdkafka reports the same connection error once, not again): the caller's outage handling (the
        relay's retries and warnings) then takes over. librdkafka keeps reconnecting
        meanwhile, so nothing else is needed for the read to resume."""
        from confluent_kafka.cimpl import KafkaException

        since = self._disconnected_since
        if since is None or time.monotonic() - since < OUTAGE_AFTER:
            return
        try:
            client.list_topics(topic, timeout=PROBE_TIMEOUT)
        except KafkaException as exc:
            seconds = time.monotonic() - since
            raise self.unavailable(f"reading {topic!r}, connection lost {seconds:.0f}s ago", exc) from None
        self._disconnected_since = None

    def client_config(self, **overrides: Any) -> dict[str, Any]:
        config: dict[str, Any] = {
            "bootstrap.servers": self.bootstrap,
            "client.id": self.settings.client_name,
            # Without -v nothing of librdkafka's logging is wanted: some of it (e.g. BGQUEUE
            # while a transactional client is destroyed) bypasses a logger and hits stderr,
            # and at level 0 no logger is needed at all (librdkafka logs nothing there).
            "log_level": 7 if self.settings.verbose else 0,
            "error_cb": self._error_cb,
            "socket.connection.setup.timeout.ms": max(int(self.settings.timeout * 1000), 1000),
        }
        if self._logger is not None:
            config["logger"] = self._logger
        config.update(overrides)
        config.update(self.client_options)
        return config

    def unavailable(self, what: str, exc: BaseException | None = None) -> BackendUnavailable:
        if self._refusal is not None:
            return self.refused()
        detail = self._last_error or ""
        if not detail and exc is not None and exc.args:
            error = exc.args[0]
            detail = error.str() if hasattr(error, "str") else str(error)
        refused = any(code in detail for code in AUTH_CODES)
        reason = "refused the credentials" if refused else "could not be reached"
        text = f"Kafka at {self.bootstrap} {reason} ({what})"
        if detail:
            text += f": {self.redact(detail)}"
        return BackendUnavailable(text, hint=None if refused else "is the broker running, and is bootstrap_servers right?")

    def refused(self) -> BackendUnavailable:
        """The broker refused the credentials, or its certificate was not trusted: one
        sentence naming the profile (never the secret), and what to check."""
        assert self._refusal is not None
        code, _, detail = self._refusal.partition(": ")
        origin = self.settings.origin or "these settings"
        if code == "_SSL":
            return BackendUnavailable(
                f"Kafka at {self.bootstrap}: the TLS handshake for {origin} failed ({detail})",
                hint="check ssl.ca.location (the CA that signed the broker's certificate) and the host name in bootstrap_servers",
            )
        return BackendUnavailable(
            f"Kafka at {self.bootstrap} refused the credentials of {origin} ({detail})",
            hint="check sasl.mechanism, sasl.username and sasl.password",
        )

    def make_client(self, factory: Any, config: dict[str, Any]) -> Any:
        """A confluent-kafka client; options librdkafka rejects are a config error (exit 2)."""
        from confluent_kafka.cimpl import KafkaException

        try:
            return factory(config)
        except KafkaException as exc:
            error = exc.args[0]
            detail = error.str() if hasattr(error, "str") else str(error)
            raise ConfigError(f"librdkafka rejected the Kafka options: {self.redact(detail)}") from None
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"invalid Kafka options: {self.redact(str(exc))}") from None

    def admin(self) -> Any:
        if self._admin is None:
            from confluent_kafka.admin import AdminClient

            self._admin = self.make_client(AdminClient, self.client_config())
        return self._admin

    def metadata(self, client: Any, topic: str | None = None) -> Any:
        """Cluster (or one topic's) metadata; BackendUnavailable when the broker is not there."""
        from confluent_kafka.cimpl import KafkaException

        # In slices, serving librdkafka's error callbacks in between: a refused password or
        # an untrusted certificate ends the wait at once instead of after the full timeout.
        deadline = time.monotonic() + self.settings.timeout
        while True:
            left = deadline - time.monotonic()
            try:
                return client.list_topics(topic, timeout=max(min(left, 0.5), 0.05))
            except KafkaException as exc:
                if not hasattr(client, "assignment") or not client.assignment():
                    client.poll(0)  # serves error_cb; a consumer with partitions would fetch instead
                if self._refusal is not None:
                    raise self.refused() from None
                if time.monotonic() >= deadline:
                    raise self.unavailable(f"no metadata within {self.settings.timeout:g}s", exc) from None

    def topic_partitions(self, client: Any, topic: str) -> list[int]:
        """Partition numbers of an existing topic (NotFoundError if it does not exist).

        `client` must be a consumer made with allow.auto.create.topics=false: a metadata
        request from it never creates the topic it asks about.
        """
        metadata = self.metadata(client, topic)
        info = metadata.topics.get(topic)
        if info is None or info.error is not None:
            name = error_name(info.error) if info is not None and info.error is not None else ""
            if info is None or name in ("UNKNOWN_TOPIC_OR_PART", "UNKNOWN_TOPIC_ID", "_UNKNOWN_TOPIC"):
                raise NotFoundError(f"Kafka topic {topic!r} does not exist on {self.bootstrap}")
            if name in AUTH_CODES:
                raise self.unavailable(f"topic {topic!r}: {name}")
            raise EvrelayError(f"Kafka topic {topic!r}: {info.error}")
        return sorted(info.partitions)

    @property
    def incremental_rebalance(self) -> bool:
        """True when group members get and give up partitions one by one (KIP-848's
        `group.protocol=consumer`, or a cooperative assignor) instead of all at once:
        librdkafka then needs incremental_assign/unassign in the rebalance callbacks."""
        protocol = str(self.client_options.get("group.protocol", "classic")).lower()
        strategy = str(self.client_options.get("partition.assignment.strategy", "")).lower()
        return protocol == "consumer" or strategy.startswith("cooperative")

    def new_consumer(self, group: str | None, **overrides: Any) -> Any:
        from confluent_kafka.cimpl import Consumer as KConsumer

        config = self.client_config(
            **{
                "group.id": group or "evrelay-reader",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": True,
                "allow.auto.create.topics": False,
                "auto.offset.reset": "earliest",
                "session.timeout.ms": 6000,
                "heartbeat.interval.ms": 1500,
                "fetch.wait.max.ms": 100,
                # Streaming, not accumulating: prefetch at most ~1 MB per partition, so a
                # tail of a million messages stays near the memory of a small one
                # (benchmarked: 1.2x the RSS of a 10k tail, with no loss of speed).
                "queued.max.messages.kbytes": 1024,
                "fetch.max.bytes": 1048576,
                "max.partition.fetch.bytes": 262144,
                # librdkafka postpones the next fetch by 1 s when the local queue is over its
                # threshold, which stalls a consumer that converts in Python; retry sooner.
                "fetch.queue.backoff.ms": 10,
                **overrides,
            }
        )
        if str(config.get("group.protocol", "classic")).lower() == "consumer":
            # KIP-848's protocol (Kafka 4): the broker owns session and heartbeat timing,
            # and librdkafka refuses a client that sets them, so our classic defaults
            # would make `?group.protocol=consumer` unusable. Its groups skip the
            # classic join round (and a broker's group.initial.rebalance.delay.ms).
            for name in ("session.timeout.ms", "heartbeat.interval.ms"):
                if name not in self.client_options:
                    config.pop(name, None)
        return self.make_client(KConsumer, config)
