"""Regression tests of the defects the fixes4 session fixed (one section per defect),
each against the real servers of every backend it concerns."""

from __future__ import annotations

import json
import uuid

import pytest

from tests.conftest import evrelay

FAR_FUTURE = "2099-01-01T00:00:00Z"


def _name() -> str:
    return f"f4-{uuid.uuid4().hex[:10]}"


@pytest.fixture(params=["local", "file", "redis", "kafka", "nats"])
def address(request, tmp_path):
    """A fresh topic/stream address on each backend (its server started by the fixtures)."""
    name = _name()
    if request.param == "local":
        return name
    if request.param == "file":
        return f"file:{tmp_path / name}.jsonl"
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        return f"redis://127.0.0.1:{server.port}/0/{name}"
    if request.param == "kafka":
        server = request.getfixturevalue("kafka_server")
        return f"kafka://{server.bootstrap}/{name}"
    server = request.getfixturevalue("nats_server")
    return f"{server.url}/{name}?create=true"


# --- 1. `tail -f --to T -n N` stops after N, as `tail --to T -n N` does -----------------

def test_follow_with_to_and_count_stops_after_count(address):
    assert evrelay("publish", address, "a", "b", "c", "d", "e", "-q").returncode == 0
    # Before: -n was dropped with -f, so all five were printed and it then followed until
    # the far-away --to (the timeout here). A count limit is a count limit.
    run = evrelay("tail", address, "-f", "--to", FAR_FUTURE, "-n", "2", "-o", "raw", timeout=40)
    assert run.returncode == 0, run.err
    assert run.lines() == [b"a", b"b"]
    # Without --to, -n with -f is the backlog before following: the last N, then new ones.
    run = evrelay("tail", address, "-f", "-n", "2", "-o", "raw", "--idle-timeout", "1s", timeout=60)
    assert run.lines() == [b"d", b"e"], run.err


# --- 2. a Redis key that is not a stream: exit 2, one line, on every command ------------

WRONG_TYPE_COMMANDS = [
    ("publish", "{key}", "v"),
    ("tail", "{key}"),
    ("tail", "{key}", "-f", "--idle-timeout", "1s"),
    ("tail", "{key}", "-g", "g"),
    ("bridge", "{key}", "file:{out}", "--idle-timeout", "1s"),
    ("bridge", "file:{src}", "{key}", "--idle-timeout", "1s"),
    ("replay", "{key}", "file:{out}", "--from", "beginning"),
    ("replay", "file:{src}", "{key}", "--from", "beginning"),
    ("replay", "{key}", "-g", "g", "--from", "beginning", "--yes"),
    ("ack", "{key}", "-g", "g", "1-1"),
    ("info", "{key}"),
    ("lag", "{key}", "-g", "g"),
    ("groups", "{key}"),
]


@pytest.fixture
def string_key(redis_server):
    import redis

    name = _name()
    redis.Redis(port=redis_server.port).set(name, "not a stream")
    return name, f"redis://127.0.0.1:{redis_server.port}/0/{name}"


@pytest.mark.parametrize("command", WRONG_TYPE_COMMANDS, ids=lambda c: " ".join(c[:3]).replace("{", "").replace("}", ""))
def test_a_redis_key_of_another_type_is_exit_2_everywhere(command, string_key, tmp_path):
    name, key = string_key
    src = tmp_path / "src.jsonl"
    src.write_text('{"value": "a"}\n')
    args = [part.format(key=key, out=tmp_path / "out.jsonl", src=src) for part in command]
    run = evrelay(*args, timeout=60)
    # Before: publish and bridge/replay into the key exited 1 with "1 of 1 message(s) ...
    # were not delivered (first failure: ... WRONGTYPE ...)" or "was rejected ... for good".
    assert run.returncode == 2, run.err
    assert run.err == f"evrelay: error: Redis key {name!r} on 127.0.0.1:{key.split(':')[2].split('/')[0]} is a string, not a stream\n"


