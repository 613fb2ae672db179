"""Defects found by the fourth review, of what the fourth adversarial pass (adv4) merged:
the foreign-SQLite check, the signal handling around jq, config writes, templates.
Each test failed before its fix."""

from __future__ import annotations

import sqlite3

from tests.conftest import evrelay


def test_a_foreign_sqlite_file_with_a_not_null_value_column_is_named_not_unreachable(isolated_env):
    # Before: another program's `entries (id, value NOT NULL)` table sent the open through
    # migrate (which relaxes evrelay's old `value NOT NULL`) before the foreign check:
    # exit 3 "cannot open the local store PATH: no such column: stream", as if a server
    # were down. After: exit 1 naming the file as not an evrelay store, the file untouched.
    store = isolated_env / "app.db"
    with sqlite3.connect(store) as db:
        db.execute("CREATE TABLE entries (id INTEGER PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("INSERT INTO entries VALUES (1, 'theirs')")
    (isolated_env / "evrelay.toml").write_text(f'default_profile = "l"\n[profiles.l]\nbackend = "local"\npath = "{store}"\n')
    run = evrelay("publish", "x", "a")
    assert run.returncode == 1, run.err
    assert f"the local store {store} is not an evrelay store: its table 'entries' has the columns (id, value)" in run.err
    with sqlite3.connect(store) as db:
        assert [row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")] == ["entries"]
        assert db.execute("SELECT * FROM entries").fetchall() == [(1, "theirs")]


def test_a_store_made_by_the_first_evrelay_still_opens_and_keeps_its_entries(isolated_env):
    # The foreign check must not misfire on evrelay's own older schema (value NOT NULL).
    store = isolated_env / "old.db"
    with sqlite3.connect(store) as db:
        db.executescript(
            "CREATE TABLE streams (name TEXT PRIMARY KEY, last_ms INTEGER NOT NULL, last_seq INTEGER NOT NULL, created_ms INTEGER NOT NULL);"
            "CREATE TABLE entries (stream TEXT NOT NULL, ms INTEGER NOT NULL, seq INTEGER NOT NULL, timestamp INTEGER NOT NULL,"
            " key BLOB, value BLOB NOT NULL, headers BLOB, PRIMARY KEY (stream, ms, seq)) WITHOUT ROWID;"
            "INSERT INTO streams VALUES ('s', 1000, 0, 1000);"
            "INSERT INTO entries VALUES ('s', 1000, 0, 1000, NULL, X'6f6c64', NULL);"
        )
    (isolated_env / "evrelay.toml").write_text(f'default_profile = "l"\n[profiles.l]\nbackend = "local"\npath = "{store}"\n')
    run = evrelay("tail", "s", "--format", "{id} {value}")
    assert run.returncode == 0, run.err
    assert run.out == "1000-0 old\n"


def _tail_stopped_by(stream: str, signals: list[int], *extra: str) -> tuple[int, str]:
    """Run `tail -f` on a stream as a real process, send the signals back to back once
    it has printed what is there, and return (exit status, stderr)."""
    import os
    import subprocess
    import sys
    import time

    from tests.conftest import REPO

    env = dict(os.environ, PYTHONPATH=str(REPO))
    tail = subprocess.Popen([sys.executable, "-m", "evrelay", "tail", stream, "-f", "-o", "raw", *extra],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert tail.stdout.readline() == b"v\n"  # started and following
        time.sleep(0.5)
        for number in signals:
            os.kill(tail.pid, number)
        _, err = tail.communicate(timeout=60)
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait()
    return tail.returncode, err.decode()


def test_two_sigterms_in_quick_succession_stop_a_filtered_tail_gracefully(isolated_env):
    # Before: with jq loaded, the handlers always carried SA_RESETHAND, so the kernel reset
    # SIGTERM to its default as the first one arrived; a second one before Python's handler
    # had run (back to back, as a supervisor or a script's `kill` loop sends them) killed
    # the process by the signal (status -15), while the same tail without --filter stopped
    # gracefully (exit 0). After: SA_RESETHAND is set only while jq runs.
    import signal

    assert evrelay("publish", "s", "v").returncode == 0
    for attempt in range(3):  # the race was lost nearly every time; three makes it certain
        status, err = _tail_stopped_by("s", [signal.SIGTERM, signal.SIGTERM], "--filter", ".")
        assert status == 0, (attempt, status, err)


def test_the_stuck_call_guard_sets_sa_resethand_and_restores_the_handler_as_it_was():
    # Reads the kernel's struct sigaction back: proves the ctypes layout (a wrong offset
    # would read or write the mask or the restorer instead of the flags) on this machine.
    import signal
    import sys

    import pytest

    from evrelay.stuck_signals import SA_RESETHAND, current_action, second_signal_ends_a_stuck_call

    if not sys.platform.startswith("linux"):
        pytest.skip("SA_RESETHAND is set on Linux only")
    previous = signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        before = current_action(signal.SIGTERM)
        assert before.flags & SA_RESETHAND == 0 and before.handler
        with second_signal_ends_a_stuck_call():
            inside = current_action(signal.SIGTERM)
            assert inside.flags & 0xFFFFFFFF == (before.flags & 0xFFFFFFFF) | SA_RESETHAND
            assert (inside.handler, inside.restorer, inside.mask[0]) == (before.handler, before.restorer, before.mask[0])  # the kernel keeps 64 signals
        after = current_action(signal.SIGTERM)
        assert (after.flags, after.handler) == (before.flags, before.handler)
    finally:
        signal.signal(signal.SIGTERM, previous)
