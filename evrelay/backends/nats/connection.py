"""The asyncio side of the NATS backend: one event loop on a background thread.

nats-py is asyncio-only, while evrelay's adapter interface is synchronous. A
`NatsConnection` owns a private event loop running in a daemon thread and the nats-py
client living on it; synchronous code submits coroutines with `run()` and waits for the
result with a bound. It speaks the JetStream API (`$JS.API.*`) with plain JSON requests,
so evrelay sees the server's own replies (timestamps, error codes) whatever the client
version, and it turns every failure into an evrelay error.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import re
import threading
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import orjson

from evrelay.backends.base import ClientLibrary, import_client
from evrelay.errors import BackendUnavailable, ConfigError, EvrelayError, NotFoundError, UsageError
from evrelay.timestamps import parse_rfc3339

T = TypeVar("T")

NATS_CLIENT = ClientLibrary("nats", "nats-py", extra="nats")

# Stream and consumer names: no white space, dots, wildcards or path separators.
NAME_PATTERN = re.compile(r"[^\s.*>/\\]+")
DISALLOWED_IN_NAME = re.compile(r"[\s.*>/\\]")


def valid_name(name: str, what: str) -> str:
    if not NAME_PATTERN.fullmatch(name) or len(name) > 255:
        raise UsageError(f"{name!r} is not a valid NATS {what} name (no spaces, dots, '*', '>' or slashes)")
    return name


def ms_from_rfc3339(text: str | None) -> int | None:
    """A time from the JetStream API in ms; None for its zero time (nothing there)."""
    if not text or text.startswith("0001-01-01"):
        return None
    return parse_rfc3339(text)


# JetStream API error codes (err_code) evrelay tells apart.
STREAM_NOT_FOUND = 10059
CONSUMER_NOT_FOUND = 10014


def import_nats() -> Any:
    """nats-py, or a usage error (exit 2) saying how to install it."""
    return import_client(NATS_CLIENT, "nats")


def _is_refusal(error: Exception) -> bool:
    text = f"{type(error).__name__}: {error}".lower()
    return "authoriz" in text or "authentication" in text or "permission" in text


class JetStreamError(EvrelayError):
    """The JetStream API answered with an error."""

    def __init__(self, message: str, *, code: int, err_code: int) -> None:
        super().__init__(message)
        self.code = code
        self.err_code = err_code


class NatsConnection:
    """A nats-py client on a private event loop; `where` is host:port, never credentials."""

    def __init__(
        self,
        url: str,
        *,
        where: str,
        timeout: float,
        name: str,
        client_options: dict[str, Any],
        warn: Callable[[str], None],
        verbose: bool,
    ) -> None:
        self.url = url
        self.where = where
        self.timeout = timeout
        self.name = name
        self.client_options = client_options
        self.warn = warn
        self.verbose = verbose
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None
        self.nc: Any = None
        self.last_error: Exception | None = None
        self.reconnects = 0
        """How many times nats-py has reconnected: what was in flight before may be lost."""

    # --- the loop ------------------------------------------------------------------------

    def run(self, coro: Awaitable[T], timeout: float | None = None, what: str = "") -> T:
        """Run a coroutine on the loop and wait for it (BackendUnavailable after `timeout`)."""
        assert self.loop is not None, "NatsConnection.open() first"
        future = asyncio.run_coroutine_threadsafe(coro, self.loop)  # type: ignore[arg-type]
        bound = self.timeout if timeout is None else timeout
        try:
            return future.result(bound)
        except concurrent.futures.TimeoutError:
            future.cancel()
            detail = f" ({what})" if what else ""
            raise BackendUnavailable(f"NATS at {self.where} did not answer within {bound:g}s{detail}") from None

    def open(self) -> None:
        if self.nc is not None:
            return
        nats = import_nats()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="evrelay-nats", daemon=True)
        self.thread.start()

        async def quiet(*_: Any) -> None:
            # nats-py logs connection trouble through `logging` by default, which would print
            # it (URL included) on stderr; evrelay reports failures itself, as one line.
            return None

        async def reconnected() -> None:
            self.reconnects += 1

        async def remember(error: Exception) -> None:
            # A refused login reaches only this callback (followed by other errors as the
            # server hangs up); connect() then fails with "no servers", so it is kept.
            if self.last_error is None or not _is_refusal(self.last_error):
                self.last_error = error

        async def connect() -> Any:
            return await nats.connect(
                servers=[self.url],
                name=self.name,
                connect_timeout=min(self.timeout, 10.0),
                allow_reconnect=True,
                # A few attempts to connect at first (a refused login or a wrong port fails
                # fast); once connected, unlimited (below) to ride out a server restart.
                max_reconnect_attempts=3,
                reconnect_time_wait=0.5,
                error_cb=remember,
                disconnected_cb=quiet,
                reconnected_cb=reconnected,
                closed_cb=quiet,
                **self.client_options,
            )

        try:
            self.nc = self.run(connect(), self.timeout + 5, "connecting")
            # nats-py reads its options at every reconnect; requests time out meanwhile.
            self.nc.options["max_reconnect_attempts"] = -1
        except BackendUnavailable:
            self.close()
            raise
        except Exception as exc:
            self.close()
            raise self.connect_error(exc) from None

    def connect_error(self, exc: Exception) -> EvrelayError:
        if _is_refusal(exc) or (self.last_error is not None and _is_refusal(self.last_error)):
            return BackendUnavailable(f"NATS at {self.where} refused the credentials")
        if isinstance(exc, TypeError):
            return ConfigError(f"nats options: {exc}")
        return BackendUnavailable(
            f"NATS at {self.where} could not be reached ({type(exc).__name__})",
            hint="is nats-server running (with -js), and is the url right?",
        )

    def close(self) -> None:
        if self.loop is None:
            return
        if self.nc is not None:
            nc, self.nc = self.nc, None
            try:
                self.run(nc.close(), 5, "closing")
            except Exception:  # closing a broken connection must not hide the real error
                pass
        try:
            self.run(self._cancel_tasks(), 5, "closing")
        except Exception:
            pass
        loop, self.loop = self.loop, None
        loop.call_soon_threadsafe(loop.stop)
        if self.thread is not None:
            self.thread.join(5)
            self.thread = None
        if not loop.is_running():
            loop.close()

    @staticmethod
    async def _cancel_tasks() -> None:
        """End what is left on the loop (a connect still retrying), so nothing is
        destroyed while pending when the loop stops."""
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    # --- requests ------------------------------------------------------------------------

    async def request(self, subject: str, payload: bytes, timeout: float | None = None) -> Any:
        """A core NATS request; the reply message."""
        import nats.errors

        bound = self.timeout if timeout is None else timeout
        try:
            return await self.nc.request(subject, payload, timeout=bound)
        except nats.errors.NoRespondersError:
            raise BackendUnavailable(
                f"NATS at {self.where}: nothing answers {subject.split('.', 3)[2] if subject.startswith('$JS.API.') else subject!r}"
                " requests; is JetStream enabled (nats-server -js)?"
            ) from None
        except (TimeoutError, nats.errors.TimeoutError):
            raise BackendUnavailable(f"NATS at {self.where} did not answer within {bound:g}s") from None
        except nats.errors.ConnectionClosedError:
            raise BackendUnavailable(f"the connection to NATS at {self.where} is closed") from None

    async def api(self, subject: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        """A JetStream API call (`subject` without the `$JS.API.` prefix); its JSON reply."""
        reply = await self.request("$JS.API." + subject, orjson.dumps(body) if body is not None else b"")
        data = orjson.loads(reply.data)
        error = data.get("error")
        if error:
            description = error.get("description", "error")
            raise JetStreamError(
                f"NATS JetStream: {description}", code=int(error.get("code", 0)), err_code=int(error.get("err_code", 0))
            )
        return data

    def call(self, subject: str, body: dict[str, Any] | None = None, *, what: str = "") -> dict[str, Any]:
        """`api()` from synchronous code."""
        return self.run(self.api(subject, body), self.timeout + 1, what or subject)

    def stream_info(self, stream: str) -> dict[str, Any]:
        try:
            return self.call(f"STREAM.INFO.{stream}", what=f"stream {stream}")
        except JetStreamError as exc:
            if exc.err_code == STREAM_NOT_FOUND or exc.code == 404:
                raise NotFoundError(
                    f"NATS stream {stream!r} does not exist on {self.where}",
                    hint="create it with the nats tooling, or publish with create = true (profile) / ?create=true (address)",
                ) from None
            raise

    def consumer_info(self, stream: str, consumer: str) -> dict[str, Any] | None:
        """The consumer's info, or None when it does not exist."""
        try:
            return self.call(f"CONSUMER.INFO.{stream}.{consumer}", what=f"consumer {consumer}")
        except JetStreamError as exc:
            if exc.err_code == CONSUMER_NOT_FOUND or exc.code == 404:
                if exc.err_code == STREAM_NOT_FOUND:
                    self.stream_info(stream)
                return None
            raise