def test_bridge_into_a_key_of_another_type_acks_nothing(string_key, tmp_path):
    _, key = string_key
    source = f"local:{_name()}"
    assert evrelay("publish", source, "a", "b", "-q").returncode == 0
    run = evrelay("bridge", source, key, "-g", "g1", "--idle-timeout", "1s")
    assert run.returncode == 2, run.err
    out = tmp_path / "out.jsonl"
    run = evrelay("bridge", source, f"file:{out}", "-g", "g1", "--idle-timeout", "1s")
    assert run.returncode == 0, run.err
    assert [json.loads(line)["value"] for line in out.read_text().splitlines()] == ["a", "b"]


# --- 5. blank stream names, and names that begin or end with whitespace ------------------

def _config_with_every_backend(tmp_path, redis_server, nats_server) -> str:
    path = tmp_path / "evrelay.toml"
    path.write_text(
        "[profiles.k]\nbackend = \"kafka\"\nbootstrap_servers = \"127.0.0.1:1\"\n"
        f"[profiles.r]\nbackend = \"redis\"\nurl = \"redis://127.0.0.1:{redis_server.port}/0\"\n"
        f"[profiles.n]\nbackend = \"nats\"\nurl = \"{nats_server.url}\"\ncreate = true\n"
        f"[profiles.f]\nbackend = \"file\"\npath = \"{tmp_path / 'f.jsonl'}\"\n"
    )
    return str(path)


@pytest.mark.parametrize("name", [" ", "\t", " x", "x "])
@pytest.mark.parametrize("form", ["{name}", "local:{name}", "k:{name}", "r:{name}", "n:{name}", "f:{name}", "file:{name}",
                                  "redis://127.0.0.1:{redis}/0/{quoted}", "{nats}/{quoted}?create=true"])
def test_blank_or_padded_names_are_refused_before_sending(form, name, tmp_path, redis_server, nats_server):
    from urllib.parse import quote

    import redis

    config = _config_with_every_backend(tmp_path, redis_server, nats_server)
    address = form.format(name=name, quoted=quote(name), redis=redis_server.port, nats=nats_server.url)
    run = evrelay("--config", config, "publish", address, "v", timeout=60)
    # Before: exit 0, and a stream (or file, or Redis key) named " " or " x" was made.
    assert run.returncode == 2, run.err
    assert run.err.startswith(f"evrelay: error: address {address!r}") and run.err.count("\n") == 1, run.err
    assert ("is blank" if not name.strip() else "begins or ends with whitespace") in run.err
    assert not redis.Redis(port=redis_server.port).exists(name)
    assert evrelay("--config", config, "ls", "local").out == ""
    assert not (tmp_path / "work" / name).exists()
    for verb in (("tail",), ("bridge", "-")):
        run = evrelay("--config", config, verb[0], address, *verb[1:], timeout=60)
        assert run.returncode == 2 and "evrelay: error: address" in run.err, run.err


def test_a_profile_whose_stream_is_blank_is_named(tmp_path):
    config = tmp_path / "evrelay.toml"
    config.write_text('[profiles.p]\nbackend = "local"\nstream = " "\n')
    run = evrelay("--config", str(config), "publish", "p", "v")
    assert run.returncode == 2
    assert run.err == f"evrelay: error: address 'p' ({config}, line 1: profile 'p'): the stream name is blank (' ')\n"


# --- 4. TOML dates, arrays and tables as client settings: exit 2 naming the key ----------

def _profile(tmp_path, body: str) -> str:
    path = tmp_path / "evrelay.toml"
    path.write_text(body)
    return str(path)


