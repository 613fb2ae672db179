"""The `evrelay` command: composes the command modules and maps errors to exit codes.

`EvrelayGroup.invoke` creates the invocation's one `Session` (bound here to the process's
stdout and stderr; the fast path of `publish` in evrelay/cli/fast_path.py does the same)
and turns what a command raises into its exit status with evrelay/cli/exits.py, the ONE
place where exceptions become exit statuses (CONTRACT.md §4).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import typer
from typer.core import TyperGroup

from evrelay import __version__, backends
from evrelay.cli.common import Session, command
from evrelay.cli.exits import exit_status


def root_help() -> str:
    return (
        f"Publish, tail, bridge, replay and ack events on every backend ({backends.help_backend_names()}).\n\n"
        f"ADDRESS is {backends.help_address_forms()} (NAME: in the default profile; -: stdin/stdout, JSONL).\n\n"
        "--config, --profile, -v and -q work before the command as well as after it."
    )


class EvrelayGroup(TyperGroup):
    def format_help_text(self, ctx: Any, formatter: Any) -> None:
        # The text lists plug-in backends, and finding them imports importlib.metadata and
        # reads every installed package's metadata (~12 ms): only `evrelay --help` pays.
        self.help = root_help()
        super().format_help_text(ctx, formatter)

    def invoke(self, ctx: Any) -> Any:
        # A caller running the app in-process may hand in its own (`app(args, obj=Session(...))`).
        session = ctx.obj if isinstance(ctx.obj, Session) else Session(stdin=sys.stdin.buffer, stdout=sys.stdout.buffer, stderr=sys.stderr)
        ctx.obj = session
        try:
            return super().invoke(ctx)
        except (typer.Exit, typer.Abort, typer.exceptions.TyperException):
            raise
        except (Exception, KeyboardInterrupt) as exc:
            raise typer.Exit(exit_status(exc, session)) from None


def _new_app() -> typer.Typer:
    return typer.Typer(
        name="evrelay",
        cls=EvrelayGroup,
        help=None,  # root_help(), built when shown (EvrelayGroup.format_help_text)
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


@command(session_options=("config", "profile", "verbose", "quiet"))
def root(
    version: bool = typer.Option(False, "--version", "-V", callback=_version, is_eager=True, help="Print the version and exit."),
    *,
    session: Session,
) -> None:
    """evrelay: one tool and one syntax for event streams."""
    # The session options given before the command are applied to the session by now:
    # the defaults for the command's own (same) options.


def _register_publish(app: typer.Typer) -> None:
    from evrelay.cli import publish

    app.command("publish", no_args_is_help=True)(publish.publish)


def _register_tail(app: typer.Typer) -> None:
    from evrelay.cli import tail

    app.command("tail", no_args_is_help=True)(tail.tail)


def _register_module(name: str) -> Any:
    def register(app: typer.Typer) -> None:
        import importlib

        importlib.import_module(f"evrelay.cli.{name}").register(app)

    return register


def _register_config(app: typer.Typer) -> None:
    from evrelay.cli import config_cmd

    app.add_typer(config_cmd.app, name="config")


def _register_completion(app: typer.Typer) -> None:
    from evrelay.cli import completion

    app.command("completion", no_args_is_help=True)(completion.completion)


# Command name -> what registers it, in the order `evrelay --help` lists them. One
# registration may add several commands (inspect: ls, info, groups, health, lag).
_REGISTRATIONS: list[tuple[tuple[str, ...], Any]] = [
    (("publish",), _register_publish),
    (("tail",), _register_tail),
    (("bridge",), _register_module("bridge")),
    (("replay",), _register_module("replay")),
    (("redrive",), _register_module("redrive")),
    (("stats",), _register_module("stats")),
    (("ack",), _register_module("ack")),
    (("ls", "info", "groups", "health", "lag"), _register_module("inspect")),
    (("config",), _register_config),
    (("completion",), _register_completion),
]


def build_app(args: list[str] | None = None) -> typer.Typer:
    """The CLI with every command, or (given the command line) with only the commands
    named in it: `tail --help` then imports one command module instead of ten (a
    start-up cost users pay on every call). The command a line invokes is always one of
    its words; a line naming none (`evrelay`, `--help`, a typo) gets every command, so
    help, "no such command" and completion see them all."""
    words = set(args or ())
    wanted = [register for names, register in _REGISTRATIONS if words.intersection(names)]
    app = _new_app()
    app.callback()(root)
    for register in wanted or [register for _, register in _REGISTRATIONS]:
        register(app)
    return app


def __getattr__(name: str) -> Any:
    # `from evrelay.cli.app import app` (tests, docs): the whole CLI, built on first use.
    if name == "app":
        globals()["app"] = built = build_app()
        return built
    raise AttributeError(name)


# --- generated help pages --------------------------------------------------------------
# `evrelay COMMAND --help` is answered from evrelay/cli/help_pages.py without importing
# typer (evrelay/cli/__init__.py): typer and what it imports are two thirds of a help
# page's start-up. Pages are rendered here from the live CLI, each in a fresh interpreter
# (as a user's call would be), at the width click uses on terminals of 80 columns or more;
# a page whose text lists plug-in backends (it looks them up while rendering: an ADDRESS
# argument's, `config add`'s --backend) stays live, since plug-ins are installed later.

HELP_PAGE_COLUMNS = 80
"""The terminal width the pages are rendered at: click wraps to min(columns, 80) - 2."""

_HELP_PAGE_PROBE = """
import sys
from evrelay import backends
from evrelay.cli import main
try:
    main([*sys.argv[1:], "--help"], help_pages=False)
