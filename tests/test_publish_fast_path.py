"""The fast path of a plain `publish ADDRESS [VALUE...]` (evrelay/cli/fast_path.py) runs
without typer, and ends every command line it takes exactly as typer would: the same
exit status, stdout and stderr, and the same data written; everything else goes to
typer. Each line runs twice, fast path on and off, in its own interpreter."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

PROBE = """
import sys
from evrelay.cli import main
try:
    main(sys.argv[2:], fast_path=sys.argv[1] == "fast")
except SystemExit as exc:
    code = exc.code or 0
else:
    code = 0
sys.stdout.flush()
sys.stderr.write(f"\\nEXIT={code} TYPER={'typer' in sys.modules}\\n")
"""

VARYING = [
    (re.compile(rb'"timestamp":"[^"]*"'), b'"timestamp":"T"'),
    (re.compile(rb"in [0-9.]+ ?(ms|s|us|\xc2\xb5s)\b"), b"in D"),
    # -v's traceback: its frames name the functions that called the command (typer's or the fast path's)
    (re.compile(rb"^Traceback \(most recent call last\):\n(?:  .*\n)*", re.M), b"Traceback\n"),
]


def run(mode: str, args: list[str], stdin: bytes, tmp_path, stdout: str = "pipe") -> tuple[int, bytes, bytes, bool, bytes]:
    """(exit status, stdout, stderr, whether typer was imported, what file:out.jsonl got);
    `stdout`: "pipe" (captured), "full" (/dev/full) or "closed" (a pipe nobody reads)."""
    env = dict(os.environ, PYTHONPATH=str(REPO), XDG_DATA_HOME=str(tmp_path / "data"), XDG_CONFIG_HOME=str(tmp_path / "config"), COLUMNS="80")
    for name in ("EVRELAY_CONFIG", "EVRELAY_PROFILE", "_EVRELAY_COMPLETE"):
        env.pop(name, None)
    target: object = subprocess.PIPE
    if stdout == "full":
        target = open("/dev/full", "wb")  # noqa: SIM115 (closed below)
    elif stdout == "closed":
        reader, writer = os.pipe()
        os.close(reader)
        target = writer
    try:
        proc = subprocess.run([sys.executable, "-c", PROBE, mode, *args], input=stdin, stdout=target, stderr=subprocess.PIPE, env=env, cwd=tmp_path, timeout=60)
    finally:
        if stdout == "full":
            target.close()  # type: ignore[attr-defined]
        elif stdout == "closed":
            os.close(target)  # type: ignore[arg-type]
    err, _, status = proc.stderr.rpartition(b"\nEXIT=")
    code, typer_loaded = status.decode().split()
    out = proc.stdout or b""
    for pattern, replacement in VARYING:
        out, err = pattern.sub(replacement, out), pattern.sub(replacement, err)
    sink = tmp_path / "out.jsonl"
    written = sink.read_bytes() if sink.exists() else b""
    if sink.exists():
        sink.unlink()
    for pattern, replacement in VARYING:
        written = pattern.sub(replacement, written)
    return int(code), out, err, typer_loaded == "TYPER=True", written


FAST = [
    (["publish", "-", "a", "b"], b""),
    (["publish", "-"], b"x\n\n y \r\nz"),  # an empty line, a CR, no newline at the end
    (["publish", "-q", "-", "x"], b""),
    (["publish", "-", "--verbose", "x", "-q"], b""),
    (["publish", "-", "-", "é", "", "a b"], b""),  # `-`, non-ASCII and empty words are values
    (["publish", "file:out.jsonl", "x", "y"], b""),
    (["publish", "file:out.jsonl"], b"1\n2\n"),
    (["publish", "demo", "hello"], b""),  # the local store of the default profile
    (["publish", "demo:orders"], b"a\nb\n"),
    (["publish", "nosuch://host/x", "v"], b""),
    (["publish", "", "v"], b""),
    (["publish", "nosuchprofile:x", "v"], b""),
    (["publish", "kafka://127.0.0.1:1/t?no.such.option=1", "v"], b""),
    (["publish", "kafka://127.0.0.1:1/", "v"], b""),
    (["publish", "redis://user:secret@127.0.0.1:1/s", "-q", "v"], b""),
    (["publish", "-v", "redis://127.0.0.1:1/s", "v"], b""),
    (["publish", "file:/nonexistent/dir/x.jsonl", "v"], b""),
]
"""Command lines the fast path takes (successes and failures alike)."""

TYPER = [
    (["publish", "-", "-k", "key", "v"], b""),
    (["publish", "-", "-x"], b""),
    (["publish", "-", "--", "-x"], b""),
    (["publish", "-", "-qv", "x"], b""),
    (["publish", "--quiet"], b""),
    (["publish", "-", "--input", "json"], b'{"value": "v"}\n'),
    (["publish", "-", "--timeout", "nonsense", "v"], b""),
    (["publish", "-", "tab\there"], b""),
    (["-q", "publish", "-", "v"], b""),
]
"""Command lines it leaves to typer."""


@pytest.mark.parametrize(("args", "stdin"), FAST + TYPER, ids=lambda value: repr(value)[:40])
def test_fast_path_and_typer_end_a_command_line_alike(args, stdin, tmp_path):
    fast = run("fast", args, stdin, tmp_path)
    slow = run("typer", args, stdin, tmp_path)
    assert fast[:3] == slow[:3], (args, fast, slow)
    assert fast[4] == slow[4], (args, fast[4], slow[4])
    assert slow[3], "the typer run must have used typer"
    assert fast[3] == ((args, stdin) in TYPER), (args, "typer loaded" if fast[3] else "fast path")


@pytest.mark.parametrize("stdout", ["full", "closed"])
def test_fast_path_and_typer_fail_alike_on_an_unwritable_stdout(stdout, tmp_path):
    """`publish -` writes its envelopes to stdout: /dev/full is exit 1 with one line, a
    reader that went away (`| head -c0`) ends quietly; the same either way."""
    args, data = ["publish", "-"], b"".join(b"line %d\n" % i for i in range(20000))
    fast = run("fast", args, data, tmp_path, stdout)
    slow = run("typer", args, data, tmp_path, stdout)
    assert fast[:3] == slow[:3] and not fast[3], (fast, slow)
    assert fast[0] == (1 if stdout == "full" else 0), fast


def test_fast_path_statuses_cover_success_and_the_contract_errors(tmp_path):
    """The set above exercises exit 0, 2 (usage/config) and 3 (unreachable)."""
    codes = {run("fast", args, stdin, tmp_path)[0] for args, stdin in FAST}
    assert {0, 2, 3} <= codes, codes
