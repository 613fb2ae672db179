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
