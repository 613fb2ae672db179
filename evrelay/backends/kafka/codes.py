"""Shared by the Kafka backend's modules: special offsets, error-code classes, logging."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from evrelay.errors import UsageError
from evrelay.positions import EntryId, StreamPosition

if TYPE_CHECKING:
    import logging

OFFSET_BEGINNING = -2
OFFSET_END = -1
OFFSET_INVALID = -1001

# Transient delivery errors: sending again later can succeed (outages, timeouts, leader moves).
TRANSIENT_CODES = {
    "_MSG_TIMED_OUT",
    "_TIMED_OUT",
    "_TRANSPORT",
    "_ALL_BROKERS_DOWN",
    "_RESOLVE",
    "_PURGE_QUEUE",
    "_PURGE_INFLIGHT",
    "REQUEST_TIMED_OUT",
    "NOT_LEADER_FOR_PARTITION",
    "NOT_LEADER_OR_FOLLOWER",
    "LEADER_NOT_AVAILABLE",
    "NOT_ENOUGH_REPLICAS",
    "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
    "NETWORK_EXCEPTION",
    "COORDINATOR_NOT_AVAILABLE",
    "_QUEUE_FULL",
}
# The group coordinator is moving or loading (e.g. __consumer_offsets is being created on
# a fresh cluster): asking again shortly succeeds.
COORDINATOR_STARTING = {"NOT_COORDINATOR", "NOT_COORDINATOR_FOR_GROUP", "COORDINATOR_LOAD_IN_PROGRESS", "COORDINATOR_NOT_AVAILABLE", "_WAIT_COORD"}
ACTIVE_GROUP_STATES = {"stable", "preparing_rebalance", "completing_rebalance"}
AUTH_CODES = {
    "_AUTHENTICATION",
    "SASL_AUTHENTICATION_FAILED",
    "TOPIC_AUTHORIZATION_FAILED",
    "GROUP_AUTHORIZATION_FAILED",
    "CLUSTER_AUTHORIZATION_FAILED",
    "_SSL",
}


def client_logger() -> logging.Logger:
    """The logger librdkafka logs through with -v: to stderr."""
    import logging  # only with -v: logging and the traceback it imports cost ~5 ms of CPU

    logger = logging.getLogger("evrelay.librdkafka")
    logger.propagate = False
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("librdkafka: %(message)s"))
        logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    return logger


def error_name(err: Any) -> str:
    try:
        return err.name()
    except Exception:
        return str(err)


def plain_client_error(text: str) -> str:
    """librdkafka's error text without the broker URL in front and the state note behind:
    `sasl_ssl://h:9093/bootstrap: SASL authentication error: X (after 300ms in state AUTH_REQ)` -> `SASL authentication error: X`."""
    text = re.sub(r"^\S+://\S+?: ", "", text.strip())
    text = re.sub(r"\s*\(after \d+ms in state [A-Z_]+\)$", "", text)
    return re.sub(r", verify that ssl.ca.location is correctly configured or root CA certificates are installed.*$", "", text)


def refuse_entry_id(position: StreamPosition) -> None:
    if isinstance(position, EntryId):
        raise UsageError(f"{position} is a stream ID; Kafka positions are offsets (42) or PARTITION:OFFSET (0:42)")
