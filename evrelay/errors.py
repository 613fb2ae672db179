"""The one exception tree of evrelay and the exit codes it maps to (CONTRACT.md §4).

Every error a user can cause or meet is an `EvrelayError` subclass carrying its exit
code; `evrelay.cli.app` turns them into one line on stderr and that code, in one place.
Backends translate their client library's exceptions into these before they escape.
"""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    SUCCESS = 0
    FAILURE = 1
    USAGE = 2
    UNAVAILABLE = 3
    EXPECTATION = 4
    INTERRUPTED = 130
    TERMINATED = 143


class EvrelayError(Exception):
    """Base of every error evrelay reports to the user."""

    exit_code: ExitCode = ExitCode.FAILURE

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class UsageError(EvrelayError):
    """The command line asks for something impossible (bad value, bad combination)."""

    exit_code = ExitCode.USAGE


class ConfigError(UsageError):
    """The configuration file or a profile is broken or missing something."""


class AddressError(UsageError):
    """An ADDRESS could not be resolved to a backend and a topic/stream."""


class UnknownBackendError(ConfigError):
    """No backend is registered under the requested name."""


class UnsupportedError(UsageError):
    """The backend lacks a capability the command needs."""


class MissingClientError(ConfigError):
    """A backend's optional client library is not installed (the hint says how to)."""


class InputError(EvrelayError):
    """A line of input could not be turned into a message (exit 1: the data, not the invocation)."""


class BackendUnavailable(EvrelayError):
    """The backend could not be reached, or refused the credentials."""

    exit_code = ExitCode.UNAVAILABLE


class NeverReached(EvrelayError):
    """A backend that has not answered once since the command started (a routed sink's
    first destination): a mistake to report, not an outage to wait out. Exit 3 like
    BackendUnavailable, but not one, so the relay's outage retries do not catch it."""

    exit_code = ExitCode.UNAVAILABLE

    @classmethod
    def from_unavailable(cls, exc: BackendUnavailable) -> NeverReached:
        return cls(exc.message, hint=exc.hint)


class PermissionDenied(EvrelayError):
    """The backend took the credentials but its access rules refuse this command on this
    stream (a Redis ACL's NOPERM). Exit 3 like refused credentials, but not a
    BackendUnavailable: waiting does not change an ACL, so a relay never retries it as an
    outage; it stops, with nothing acked that its sink has not confirmed."""

    exit_code = ExitCode.UNAVAILABLE


class ProducerTimeout(BackendUnavailable):
    """Messages were queued but their delivery was not confirmed in time."""

    def __init__(self, message: str, *, undelivered: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.undelivered = undelivered


class DeliveryFailed(EvrelayError):
    """The backend rejected some messages for good (too large, not authorised, ...)."""

    def __init__(self, message: str, *, failed: int, delivered: int) -> None:
        super().__init__(message)
        self.failed = failed
        self.delivered = delivered


class TransactionAborted(EvrelayError):
    """An exactly-once window's transaction was aborted (a rebalance took a partition, the
    broker timed it out): none of it is visible, and the source re-reads it."""


class SinkProcessLost(EvrelayError):
    """The child process writing a bridge's sink died on its own (killed, crashed): the
    bridge stops, with nothing acked that the sink had not confirmed."""


class NotFoundError(EvrelayError):
    """A topic, stream or group the command needs does not exist."""


class GroupBusyError(EvrelayError):
    """A consumer group cannot be changed while it has live members."""


class ExpectationFailed(EvrelayError):
    """An expectation was not met: --expect, --timeout, a lag threshold, health --wait."""

    exit_code = ExitCode.EXPECTATION


class Interrupted(EvrelayError):
    """The user pressed Ctrl-C (SIGINT)."""

    exit_code = ExitCode.INTERRUPTED


class Terminated(Interrupted):
    """SIGTERM stopped a finite job that reports what it finished (publish, replay): 128 + 15."""

    exit_code = ExitCode.TERMINATED