@pytest.mark.parametrize("setting, kind, shown", [
    ('"linger.ms" = 1979-05-27', "date", "1979-05-27"),
    ('"linger.ms" = 07:32:00', "time", "07:32:00"),
    ('"client.id" = ["a", "b"]', "array", "['a', 'b']"),
    ('"client.id" = { a = 1 }', "table", "{'a': 1}"),
])
def test_kafka_options_must_be_scalars(setting, kind, shown, tmp_path, kafka_server):
    config = _profile(tmp_path, f'[profiles.k]\nbackend = "kafka"\nbootstrap_servers = "{kafka_server.bootstrap}"\n'
                                f'[profiles.k.options]\n{setting}\n')
    run = evrelay("--config", config, "publish", f"k:{_name()}", "v", timeout=60)
    # Before: exit 0, the value handed to librdkafka as its Python str ("1979-05-27").
    assert run.returncode == 2, run.err
    key = setting.split('"')[1]
    assert run.err.startswith(f"evrelay: error: {config}, line 1: profile 'k': kafka option {key!r} (in options")
    assert f"TOML {kind} ({shown})" in run.err and run.err.count("\n") == 1, run.err


def test_redis_and_nats_client_settings_and_top_level_dates_are_refused(tmp_path, redis_server, nats_server):
    redis_url = f"redis://127.0.0.1:{redis_server.port}/0"
    config = _profile(tmp_path, (
        f'[profiles.r]\nbackend = "redis"\nurl = "{redis_url}"\noptions = {{ socket_timeout = 1979-05-27T07:32:00Z }}\n'
        f'[profiles.r2]\nbackend = "redis"\nurl = "{redis_url}"\noptions = {{ client_name = ["x"] }}\n'
        f'[profiles.n]\nbackend = "nats"\nurl = "{nats_server.url}"\ncreate = true\nack_wait = 1979-05-27\n'
        f'[profiles.n2]\nbackend = "nats"\nurl = "{nats_server.url}"\ncreate = true\noptions = {{ name = {{ a = 1 }} }}\n'
        '[profiles.l]\nbackend = "local"\nmax_len = 1979-05-27\n'
        '[profiles.f]\nbackend = "file"\npath = 1979-05-27\n'
    ))
    expected = {
        "r": "profile 'r': redis option 'socket_timeout' (in options) is a TOML date-time (1979-05-27T07:32:00+00:00)",
        "r2": "profile 'r2': redis option 'client_name' (in options, the redis-py connection settings) must be a string, number or boolean, not a TOML array",
        "n": "profile 'n': nats option ack_wait is a TOML date (1979-05-27)",
        "n2": "profile 'n2': nats option 'name' (in options, the nats-py connect() settings) must be a string, number or boolean, not a TOML table",
        "l": "profile 'l': local option max_len is a TOML date (1979-05-27)",
        "f": "profile 'f': file option path is a TOML date (1979-05-27)",
    }
    for profile, message in expected.items():
        run = evrelay("--config", config, "publish", f"{profile}:{_name()}", "v", timeout=60)
        assert run.returncode == 2 and message in run.err and run.err.count("\n") == 1, (profile, run.err)
    assert not (tmp_path / "work" / "1979-05-27").exists()


# --- 6. booleans are booleans: a TOML boolean, or true/false in a query string -----------

@pytest.mark.parametrize("where, value, shown", [
    ("profile", '"yes"', '"yes"'), ("profile", '"true"', '"true"'), ("profile", "1", "1"),
    ("query", "yes", '"yes"'), ("query", "1", "1"), ("query", "on", '"on"'), ("query", "", '""'),
])
def test_nats_create_must_be_a_boolean(where, value, shown, tmp_path, nats_server):
    stream = _name()
    if where == "profile":
        config = _profile(tmp_path, f'[profiles.n]\nbackend = "nats"\nurl = "{nats_server.url}"\ncreate = {value}\n')
        args = ["--config", config, "publish", f"n:{stream}", "v"]
    else:
        args = ["publish", f"{nats_server.url}/{stream}?create={value}", "v"]
    run = evrelay(*args, timeout=60)
    # Before: "yes", "1", "on" (and the string "true") counted as true: the stream was created.
    assert run.returncode == 2, run.err
    assert f"nats option create must be true or false (a TOML boolean; ?create=true in an address), not {shown}" in run.err
    assert run.err.count("\n") == 1


