"""Inputs without an end of line (/dev/zero, a binary file, `cat /dev/zero |`): the line
reader refuses a line past MAX_LINE_BYTES with an error naming the input and the line,
instead of growing without limit. Each test failed before the limit existed."""

from __future__ import annotations

import os
import resource
import subprocess
import sys

import pytest

from tests.conftest import REPO

ADDRESS_SPACE = 1 << 30
"""The child's whole address space: four times the line limit, so an unbounded line
reader meets MemoryError long before its input ends, and a bounded one never comes close."""


def _run_with_limited_memory(*args: str, stdin) -> subprocess.CompletedProcess:
    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (ADDRESS_SPACE, ADDRESS_SPACE))

    env = dict(os.environ, PYTHONPATH=str(REPO))
    return subprocess.run(
        [sys.executable, "-m", "evrelay", *args],
        stdin=stdin, capture_output=True, env=env, timeout=120, preexec_fn=limit,
    )


def test_tail_of_dev_zero_stops_at_the_line_limit_with_bounded_memory():
    # Before: `evrelay tail file:/dev/zero` grew its line buffer until memory ran out
    # (here: a MemoryError traceback at the 1 GiB address-space limit).
    proc = _run_with_limited_memory("tail", "file:/dev/zero", stdin=subprocess.DEVNULL)
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert err.strip().splitlines() == [err.strip()], err
    assert "/dev/zero line 1: longer than 256 MiB" in err
    assert "Traceback" not in err


def test_publish_from_an_endless_stdin_stops_at_the_line_limit(tmp_path):
    # Before: `cat /dev/zero | evrelay publish ...` read stdin into one line forever.
    out = tmp_path / "out.jsonl"
    with open("/dev/zero", "rb") as zero:
        proc = _run_with_limited_memory("publish", f"file:{out}", stdin=zero)
    err = proc.stderr.decode()
    assert proc.returncode == 1, err
    assert "stdin line 1: longer than 256 MiB" in err
    assert "Traceback" not in err


def test_the_refused_line_is_numbered_after_the_lines_before_it(tmp_path, monkeypatch):
    from evrelay import lines
    from evrelay.errors import InputError

    # Scaled down: the limit (1000) stays far above a read (100), as 256 MiB is above 256 KiB.
    monkeypatch.setattr(lines, "MAX_LINE_BYTES", 1000)
    monkeypatch.setattr(lines, "_CHUNK", 100)
    path = tmp_path / "in.txt"
    path.write_bytes(b"one\ntwo\n" + b"x" * 999 + b"\n" + b"y" * 5000 + b"\nlast\n")
    reader = lines.LineReader(str(path))
    taken: list[bytes] = []
    with pytest.raises(InputError, match=rf"{path} line 4: longer than"):
        while not reader.drained:
            taken += reader.take_lines(100, 0.01, follow=False)[1]
    reader.close()
    assert taken == [b"one", b"two", b"x" * 999]
