"""The thin CLI's shape: output goes to the session's own streams, never the global ones,
and command modules do not import each other (shared code lives in cli/common.py and
cli/sources.py)."""

from __future__ import annotations

import ast
import io

from evrelay.backends.base import Message, Position
from evrelay.cli.common import Session
from tests.conftest import REPO

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


def test_command_modules_do_not_import_each_other():
    cli = REPO / "evrelay" / "cli"
    commands = {f"evrelay.cli.{path.stem}" for path in cli.glob("*.py") if path.stem not in ("__init__", "app", "common", "sources")}
    for path in cli.glob("*.py"):
        if path.stem in ("__init__", "app"):
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                imported = {node.module} | {f"{node.module}.{alias.name}" for alias in node.names}
                assert not (imported & commands) - {f"evrelay.cli.{path.stem}"}, f"{path.name} imports {imported & commands}"
