"""Defects found by an adversarial pass over the newest code (NATS, selection, envelopes,
addresses), tried as a hostile user and a flaky network would: each test failed before
its fix. Real servers come from the session fixtures in tests/conftest.py."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import pytest

from evrelay.config import mask_url
from tests.conftest import REPO, evrelay

CANARY = "Can4ry-S3cret"


@pytest.fixture
def stream():
    return f"adv-{uuid.uuid4().hex[:8]}"


# --- secrets: a user name with an unencoded '@' ------------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        f"redis://alice@corp.example:{CANARY}@h:6379/0/s",
        f"nats://al@ice:p@{CANARY}:x@h:4222/s",
        f"nats://to@{CANARY}@h:4222/s",
        f"kafka://a@b:{CANARY}@h:9092/t->redis://c:{CANARY}@h/0/s",
    ],
)
def test_mask_url_hides_the_whole_password_when_the_user_holds_an_at_sign(url):
    # Before: the user part stopped at the first '@', so `alice@corp.example:PW@h` showed
    # `********@corp.example:PW@h`, the password in clear.
    shown = mask_url(url)
    assert CANARY not in shown
    assert "********@h" in shown


@pytest.mark.nats
def test_a_nats_address_whose_user_holds_an_at_sign_never_prints_the_password(nats_server, stream):
    host = nats_server.url.removeprefix("nats://")
    address = f"nats://al@ice:{CANARY}@{host}/{stream}"
    publish = evrelay("publish", f"{address}?create=true", "a", "-v")
    tail = evrelay("tail", address, "-v")
    info = evrelay("info", address, "-v")
    for run in (publish, tail, info):
        assert CANARY not in run.out + run.err
    assert tail.returncode == 0, tail.err
    assert "al@ice:********@" in tail.err


@pytest.mark.redis
def test_a_redis_address_whose_user_holds_an_at_sign_never_prints_the_password(redis_server, stream):
    host = redis_server.url.removeprefix("redis://").split("/")[0]
    address = f"redis://alice@corp.example:{CANARY}@{host}/0/{stream}"
    for args in (("health", address, "-v"), ("tail", address, "-v"), ("publish", address, "x", "-v")):
        run = evrelay(*args)
        assert CANARY not in run.out + run.err, args
        assert run.returncode in (0, 3), run.err


# --- NATS: a message whose headers push it past max_payload --------------------------------


@pytest.mark.nats
def test_nats_refuses_a_message_whose_headers_push_it_past_max_payload(nats_server, stream):
    # Before: nats-py checks the payload alone, the server counted the headers too and hung
    # up, and publish waited out its timeout: exit 3, "not confirmed in time ... is the
    # backend reachable?". Now the message is refused as too large (exit 1), and the
    # connection stays up for the next one.
    import base64
    import json

    address = f"{nats_server.url}/{stream}?create=true"
    near_limit = base64.b64encode(b"x" * (1024 * 1024 - 16)).decode()
    lines = [
        json.dumps({"value_b64": near_limit, "key": "k" * 40, "headers": [["trace", "t" * 40]]}),
        json.dumps({"value": "small", "key": "k"}),
    ]
    run = evrelay("publish", address, "--input", "json", input="\n".join(lines) + "\n", timeout=60)
    assert run.returncode == 1, run.err
    assert "max_payload" in run.err and "1 delivered" in run.err
    tail = evrelay("tail", f"{nats_server.url}/{stream}", "-o", "raw")
    assert tail.stdout == b"small\n"


# --- addresses that urllib refuses ---------------------------------------------------------


@pytest.mark.parametrize(
    ("address", "said"),
    [
        ("nats://127.0.0.1:notaport/s", "nats url 'nats://127.0.0.1:notaport': Port could not be cast"),
        ("nats://127.0.0.1:99999/s", "Port out of range"),
        ("nats://[::1/s", "address 'nats://[::1/s' is not a valid URL: Invalid IPv6 URL"),
        ("kafka://[::1/t", "is not a valid URL"),
        ("redis://[::1/0/s", "is not a valid URL"),
        (f"nats://u:{CANARY}@[::1/s", "address 'nats://u:********@[::1/s' is not a valid URL"),
    ],
)
def test_a_url_with_a_bad_port_or_bracket_is_a_usage_error(address, said):
    # Before: "internal error: ValueError: ..." (exit 1) from urllib, for health, tail and
    # every other command. Now exit 2 naming the address, credentials masked.
    for command in ("health", "tail"):
        run = evrelay(command, address)
        assert run.returncode == 2, run.err
        assert said in run.err and "internal error" not in run.err
        assert CANARY not in run.err


def test_a_nats_profile_url_with_a_bad_port_is_a_config_error(tmp_path):
    config = tmp_path / "c.toml"
    config.write_text(f'[profiles.n]\nbackend = "nats"\nurl = "nats://u:{CANARY}@h:port"\n')
    run = evrelay("--config", str(config), "health", "n")
    assert run.returncode == 2, run.err
    assert "nats url 'nats://u:********@h:port'" in run.err and CANARY not in run.err


# --- JSON numbers beyond 64 bits ------------------------------------------------------------

BIG = "123456789012345678901234567890"


def test_publish_input_json_keeps_an_integer_beyond_64_bits_exact(stream):
    # Before: orjson read it as a float and the value published was {"n":1.2345678901234568e+29}.
    line = '{"value": {"n": BIG, "f": 1.5}, "key": BIG}\n'.replace("BIG", BIG)
    assert evrelay("publish", stream, "--input", "json", input=line).returncode == 0
    tail = evrelay("tail", stream, "--format", "{key} {value}")
    assert tail.out == f'{BIG} {{"n":{BIG},"f":1.5}}\n'


def test_map_of_a_value_holding_an_integer_beyond_64_bits_is_no_internal_error(stream):
    # Before: "internal error: TypeError: Integer exceeds 64-bit range" (exit 1) when the
    # rewritten value was encoded; a bridge with the same --map died the same way.
    assert evrelay("publish", stream, '{"n": BIG}'.replace("BIG", BIG), '{"n": 1}').returncode == 0
    run = evrelay("tail", stream, "--map", ".value.x = 1", "-o", "raw")
    assert run.returncode == 0, run.err
    assert "internal error" not in run.err
    first, second = run.lines()
    assert first.startswith(b'{"n":1234567890123456') and first.endswith(b',"x":1}')
    assert second == b'{"n":1,"x":1}'


# --- a 100 MB input line ---------------------------------------------------------------------


def test_one_huge_input_line_is_read_in_linear_time(tmp_path):
    # Before: every 256 KB chunk was appended to a copy of the line so far and the whole of
    # it split again: publish of one 100 MB line took 18 s (20 MB: 1.0 s), now 1.1 s.
    # CPU time of the reader alone, with a bound far above the linear cost (~0.1 s) and
    # far below the quadratic one (~5 s at 64 MB).
    import time

    from evrelay.lines import LineReader

    path = tmp_path / "huge.txt"
    with path.open("wb") as out:
        out.write(b"y" * (64 << 20) + b"\nsmall\nlast")
    reader = LineReader(str(path))
    started = time.process_time()
    lines: list[bytes] = []
    while not reader.drained:
        lines += reader.take_lines(100, 0.01, follow=False)[1]
    elapsed = time.process_time() - started
    reader.close()
    assert [len(line) for line in lines] == [64 << 20, 5, 4]
    assert lines[1:] == [b"small", b"last"]
    assert elapsed < 2.0, f"{elapsed:.2f}s of CPU to read one 64 MB line"


# --- routing: names made by the message ------------------------------------------------------


def test_a_routed_key_cannot_climb_out_of_a_file_sinks_directory(tmp_path, stream):
    # Before: key '../escaped' in file:DIR/route/{key}.jsonl appended to DIR/escaped.jsonl,
    # outside the directory the operator named. Now it goes to the dead-letter address.
    (tmp_path / "route").mkdir()
    for key, value in (("../escaped", "a"), ("..", "b"), ("ok", "c")):
        assert evrelay("publish", stream, "-k", key, value).returncode == 0
    dlq = tmp_path / "dlq.jsonl"
    run = evrelay("bridge", stream, f"file:{tmp_path}/route/{{key}}.jsonl", "--idle-timeout", "1s", "--dead-letter", f"file:{dlq}")
    assert run.returncode == 0, run.err
    assert not (tmp_path / "escaped.jsonl").exists()
    assert sorted(p.name for p in (tmp_path / "route").iterdir()) == ["ok.jsonl"]
    letters = evrelay("tail", f"file:{dlq}", "--format", "{key} {headers[evrelay-error]}")
    assert "../escaped route" in letters.out and "cannot be part of a name" in letters.out
    assert len(letters.lines()) == 2


@pytest.mark.nats
def test_a_routed_name_the_nats_sink_refuses_goes_to_the_dead_letter_address(nats_server, stream):
    # Before: key 'a.b' routed to nats://…/r-{key} stopped the whole bridge (exit 2: "'r-a.b'
    # is not a valid NATS stream name") with both messages left pending; the README says a
    # message the sink refuses for good goes to --dead-letter.
    assert evrelay("publish", stream, "-k", "a.b", "x").returncode == 0
    assert evrelay("publish", stream, "-k", "fine", "y").returncode == 0
    sink = f"{nats_server.url}/{stream}-{{key}}?create=true"
    run = evrelay("bridge", stream, sink, "--idle-timeout", "1s", "--dead-letter", f"{stream}-dlq")
    assert run.returncode == 0, run.err
    letters = evrelay("tail", f"{stream}-dlq", "--format", "{key} {headers[evrelay-error]}")
    assert letters.out.startswith("a.b route ") and "not a valid NATS stream name" in letters.out
    assert evrelay("tail", f"{nats_server.url}/{stream}-fine", "-o", "raw").stdout == b"y\n"


# --- --version onto a stdout that cannot take it ---------------------------------------------


@pytest.mark.parametrize(
    ("redirect", "code", "text"),
    [
        (">/dev/full", 1, "evrelay: error: cannot write to stdout: No space left on device\n"),
        (">&-", 1, "evrelay: error: cannot write to stdout: it is closed\n"),
        ("| true", 0, ""),
    ],
)
def test_version_onto_a_full_closed_or_gone_stdout_is_one_line(redirect, code, text):
    # Before: a Python traceback (OSError / EvrelayError / BrokenPipeError) from the
    # --version fast path, which runs before the CLI's error handling.
    import os
    import subprocess
    import sys

    from tests.conftest import REPO

    script = f'"{sys.executable}" -m evrelay --version {redirect}; echo "rc=${{PIPESTATUS[0]}}" >&2'
    run = subprocess.run(["bash", "-c", script], capture_output=True, env=dict(os.environ, PYTHONPATH=str(REPO)), timeout=60)
    err = run.stderr.decode("utf-8", "replace")
    assert err == f"{text}rc={code}\n"


# --- a relative time before 1970 -------------------------------------------------------------


@pytest.mark.nats
def test_a_relative_time_before_1970_reads_from_the_beginning_on_nats(nats_server, stream):
    # Before: `--from -99999999d` became a start time in year -271821, which JetStream
    # refused: exit 1 "cannot read NATS stream ...: NATS JetStream: invalid JSON".
    address = f"{nats_server.url}/{stream}"
    assert evrelay("publish", f"{address}?create=true", "first", "second").returncode == 0
    run = evrelay("tail", address, "--from", "-99999999d", "-o", "raw")
    assert run.returncode == 0, run.err
    assert run.stdout == b"first\nsecond\n"


# --- -o pretty: a message must not drive the terminal ----------------------------------------


def test_pretty_output_shows_control_characters_from_a_message_escaped(stream):
    # Before: `-o pretty`, the default on a terminal, wrote the message's ESC sequences as
    # they were: a producer could clear the reader's screen, retitle the window, or forge
    # lines. `-o json` escapes them (\u001b) and `-o raw` is bytes by contract.
    hostile = evrelay("publish", stream, "-k", "k\x1b[31mRED", "-H", "h=\x1b]0;TITLE\x07", "v\x1b[2J\x1b[HCLEARED\rX")
    assert hostile.returncode == 0
    run = evrelay("tail", stream, "-o", "pretty", env={"NO_COLOR": "1"})
    assert run.returncode == 0, run.err
    assert b"\x1b" not in run.stdout and b"\x07" not in run.stdout and b"\r" not in run.stdout
    assert b"key=k\\x1b[31mRED" in run.stdout and b"h=\\x1b]0;TITLE\\x07" in run.stdout
    assert b"v\\x1b[2J\\x1b[HCLEARED\\x0dX" in run.stdout


def test_stats_shows_control_characters_in_keys_and_header_names_escaped(stream):
    # Before: `stats -o table` printed a key's ESC sequence and newline as they were.
    assert evrelay("publish", stream, "-k", "k\x1b[2J", "-H", "h\x1bx=1", "v").returncode == 0
    assert evrelay("publish", stream, "-k", "two\nlines", "w").returncode == 0
    run = evrelay("stats", stream, "--from", "beginning", "-o", "table", env={"NO_COLOR": "1"})
    assert run.returncode == 0, run.err
    assert b"\x1b" not in run.stdout
    assert "top keys: " in run.out and "k\\x1b[2J (1)" in run.out and "two\\nlines (1)" in run.out
    assert "header names: h\\x1bx (1)" in run.out


# --- a NATS NKey seed in a profile's client options ------------------------------------------


def test_config_show_masks_a_nats_nkey_seed(tmp_path):
    # Before: `options = { nkeys_seed_str = "SU…" }` (nats-py's connect option holding the
    # NKey seed, a private key) was printed in clear by config show.
    seed = "SUACSSL3UAHUDXKFSNVUZRF5UHPMWZ6BFDTJ7M6USDXIEDNPPQYYYCU3VY"
    config = tmp_path / "c.toml"
    config.write_text(
        '[profiles.n]\nbackend = "nats"\nurl = "nats://127.0.0.1:4222"\n'
        f'[profiles.n.options]\nnkeys_seed_str = "{seed}"\nnkeys_seed = "/secrets/evrelay.nk"\n'
    )
    for args in (("config", "show", "n"), ("config", "show"), ("config", "list")):
        run = evrelay("--config", str(config), *args)
        assert run.returncode == 0, run.err
        assert seed not in run.out + run.err
    assert 'nkeys_seed_str = "********"' in evrelay("--config", str(config), "config", "show", "n").out


# --- NATS: a password holding '@', ':' or '/' ------------------------------------------------


@pytest.mark.nats
def test_a_nats_password_with_reserved_characters_works_percent_encoded_and_is_never_shown(nats_server):
    # Before: nats-py takes the password from the URL without percent-decoding it, so
    # `p%40ss%3Aw%2Frd` was sent as written and refused (exit 3): such a password could not
    # be used at all. And written raw, `bob:p@ss:w/rd@host` was masked by the URL parser's
    # netloc (which ends at the first '/'): the error showed `bob:********@ss:w/rd@…`.
    from urllib.parse import quote

    from tests.servers import NatsServer

    password = f"p@ss:w/rd-{CANARY}"
    with NatsServer(user="bob", password=password) as server:
        encoded = f"nats://bob:{quote(password, safe='')}@127.0.0.1:{server.port}/auth"
        publish = evrelay("publish", f"{encoded}?create=true", "x", "-v")
        assert publish.returncode == 0, publish.err
        tail = evrelay("tail", encoded, "-o", "raw", "-v")
        assert tail.returncode == 0, tail.err
        assert tail.stdout == b"x\n"
        raw = evrelay("tail", f"nats://bob:{password}@127.0.0.1:{server.port}/auth", "-v")
        assert raw.returncode == 2
        for run in (publish, tail, raw):
            assert CANARY not in run.out + run.err and "ss:w" not in run.err
            assert quote(password, safe="") not in run.err


# --- NATS: ack --claim must not take a message no reader has had -----------------------------


@pytest.mark.nats
def test_nats_claim_twice_takes_no_message_that_was_never_delivered(nats_server, stream):
    # Before: with nothing pending, `ack --claim` fetched the next new message and handed it
    # back with a NAK, which counts as a delivery; the second `ack --claim --min-idle 30s`
    # then "claimed" that message, 1 s old and never read by anyone, away from the group.
    address = f"{nats_server.url}/{stream}"
    assert evrelay("publish", f"{address}?create=true", "first").returncode == 0
    assert evrelay("tail", address, "-g", "workers", "-o", "raw").stdout == b"first\n"
    assert evrelay("publish", address, "never-read").returncode == 0
    for _ in range(2):
        claim = evrelay("ack", address, "-g", "workers", "--claim", "--min-idle", "30s", "-o", "raw")
        assert claim.returncode == 0, claim.err
        assert claim.stdout == b"" and "claimed 0 message(s)" in claim.err
    assert evrelay("tail", address, "-g", "workers", "-o", "raw").stdout == b"never-read\n"


# --- --format templates that do not fit the messages -----------------------------------------


@pytest.mark.parametrize(
    ("template", "said"),
    [
        ("{value[a][b]}", "--format: bad template '{value[a][b]}': string indices must be integers"),
        ("{id:08d}", "--format: '{id:08d}' does not fit this backend's messages: Unknown format code 'd'"),
    ],
)
def test_a_format_template_that_does_not_fit_is_a_usage_error(stream, template, said):
    # Before: "internal error: TypeError" / "ValueError" (exit 1): {value[a][b]} indexes the
    # value text, and a stream ID is text, so {id:08d} fails only on a real message.
    assert evrelay("publish", stream, '{"a": {"b": 1}}').returncode == 0
    run = evrelay("tail", stream, "--format", template)
    assert run.returncode == 2, run.err
    assert said in run.err and "internal error" not in run.err


# --- NATS: kill -9 the server mid-publish, restart it ----------------------------------------


@pytest.mark.nats
@pytest.mark.slow
def test_nats_publish_rides_out_a_server_restart_and_counts_what_it_lost(tmp_path):
    # Before: once nats-py's reconnect buffer filled, publish gave up: exit 3 "lost the
    # connection to NATS ... while publishing", no count of what was confirmed, and the rest
    # of the input never sent. Now it waits for the reconnect and goes on; what was in
    # flight when the server died is counted as not confirmed (exit 1), or all is (exit 0).
    import re
    import subprocess
    import sys
    import time

    from tests.conftest import REPO
    from tests.crash import wait_until
    from tests.servers import NatsServer

    lines = 1_500_000
    with NatsServer() as server:
        address = f"{server.url}/restarts"
        assert evrelay("publish", f"{address}?create=true", "first").returncode == 0
        data = tmp_path / "lines.txt"
        data.write_bytes(b"".join(b"%d\n" % i for i in range(lines)))
        with data.open("rb") as stdin:
            proc = subprocess.Popen([sys.executable, "-m", "evrelay", "publish", address], stdin=stdin,
                                    stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO)})
            wait_until(lambda: _nats_length(server.url, "restarts") > 50_000 or proc.poll() is not None, 120, "progress")
            assert proc.poll() is None, "publish ended before the server could be killed"
            server.kill()
            time.sleep(3.0)  # long enough for nats-py's 2 MB reconnect buffer to fill
            server.start()
            _, err = proc.communicate(timeout=300)
        text = err.decode()
        assert proc.returncode in (0, 1), text
        stored = _nats_length(server.url, "restarts") - 1
        if proc.returncode == 1:
            found = re.search(r"(\d+) of (\d+) message\(s\) .* were not delivered \(first failure: the connection .* was lost "
                              r"before the stream acknowledged it\); (\d+) delivered", text)
            assert found, text
            lost, total, delivered = map(int, found.groups())
            assert total == lines and lost + delivered == lines and lost < 100_000
        else:
            delivered = lines
        print(f"\nNATS restart mid-publish: exit {proc.returncode}, {delivered} confirmed, {stored} stored")
        assert stored >= delivered


def _nats_length(url: str, stream: str) -> int:
    """The stream's message count, asked with nats-py (not evrelay); -1 while unreachable."""
    import asyncio

    import nats

    async def main() -> int:
        try:
            nc = await nats.connect(url, allow_reconnect=False, connect_timeout=1)
        except Exception:
            return -1
        try:
            return (await nc.jetstream().stream_info(stream)).state.messages
        except Exception:
            return -1
        finally:
            await nc.close()

    return asyncio.run(main())


