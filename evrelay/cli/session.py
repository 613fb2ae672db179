"""The `Session`: one invocation's view of the world (httpie's Environment), handed to
every command. Kept apart from evrelay/cli/common.py, whose option declarations need
typer, so that the fast path of `publish` (evrelay/cli/fast_path.py) can build one
without importing the CLI framework.
"""

from __future__ import annotations

import io
import os
from functools import cached_property
from typing import TYPE_CHECKING, Any

from evrelay.errors import UsageError

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from typing import IO

    from evrelay.addresses import Address
    from evrelay.backends.base import Backend, Capability
    from evrelay.config import Config
    from evrelay.output import MessageWriter

DEFAULT_CONNECT_TIMEOUT = 10.0


def parse_duration(text: str | None, flag: str) -> float | None:
    """Seconds from `--timeout`-style text, or None; UsageError naming the flag."""
    if text is None:
        return None
    from evrelay.timestamps import parse_duration_seconds

    try:
        return parse_duration_seconds(text)
    except ValueError as exc:
        raise UsageError(f"{flag}: {exc}") from None



class Session:
    """One command invocation: config, profile, verbosity, its stdout and stderr streams
    (data to one, everything else to the other), colour, backends. Output goes through
    the session's streams, never the global ones, so a caller (or a test) can hand in its own."""

    def __init__(
        self,
        *,
        stdout: IO[bytes],
        stderr: IO[str],
        stdin: IO[bytes] | None = None,
        config: str | None = None,
        profile: str | None = None,
        verbose: bool = False,
        quiet: bool = False,
        timeout: float | None = None,
        color: bool | None = None,
    ) -> None:
        self.config_option = config
        self.profile = profile
        self.verbose = verbose
        self.quiet = quiet
        self.timeout = timeout
        self.stdout = stdout
        self.stderr = stderr
        self.stdin: IO[bytes] = stdin if stdin is not None else io.BytesIO()
        """Input (envelopes for `ack`, answers to questions); none given reads as empty."""
        self.stdin_is_tty = bool(getattr(self.stdin, "isatty", lambda: False)())
        self.stdout_is_tty = bool(getattr(self.stdout, "isatty", lambda: False)())
        self.stderr_is_tty = bool(getattr(self.stderr, "isatty", lambda: False)())
        self.color = False if os.environ.get("NO_COLOR") else color
        """None: colour when stdout is a terminal (rich decides); False: never."""

    def apply_options(
        self,
        *,
        config: str | None = None,
        profile: str | None = None,
        verbose: bool = False,
        quiet: bool = False,
        timeout: str | None = None,
    ) -> None:
        """The session options given on the command line: before the command (the root
        callback) and after it (the command's own, which win). A flag given either place
        holds; --timeout text is parsed here, so every command words its error alike."""
        if config is not None:
            self.config_option = config
            self.__dict__.pop("config", None)  # loaded from the old path: load again
        if profile is not None:
            self.profile = profile
        self.verbose = self.verbose or verbose
        self.quiet = self.quiet or quiet
        if timeout is not None:
            self.timeout = parse_duration(timeout, "--timeout")

    @cached_property
    def config(self) -> Config:
        from evrelay.config import load_config

        return load_config(self.config_option)

    @property
    def connect_timeout(self) -> float:
        return self.timeout if self.timeout is not None else DEFAULT_CONNECT_TIMEOUT

    def address(self, text: str) -> Address:
        from evrelay.addresses import resolve_address

        return resolve_address(text, self.config, profile=self.profile)

    def backend(self, address: Address, needs: Iterable[Capability] = (), *, command: str | None = None) -> Backend:
        """The (not yet opened) backend for an address; use it as a context manager.

        `needs` is what the command will ask of it: the one capability check, refused
        here (exit 2, one wording) before anything is connected."""
        from evrelay.addresses import open_backend
        from evrelay.backends.base import BackendSettings, refuse_missing

        settings = BackendSettings(timeout=self.connect_timeout, verbose=self.verbose, warn=self.warn, origin=address.where)
        backend = open_backend(address, settings)
        refuse_missing(backend, needs, command)
        return backend

    # --- stdout: data ---------------------------------------------------------------------

    def writer(self, mode: str | None, template: str | None, *, key_delimiter: bytes = b":") -> MessageWriter:
        """The message writer for `-o MODE` / `--format`, onto this session's stdout."""
        from evrelay.output import make_writer

        return make_writer(mode, template, out=self.stdout, stdout_is_tty=self.stdout_is_tty, color=self.color, key_delimiter=key_delimiter)

    def record_mode(self, mode: str | None) -> str:
        """`-o table|json` of an inspection command (a table on a terminal)."""
        from evrelay.output import record_mode

        return record_mode(mode, stdout_is_tty=self.stdout_is_tty)

    def records(self, rows: Sequence[dict[str, Any]], columns: Sequence[tuple[str, str]], mode: str, *, title: str | None = None) -> None:
        """Inspection rows: JSON lines, or a table with these (key, HEADER) columns."""
        from evrelay.output import write_records

        write_records(rows, columns, mode, out=self.stdout, title=title)

    def record(self, record: dict[str, Any]) -> None:
        """One JSON document on one line."""
        from evrelay.output import write_record

        write_record(record, out=self.stdout)

    def write_text(self, text: str) -> None:
        """Plain text data (a TOML document, a script) on stdout."""
        self.stdout.write(text.encode())
        self.stdout.flush()

    # --- stderr ------------------------------------------------------------------------

    def info(self, text: str) -> None:
        """A summary or progress line; silenced by -q."""
        if not self.quiet:
            self.stderr.write(f"{text}\n")
            self.stderr.flush()

    def warn(self, text: str) -> None:
        self.stderr.write(f"evrelay: warning: {text}\n")
        self.stderr.flush()

    def debug(self, text: str) -> None:
        if self.verbose:
            self.stderr.write(f"evrelay: {text}\n")
            self.stderr.flush()
