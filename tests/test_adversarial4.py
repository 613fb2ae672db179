"""Defects found by the fourth adversarial pass: templates that reach into Python objects,
jq expressions with endless output, a JSONL file truncated under `tail -f`. Each test
failed before its fix."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.conftest import evrelay


@pytest.fixture
def stream():
    return f"adv4-{uuid.uuid4().hex[:8]}"


# --- templates: fields and items only, never attributes ---------------------------------------


@pytest.mark.parametrize(
    ("template", "said"),
    [
        ("{value.__class__}", "--format: {value.__class__} reaches an attribute"),
        ("{headers.__init__.__globals__}", "--format: {headers.__init__.__globals__} reaches an attribute"),
        ("{headers!r}", "--format: {headers!r}: conversions (!r, !s, !a) are not supported"),
        ("{value:{key}}", "--format: {value:{key}}: a format spec cannot hold a field"),
        ("{value:>2000000000}", "--format: {value:>2000000000}: wider than 10,000 characters"),
    ],
)
def test_a_format_template_reaching_past_fields_is_refused(stream, template, said):
    # Before: {value.__class__} printed "<class 'str'>" (exit 0), {headers.__init__.__globals__}
    # evrelay.output's module globals, {headers!r} "<evrelay.output.HeaderView object at
    # 0x7f…>", {value:{key}} let each message's key choose its format spec, and a width of
    # 2e9 allocated 2 GB for every message.
    assert evrelay("publish", stream, "-k", ">9", "v").returncode == 0
    run = evrelay("tail", stream, "--format", template)
    assert run.returncode == 2, run.err
    assert said in run.err and run.out == "", run.err
    assert "Traceback" not in run.err


def test_a_format_template_of_fields_items_and_modest_specs_still_works(stream):
    assert evrelay("publish", stream, "-k", "k1", "-H", "trace.id=t1", "v1").returncode == 0
    run = evrelay("tail", stream, "--format", "{key:>4}|{headers[trace.id]}|{value:.1}|{ts_ms:>14d}")
    assert run.returncode == 0, run.err
    key, header, value, ts = run.out.rstrip("\n").split("|")
    assert (key, header, value) == ("  k1", "t1", "v") and ts.strip().isdigit()


def test_a_routed_sink_template_reaching_an_attribute_is_refused_before_anything_moves(stream, tmp_path):
    # Before: the sink name `file:out-{key.__class__}.jsonl` wrote out-<class 'str'>.jsonl.
    assert evrelay("publish", stream, "-k", "k1", "v1").returncode == 0
    run = evrelay("bridge", stream, f"file:{tmp_path}/out-{{key.__class__}}.jsonl", "--idle-timeout", "1s")
    assert run.returncode == 2, run.err
    assert "{key.__class__} reaches an attribute" in run.err
    assert not list(tmp_path.glob("out-*"))
    assert json.loads(evrelay("tail", stream, "-o", "json").out)["value"] == "v1"


# --- jq: an expression with endless output is bounded, not buffered without end ----------------

MEMORY_BOUND = 1536 << 20
"""The address space a jq test's evrelay may use: far above what it needs (~200 MB), far
below what an unbounded expression takes (8 GB in minutes, before the fix), so a
regression fails quickly instead of taking the machine's memory."""


def evrelay_within_memory(*args: str, timeout: float = 90):
    import os
    import resource
    import subprocess
    import sys

    from tests.conftest import REPO, Run

    def bound() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (MEMORY_BOUND, MEMORY_BOUND))

    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    proc = subprocess.run([sys.executable, "-m", "evrelay", *args], input=b"", capture_output=True, env=env, timeout=timeout, preexec_fn=bound)
    return Run(proc.returncode, proc.stdout, proc.stderr)


def test_a_filter_with_endless_output_answers_at_its_first_true_output(stream):
    # Before: [repeat(1)] was built in full inside jq: 8 GB of memory in minutes, no
    # answer to Ctrl-C or SIGTERM (jq never returned to Python); with this module's memory
    # bound it died of it.
    assert evrelay("publish", stream, "a", "b").returncode == 0
    run = evrelay_within_memory("tail", stream, "--filter", "repeat(1)", "-o", "raw")
    assert (run.returncode, run.out) == (0, "a\nb\n"), run.err
    run = evrelay_within_memory("tail", stream, "--filter", "(false, null, .value == \"b\")", "-o", "raw")
    assert (run.returncode, run.out) == (0, "b\n"), run.err