def test_nats_create_true_still_creates(nats_server, tmp_path):
    config = _profile(tmp_path, f'[profiles.n]\nbackend = "nats"\nurl = "{nats_server.url}"\ncreate = true\n')
    assert evrelay("--config", config, "publish", f"n:{_name()}", "v", "-q", timeout=60).returncode == 0
    assert evrelay("publish", f"{nats_server.url}/{_name()}?create=true", "v", "-q", timeout=60).returncode == 0
    run = evrelay("publish", f"{nats_server.url}/{_name()}?create=false", "v", timeout=60)
    assert run.returncode == 1 and "does not exist" in run.err, run.err


# --- 3. the publish summary says where it went, with a default profile of every backend ---

def _default_profile_config(tmp_path, backend_lines: str) -> str:
    return _profile(tmp_path, f'default_profile = "d"\n[profiles.d]\n{backend_lines}')


def test_publish_summary_names_the_file_it_wrote(tmp_path):
    config = _default_profile_config(tmp_path, 'backend = "file"\npath = "files.jsonl"\n')
    run = evrelay("--config", config, "publish", "orders", "v")
    assert run.returncode == 0, run.err
    # Before: "published 1 message(s) to orders [file files.jsonl]" while ./orders was written.
    assert (tmp_path / "work" / "orders").exists() and not (tmp_path / "work" / "files.jsonl").exists()
    assert run.err.startswith("published 1 message(s) to orders [file orders] in "), run.err
    # The profile alone means its path (before: "names profile 'd', which has no default file").
    run = evrelay("--config", config, "publish", "d", "w")
    assert run.returncode == 0, run.err
    assert run.err.startswith("published 1 message(s) to d [file files.jsonl] in "), run.err
    assert json.loads((tmp_path / "work" / "files.jsonl").read_text())["value"] == "w"
    tailed = evrelay("--config", config, "tail", "d", "-o", "raw")
    assert tailed.out == "w\n", tailed.err
    bridged = evrelay("--config", config, "bridge", "orders", "copy", "--idle-timeout", "1s")
    assert bridged.returncode == 0 and "from orders to copy" in bridged.err, bridged.err
    assert json.loads((tmp_path / "work" / "copy").read_text())["value"] == "v"


def test_publish_summary_with_a_default_profile_of_each_server_backend(tmp_path, redis_server, kafka_server, nats_server):
    cases = {
        f'backend = "redis"\nurl = "redis://127.0.0.1:{redis_server.port}/0"\n': f"[redis redis://127.0.0.1:{redis_server.port}/0]",
        f'backend = "kafka"\nbootstrap_servers = "{kafka_server.bootstrap}"\n': f"[kafka {kafka_server.bootstrap}]",
        f'backend = "nats"\nurl = "{nats_server.url}"\ncreate = true\n': f"[nats {nats_server.url}]",
        f'backend = "local"\npath = "{tmp_path / "l.db"}"\n': f"[local store {tmp_path / 'l.db'}]",
    }
    for lines, described in cases.items():
        config = _default_profile_config(tmp_path, lines)
        name = _name()
        run = evrelay("--config", config, "publish", name, "v", timeout=60)
        assert run.returncode == 0, run.err
        assert run.err.splitlines()[-1].startswith(f"published 1 message(s) to {name} {described} in "), run.err
        assert evrelay("--config", config, "tail", name, "-o", "raw", timeout=60).out == "v\n"


# --- 8. the bridge summary's figures are honest -------------------------------------------

def test_tiny_kafka_bridge_prints_no_rate(kafka_server, redis_server):
    topic = _name()
    assert evrelay("publish", f"kafka://{kafka_server.bootstrap}/{topic}", "a", "b", "-q", timeout=60).returncode == 0
    run = evrelay("bridge", f"kafka://{kafka_server.bootstrap}/{topic}", f"redis://127.0.0.1:{redis_server.port}/0/{topic}",
                  "-n", "2", "--timeout", "40s", timeout=90)
    assert run.returncode == 0, run.err
    # Before: "bridged 2 message(s) ... in 3.0s (922 msg/s)": 2 messages over the 2 ms from
    # the first read to the last delivery, printed beside the 3 s the run took.
    summary = run.err.splitlines()[-1]
    assert summary.startswith("bridged 2 message(s) from ") and "msg/s" not in summary, summary


