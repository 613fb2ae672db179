"""`publish` and `tail` through the real CLI: exit codes, stdout and stderr kept apart."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPO, evrelay
from tests.crash import first_line_while_feeding


def envelopes(run) -> list[dict]:
    return [json.loads(line) for line in run.lines()]


def assert_clean(run) -> None:
    assert "Traceback" not in run.err, run.err


def test_quick_start_publish_then_tail():
    published = evrelay("publish", "demo", "hello")
    assert published.returncode == 0, published.err
    assert published.stdout == b""
    assert "published 1 message(s) to demo" in published.err
    tailed = evrelay("tail", "demo")
    assert tailed.returncode == 0, tailed.err
    (envelope,) = envelopes(tailed)
    assert envelope["value"] == "hello"
    assert envelope["backend"] == "local" and envelope["stream"] == "demo"
    assert envelope["timestamp"].endswith("Z") and "id" in envelope
    assert tailed.stderr == b""


def test_tail_defaults_to_last_ten_and_n_changes_it():
    evrelay("publish", "nums", *[str(i) for i in range(15)])
    assert evrelay("tail", "nums", "-o", "raw").lines() == [str(i).encode() for i in range(5, 15)]
    assert evrelay("tail", "nums", "-o", "raw", "-n", "3").lines() == [b"12", b"13", b"14"]
    assert evrelay("tail", "nums", "-o", "raw", "--from", "beginning", "-n", "2").lines() == [b"0", b"1"]


def test_from_to_by_native_id():
    evrelay("publish", "ids", "a", "b", "c", "d", "e")
    everything = envelopes(evrelay("tail", "ids", "--from", "beginning"))
    ids = [e["id"] for e in everything]
    got = evrelay("tail", "ids", "--from", ids[1], "--to", ids[3], "-o", "raw")
    assert got.lines() == [b"b", b"c", b"d"]


def test_from_relative_time():
    evrelay("publish", "times", "old")
    time.sleep(1.2)
    evrelay("publish", "times", "new")
    assert evrelay("tail", "times", "--from", "-1s", "-o", "raw").lines() == [b"new"]
    assert evrelay("tail", "times", "--from", "-1h", "-o", "raw").lines() == [b"old", b"new"]


def test_stdin_lines_with_key_and_repeated_headers():
    run = evrelay("publish", "lines", "-k", "user-7", "-H", "a=1", "-H", "a=2", "-H", "b=x=y", input="one\ntwo\n\nthree")
    assert run.returncode == 0, run.err
    assert "published 3 message(s)" in run.err
    got = envelopes(evrelay("tail", "lines"))
    assert [e["value"] for e in got] == ["one", "two", "three"]
    assert all(e["key"] == "user-7" for e in got)
    assert got[0]["headers"] == [["a", "1"], ["a", "2"], ["b", "x=y"]]


def test_raw_input_is_one_message():
    run = evrelay("publish", "raw", "--input", "raw", input=b"line1\nline2\n\xff")
    assert run.returncode == 0, run.err
    (envelope,) = envelopes(evrelay("tail", "raw"))
    assert base64.b64decode(envelope["value_b64"]) == b"line1\nline2\n\xff"


def test_json_round_trip_is_byte_exact_between_streams():
    source = [
        {"value_b64": base64.b64encode(b"\xff\x00\x80").decode(), "key_b64": base64.b64encode(b"\xfe").decode(),
         "headers": [["h", "1"], ["h", {"b64": base64.b64encode(b"\x81").decode()}], ["h", "3"]]},
        {"value": "héllo", "key": "k", "headers": []},
        {"value": {"id": 1}},
    ]
    lines = "\n".join(json.dumps(e) for e in source) + "\n"
    assert evrelay("publish", "src", "--input", "json", input=lines).returncode == 0
    dumped = evrelay("tail", "src", "-o", "json")
    assert evrelay("publish", "dst", "--input", "json", input=dumped.stdout).returncode == 0
    a, b = envelopes(evrelay("tail", "src")), envelopes(evrelay("tail", "dst"))
    strip = lambda e: {k: v for k, v in e.items() if k in ("value", "value_b64", "key", "key_b64", "headers")}  # noqa: E731
    assert [strip(e) for e in a] == [strip(e) for e in b]
    assert a[0]["value_b64"] == base64.b64encode(b"\xff\x00\x80").decode()
    assert a[2]["value"] == '{"id":1}'


def test_bad_json_line_names_the_line_and_sends_only_what_came_before():
    lines = '{"value": "a"}\n{"value": "b"}\n{"value": oops}\n{"value": "d"}\n'
    run = evrelay("publish", "bad", "--input", "json", input=lines)
    assert run.returncode == 1
    assert run.stdout == b""
    assert "stdin line 3" in run.err and "not valid JSON" in run.err
    assert "the 2 message(s) before it were published" in run.err
    assert_clean(run)
    assert evrelay("tail", "bad", "-o", "raw").lines() == [b"a", b"b"]


def test_bad_envelope_field_is_explained():
    run = evrelay("publish", "bad2", "--input", "json", input='{"value": "a", "value_b64": "YQ=="}\n')
    assert run.returncode == 1
    assert "stdin line 1" in run.err and "both 'value' and 'value_b64'" in run.err


def test_skip_invalid_reports_and_continues():
    lines = '{"value": "a"}\nnot json\n{"value": "c"}\n'
    run = evrelay("publish", "skip", "--input", "json", "--skip-invalid", input=lines)
    assert run.returncode == 0, run.err
    assert "skipped stdin line 2" in run.err and "skipped 1 invalid line(s)" in run.err
    assert evrelay("tail", "skip", "-o", "raw").lines() == [b"a", b"c"]


def test_output_modes_and_format():
    evrelay("publish", "fmt", "-k", "K", "-H", "h=v", "payload")
    assert evrelay("tail", "fmt", "-o", "raw").stdout == b"payload\n"
    formatted = evrelay("tail", "fmt", "--format", "{stream} {key} {value} {headers[h]} {backend}")
    assert formatted.stdout == b"fmt K payload v local\n"
    bad = evrelay("tail", "fmt", "--format", "{nope}")
    assert bad.returncode == 2 and "unknown field {nope}" in bad.err and bad.stdout == b""
    pretty = evrelay("tail", "fmt", "-o", "pretty")
    assert pretty.returncode == 0 and b"payload" in pretty.stdout and b"key=K" in pretty.stdout
    assert evrelay("tail", "fmt", "-o", "yaml").returncode == 2


def test_format_keeps_binary_bytes():
    evrelay("publish", "binfmt", "--input", "raw", input=b"\xff\xfe")
    assert evrelay("tail", "binfmt", "--format", "<{value}>").stdout == b"<\xff\xfe>\n"


def test_group_acks_after_printing_and_no_ack_leaves_pending():
    evrelay("publish", "jobs", *[f"j{i}" for i in range(5)])
    first = evrelay("tail", "jobs", "-g", "workers", "-n", "2", "-o", "raw")
    assert first.lines() == [b"j0", b"j1"]
    peek = evrelay("tail", "jobs", "-g", "workers", "-n", "2", "--no-ack", "--consumer", "me", "-o", "raw")
    assert peek.lines() == [b"j2", b"j3"]
    # Same (stable) consumer name: its unacked messages come back first.
    rest = evrelay("tail", "jobs", "-g", "workers", "--consumer", "me", "-o", "raw")
    assert rest.lines() == [b"j2", b"j3", b"j4"]
    assert evrelay("tail", "jobs", "-g", "workers", "-o", "raw").stdout == b""


def test_group_from_applies_only_to_a_new_group():
    evrelay("publish", "gf", "a", "b")
    assert evrelay("tail", "gf", "-g", "late", "--from", "end", "-o", "raw").stdout == b""
    evrelay("publish", "gf", "c")
    again = evrelay("tail", "gf", "-g", "late", "--from", "beginning", "-o", "raw")
    assert again.lines() == [b"c"]
    assert "already exists" in again.err and "replay" in again.err


def test_expect_success_and_failure_exit_codes():
    evrelay("publish", "exp", "a", "b")
    ok = evrelay("tail", "exp", "--from", "beginning", "--expect", "2", "--timeout", "5s", "-o", "raw")
    assert ok.returncode == 0 and ok.lines() == [b"a", b"b"]
    short = evrelay("tail", "exp", "--from", "beginning", "--expect", "3", "--timeout", "1s", "-o", "raw")
    assert short.returncode == 4
    assert short.lines() == [b"a", b"b"]
    assert "expected 3 message(s)" in short.err
    assert_clean(short)


def test_follow_prints_new_messages_and_idle_timeout_ends_it():
    evrelay("publish", "live", "before")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    proc = subprocess.Popen(
        [sys.executable, "-m", "evrelay", "tail", "live", "-f", "-n", "0", "-o", "raw", "--idle-timeout", "3s"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env,
    )
    try:
        assert first_line_while_feeding(proc, lambda: evrelay("publish", "live", "after")) == b"after\n"
        assert proc.wait(timeout=15) == 0
    finally:
        proc.kill()


def test_missing_stream_is_an_error_without_traceback():
    run = evrelay("tail", "never-written")
    assert run.returncode == 1
    assert "does not exist" in run.err and run.stdout == b""
    assert_clean(run)


def test_usage_errors_exit_2():
    for args in (["tail", "demo", "--from", "yesterday-ish"], ["tail", "demo", "--timeout", "soon"],
                 ["publish", "demo", "--input", "xml", "x"], ["tail", "demo", "--no-ack"],
                 ["publish", "demo", "-H", "novalue", "x"], ["tail", "demo", "--frm", "x"]):
        run = evrelay(*args)
        assert run.returncode == 2, (args, run.err)
        assert run.stdout == b""
        assert_clean(run)


def test_stdio_and_file_addresses():
    out = evrelay("publish", "-", "-k", "k", "hello")
    assert out.returncode == 0
    (envelope,) = envelopes(out)
    assert envelope["value"] == "hello" and envelope["key"] == "k"
    assert evrelay("publish", "file:dump.jsonl", "a", "b").returncode == 0
    assert evrelay("tail", "file:dump.jsonl", "-o", "raw").lines() == [b"a", b"b"]
    piped = evrelay("tail", "-", "-o", "raw", input=Path("dump.jsonl").read_bytes())
    assert piped.lines() == [b"a", b"b"]


def test_version():
    run = evrelay("--version")
    assert run.returncode == 0 and run.out.startswith("evrelay ")


def test_tail_follow_stops_cleanly_on_sigterm_and_sigint():
    import signal

    evrelay("publish", "sig", "x")
    env = dict(os.environ, PYTHONPATH=str(REPO))
    for signum, code in ((signal.SIGTERM, 0), (signal.SIGINT, 130)):
        proc = subprocess.Popen([sys.executable, "-m", "evrelay", "tail", "sig", "-f", "-g", "sig-group", "-o", "raw"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
        first_line_while_feeding(proc, lambda: evrelay("publish", "sig", "y"))  # in its read loop: handlers set
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=15)
        assert proc.returncode == code, err
        assert b"Traceback" not in err


def test_file_addresses_that_cannot_work_are_clear_errors(tmp_path):
    directory = evrelay("tail", f"file:{tmp_path}")
    assert directory.returncode == 2 and "is a directory" in directory.err
    evrelay("publish", "fsrc", "x")
    unwritable = evrelay("bridge", "fsrc", f"file:{tmp_path}/missing/dir/out.jsonl", "--idle-timeout", "1s")
    assert unwritable.returncode == 3 and "cannot open" in unwritable.err
    for run in (directory, unwritable):
        assert "Traceback" not in run.err and "internal error" not in run.err
