"""The command line: `main()` is the `evrelay` console script.

`--version` and `COMMAND --help` are answered before the CLI framework is imported: scripts
that probe for evrelay pay only for a bare interpreter start, and a command's help page
comes from evrelay/cli/help_pages.py, generated from the live CLI (`render_help_pages()`
in evrelay/cli/app.py; a test fails when it is stale), when the terminal is wide enough
for the page as generated. A plain `publish ADDRESS [VALUE...]` runs without typer too
(evrelay/cli/fast_path.py): typer and building the command cost ~19 ms of CPU, 7% of
publishing 300,000 lines (README, Performance).
"""

from __future__ import annotations

import gc
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

    def writelines(self, lines: object) -> None:
        # The JSON writer hands its lines over in one call (evrelay/output.py).
        self.write(b"")

    @property
    def buffer(self) -> ClosedOutput:
        return self


def terminal_columns() -> int:
    """`shutil.get_terminal_size().columns`, which click wraps help to, without importing
    shutil (and the fnmatch, re and others it brings): COLUMNS, else the terminal, else 80."""
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
        columns = columns or 80
    return columns


def generated_help_page(args: list[str]) -> str | None:
    """The page `evrelay COMMAND... --help` prints, from evrelay/cli/help_pages.py, or None
    when it must be rendered live: another command line, a page that lists plug-in
    backends (not generated), or a terminal narrower than the pages were wrapped for
    (click wraps to min(columns, 80) - 2)."""
    if len(args) < 2 or args[-1] not in ("--help", "-h") or "_EVRELAY_COMPLETE" in os.environ:
        return None
    from evrelay.cli.help_pages import PAGES, WIDTH

    page = PAGES.get(" ".join(args[:-1]))
    if page is None or min(terminal_columns(), 80) - 2 != WIDTH:
        return None
    return page


def _print_early(text: str) -> None:
    """Print what is answered before the CLI is built, failing as every command does:
    `| head -c0` quietly; `>&-`, `> /dev/full`: one line on stderr and exit 1."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except Exception as exc:
        os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # the exit-time flush must not fail again
        if not isinstance(exc, BrokenPipeError):
            sys.stderr.write(f"evrelay: error: {getattr(exc, 'message', None) or f'cannot write to stdout: {exc.strerror}'}\n")
            sys.exit(1)


def main(argv: list[str] | None = None, *, help_pages: bool = True, fast_path: bool = True) -> None:
    """Run the CLI on `argv` (default: the process's arguments); `help_pages=False` renders
    every help page live (what render_help_pages() generates them from); `fast_path=False`
    sends a plain `publish ADDRESS` through typer too (the fast path's equivalence test)."""
    args = sys.argv[1:] if argv is None else argv
    if sys.stdout is None:
        sys.stdout = ClosedOutput()  # type: ignore[assignment]
    if sys.stdin is None:  # a closed stdin reads as empty
        sys.stdin = open(os.devnull)  # noqa: SIM115
    if sys.stderr is None:
        # `2>&-` silences us: what goes to stderr is dropped, and the exit status stays
        # what it would be (a summary line written to None made a success exit 1).
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115
    if args in (["--version"], ["-V"]):
        from evrelay import __version__

        _print_early(f"evrelay {__version__}\n")
        return
    page = generated_help_page(args) if help_pages else None
    if page is not None:
        _print_early(page)
        return
    completing = "_EVRELAY_COMPLETE" in os.environ
    if fast_path and not completing and args[:1] == ["publish"]:
        from evrelay.cli.fast_path import parse_plain_publish, run_plain_publish

        plain = parse_plain_publish(args)
        if plain is not None:
            _tune_collector()
            sys.exit(run_plain_publish(plain))
    if completing:
        # A completion request from the scripts in completions/: typer registers its
        # shell classes only for apps with its own --install-completion, which we hide.
        from typer._completion_classes import completion_init

        completion_init()
    if not args or "-h" in args or "--help" in args or len(args) == 1:
        # Help is about to be shown (a command alone shows its help too): list plug-in
        # backends in it, which costs a look at the installed packages' metadata.
        from evrelay import backends

        backends.list_plugins_in_help()
    from evrelay.cli.app import build_app

    app = build_app(None if completing else args)
    _tune_collector()
    app(args=args, prog_name="evrelay")


def _tune_collector() -> None:
    # The data paths allocate millions of short-lived objects (messages, positions, field
    # lists) that hold no reference cycles; at CPython's default threshold (700) the cycle
    # collector made ~21 full passes over everything alive during a 300k-message tail, a
    # third of its read time (1.15 s -> 0.83 s without them). Everything imported so far
    # lives until exit: freeze it out of the collector's view, and collect less often.
    gc.freeze()
    gc.set_threshold(50_000, 20, 100)
