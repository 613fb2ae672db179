"""Defects found by the third review (of the kpub3 and adv3 branches), each with the test
that failed on the merged tree before its fix. Real servers come from tests/conftest.py:
a redis-server of this module's own where a test adds ACL users, so no other test meets them."""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest

from tests.conftest import evrelay, start_server

PASSWORD = "s3cret-review3-pw"


@pytest.fixture(scope="module")
def acl_redis():
    """A redis-server whose ACL users these tests add."""
    from tests.servers import RedisServer

    server = start_server(RedisServer)
    yield server
    server.stop()


def acl_user(server, *rules: str) -> str:
    """A new ACL user with the password PASSWORD and these rules; its redis:// url prefix."""
    name = f"r{uuid.uuid4().hex[:6]}"
    done = subprocess.run(["redis-cli", "-p", str(server.port), "ACL", "SETUSER", name, "on", f">{PASSWORD}", *rules], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "OK", done.stdout
    return f"redis://{name}:{PASSWORD}@127.0.0.1:{server.port}"


@pytest.mark.redis
def test_publish_as_a_producer_only_acl_user(acl_redis):
    """A least-privilege producer (`ACL SETUSER u on >pw ~orders* +xadd`) may XADD and
    nothing else. Before: exit 3 'refused a command: ... no permissions to run the
    'ping' command', for the PING evrelay sends on connecting, though XADD was allowed;
    after: published, the message in the stream."""
    stream = f"orders-{uuid.uuid4().hex[:6]}"
    url = acl_user(acl_redis, "~orders*", "+xadd")
    run = evrelay("publish", f"{url}/0/{stream}", "hello")
    assert run.returncode == 0, run.err
    assert PASSWORD not in run.err + run.out
    length = subprocess.run(["redis-cli", "-p", str(acl_redis.port), "XLEN", stream], capture_output=True, text=True, check=True)
    assert length.stdout.strip() == "1"
    # A user refused XADD on that key is still refused, naming the command.
    denied = acl_user(acl_redis, "~other*", "+xadd")
    run = evrelay("publish", f"{denied}/0/{stream}", "hello")
    assert run.returncode == 3, run.err
    assert "XADD" in run.err and "NOPERM" in run.err and PASSWORD not in run.err + run.out


@pytest.mark.redis
def test_health_lists_a_user_refused_ping_as_unhealthy_beside_the_others(acl_redis):
    """`health A B`: every address gets its row. Before: a user whose ACL refuses PING
    ended the command at once with exit 3 and one error line, no rows at all (the other,
    healthy address's row lost); after: that row says unhealthy with the ACL's reply, the
    other says healthy, and the exit is 3 ('not healthy')."""
    denied = acl_user(acl_redis, "~*", "+@all", "-ping")
    healthy = f"redis://127.0.0.1:{acl_redis.port}"
    run = evrelay("health", f"{denied}/0", healthy, "-o", "json")
    assert run.returncode == 3, run.err
    rows = [json.loads(line) for line in run.out.splitlines()]
    assert [row["healthy"] for row in rows] == [False, True], run.out + run.err
    assert "NOPERM" in rows[0]["detail"] and "PING" in rows[0]["detail"].upper()
    assert PASSWORD not in run.out + run.err and "Traceback" not in run.err


def _run_with_stderr_closed(tmp_path, *args: str) -> subprocess.CompletedProcess:
    import os
    import sys

    from tests.conftest import REPO

    env = dict(os.environ, PYTHONPATH=str(REPO), XDG_DATA_HOME=str(tmp_path / "data"), XDG_CONFIG_HOME=str(tmp_path / "config"))
    env.pop("EVRELAY_CONFIG", None)
    env.pop("EVRELAY_PROFILE", None)
    # `2>&-`: the child starts with no fd 2, so Python's sys.stderr is None
    return subprocess.run(["bash", "-c", 'exec "$@" 2>&-', "-", sys.executable, "-m", "evrelay", *args], stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env, cwd=tmp_path, timeout=60)


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "typer"])
def test_a_closed_stderr_does_not_change_the_exit_status(tmp_path, fast_path):
    """`evrelay publish demo x 2>&-` (a script silencing evrelay). Before: exit 1 although
    the message was published (writing the summary line to the missing stderr raised), so
    a script retrying on failure published it twice; and an unknown backend was exit 1,
    not 2. After: 0 and 2, as with stderr open; on the fast path and through typer alike."""
    extra = [] if fast_path else ["--input", "lines"]  # the default --input: forces typer's parser
    done = _run_with_stderr_closed(tmp_path, "publish", "demo", "x", *extra)
    assert done.returncode == 0
    done = _run_with_stderr_closed(tmp_path, "tail", "demo", "--from", "beginning", "-n", "5", "-o", "raw")
    assert done.stdout == b"x\n"  # published once
    done = _run_with_stderr_closed(tmp_path, "publish", "nosuch://x", "v", *extra)
    assert done.returncode == 2


# --- the fast path of `publish` against typer's, in the states a command line runs in --------

_PROBE = """
import sys
from evrelay.cli import main
main(sys.argv[2:], fast_path=sys.argv[1] == "fast")
"""

_CONFIG = """
default_profile = "files"
[profiles.files]
backend = "file"
path = "files.jsonl"
[profiles.store]
backend = "local"
path = "store.db"
"""