except SystemExit as exc:
    code = exc.code
else:
    code = 0
sys.stdout.flush()
sys.stderr.write(f"\\nEXIT={code} PLUGINS={backends._plugin_targets.cache_info().misses}\\n")
"""


def help_page_commands() -> list[str]:
    """Every command and subcommand, as its words (`tail`, `config show`)."""
    found: list[str] = []

    def walk(command: Any, path: list[str]) -> None:
        for name, sub in getattr(command, "commands", {}).items():
            found.append(" ".join([*path, name]))
            walk(sub, [*path, name])

    walk(typer.main.get_command(build_app()), [])
    return found


def render_help_pages() -> str:
    """The source of evrelay/cli/help_pages.py: each command's live help page, rendered by
    `evrelay COMMAND --help` in its own interpreter, except those listing plug-ins."""
    import pprint
    import subprocess
    from pathlib import Path

    package_root = str(Path(__file__).resolve().parents[2])
    env = dict(os.environ, COLUMNS=str(HELP_PAGE_COLUMNS), PYTHONPATH=os.pathsep.join(filter(None, [package_root, os.environ.get("PYTHONPATH")])))
    env.pop("_EVRELAY_COMPLETE", None)
    probes = {
        words: subprocess.Popen([sys.executable, "-c", _HELP_PAGE_PROBE, *words.split()], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for words in help_page_commands()
    }
    pages: dict[str, str] = {}
    for words, probe in probes.items():
        out, err = probe.communicate()
        status = err.decode().rsplit("\nEXIT=", 1)[-1].split()
        if probe.returncode != 0 or status != ["0", "PLUGINS=0"]:
            if status[1:] == ["PLUGINS=0"] or probe.returncode != 0:
                raise RuntimeError(f"evrelay {words} --help failed: {err.decode()[-500:]}")
            continue  # it lists plug-in backends: rendered live
        pages[words] = out.decode("ascii")
    return (
        '"""Generated by `evrelay.cli.app.render_help_pages()` from the live CLI: do not edit.\n\n'
        "Help pages printed without building the CLI (see evrelay/cli/__init__.py), as click\n"
        f"wraps them on a terminal of {HELP_PAGE_COLUMNS} columns or more.\n"
        '"""\n\n'
        f"WIDTH = {HELP_PAGE_COLUMNS - 2}\n\n"
        f"PAGES: dict[str, str] = {pprint.pformat(pages, width=100, sort_dicts=True)}\n"
    )
