"""The command line: `main()` is the `evrelay` console script.

`--version` is answered before the CLI framework is imported, so scripts that probe for
evrelay pay only for a bare interpreter start.
"""

from __future__ import annotations

import os
import sys


class ClosedOutput:
    """Stands in for a stdout the caller closed (`evrelay tail x >&-`): commands that only
    talk on stderr work; writing data fails with a clear error instead of a crash."""

    def isatty(self) -> bool:
        return False

    def fileno(self) -> int:
        raise OSError(9, "stdout is closed")

    def flush(self) -> None:
        pass

    def write(self, data: object) -> int:
        from evrelay.errors import EvrelayError

        raise EvrelayError("cannot write to stdout: it is closed")

    @property
    def buffer(self) -> ClosedOutput:
        return self


def main(argv: list[str] | None = None) -> None:
    args = sys.argv[1:] if argv is None else argv
    if sys.stdout is None:
        sys.stdout = ClosedOutput()  # type: ignore[assignment]
    if sys.stdin is None:  # a closed stdin reads as empty
        sys.stdin = open(os.devnull)  # noqa: SIM115
    if args in (["--version"], ["-V"]):
        from evrelay import __version__

        sys.stdout.write(f"evrelay {__version__}\n")
        return
    if "_EVRELAY_COMPLETE" in os.environ:
        # A completion request from the scripts in completions/: typer registers its
        # shell classes only for apps with its own --install-completion, which we hide.
        from typer._completion_classes import completion_init

        completion_init()
    if not args or "-h" in args or "--help" in args or len(args) == 1:
        # Help is about to be shown (a command alone shows its help too): list plug-in
        # backends in it, which costs a look at the installed packages' metadata.
        from evrelay import backends

        backends.list_plugins_in_help()
    from evrelay.cli.app import app

    app(args=args, prog_name="evrelay")
