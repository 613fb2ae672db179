"""The `evrelay` command: composes the command modules and maps errors to exit codes.

`EvrelayGroup.invoke` is the ONE place where exceptions become exit statuses
(CONTRACT.md §4): evrelay's own errors print one line on stderr (`-v` adds the traceback),
Ctrl-C is 130, a closed stdout pipe (`| head`) ends quietly, and anything unexpected is
reported as an internal error without a traceback unless `-v` was given.
"""

from __future__ import annotations

import errno
import os
import sys
import traceback
from typing import Any

import typer
from typer.core import TyperGroup

from evrelay import __version__, backends
from evrelay.cli import ack, bridge, completion, config_cmd, inspect, publish, redrive, replay, stats, tail
from evrelay.cli.common import RUNTIME, ConfigOption, ProfileOption, QuietOption, VerboseOption
from evrelay.errors import EvrelayError, ExitCode, Interrupted


def report_error(exc: BaseException, *, verbose: bool) -> None:
    if verbose:
        traceback.print_exception(exc, file=sys.stderr)
    if isinstance(exc, Interrupted):
        sys.stderr.write(f"evrelay: {exc.message}\n")
    elif isinstance(exc, EvrelayError):
        sys.stderr.write(f"evrelay: error: {exc.message}\n")
        if exc.hint:
            sys.stderr.write(f"evrelay: hint: {exc.hint}\n")
    else:
        sys.stderr.write(f"evrelay: internal error: {type(exc).__name__}: {exc}\n")
        if not verbose:
            sys.stderr.write("evrelay: this is a bug in evrelay; run again with -v for the traceback\n")
    sys.stderr.flush()


OUTPUT_ERRNOS = frozenset({errno.ENOSPC, errno.EIO, errno.EBADF, errno.EDQUOT, errno.EFBIG})


def _silence_stdout() -> None:
    # The reader of our stdout has gone (or it cannot take data); point stdout at
    # /dev/null so that the final flush at interpreter exit does not fail a second time.
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):
        pass


class EvrelayGroup(TyperGroup):
    def invoke(self, ctx: Any) -> Any:
        RUNTIME.reset()
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.exceptions.TyperException):
            raise
        except EvrelayError as exc:
            report_error(exc, verbose=RUNTIME.verbose)
            raise typer.Exit(int(exc.exit_code)) from None
        except KeyboardInterrupt:
            sys.stderr.write("evrelay: interrupted\n")
            raise typer.Exit(int(ExitCode.INTERRUPTED)) from None
        except BrokenPipeError:
            _silence_stdout()
            raise typer.Exit(int(ExitCode.SUCCESS)) from None
        except OSError as exc:
            if exc.filename is not None or exc.errno not in OUTPUT_ERRNOS:
                report_error(exc, verbose=RUNTIME.verbose)
                raise typer.Exit(int(ExitCode.FAILURE)) from None
            # Writing our output failed (a full disk, /dev/full, an I/O error).
            report_error(EvrelayError(f"cannot write to stdout: {exc.strerror}"), verbose=RUNTIME.verbose)
            _silence_stdout()
            raise typer.Exit(int(ExitCode.FAILURE)) from None
        except Exception as exc:
            report_error(exc, verbose=RUNTIME.verbose)
            raise typer.Exit(int(ExitCode.FAILURE)) from None


app = typer.Typer(
    name="evrelay",
    cls=EvrelayGroup,
    help=(
        f"Publish, tail, bridge, replay and ack events on every backend ({backends.help_backend_names()}).\n\n"
        f"ADDRESS is {backends.help_address_forms()} (NAME: in the default profile; -: stdin/stdout, JSONL).\n\n"
        "--config, --profile, -v and -q work before the command as well as after it."
    ),
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        sys.stdout.write(f"evrelay {__version__}\n")
        raise typer.Exit()


@app.callback()
def root(
    version: bool = typer.Option(False, "--version", "-V", callback=_version, is_eager=True, help="Print the version and exit."),
    config: ConfigOption = None,
    profile: ProfileOption = None,
    verbose: VerboseOption = False,
    quiet: QuietOption = False,
) -> None:
    """evrelay: one tool and one syntax for event streams."""
    # Given before the command: the defaults for the command's own (same) options.
    RUNTIME.config, RUNTIME.profile = config, profile
    RUNTIME.global_verbose = RUNTIME.verbose = verbose
    RUNTIME.quiet = quiet


app.command("publish", no_args_is_help=True)(publish.publish)
app.command("tail", no_args_is_help=True)(tail.tail)
bridge.register(app)
replay.register(app)
redrive.register(app)
stats.register(app)
ack.register(app)
inspect.register(app)
app.add_typer(config_cmd.app, name="config")
app.command("completion", no_args_is_help=True)(completion.completion)
