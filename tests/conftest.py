"""Shared fixtures: an isolated environment per test, and running the real CLI.

Every test gets its own XDG directories and working directory, so it never sees the
developer's config or local store, and nothing leaks between tests.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "home"
    (home / "data").mkdir(parents=True)
    (home / "config").mkdir()
    monkeypatch.setenv("XDG_DATA_HOME", str(home / "data"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / "config"))
    monkeypatch.delenv("EVRELAY_CONFIG", raising=False)
    monkeypatch.delenv("EVRELAY_PROFILE", raising=False)
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    return work


@dataclass
class Run:
    returncode: int
    stdout: bytes
    stderr: bytes

    @property
    def out(self) -> str:
        return self.stdout.decode("utf-8", "replace")

    @property
    def err(self) -> str:
        return self.stderr.decode("utf-8", "replace")

    def lines(self) -> list[bytes]:
        return self.stdout.splitlines()


def evrelay(*args: str, input: bytes | str | None = None, env: dict[str, str] | None = None, timeout: float = 60, cwd: str | None = None) -> Run:
    """Run the real `evrelay` CLI in a subprocess (stdin, stdout, stderr kept apart)."""
    if isinstance(input, str):
        input = input.encode()
    full_env = dict(os.environ)
    full_env.pop("CI_NO_COLOR", None)
    full_env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), full_env.get("PYTHONPATH")]))
    if env:
        full_env.update(env)
    proc = subprocess.run(
        [sys.executable, "-m", "evrelay", *args],
        input=input if input is not None else b"",
        capture_output=True,
        env=full_env,
        timeout=timeout,
        cwd=cwd,
    )
    return Run(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def cli():
    return evrelay


# --- real servers (started once per session, on free ports) -----------------------------

def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


def start_server(factory):
    """Start a server, or skip the test where it cannot run; in CI a missing server fails."""
    from tests.servers import ServerUnavailable

    try:
        return factory().start()
    except ServerUnavailable as exc:
        if _in_ci():
            pytest.fail(f"CI=true and a test server is missing: {exc}")
        pytest.skip(str(exc))


def pytest_report_header(config) -> str:
    return f"Kafka broker for the tests: {os.environ.get('EVRELAY_TEST_KAFKA', 'apache')} (EVRELAY_TEST_KAFKA=apache|tansu)"


@pytest.fixture(scope="session")
def kafka_server():
    """One Kafka broker for the whole session: Apache Kafka, or tansu with EVRELAY_TEST_KAFKA=tansu."""
    from tests.servers import KafkaServer

    server = start_server(KafkaServer)
    yield server
    server.__exit__(None, None, None)


@pytest.fixture(scope="session")
def apache_kafka(kafka_server):
    """The session's broker where it is Apache Kafka: for tests of Kafka's own behaviour
    and tools (kafka-consumer-groups); skipped when the tests run on tansu."""
    if getattr(kafka_server, "flavour", None) != "apache":
        pytest.skip("needs Apache Kafka itself (EVRELAY_TEST_KAFKA=apache)")
    return kafka_server


@pytest.fixture(scope="session")
def redis_server():
    from tests.servers import RedisServer

    server = start_server(RedisServer)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def tls_redis_server():
    """redis-server on TLS only, with an ACL user (TlsRedisServer.USER / PASSWORD)."""
    from tests.servers import TlsRedisServer

    server = start_server(TlsRedisServer)
    yield server
    server.__exit__(None, None, None)


@pytest.fixture(scope="session")
def kcat():
    """The kcat command line (a client we did not write); in CI its absence fails."""
    from tests.servers import ServerUnavailable, kcat_command

    try:
        return kcat_command()
    except ServerUnavailable as exc:
        if _in_ci():
            pytest.fail(f"CI=true and kcat is missing: {exc}")
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def nats_server():
    from tests.servers import NatsServer

    server = start_server(NatsServer)
    yield server
    server.stop()