def test_a_map_with_endless_output_is_an_error_for_that_message(stream, tmp_path):
    from evrelay.selection import MAX_MAP_OUTPUTS

    assert evrelay("publish", stream, "a", "b").returncode == 0
    run = evrelay_within_memory("tail", stream, "--map", 'if .value == "a" then repeat(.) else . end', "-o", "raw")
    assert (run.returncode, run.out) == (0, "b\n"), run.err
    assert f"--map: made more than {MAX_MAP_OUTPUTS:,} messages of one" in run.err and "/1" in run.err
    run = evrelay_within_memory("tail", stream, "--from", "beginning", "--map", f"limit({MAX_MAP_OUTPUTS}; repeat(.))", "-o", "raw")
    assert run.returncode == 0 and run.out.count("\n") == 2 * MAX_MAP_OUTPUTS, run.err
    # A bridge stops on it as on a message its sink refuses, acking nothing it did not deliver.
    run = evrelay_within_memory("bridge", stream, f"file:{tmp_path}/out.jsonl", "--map", "repeat(.)", "--idle-timeout", "2s")
    assert run.returncode == 1, run.err
    assert f"--map: made more than {MAX_MAP_OUTPUTS:,} messages of one" in run.err and "Traceback" not in run.err
    assert not (tmp_path / "out.jsonl").exists() or (tmp_path / "out.jsonl").read_text() == ""


# --- file: a followed file truncated under tail -f --------------------------------------------


def test_tail_f_of_a_file_truncated_under_it_reads_it_again_from_its_first_line(tmp_path):
    # Before: the reader kept its offset past the new end, showed nothing written after the
    # truncation until the file grew past the old end, and then read from the middle of a
    # line: "line 4: not valid JSON", exit 1. `tail -f` says "file truncated" and goes on
    # from the start; so does evrelay now, its line numbers starting again at 1.
    import os
    import subprocess
    import sys

    from tests.conftest import REPO
    from tests.crash import wait_until

    source, shown, log = tmp_path / "in.jsonl", tmp_path / "shown.jsonl", tmp_path / "stderr.log"
    source.write_text('{"value":"a-long-first-line"}\n{"value":"b"}\n')
    env = dict(os.environ, PYTHONPATH=str(REPO))
    with shown.open("wb") as out, log.open("wb") as err:
        tail = subprocess.Popen([sys.executable, "-m", "evrelay", "tail", f"file:{source}", "-f", "-o", "json"], stdout=out, stderr=err, env=env)
    try:
        values = lambda: [json.loads(line)["value"] for line in shown.read_text().splitlines()]  # noqa: E731
        wait_until(lambda: values() == ["a-long-first-line", "b"], 30, "the first two lines")
        with source.open("r+b") as f:
            f.truncate(0)
        wait_until(lambda: "truncated" in log.read_text(), 30, "the truncation to be noticed")
        with source.open("ab") as f:
            f.write(b'{"value":"c"}\n')
        wait_until(lambda: len(values()) == 3, 30, "the line written after the truncation")
        with source.open("ab") as f:  # past the old end now: before, read from mid-line
            f.write(b'{"value":"d-long-enough-to-pass-the-old-end"}\n')
        wait_until(lambda: len(values()) == 4, 30, "the next line")
        assert tail.poll() is None, log.read_text()
    finally:
        tail.terminate()
        tail.wait(30)
    lines = [json.loads(line) for line in shown.read_text().splitlines()]
    assert [(m["value"], m["id"]) for m in lines] == [("a-long-first-line", 1), ("b", 2), ("c", 1), ("d-long-enough-to-pass-the-old-end", 2)]
    assert f"{source} was truncated; following it from its first line" in log.read_text()
    assert "not valid JSON" not in log.read_text()


# --- config set/add/init: the file's place and permissions are kept ----------------------------


def test_config_set_writes_through_a_symlink_and_keeps_a_private_file_private(tmp_path):
    # Before: the symlink was replaced by a new regular file (the dotfiles copy it pointed
    # to never changed), and that file was 0644: a 0600 config holding a password became
    # readable by every user of the machine.
    import os
    import stat

    dotfiles = tmp_path / "dotfiles"
    dotfiles.mkdir()
    real = dotfiles / "evrelay.toml"
    real.write_text('[profiles.r]\nbackend = "redis"\nurl = "redis://u:s3cret-pw@localhost:6379/0"\n')
    real.chmod(0o600)
    link = tmp_path / "config.toml"
    link.symlink_to(real)
    run = evrelay("--config", str(link), "config", "set", "r.stream", "orders")
    assert run.returncode == 0, run.err
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert 'stream = "orders"' in real.read_text() and "s3cret-pw" in real.read_text()
    assert stat.S_IMODE(real.stat().st_mode) == 0o600
    assert sorted(p.name for p in dotfiles.iterdir()) == ["evrelay.toml"]  # no temporary file left
    assert "s3cret-pw" not in run.out + run.err


