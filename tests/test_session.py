"""The thin CLI's shape: one session per invocation, handed to every command; output goes
to the session's own streams, never the global ones; command modules do not import each
other (shared code lives in cli/common.py and cli/sources.py)."""

from __future__ import annotations

import ast
import io
import os
import subprocess
import sys

from typer.testing import CliRunner

from evrelay.backends.base import Message, Position
from evrelay.cli.common import Session
from tests.conftest import REPO, evrelay

SHARED = {"evrelay.cli.common", "evrelay.cli.sources"}


def test_writers_and_records_use_the_session_streams(capsys):
    out, err = io.BytesIO(), io.StringIO()
    session = Session(stdout=out, stderr=err)
    assert session.stdout_is_tty is False and session.record_mode(None) == "json"
    session.writer(None, None).write([Message(b"v", None, [], 0, Position("local", "s", "1-0"))])
    session.writer(None, "{id} {value}").write([Message(b"w", None, [], 0, Position("local", "s", "1-1"))])
    session.records([{"name": "s", "length": 1}], [("name", "STREAM"), ("length", "LENGTH")], "table")
    session.record({"a": 1})
    session.info("a summary")
    session.warn("careful")
    lines = out.getvalue().decode().splitlines()
    assert lines[0].startswith('{"value":"v"') and lines[1] == "1-1 w"
    assert lines[2].split() == ["STREAM", "LENGTH"] and lines[3].split() == ["s", "1"]
    assert lines[4] == '{"a":1}'
    assert err.getvalue() == "a summary\nevrelay: warning: careful\n"
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


def test_pretty_output_goes_to_the_given_stream(capsys):
    out = io.BytesIO()
    Session(stdout=out, stderr=io.StringIO()).writer("pretty", None).write([Message(b'{"x": 1}', b"k", [], 0, Position("local", "s", "1-0"))])
    assert b'"x": 1' in out.getvalue() and b"key=" in out.getvalue()
    assert capsys.readouterr().out == ""


NOT_COMMANDS = ("__init__", "app", "common", "sources", "session", "exits", "fast_path")
"""The modules of evrelay/cli/ that are no command: the app and its entry points (`app`,
`__init__`, the typer-free `fast_path` of `publish`), and what commands share."""
COMMAND_PARTS = {"publish_run": ("publish", "fast_path")}
"""A command's work kept apart from its typer declaration: who may import it."""


def test_command_modules_do_not_import_each_other():
    cli = REPO / "evrelay" / "cli"
    commands = {f"evrelay.cli.{path.stem}" for path in cli.glob("*.py") if path.stem not in NOT_COMMANDS}
    for path in cli.glob("*.py"):
        if path.stem in ("__init__", "app"):
            continue
        allowed = {f"evrelay.cli.{path.stem}"} | {f"evrelay.cli.{part}" for part, users in COMMAND_PARTS.items() if path.stem in users}
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported = {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
                assert not (imported & commands) - allowed, f"{path.name} imports {imported & commands}"


COMMAND_MODULES = sorted(p for p in (REPO / "evrelay" / "cli").glob("*.py") if p.stem not in NOT_COMMANDS)


def test_commands_do_not_build_their_own_session():
    for path in COMMAND_MODULES:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "id", None) == "Session":
                raise AssertionError(f"{path.name}:{node.lineno} builds a Session; take `session: Session` from @command")


def test_session_options_before_and_after_the_command(tmp_path):
    # Two config files with the same profile on different stores: the command's own
    # --config wins over the one before it; -q and -v given before the command hold.
    for name in ("a", "b"):
        (tmp_path / f"{name}.toml").write_text(f'[profiles.box]\nbackend = "local"\npath = "{tmp_path / name}.db"\nstream = "s"\n')
    a, b = str(tmp_path / "a.toml"), str(tmp_path / "b.toml")
    published = evrelay("--config", a, "publish", "box", "hello")
    assert published.returncode == 0 and "published 1 message(s)" in published.err
    assert evrelay("--config", a, "tail", "box", "-o", "raw").stdout == b"hello\n"
    assert evrelay("--config", b, "tail", "box", "-o", "raw").stdout == b""
    assert evrelay("--config", b, "tail", "box", "-o", "raw", "--config", a).stdout == b"hello\n"
    quiet = evrelay("-q", "--config", a, "publish", "box", "again")
    assert quiet.returncode == 0 and quiet.err == ""
    verbose = evrelay("-v", "tail", "box", "--from", "bogus", "--config", a)
    assert verbose.returncode == 2 and "Traceback" in verbose.err and "evrelay: error: --from" in verbose.err