def test_bridge_rate_is_over_the_moving_time_it_prints(tmp_path):
    import re

    source = _name()
    assert evrelay("publish", source, input="\n".join(str(i) for i in range(30000)) + "\n").returncode == 0
    run = evrelay("bridge", source, f"file:{tmp_path / 'out.jsonl'}", "--idle-timeout", "1s", timeout=120)
    assert run.returncode == 0, run.err
    found = re.search(r"bridged 30000 message\(s\) .* in ([\d.]+)s, ([\d.]+)s of it moving messages \(([\d,]+) msg/s\)", run.err)
    assert found, run.err
    elapsed, moving, rate = float(found[1]), float(found[2]), float(found[3].replace(",", ""))
    assert moving <= elapsed
    assert abs(30000 / rate - moving) <= 0.05 + 1e-9, (30000 / rate, moving)  # moving is rounded (to 0.1 s from 1 s up)


# --- 7. Ctrl-C while stdin feeds publish: stops within ~1 s, exit 130, says what was sent --

def _publish_then_ctrl_c(address: str, first_lines: bytes, *, settle: float) -> tuple[int, float, str]:
    """Start `publish ADDRESS` with stdin a pipe left open after `first_lines`, send SIGINT
    after `settle` seconds; (exit status, seconds from the signal to the exit, stderr)."""
    import os
    import signal
    import subprocess
    import sys
    import time

    from tests.conftest import REPO

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([sys.executable, "-m", "evrelay", "publish", address], stdin=subprocess.PIPE,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    try:
        proc.stdin.write(first_lines)
        proc.stdin.flush()
        time.sleep(settle)
        signalled = time.monotonic()
        proc.send_signal(signal.SIGINT)
        err = proc.stderr.read().decode()
        proc.wait(timeout=30)
        return proc.returncode, time.monotonic() - signalled, err
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.stdin.close()


@pytest.mark.parametrize("lines", [b"", b"".join(b"%d\n" % i for i in range(1000))], ids=["idle-stdin", "1000-lines"])
def test_ctrl_c_publishing_to_an_unreachable_kafka_stops_at_once(lines):
    from tests.servers import free_port

    address = f"kafka://127.0.0.1:{free_port()}/t"  # nothing listens there
    status, seconds, err = _publish_then_ctrl_c(address, lines, settle=2.0)
    # Before: the first Ctrl-C waited out the 10 s connect timeout (exit 3 with an idle
    # stdin; a bare "evrelay: interrupted" with lines read).
    assert status == 130, err
    assert seconds < 4.0, seconds  # ~1.1 s measured; generous for a loaded machine
    assert err.count("\n") == 1 and err.startswith(f"evrelay: interrupted: 0 message(s) were published to {address} "), err
    assert ("1000 read before Ctrl-C were not confirmed" if lines else "nothing read was lost") in err


def test_ctrl_c_publishing_to_kafka_reports_what_was_published(kafka_server):
    address = f"kafka://{kafka_server.bootstrap}/{_name()}"
    assert evrelay("publish", address, "first", "-q", timeout=60).returncode == 0  # the topic exists
    status, seconds, err = _publish_then_ctrl_c(address, b"a\nb\nc\n", settle=4.0)
    assert status == 130 and seconds < 4.0, (status, seconds, err)
    assert err == f"evrelay: interrupted: 3 message(s) were published to {address} [kafka {kafka_server.bootstrap}]; nothing read was lost\n"
    assert evrelay("tail", address, "-o", "raw", timeout=60).out == "first\na\nb\nc\n"