def test_config_init_creates_a_file_only_its_owner_can_read(tmp_path):
    import stat

    path = tmp_path / "new" / "config.toml"
    run = evrelay("--config", str(path), "config", "init")
    assert run.returncode == 0, run.err
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


# --- file: a malformed line after good ones ----------------------------------------------------


def _jsonl_with_a_bad_line(path, good: int, after: int = 3):
    lines = [json.dumps({"value": f"v{i}"}) for i in range(good)] + ["not json"] + [json.dumps({"value": "after"})] * after
    path.write_text("\n".join(lines) + "\n")


@pytest.mark.parametrize("how", ["file", "stdin", "last"])
def test_tail_shows_the_lines_before_a_malformed_one_then_fails_naming_it(tmp_path, how):
    # Before: nothing at all was shown (the read that met line 3 dropped lines 1 and 2), while
    # `publish --input json` sends the lines before a bad one and says so.
    source = tmp_path / "in.jsonl"
    _jsonl_with_a_bad_line(source, 2, after=0 if how == "last" else 3)
    if how == "stdin":
        run = evrelay("tail", "-", "-o", "raw", input=source.read_bytes())
    else:
        run = evrelay("tail", f"file:{source}", *(["--from", "beginning"] if how == "file" else []), "-o", "raw")
    assert (run.returncode, run.out) == (1, "v0\nv1\n"), run.err
    assert "line 3: not valid JSON" in run.err and "Traceback" not in run.err


def test_bridge_from_a_file_delivers_the_lines_before_a_malformed_one_and_says_so(tmp_path, stream):
    # 2,500 lines: the bad one comes while window 2 is still with the sink (read ahead);
    # before, a bridge met it and left every line before it in the file, unsaid.
    source = tmp_path / "in.jsonl"
    _jsonl_with_a_bad_line(source, 2500)
    run = evrelay("bridge", f"file:{source}", stream, "--idle-timeout", "2s")
    assert run.returncode == 1, run.err
    assert "line 2501: not valid JSON" in run.err, run.err
    assert f"; the 2500 message(s) before it were delivered to {stream}, nothing from it on was sent" in run.err
    shown = evrelay("tail", stream, "--from", "beginning", "-o", "raw")
    assert shown.out.splitlines() == [f"v{i}" for i in range(2500)]


# --- local store: a write the file-size limit (a full disk) stops -----------------------------


def test_a_local_publish_stopped_by_the_file_size_limit_names_the_real_error(stream):
    # Before: "writing to the local store ... failed: cannot rollback - no transaction is
    # active": SQLite had rolled the transaction back itself on the failed write, and our
    # ROLLBACK's own error hid the real one. A full disk meets the same path.
    import os
    import resource
    import subprocess
    import sys

    from tests.conftest import REPO

    assert evrelay("publish", stream, "first").returncode == 0

    def small_files() -> None:
        resource.setrlimit(resource.RLIMIT_FSIZE, (256 << 10, 256 << 10))  # SIGXFSZ is ignored by Python: EFBIG

    lines = b"".join(b"line %d\n" % i for i in range(200_000))
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.run([sys.executable, "-m", "evrelay", "publish", stream], input=lines, capture_output=True, env=env, timeout=120, preexec_fn=small_files)
    err = proc.stderr.decode()
    assert proc.returncode == 3, err
    assert "writing to the local store" in err and ("disk I/O error" in err or "full" in err), err
    assert "cannot rollback" not in err and "Traceback" not in err
    # What was committed is whole and readable; the batch that failed left nothing behind.
    length = json.loads(evrelay("info", stream, "-o", "json").out)["length"]
    assert 1 < length < 200_001
    # Before: the error said nothing of what was stored, so a user could not tell where to
    # start again; it now counts what the store confirmed (all but the message published first).
    assert f"; {length - 1} message(s) before it were published to {stream} [local store " in err, err
    assert "nothing after it was sent" in err
    last = evrelay("tail", stream, "-n", "1", "-o", "raw").out
    assert last == f"line {length - 2}\n"