# --- --metrics that cannot work is refused before anything connects --------------------------


def test_metrics_on_a_port_in_use_is_refused_before_the_group_is_created(stream):
    # Before: the bridge connected and created its consumer group, then failed to listen
    # (exit 1), leaving a group behind; the same for a missing prometheus-client (exit 2).
    import socket

    assert evrelay("publish", stream, "a").returncode == 0
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        run = evrelay("bridge", stream, f"{stream}-copy", "--metrics", f"127.0.0.1:{port}", "-n", "1", "-g", "watched")
    assert run.returncode == 1, run.err
    assert f"--metrics: cannot listen on 127.0.0.1:{port}" in run.err
    assert "created consumer group" not in run.err
    assert evrelay("groups", stream).out == ""


# --- --cloudevents on events that are not valid ----------------------------------------------


@pytest.mark.parametrize("mode", ["binary", "structured"])
@pytest.mark.parametrize(
    ("event", "said"),
    [
        ('{"specversion": "1.0"}', "not a valid CloudEvent: it has no id, source, type"),
        ('{"specversion": "1.0", "id": "1", "source": "s", "type": "t", "data_base64": "!!"}', "data_base64 is not base64"),
    ],
)
def test_cloudevents_refuses_an_event_the_sdks_cannot_read(stream, mode, event, said):
    # Before: both were written (exit 0): an event without id/source/type, which the
    # CloudEvents SDK refuses to read, and an invalid data_base64, which binary mode turned
    # into an empty value (the data silently gone).
    run = evrelay("publish", stream, "--cloudevents", mode, event)
    assert run.returncode == 2, run.err
    assert said in run.err
    assert evrelay("tail", stream).returncode == 1  # nothing was written: the stream does not exist