def _both_ways(tmp_path, args: list[str], env: dict[str, str], shell: str = "") -> list[tuple[int, bytes, bytes, bytes]]:
    """(exit status, stdout, stderr, the files written in the working directory) through
    the fast path and through typer."""
    import os
    import re
    import sys

    from tests.conftest import REPO

    results = []
    for mode in ("fast", "typer"):
        full_env = dict(os.environ, PYTHONPATH=str(REPO), XDG_DATA_HOME=str(tmp_path / "data"), XDG_CONFIG_HOME=str(tmp_path / "config"))
        for name in ("EVRELAY_CONFIG", "EVRELAY_PROFILE", "_EVRELAY_COMPLETE"):
            full_env.pop(name, None)
        full_env.update(env)
        done = subprocess.run(["bash", "-c", f'exec "$@" {shell}', "-", sys.executable, "-c", _PROBE, mode, *args],
                              capture_output=True, stdin=subprocess.DEVNULL, env=full_env, cwd=tmp_path, timeout=60)
        written = sorted(path for path in tmp_path.iterdir() if path.is_file() and path.name != "cfg.toml")
        # a local store's SQLite file differs byte for byte from run to run: its name only
        data = b"".join(path.name.encode() + b":" + (b"" if ".db" in path.name else path.read_bytes()) for path in written)
        for path in written:
            path.unlink()
        results.append(tuple(re.sub(rb'"timestamp":"[^"]*"|in [0-9.]+ ?(ms|s|\xc2\xb5s)\b', b"T", part) if isinstance(part, bytes) else part
                             for part in (done.returncode, done.stdout, done.stderr, data)))
    return results


@pytest.mark.parametrize(
    ("args", "env", "shell"),
    [
        (["publish", "orders", "v"], {"EVRELAY_CONFIG": "cfg.toml"}, ""),  # the config's default profile
        (["publish", "orders", "v"], {"EVRELAY_CONFIG": "cfg.toml", "EVRELAY_PROFILE": "store"}, ""),
        (["publish", "orders", "v"], {"EVRELAY_CONFIG": "cfg.toml", "EVRELAY_PROFILE": "stor"}, ""),  # did you mean
        (["publish", "fils:orders", "v"], {"EVRELAY_CONFIG": "cfg.toml"}, ""),
        (["publish", "files", "v"], {"EVRELAY_CONFIG": "nonexistent.toml"}, ""),
        (["publish", "kafak://h/t", "v"], {}, ""),
        (["publish", "redis://u:pw@127.0.0.1:1/s?max_len=true", "v"], {}, ""),
        (["publish", "-"], {}, "<&-"),
        (["publish", "-", "x"], {"NO_COLOR": "1", "TERM": "dumb"}, ">&-"),
        (["publish", "files:x", "v"], {"EVRELAY_CONFIG": "cfg.toml"}, "2>&-"),
    ],
    ids=["default-profile", "EVRELAY_PROFILE", "profile-typo", "address-typo", "missing-config", "backend-typo",
         "query-bool", "stdin-closed", "stdout-closed", "stderr-closed"],
)
def test_fast_path_and_typer_alike_in_every_environment(tmp_path, args, env, shell):
    """Config and profile from the environment, did-you-mean errors, closed standard
    streams: the fast path ends each as typer's path does (found no drift but the
    closed stderr, fixed above for both)."""
    (tmp_path / "cfg.toml").write_text(_CONFIG)
    fast, slow = _both_ways(tmp_path, args, env, shell)
    assert fast == slow


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "typer"])
def test_an_error_told_to_a_gone_stderr_keeps_its_exit_status(tmp_path, fast_path):
    """`evrelay publish nosuch://x v 2>&1 | head -c0`: the reader of stderr has gone when
    the error line is written. Before: exit 1 (the fast path died of the BrokenPipeError
    raised while reporting; typer's path mapped it to a failure), not the usage error's
    2; after: 2 either way, and a success stays 0."""
    import os
    import sys

    from tests.conftest import REPO

    extra = [] if fast_path else ["--input", "lines"]
    env = dict(os.environ, PYTHONPATH=str(REPO), XDG_DATA_HOME=str(tmp_path / "data"), XDG_CONFIG_HOME=str(tmp_path / "config"))
    statuses = []
    for args in (["publish", "nosuch://x", "v"], ["publish", "demo", "x"]):
        reader, writer = os.pipe()
        os.close(reader)  # nobody reads evrelay's stderr
        try:
            done = subprocess.run([sys.executable, "-m", "evrelay", *args, *extra], stderr=writer, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, env=env, cwd=tmp_path, timeout=60)
        finally:
            os.close(writer)
        statuses.append(done.returncode)
    assert statuses == [2, 0]


def test_an_option_librdkafka_rejects_is_one_line_naming_the_profile(tmp_path):
    """A Kafka option out of librdkafka's range in a profile. Before: exit 2 with
    'librdkafka rejected the Kafka options: Configuration property ... 0..900000' followed
    by an empty line (librdkafka's text ends with a newline), naming neither the config
    file nor the profile; after: one line that names both (and the address for a URL).
    librdkafka rejects it on creating the client: no broker is needed."""
    config = tmp_path / "evrelay.toml"
    config.write_text('[profiles.orders]\nbackend = "kafka"\nbootstrap_servers = "127.0.0.1:9"\ntopic = "t"\n[profiles.orders.options]\n"linger.ms" = 1e9\n')
    run = evrelay("publish", "--config", str(config), "orders", "v")
    assert run.returncode == 2, run.err
    assert run.err.count("\n") == 1 and run.err.endswith("900000\n"), repr(run.err)
    assert str(config) in run.err and "'orders'" in run.err and "queue.buffering.max.ms" in run.err
    run = evrelay("publish", "kafka://127.0.0.1:9/t?linger.ms=inf", "v")
    assert run.returncode == 2 and run.err.count("\n") == 1, repr(run.err)
    assert "address 'kafka://127.0.0.1:9/t?linger.ms=inf'" in run.err