def test_each_invocation_gets_a_fresh_session(tmp_path, monkeypatch):
    # In one process (as an embedding program or a test runs it), -v of one invocation
    # must not leak into the next: the app builds a new session each time.
    from evrelay.cli.app import build_app

    monkeypatch.chdir(tmp_path)
    app = build_app()
    runner = CliRunner()
    first = runner.invoke(app, ["-v", "tail", "x", "--from", "bogus"])
    second = runner.invoke(app, ["tail", "x", "--from", "bogus"])
    assert first.exit_code == second.exit_code == 2
    assert "Traceback" in first.stderr and "Traceback" not in second.stderr
    assert second.stderr.startswith("evrelay: error: --from: 'bogus' is not a position")


def test_each_option_flag_is_spelled_once():
    # sqlite-utils style: an option shared by commands is declared once in cli/common.py
    # (an Annotated alias, or a factory when each command words its help); a command
    # spells out only its own options. redrive's `--to SINK` is a different option from
    # the range end `--to POSITION`, sharing only the name.
    spelled: dict[str, list[str]] = {}
    for path in sorted((REPO / "evrelay" / "cli").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "Option":
                for arg in node.args:
                    if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and arg.value.startswith("--"):
                        spelled.setdefault(arg.value, []).append(f"{path.name}:{node.lineno}")
    repeated = {flag: where for flag, where in spelled.items() if len(where) > 1 and flag != "--to"}
    assert not repeated, repeated
    assert len(spelled["--to"]) == 2


RUN_WITH_COMMAND = """
import sys
sys.path.insert(0, sys.argv[1])
from evrelay.cli.app import build_app
import readme_command
app = build_app()
app.command("count", no_args_is_help=True)(readme_command.count)
app(args=sys.argv[2:], prog_name="evrelay")
"""


def test_the_readme_command_example_runs(tmp_path):
    # README "Writing a command": its whole command, registered, works as it says.
    section = (REPO / "README.md").read_text().split("## Writing a command", 1)[1].split("\n## ", 1)[0]
    (tmp_path / "readme_command.py").write_text(section.split("```python\n", 1)[1].split("```", 1)[0])
    (tmp_path / "evrelay.toml").write_text(f'[profiles.box]\nbackend = "local"\npath = "{tmp_path / "box.db"}"\n')
    assert evrelay("publish", "box:orders", '{"total": 50}', '{"total": 150}', '{"total": 250}', cwd=str(tmp_path)).returncode == 0
    run = subprocess.run([sys.executable, "-c", RUN_WITH_COMMAND, str(tmp_path), "count", "box:orders", "--filter", ".value.total > 100"],
                         capture_output=True, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert run.returncode == 0, run.stderr
    assert run.stdout == b'{"address":"box:orders","count":2}\n'
    assert run.stderr == b"counted 2 message(s) on box:orders\n"


def test_a_caller_hands_the_app_its_own_streams(tmp_path, monkeypatch, capsys):
    # httpie's Environment: run in-process with a session of our own, every byte of the
    # commands' input and output goes through its streams, none through the process's.
    from evrelay.cli.app import build_app

    monkeypatch.chdir(tmp_path)
    (tmp_path / "evrelay.toml").write_text(f'[profiles.box]\nbackend = "local"\npath = "{tmp_path / "box.db"}"\n')

    def run(*args: str, stdin: bytes = b"") -> tuple[bytes, str]:
        out, err = io.BytesIO(), io.StringIO()
        build_app()(args=list(args), obj=Session(stdin=io.BytesIO(stdin), stdout=out, stderr=err), standalone_mode=False)
        return out.getvalue(), err.getvalue()

    assert run("publish", "box:s", "a", "b")[1].startswith("published 2 message(s) to box:s")
    envelopes, _ = run("tail", "box:s", "-g", "g", "--no-ack", "-o", "json")
    assert [line.split(b'"value":"')[1][:1] for line in envelopes.splitlines()] == [b"a", b"b"]
    assert run("ack", "box:s", "-g", "g", stdin=envelopes)[1] == "acked 2 of 2 message(s) for group 'g' on box:s\n"
    assert run("ack", "box:s", "-g", "g", "--list", "-o", "json")[1] == "0 pending message(s) for group 'g' on box:s\n"
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""