def test_a_routed_sink_naming_the_source_stream_is_refused_not_looped(stream):
    # Before: `bridge s '{stream}'` wrote every message back into s, read it again, and so
    # on: 2 messages became 89,000 in 10 s, and --idle-timeout never came. The fixed-name
    # check (`bridge s s`) did not see through a template.
    assert evrelay("publish", stream, "a", "b").returncode == 0
    run = evrelay("bridge", stream, "{stream}", "--idle-timeout", "1s", timeout=30)
    assert run.returncode == 1, run.err
    assert f"names {stream!r}, the stream the message came from: that would relay into itself" in run.err
    assert '"length":2' in evrelay("info", stream).out


@pytest.mark.parametrize(("signum", "code"), [(signal.SIGTERM, 143), (signal.SIGINT, 130)])
def test_a_replay_stopped_by_a_signal_says_so_with_the_signals_exit_code(tmp_path, signum, code):
    # A replay is a finite job, like publish: stopped early, the range is not all copied,
    # so SIGTERM is 143 (as publish) and SIGINT 130, never 0, and what was copied is said.
    source, sink = tmp_path / "src.jsonl", tmp_path / "dst.jsonl"
    source.write_text("".join(f'{{"value":"m{i}","timestamp":"2026-01-01T00:00:0{i}Z"}}\n' for i in range(8)))
    proc = subprocess.Popen(
        [sys.executable, "-m", "evrelay", "replay", f"file:{source}", f"file:{sink}", "--from", "beginning", "--pace", "original"],
        stderr=subprocess.PIPE, env=dict(os.environ, PYTHONPATH=str(REPO)), cwd=tmp_path,
    )
    deadline = time.monotonic() + 30
    while not (sink.exists() and sink.read_text().count("\n") >= 2) and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=30)
    copied = sink.read_text().count("\n")
    assert proc.returncode == code, err.decode()
    assert 2 <= copied < 8
    assert f"after {copied} message(s)" in err.decode()