# --- NATS: a sink stream full with discard new ------------------------------------------------


def _jetstream(url: str, action):
    import asyncio

    import nats

    async def run():
        nc = await nats.connect(url)
        try:
            return await action(nc.jetstream())
        finally:
            await nc.close()

    return asyncio.run(run())


@pytest.mark.nats
def test_a_bridge_into_a_full_nats_stream_waits_for_room_instead_of_giving_messages_up(nats_server, stream, tmp_path):
    # Before: JetStream's "maximum messages exceeded" (503, a stream with max_msgs and
    # discard new) was a permanent refusal: the bridge stopped (exit 1) or sent every
    # message to --dead-letter, though the stream takes them again once its consumers or
    # a purge make room; a Redis sink out of memory was already waited out.
    import subprocess
    import sys

    from nats.js.api import DiscardPolicy, StreamConfig

    from tests.conftest import REPO
    from tests.crash import wait_until

    sink = f"{stream}-sink"
    _jetstream(nats_server.url, lambda js: js.add_stream(StreamConfig(name=sink, subjects=[sink], max_msgs=3, discard=DiscardPolicy.NEW)))
    values = [f"m{i}" for i in range(6)]
    assert evrelay("publish", f"{nats_server.url}/{stream}?create=true", *values).returncode == 0
    log = tmp_path / "bridge.log"
    import os

    with log.open("wb") as err:
        bridge = subprocess.Popen(
            [sys.executable, "-m", "evrelay", "bridge", f"{nats_server.url}/{stream}", f"{nats_server.url}/{sink}", "--idle-timeout", "3s"],
            stdout=subprocess.DEVNULL, stderr=err, env=dict(os.environ, PYTHONPATH=str(REPO)),
        )
    try:
        wait_until(lambda: "retrying in" in log.read_text() or bridge.poll() is not None, 60, "the bridge to meet the full stream")
        assert bridge.poll() is None, log.read_text()
        assert "maximum messages exceeded" in log.read_text()
        _jetstream(nats_server.url, lambda js: js.purge_stream(sink))
        assert bridge.wait(90) == 0, log.read_text()
    finally:
        if bridge.poll() is None:
            bridge.kill()
    assert "bridged 6 message(s)" in log.read_text() and "for good" not in log.read_text(), log.read_text()
    held = evrelay("tail", f"{nats_server.url}/{sink}", "--from", "beginning", "-o", "raw").out.split()
    assert held == values[3:]


# --- pretty output: the line of coordinates, key and headers stays one line -------------------


def test_pretty_output_escapes_header_names_and_newlines_in_the_key_line(stream):
    # Before: a header NAME's ESC sequence reached the terminal as it was (values and keys
    # were escaped, names not), and a newline in a key or header started a line of its own
    # in which a producer could forge another message's coordinates.
    envelope = {"key": "k\nfake 1-0  key=x", "value": "multi\nline", "headers": [["n\x1b[2J\x1b[H", "v\tw\nx"]]}
    assert evrelay("publish", stream, "--input", "json", input=json.dumps(envelope) + "\n").returncode == 0
    run = evrelay("tail", stream, "-o", "pretty", env={"NO_COLOR": "1"})
    assert run.returncode == 0, run.err
    assert b"\x1b" not in run.stdout
    meta, *body = run.out.splitlines()
    assert "key=k\\x0afake 1-0  key=x" in meta and "n\\x1b[2J\\x1b[H=v\\x09w\\x0ax" in meta
    assert body == ["multi", "line"]  # a value may still span lines


def test_a_config_file_that_is_not_utf8_names_its_line(tmp_path):
    # Before: "cannot read config file c.toml: 'utf-8' codec can't decode byte 0xe9 in
    # position 28: invalid start byte": Python's words and a byte offset, not the line.
    config = tmp_path / "c.toml"
    config.write_bytes(b'default_profile = "local"\n# caf\xe9 (Latin-1)\n')
    for args in (["tail", "s", "-n", "1"], ["config", "set", "default_profile", "local"]):
        run = evrelay("--config", str(config), *args)
        assert run.returncode == 2, run.err
        assert run.err == f"evrelay: error: {config}, line 2: not UTF-8 text (byte 0xe9); TOML files are UTF-8\n"


