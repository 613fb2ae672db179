"""The ONE place where exceptions become exit statuses (CONTRACT.md §4): evrelay's own
errors print one line on stderr (`-v` adds the traceback), Ctrl-C is 130, a closed stdout
pipe (`| head`) ends quietly, and anything unexpected is reported as an internal error
without a traceback unless `-v` was given.

Used by the app (`EvrelayGroup.invoke` in evrelay/cli/app.py) and by the fast path of
`publish` (evrelay/cli/fast_path.py); no typer here, so the fast path does without it.
"""

from __future__ import annotations

import errno
import os
from typing import TYPE_CHECKING

from evrelay.errors import EvrelayError, ExitCode, Interrupted

if TYPE_CHECKING:
    from evrelay.cli.session import Session


def report_error(exc: BaseException, session: Session) -> None:
    err = session.stderr
    if session.verbose:
        import traceback  # only -v prints one: 2 ms of every start-up otherwise

        traceback.print_exception(exc, file=err)
    if isinstance(exc, Interrupted):
        err.write(f"evrelay: {exc.message}\n")
    elif isinstance(exc, EvrelayError):
        err.write(f"evrelay: error: {exc.message}\n")
        if exc.hint:
            err.write(f"evrelay: hint: {exc.hint}\n")
    else:
        err.write(f"evrelay: internal error: {type(exc).__name__}: {exc}\n")
        if not session.verbose:
            err.write("evrelay: this is a bug in evrelay; run again with -v for the traceback\n")
    err.flush()


OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EIO, errno.EBADF, errno.EDQUOT, errno.EFBIG})


def _silence_stdout(session: Session) -> None:
    # The reader of our stdout has gone (or it cannot take data); point stdout at
    # /dev/null so that the final flush at interpreter exit does not fail a second time.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, session.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


def exit_status(exc: Exception | KeyboardInterrupt, session: Session) -> int:
    """Report what a command raised (on the session's stderr) and return the exit status."""
    if isinstance(exc, EvrelayError):
        report_error(exc, session)
        return int(exc.exit_code)
    if isinstance(exc, KeyboardInterrupt):
        session.stderr.write("evrelay: interrupted\n")
        return int(ExitCode.INTERRUPTED)
    if isinstance(exc, BrokenPipeError):
        _silence_stdout(session)
        return int(ExitCode.SUCCESS)
    if isinstance(exc, OSError):
        if exc.filename is not None or exc.errno not in OUTPUT_ERRNOS:
            report_error(exc, session)
            return int(ExitCode.FAILURE)
        # Writing our output failed (a full disk, /dev/full, an I/O error).
        report_error(EvrelayError(f"cannot write to stdout: {exc.strerror}"), session)
        _silence_stdout(session)
        return int(ExitCode.FAILURE)
    report_error(exc, session)
    return int(ExitCode.FAILURE)