@pytest.mark.parametrize("signum", ["SIGINT", "SIGTERM"])
def test_a_second_signal_ends_a_filter_that_never_finishes(stream, signum):
    # jq evaluates in C and never returns to Python for `until(false; .)`, so Python's
    # handler for the first signal never runs. Before: neither Ctrl-C nor SIGTERM, however
    # often, ended the process (SIGKILL only); now the second one does, by the signal.
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import REPO

    assert evrelay("publish", stream, "v").returncode == 0
    env = dict(os.environ, PYTHONPATH=str(REPO))
    tail = subprocess.Popen([sys.executable, "-m", "evrelay", "tail", stream, "-f", "--filter", "until(false; .)", "-o", "raw"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    number = getattr(signal, signum)
    try:
        time.sleep(3)  # started, read the message, inside jq
        tail.send_signal(number)
        time.sleep(1)
        assert tail.poll() is None  # the first one cannot be heard inside jq
        tail.send_signal(number)
        assert tail.wait(30) == -number
    finally:
        if tail.poll() is None:
            tail.kill()
            tail.wait()


@pytest.mark.nats
@pytest.mark.parametrize("subject", ["{s}.*", "{s}.>", "{s}..new", "{s}.a\tb"])
def test_publishing_to_a_wildcard_or_malformed_nats_subject_is_refused(nats_server, stream, subject):
    # Before: ?subject=orders.* (or orders.>) published, exit 0: the server stored the
    # message under the literal subject 'orders.*', which a consumer of orders.new never
    # sees; 'orders..new' reached the server and came back as 'no stream takes it', exit 1.
    from nats.js.api import StreamConfig

    _jetstream(nats_server.url, lambda js: js.add_stream(StreamConfig(name=stream, subjects=[f"{stream}.>"])))
    name = subject.format(s=stream)
    from urllib.parse import quote

    run = evrelay("publish", f"{nats_server.url}/{stream}?subject={quote(name, safe='.*>')}", "v")
    assert run.returncode == 2, run.err
    assert f"nats option subject must be one subject to publish to, such as orders.new, not {name!r}" in run.err
    info = json.loads(evrelay("info", f"{nats_server.url}/{stream}", "-o", "json").out)
    assert info["length"] == 0
    assert evrelay("publish", f"{nats_server.url}/{stream}?subject={stream}.new", "v").returncode == 0


@pytest.mark.parametrize("expression", ["halt", '"bye" | halt_error(5)'])
def test_a_filter_that_stops_jq_is_named_for_what_it_does(stream, expression):
    # Before: "must not read other inputs (input, inputs)" for an expression that reads none.
    assert evrelay("publish", stream, "a", "b").returncode == 0
    run = evrelay("tail", stream, "--filter", expression)
    assert run.returncode == 2, run.err
    assert "nor stop jq (halt, halt_error)" in run.err and run.out == ""


# --- local store: another program's SQLite file at the store's path ---------------------------


def test_an_sqlite_file_of_another_program_at_the_store_path_is_named_and_left_alone(isolated_env):
    # Before: publish exited 3 ("writing to the local store ... failed: no such column:
    # last_ms", as if a server were down), tail said the stream did not exist, and ls
    # listed nothing with exit 0: CREATE TABLE IF NOT EXISTS had kept the program's own
    # `streams` and `entries` tables.
    import sqlite3

    store = isolated_env / "app.db"
    with sqlite3.connect(store) as db:
        db.execute("CREATE TABLE streams (name TEXT)")
        db.execute("CREATE TABLE entries (x)")
        db.execute("INSERT INTO streams VALUES ('theirs')")
    (isolated_env / "evrelay.toml").write_text(f'default_profile = "l"\n[profiles.l]\nbackend = "local"\npath = "{store}"\n')
    for command in (["publish", "x", "a"], ["tail", "x"], ["ls"], ["bridge", "x", "y", "--idle-timeout", "1s"]):
        run = evrelay(*command)
        assert run.returncode == 1, (command, run.err)
        assert f"the local store {store} is not an evrelay store: its table 'streams' has the columns (name), not evrelay's (name, last_ms, last_seq, created_ms)" in run.err, (command, run.err)
        assert "Traceback" not in run.err
    with sqlite3.connect(store) as db:  # nothing of evrelay's was added to it
        assert sorted(row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")) == ["entries", "streams"]
        assert db.execute("SELECT name FROM streams").fetchall() == [("theirs",)]
