"""evrelay side by side with its peers (kcat, redis-py and nats-py loops), in one run.

    python bench/run.py                          # N = 300,000 messages of ~90 bytes, 3 rounds, on tansu
    python bench/run.py --kafka apache           # on Apache Kafka 4 (jars resolved once by Maven, as the tests do)
    python bench/run.py --messages 1000000 --repeat 5
    python bench/run.py --only-bridge            # just the bridges' marginal rates beside their halves
    python bench/run.py --only-kafka --baseline ../main   # publish/tail kafka: beside kcat, and beside another tree
    python bench/run.py --only-nats -r 5         # just the NATS rows (no Kafka or Redis: a minute)
    python bench/run.py --only-nats --baseline DIR   # and an older evrelay's NATS rows beside them

Starts its own Kafka broker, redis-server and nats-server on free ports, as the tests do, generates its
data, and measures each contender as a separate process. The machine may be shared and
noisy, so contenders alternate round by round and medians are compared only as ratios
measured in the same run. Prints ONE Markdown table, every figure beside its peer, the
ratio and the target (also saved under bench-results/), and exits 0: a target missed is
reported, not an error.

The peers:
- `publish kafka:` against kcat with the same delivery settings (idempotent producer,
  acks=all), and, with `?enable.idempotence=false`, against plain kcat and against the
  floor of Python: a hand-written confluent-kafka produce() loop
  (bench/kafka_produce_loop.py) with the same settings;
- `tail kafka:` `-o raw` against kcat, `-o json` against `kcat -J`;
- `tail redis:` `-o raw` and `-o json` against a redis-py XREAD loop printing the values
  (bench/redis_xread_loop.py); `publish redis:` against a redis-py pipeline;
- `publish nats:` against a nats-py loop publishing to JetStream with acknowledgements
  (bench/nats_publish_loop.py), `tail nats:` `-o raw` and `-o json` against nats-py's
  ordered consumer printing the values (bench/nats_tail_loop.py);
- a bridge against the slower of its two halves, on marginal cost: (N - 1) messages over
  the wall time of a run of N minus a run of 1, for the bridge and for each half alike,
  so that start-up and the group join do not count;
- bridge start-up (`bridge ... -n 1` with a fresh group), absolute;
- `evrelay --version` and `tail --help` against `python -c pass`;
- peak RSS of a tail and of a bridge of the big run against the same for 10,000.

evrelay runs with its bytecode cached (PYTHONPYCACHEPREFIX under the work directory), as
an installed package has it: with PYTHONDONTWRITEBYTECODE set, as in some sandboxes, every
run would compile evrelay's modules again (~15 ms of a 0.2 s contender).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import tests.servers as servers  # noqa: E402
from tests.servers import NatsServer, RedisServer, ServerUnavailable, kcat_command  # noqa: E402

REDIS_PIPELINE = REPO / "bench" / "redis_pipeline_loop.py"
REDIS_XREAD = REPO / "bench" / "redis_xread_loop.py"
KAFKA_PRODUCE = REPO / "bench" / "kafka_produce_loop.py"
NATS_PUBLISH = REPO / "bench" / "nats_publish_loop.py"
NATS_TAIL = REPO / "bench" / "nats_tail_loop.py"


def evrelay_command() -> list[str]:
    found = shutil.which("evrelay")
    return [found] if found else [sys.executable, "-m", "evrelay"]


def kafka_server(flavour: str) -> servers.Server:
    """tansu or Apache Kafka, whichever tests/servers.py offers under that name."""
    if flavour == "apache":
        cls = getattr(servers, "ApacheKafkaServer", None)
        if cls is None:
            raise ServerUnavailable("tests/servers.py has no ApacheKafkaServer on this branch")
        return cls()
    return servers.TansuServer() if hasattr(servers, "TansuServer") else servers.KafkaServer()


@dataclass
class Run:
    seconds: float
    max_rss_kb: int
    stderr: str = ""
    cpu_seconds: float = 0.0
    """User plus system time of the process: steadier than wall time on a loaded machine."""


def run(cmd: list[str], *, stdin: Path | None = None, env: dict | None = None, cwd: str | None = None) -> Run:
    """Run one contender, stdout to /dev/null; wall time and peak RSS of that process (os.wait4)."""
    with open(stdin, "rb") if stdin else open(os.devnull, "rb") as source, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=source, stdout=subprocess.DEVNULL, stderr=err, env=env, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        code = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read().decode("utf-8", "replace")
    if code != 0:
        raise RuntimeError(f"{' '.join(cmd[:5])} ... exited {code}: {text[-500:]}")
    global last_cpu
    last_cpu = usage.ru_utime + usage.ru_stime
    return Run(seconds, usage.ru_maxrss, text, last_cpu)


last_cpu = 0.0
"""CPU seconds (user + system, all threads) of the last contender run: steadier than wall
time on a shared machine, where another job's load stretches the wall clock."""


@dataclass
class Results:
    values: dict[str, list[float]] = field(default_factory=dict)

    def add(self, name: str, value: float) -> None:
        self.values.setdefault(name, []).append(value)

    def median(self, name: str) -> float | None:
        values = self.values.get(name)
        return statistics.median(values) if values else None


def make_data(path: Path, count: int) -> None:
    with path.open("w") as f:
        for i in range(count):
            f.write(json.dumps({"id": i, "sku": f"SKU-{i % 997:04d}", "qty": i % 7, "price": round(i * 0.37 % 100, 2), "note": "n" * (18 - len(str(i)) % 3)}) + "\n")


def make_keyed(lines: Path, path: Path) -> None:
    """The same JSON values as envelopes keyed `even` / `odd` by id: half pass either selection."""
    with lines.open() as source, path.open("w") as f:
        for i, line in enumerate(source):
            f.write(json.dumps({"value": line.rstrip("\n"), "key": "even" if i % 2 == 0 else "odd"}) + "\n")


class Topics:
    """Fresh topics on demand (3 partitions), outside the timed part."""

    def __init__(self, bootstrap: str) -> None:
        from confluent_kafka.admin import AdminClient

        self.admin = AdminClient({"bootstrap.servers": bootstrap})  # must outlive the futures
        self.count = 0

    def new(self, prefix: str) -> str:
        from confluent_kafka.admin import NewTopic

        self.count += 1
        name = f"{prefix}-{self.count}"
        for future in self.admin.create_topics([NewTopic(name, 3, 1)]).values():
            future.result(timeout=30)
        return name


BRIDGE_CASES = {
    "tail kafka evrelay raw", "tail redis evrelay raw", "publish kafka evrelay", "publish redis evrelay",
    "bridge kafka->redis N", "bridge kafka->redis 1", "bridge redis->kafka N", "bridge redis->kafka 1",
    "tail kafka 1", "tail redis 1", "publish kafka 1", "publish redis 1",
    "bridge kafka->redis sink process N", "bridge kafka->redis sink process 1",
    "bridge redis->kafka sink process N", "bridge redis->kafka sink process 1",
}
"""What --only-bridge runs: the bridges and their halves, N and 1 each."""
KAFKA_CASES = {
    "publish kafka evrelay", "publish kafka kcat idempotent", "publish kafka evrelay plain", "publish kafka kcat",
    "publish kafka loop plain", "tail kafka evrelay raw", "tail kafka kcat", "tail kafka evrelay json", "tail kafka kcat -J",
    "publish kafka baseline", "publish kafka baseline plain", "tail kafka baseline raw",
    "publish kafka one evrelay", "publish kafka one kcat", "publish kafka one loop", "publish kafka one baseline",
}
"""What --only-kafka runs (with the --baseline contenders when given)."""
only: set[str] | None = None


def alternate(round_number: int, contenders: list[tuple[str, Callable[[], float]]], results: Results) -> None:
    """Run the contenders in order on even rounds, reversed on odd ones."""
    contenders = [c for c in contenders if only is None or c[0] in only]
    for name, measure in contenders if round_number % 2 == 0 else contenders[::-1]:
        results.add(name, measure())
        results.add(f"cpu {name}", last_cpu)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", "-n", type=int, default=300_000)
    parser.add_argument("--repeat", "-r", type=int, default=3)
    parser.add_argument("--kafka", choices=("tansu", "apache"), default="tansu", help="the Kafka broker to run against")
    parser.add_argument("--memory-messages", type=int, default=1_000_000, help="the big runs for the RSS checks")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--only-selection", action="store_true", help="only the bridge --filter/--match-key comparison")
    parser.add_argument("--only-bridge", action="store_true", help="only the bridges' marginal rates and their halves")
    parser.add_argument("--only-kafka", action="store_true", help="only publish kafka: and tail kafka: beside kcat")
    parser.add_argument("--only-nats", action="store_true", help="only the NATS rows: publish and tail against the nats-py loops")
    parser.add_argument("--baseline", metavar="DIR", help="with --only-kafka or --only-nats: also time the evrelay tree in DIR "
                        "(e.g. a `git worktree` of main) in the same alternating rounds: before/after in one run")
    args = parser.parse_args()
    if args.only_nats:
        return only_nats(args)
    global only
    only = BRIDGE_CASES if args.only_bridge else KAFKA_CASES if args.only_kafka else None
    n, rounds = args.messages, args.repeat
    ev = evrelay_command()
    kcat = kcat_command()  # a peer of half the table: its absence is an error, not a skip
    work = Path(tempfile.mkdtemp(prefix="evrelay-bench-"))
    data, one = work / "lines.jsonl", work / "one.jsonl"
    make_data(data, n)
    make_data(one, 1)
    avg = data.stat().st_size / n
    print(f"# {n:,} messages of {avg:.0f} bytes on {args.kafka}, {rounds} rounds, contenders alternating; medians", file=sys.stderr)
    env = dict(os.environ, XDG_DATA_HOME=str(work / "xdg-data"), XDG_CONFIG_HOME=str(work / "xdg-config"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # see the module docstring
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    results = Results()
    groups = iter(range(1_000_000))

    def secs(cmd: list[str], stdin: Path | None = None, environment: dict | None = None) -> float:
        # `python -m` puts the working directory first on sys.path: the baseline runs in its own tree
        return run(cmd, stdin=stdin, env=environment or env, cwd=environment.get("PYTHONPATH") if environment else None).seconds

    base = [sys.executable, "-m", "evrelay"]
    base_env = dict(env, PYTHONPATH=str(Path(args.baseline).resolve())) if args.baseline else None
    baseline = (lambda name, measure: [(name, measure)]) if args.baseline else (lambda name, measure: [])

    with kafka_server(args.kafka) as kafka, RedisServer() as redis_server, NatsServer() as nats_server:
        b = kafka.bootstrap
        redis = f"redis://127.0.0.1:{redis_server.port}/0"
        topics = Topics(b)
        kafka_src = topics.new("src")
        run([*ev, "publish", f"kafka://{b}/{kafka_src}", "-q"], stdin=data, env=env)
        redis_src = "src"
        run([*ev, "publish", f"{redis}/{redis_src}", "-q"], stdin=data, env=env)
        nats = f"nats://127.0.0.1:{nats_server.port}"
        nats_src = "src"
        run([*ev, "publish", f"{nats}/{nats_src}?create=true", "-q"], stdin=data, env=env)
        plain = "?enable.idempotence=false"
        kcat_idempotent = ["-X", "enable.idempotence=true", "-X", "acks=all"]
        streams = iter(range(1_000_000))

        def bridge(source: str, sink: str, count: int, *extra: str) -> Run:
            return run([*ev, "bridge", source, sink, "-g", f"bench-{next(groups)}", "--count", str(count), "-q", *extra], env=env)

        keyed_src = topics.new("keyed")
        keyed = work / "keyed.jsonl"
        make_keyed(data, keyed)
        run([*ev, "publish", f"kafka://{b}/{keyed_src}", "--input", "json", "-q"], stdin=keyed, env=env)
        selections = {"unfiltered": [], "--filter": ["--filter", ".value.id % 2 == 0"], "--match-key": ["--match-key", "even"]}

        def selected_rate(extra: list[str]) -> float:
            """Messages handled (delivered or filtered out) per second while moving: the summary's rate."""
            bridged = run([*ev, "bridge", f"kafka://{b}/{keyed_src}", f"{redis}/sel-{next(streams)}", "-g", f"sel-{next(groups)}", "--count", str(n), *extra], env=env)
            return float(re.search(r"\(([\d,]+) msg/s\)", bridged.stderr).group(1).replace(",", ""))

        for r in range(rounds):
            print(f"# round {r + 1}", file=sys.stderr)
            # a bridge Kafka -> Redis with a selection passing half the messages vs none
            alternate(r, [(f"selection {who}", lambda extra=extra: selected_rate(extra)) for who, extra in selections.items()], results)
            if args.only_selection:
                continue
            alternate(r, [
                ("publish kafka evrelay", lambda: secs([*ev, "publish", f"kafka://{b}/{topics.new('pub')}", "-q"], data)),
                ("publish kafka kcat idempotent", lambda: secs([*kcat, "-b", b, *kcat_idempotent, "-P", "-t", topics.new("pub"), "-l", str(data)])),
                *baseline("publish kafka baseline", lambda: secs([*base, "publish", f"kafka://{b}/{topics.new('pub')}", "-q"], data, base_env)),
            ], results)
            alternate(r, [
                ("publish kafka evrelay plain", lambda: secs([*ev, "publish", f"kafka://{b}/{topics.new('pub')}{plain}", "-q"], data)),
                ("publish kafka kcat", lambda: secs([*kcat, "-b", b, "-P", "-t", topics.new("pub"), "-l", str(data)])),
                ("publish kafka loop plain", lambda: secs([sys.executable, str(KAFKA_PRODUCE), b, topics.new("pub"), str(data), "enable.idempotence=false"])),
                *baseline("publish kafka baseline plain", lambda: secs([*base, "publish", f"kafka://{b}/{topics.new('pub')}{plain}", "-q"], data, base_env)),
            ], results)
            if args.only_kafka:  # the fixed start of a publish, with a broker: one message each
                alternate(r, [
                    ("publish kafka one evrelay", lambda: secs([*ev, "publish", f"kafka://{b}/{topics.new('one')}{plain}", "-q"], one)),
                    ("publish kafka one kcat", lambda: secs([*kcat, "-b", b, "-P", "-t", topics.new("one"), "-l", str(one)])),
                    ("publish kafka one loop", lambda: secs([sys.executable, str(KAFKA_PRODUCE), b, topics.new("one"), str(one), "enable.idempotence=false"])),
                    *baseline("publish kafka one baseline", lambda: secs([*base, "publish", f"kafka://{b}/{topics.new('one')}{plain}", "-q"], one, base_env)),
                ], results)
            alternate(r, [
                ("tail kafka evrelay raw", lambda: secs([*ev, "tail", f"kafka://{b}/{kafka_src}", "--from", "beginning", "-o", "raw"])),
                ("tail kafka kcat", lambda: secs([*kcat, "-b", b, "-C", "-t", kafka_src, "-o", "beginning", "-e", "-q"])),
                ("tail kafka evrelay json", lambda: secs([*ev, "tail", f"kafka://{b}/{kafka_src}", "--from", "beginning", "-o", "json"])),
                ("tail kafka kcat -J", lambda: secs([*kcat, "-b", b, "-C", "-J", "-t", kafka_src, "-o", "beginning", "-e", "-q"])),
                *baseline("tail kafka baseline raw", lambda: secs([*base, "tail", f"kafka://{b}/{kafka_src}", "--from", "beginning", "-o", "raw"], None, base_env)),
            ], results)
            alternate(r, [
                ("tail redis evrelay raw", lambda: secs([*ev, "tail", f"{redis}/{redis_src}", "--from", "beginning", "-o", "raw"])),
                ("tail redis loop", lambda: secs([sys.executable, str(REDIS_XREAD), str(redis_server.port), redis_src])),
                ("tail redis evrelay json", lambda: secs([*ev, "tail", f"{redis}/{redis_src}", "--from", "beginning", "-o", "json"])),
            ], results)
            alternate(r, [
                ("publish redis evrelay", lambda: secs([*ev, "publish", f"{redis}/pub-{next(streams)}", "-q"], data)),
                ("publish redis pipeline", lambda: secs([sys.executable, str(REDIS_PIPELINE), str(redis_server.port), f"pub-{next(streams)}", str(data)])),
            ], results)
            alternate(r, [
                ("publish nats evrelay", lambda: secs([*ev, "publish", f"{nats}/pub{next(streams)}?create=true", "-q"], data)),
                ("publish nats loop", lambda: secs([sys.executable, str(NATS_PUBLISH), str(nats_server.port), f"pub{next(streams)}", str(data)])),
            ], results)
            alternate(r, [
                ("tail nats evrelay raw", lambda: secs([*ev, "tail", f"{nats}/{nats_src}", "--from", "beginning", "-o", "raw"])),
                ("tail nats loop", lambda: secs([sys.executable, str(NATS_TAIL), str(nats_server.port), nats_src])),
                ("tail nats evrelay json", lambda: secs([*ev, "tail", f"{nats}/{nats_src}", "--from", "beginning", "-o", "json"])),
            ], results)
            # marginal cost: a run of 1 beside a run of N, for the bridges and their halves
            alternate(r, [
                ("bridge kafka->redis N", lambda: bridge(f"kafka://{b}/{kafka_src}", f"{redis}/br-{next(streams)}", n).seconds),
                ("bridge kafka->redis 1", lambda: bridge(f"kafka://{b}/{kafka_src}", f"{redis}/br-{next(streams)}", 1).seconds),
                ("bridge redis->kafka N", lambda: bridge(f"{redis}/{redis_src}", f"kafka://{b}/{topics.new('br')}", n).seconds),
                ("bridge redis->kafka 1", lambda: bridge(f"{redis}/{redis_src}", f"kafka://{b}/{topics.new('br')}", 1).seconds),
                # the same with the sink written from a child process (`--sink-process`, issue 16's third round)
                ("bridge kafka->redis sink process N", lambda: bridge(f"kafka://{b}/{kafka_src}", f"{redis}/br-{next(streams)}", n, "--sink-process").seconds),
                ("bridge kafka->redis sink process 1", lambda: bridge(f"kafka://{b}/{kafka_src}", f"{redis}/br-{next(streams)}", 1, "--sink-process").seconds),
                ("bridge redis->kafka sink process N", lambda: bridge(f"{redis}/{redis_src}", f"kafka://{b}/{topics.new('br')}", n, "--sink-process").seconds),
                ("bridge redis->kafka sink process 1", lambda: bridge(f"{redis}/{redis_src}", f"kafka://{b}/{topics.new('br')}", 1, "--sink-process").seconds),
                ("tail kafka 1", lambda: secs([*ev, "tail", f"kafka://{b}/{kafka_src}", "--from", "beginning", "-n", "1", "-o", "raw"])),
                ("tail redis 1", lambda: secs([*ev, "tail", f"{redis}/{redis_src}", "--from", "beginning", "-n", "1", "-o", "raw"])),
                ("publish kafka 1", lambda: secs([*ev, "publish", f"kafka://{b}/{topics.new('pub')}", "-q"], one)),
                ("publish redis 1", lambda: secs([*ev, "publish", f"{redis}/pub-{next(streams)}", "-q"], one)),
            ], results)

        if args.only_selection:
            startups: list[tuple[str, Callable[[], float]]] = []
        else:
            startups = [("bridge start-up", lambda: bridge(f"kafka://{b}/{kafka_src}", f"{redis}/start-{next(streams)}", 1).seconds)]
        if args.kafka == "apache" and not args.only_selection:  # KIP-848's protocol needs a Kafka 4 broker (tansu never assigns under it)
            startups.append(("bridge start-up consumer protocol", lambda: bridge(f"kafka://{b}/{kafka_src}?group.protocol=consumer", f"{redis}/start-{next(streams)}", 1).seconds))
        for r in range(max(rounds, 3)):
            alternate(r, startups, results)
        for r in range(0 if args.only_selection else 20):
            alternate(r, [
                ("python -c pass", lambda: secs([sys.executable, "-c", "pass"])),
                ("evrelay --version", lambda: secs([*ev, "--version"])),
                ("evrelay tail --help", lambda: secs([*ev, "tail", "--help"])),
            ], results)

        big_label = f"{args.memory_messages:,}"
        if not args.skip_memory and not args.only_selection and not args.only_bridge and not args.only_kafka:
            big, small = work / "big.jsonl", work / "small.jsonl"
            make_data(big, args.memory_messages)
            make_data(small, 10_000)
            sources = {}
            for path, label in ((big, big_label), (small, "10,000")):
                sources[label] = topics.new("mem")
                run([*ev, "publish", f"kafka://{b}/{sources[label]}", "-q"], stdin=path, env=env)
            for _ in range(2):
                for label, count in ((big_label, args.memory_messages), ("10,000", 10_000)):
                    tail = run([*ev, "tail", f"kafka://{b}/{sources[label]}", "--from", "beginning", "-o", "json"], env=env)
                    results.add(f"tail RSS {label}", tail.max_rss_kb / 1024)
                    moved = bridge(f"kafka://{b}/{sources[label]}", f"{redis}/mem-{next(streams)}", count)
                    results.add(f"bridge RSS {label}", moved.max_rss_kb / 1024)
    shutil.rmtree(work, ignore_errors=True)
    report = render(results, n, avg, rounds, args.kafka, big_label)
    print(report)
    out = REPO / "bench-results"
    out.mkdir(exist_ok=True)
    (out / f"latest-{args.kafka}.md").write_text(report)
    (out / f"latest-{args.kafka}.json").write_text(json.dumps(results.values, indent=1))
    return 0


def only_nats(args: argparse.Namespace) -> int:
    """The NATS rows alone, optionally beside an older evrelay (`--baseline DIR`) run in
    the same alternating rounds: what working on the NATS backend needs, in a minute."""
    n, rounds = args.messages, args.repeat
    ev = evrelay_command()
    work = Path(tempfile.mkdtemp(prefix="evrelay-bench-"))
    data = work / "lines.jsonl"
    make_data(data, n)
    avg = data.stat().st_size / n
    env = dict(os.environ, XDG_DATA_HOME=str(work / "xdg-data"), XDG_CONFIG_HOME=str(work / "xdg-config"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # see the module docstring
    env["PYTHONPYCACHEPREFIX"] = str(work / "pycache")
    versions = {"evrelay": (ev, env)}
    if args.baseline:
        # The `evrelay` script, as for evrelay itself: `python -m evrelay` would put the
        # current directory (a checkout's evrelay/) before PYTHONPATH.
        if ev[0] == sys.executable:
            raise SystemExit("--baseline needs the evrelay script (pip install -e .)")
        versions["baseline"] = (ev, dict(env, PYTHONPATH=os.pathsep.join(filter(None, [args.baseline, env.get("PYTHONPATH")]))))
    results, cpu = Results(), Results()
    streams = iter(range(1_000_000))
    with NatsServer() as nats_server:
        nats = f"nats://127.0.0.1:{nats_server.port}"
        run([*ev, "publish", f"{nats}/src?create=true", "-q"], stdin=data, env=env)
        for cmd, environment in versions.values():  # compiles each version's bytecode before the timed runs
            run([*cmd, "tail", f"{nats}/src", "-n", "1", "-o", "raw"], env=environment)

        def timed(name: str, cmd: list[str], environment: dict[str, str], stdin: Path | None = None) -> float:
            done = run(cmd, stdin=stdin, env=environment)
            cpu.add(name, done.cpu_seconds)
            return done.seconds

        def contender(name: str, cmd: list[str], environment: dict[str, str], stdin: Path | None = None) -> tuple[str, Callable[[], float]]:
            return name, lambda: timed(name, cmd, environment, stdin)

        for r in range(rounds):
            print(f"# round {r + 1}", file=sys.stderr)
            contenders = [
                # each publish gets a fresh stream: the name is drawn when the contender runs
                ("publish nats loop", lambda: timed("publish nats loop", [sys.executable, str(NATS_PUBLISH), str(nats_server.port), f"pub{next(streams)}", str(data)], env)),
                contender("tail nats loop", [sys.executable, str(NATS_TAIL), str(nats_server.port), "src"], env),
            ]
            for who, (cmd, environment) in versions.items():
                contenders += [
                    (f"publish nats {who}", lambda who=who, cmd=cmd, e=environment: timed(f"publish nats {who}", [*cmd, "publish", f"{nats}/pub{next(streams)}?create=true", "-q"], e, data)),
                    contender(f"tail nats {who} raw", [*cmd, "tail", f"{nats}/src", "--from", "beginning", "-o", "raw"], environment),
                    contender(f"tail nats {who} json", [*cmd, "tail", f"{nats}/src", "--from", "beginning", "-o", "json"], environment),
                ]
            alternate(r, contenders, results)
    shutil.rmtree(work, ignore_errors=True)
    lines = [
        f"{n:,} messages of ~{avg:.0f} bytes, NATS only; medians of {rounds} alternating rounds; one run, one machine; "
        "ratios are evrelay / peer; wall time, then CPU time (user + system: steadier on a loaded machine).",
        "",
        "| measure | " + " | ".join(versions) + " | peer | ratio | target | |",
        "| --- | " + " | ".join("---" for _ in versions) + " | --- | --- | --- | --- |",
    ]
    for figures, unit in ((results, "wall"), (cpu, "CPU")):
        m = figures.median
        for case, measure, peer, peer_label in (
            ("publish", "`publish nats:`", "publish nats loop", "nats-py publish_async loop"),
            ("tail raw", "`tail nats: -o raw`", "tail nats loop", "nats-py ordered consumer"),
            ("tail json", "`tail nats: -o json`", "tail nats loop", "nats-py ordered consumer"),
        ):
            verb, _, mode = case.partition(" ")
            names = {who: f"{verb} nats {who}" + (f" {mode}" if mode else "") for who in versions}
            shown = " | ".join(f"{m(name):.2f} s ({m(name) / m(peer):.2f}x)" for name in names.values())
            ratio = m(names["evrelay"]) / m(peer)
            lines.append(f"| {measure}, {unit} | {shown} | {peer_label} {m(peer):.2f} s | {ratio:.2f}x | ≤ 1.5x | {'holds' if ratio <= 1.5 else 'MISSED'} |")
    print("\n".join(lines) + "\n")
    return 0


def render(results: Results, n: int, avg: float, rounds: int, flavour: str, big_label: str) -> str:
    m = results.median
    rows: list[tuple[str, str, str, str, str, str]] = []

    def row(measure: str, ours: str, peer: str, ratio: float | None, target: str, limit: float, higher_is_better: bool = False) -> None:
        if ratio is None:
            rows.append((measure, ours, peer, "n/a", target, "not measured"))
            return
        ok = ratio >= limit if higher_is_better else ratio <= limit
        rows.append((measure, ours, peer, f"{ratio:.2f}x", target, "holds" if ok else "MISSED"))

    def timed(measure: str, ours: str, peer: str, peer_label: str, limit: float) -> None:
        a, p = m(ours), m(peer)
        if p is None:  # --only-bridge runs evrelay's halves without their peers
            return
        if "kafka" in ours:  # CPU beside wall time: where a ratio moves with the machine's load, this does less
            row(measure, f"{a:.2f} s (CPU {m('cpu ' + ours):.2f} s)", f"{peer_label} {p:.2f} s (CPU {m('cpu ' + peer):.2f} s)", a / p, f"≤ {limit}x", limit)
            return
        row(measure, f"{a:.2f} s", f"{peer_label} {p:.2f} s", a / p, f"≤ {limit}x", limit)

    def rate(name: str) -> float | None:
        """(N - 1) messages over the wall time of a run of N minus a run of 1."""
        full, single = m(f"{name} N"), m(f"{name} 1")
        if full is None or single is None or full <= single:
            return None
        return (n - 1) / (full - single)

    def table() -> str:
        lines = [
            f"{n:,} messages of ~{avg:.0f} bytes, Kafka broker: {flavour}; medians of {rounds} alternating rounds "
            "(start-up: 20); one run, one machine; ratios are evrelay / peer (rates: evrelay / peer).",
            "",
            "| measure | evrelay | peer | ratio | target | |",
            "| --- | --- | --- | --- | --- | --- |",
            *(f"| {' | '.join(r)} |" for r in rows),
        ]
        return "\n".join(lines) + "\n"

    plain, jq_rate, glob_rate = (m(f"selection {who}") for who in ("unfiltered", "--filter", "--match-key"))
    if plain and jq_rate and glob_rate:
        # messages handled (delivered or filtered out) per second while moving
        row("bridge kafka->redis, `--filter` passing half", f"{jq_rate:,.0f} msg/s", f"unfiltered {plain:,.0f} msg/s", jq_rate / plain, "≥ 0.5x", 0.5, higher_is_better=True)
        row("bridge kafka->redis, `--match-key` passing half", f"{glob_rate:,.0f} msg/s", f"unfiltered {plain:,.0f} msg/s", glob_rate / plain, "≥ 0.9x", 0.9, higher_is_better=True)
    if m("publish kafka evrelay") is None:  # --only-selection
        return table()
    timed("`publish kafka:` (idempotent, acks=all)", "publish kafka evrelay", "publish kafka kcat idempotent", "kcat -X enable.idempotence=true", 1.0)
    timed("`publish kafka:?enable.idempotence=false`", "publish kafka evrelay plain", "publish kafka kcat", "plain kcat", 1.3)
    floor = m("publish kafka loop plain")
    if floor is not None:  # what Python on confluent-kafka reaches: context for the row above, no target
        ours, kcat_plain = m("publish kafka evrelay plain"), m("publish kafka kcat")
        floor_cpu, kcat_cpu = m("cpu publish kafka loop plain"), m("cpu publish kafka kcat")
        # The floor against the target's own peer: above 1.3x, no confluent-kafka publisher meets it.
        rows.append(("the Python floor (confluent-kafka produce() loop) vs plain kcat", f"{floor:.2f} s (CPU {floor_cpu:.2f} s)",
                     f"plain kcat {kcat_plain:.2f} s (CPU {kcat_cpu:.2f} s)", f"{floor / kcat_plain:.2f}x (CPU {floor_cpu / kcat_cpu:.2f}x)",
                     "(floor: no target)", "-"))
        rows.append(("`publish kafka:?enable.idempotence=false` vs the Python floor", f"{ours:.2f} s (CPU {m('cpu publish kafka evrelay plain'):.2f} s)",
                     f"confluent-kafka produce() loop {floor:.2f} s (CPU {floor_cpu:.2f} s)",
                     f"{ours / floor:.2f}x (CPU {m('cpu publish kafka evrelay plain') / floor_cpu:.2f}x)", "(floor: no target)", "-"))
    one = m("publish kafka one evrelay")
    if one is not None:  # --only-kafka: the fixed start of a publish (one message), no target of its own
        def ms(name: str) -> str:
            return f"{m(name) * 1000:.0f} ms (CPU {m('cpu ' + name) * 1000:.0f} ms)"

        rows.append(("`publish kafka:?enable.idempotence=false` of one message (the fixed start)", ms("publish kafka one evrelay"),
                     f"plain kcat {ms('publish kafka one kcat')}; the Python floor {ms('publish kafka one loop')}",
                     f"CPU {m('cpu publish kafka one evrelay') / m('cpu publish kafka one loop'):.2f}x the floor's", "(no target)", "-"))
        if m("publish kafka one baseline") is not None:
            rows.append(("`publish kafka:?enable.idempotence=false` of one message, this tree vs --baseline", ms("publish kafka one evrelay"),
                         f"baseline {ms('publish kafka one baseline')}",
                         f"CPU {m('cpu publish kafka one evrelay') / m('cpu publish kafka one baseline'):.2f}x", "(before/after)", "-"))
    timed("`tail kafka: -o raw`", "tail kafka evrelay raw", "tail kafka kcat", "kcat", 1.0)
    timed("`tail kafka: -o json`", "tail kafka evrelay json", "tail kafka kcat -J", "kcat -J", 1.3)
    for measure, ours, theirs in (("`publish kafka:` (idempotent)", "publish kafka evrelay", "publish kafka baseline"),
                                  ("`publish kafka:?enable.idempotence=false`", "publish kafka evrelay plain", "publish kafka baseline plain"),
                                  ("`tail kafka: -o raw`", "tail kafka evrelay raw", "tail kafka baseline raw")):
        if m(theirs) is not None:  # --baseline: this tree against another, no target
            cpu, their_cpu = m(f"cpu {ours}"), m(f"cpu {theirs}")
            rows.append((f"{measure}, this tree vs --baseline", f"{m(ours):.2f} s (CPU {cpu:.2f} s)", f"baseline {m(theirs):.2f} s (CPU {their_cpu:.2f} s)",
                         f"{m(ours) / m(theirs):.2f}x (CPU {cpu / their_cpu:.2f}x)", "(before/after)", "-"))
    if m("tail kafka 1") is None and m("tail redis evrelay raw") is None:  # --only-kafka
        return table()
    timed("`tail redis: -o raw`", "tail redis evrelay raw", "tail redis loop", "redis-py XREAD loop", 1.0)
    timed("`tail redis: -o json`", "tail redis evrelay json", "tail redis loop", "redis-py XREAD loop", 1.3)
    timed("`publish redis:`", "publish redis evrelay", "publish redis pipeline", "redis-py pipeline", 0.8)
    def half(full: str, single: str) -> float:
        """A half's marginal rate; infinite (never the slower half) when its run of 1 took
        as long as its run of N (start-up noise on a loaded machine: seen with publish kafka)."""
        spent = m(full) - m(single)
        return (n - 1) / spent if spent > 0 else float("inf")

    halves = {
        "tail kafka": half("tail kafka evrelay raw", "tail kafka 1"),
        "tail redis": half("tail redis evrelay raw", "tail redis 1"),
        "publish kafka": half("publish kafka evrelay", "publish kafka 1"),
        "publish redis": half("publish redis evrelay", "publish redis 1"),
    }
    pairs = (("kafka->redis", ("tail kafka", "publish redis")), ("redis->kafka", ("tail redis", "publish kafka")))
    for name, (source, sink) in [*pairs, *((f"{pair} sink process", halves_of) for pair, halves_of in pairs)]:
        ours = rate(f"bridge {name}")
        slower = min(halves[source], halves[sink])
        slower_name = source if halves[source] <= halves[sink] else sink
        row(
            f"bridge {name}, marginal rate",
            f"{ours:,.0f} msg/s" if ours else "n/a",
            f"{slower_name} {slower:,.0f} msg/s (the slower half; {source} {halves[source]:,.0f}, {sink} {halves[sink]:,.0f})",
            ours / slower if ours and slower != float("inf") else None,
            "≥ 0.8x",
            0.8,
            higher_is_better=True,
        )
    start = m("bridge start-up")
    if start is None:  # --only-bridge
        return table()
    row(f"bridge start-up, `-n 1`, fresh group ({flavour})", f"{start:.2f} s", "1.5 s target (absolute)", start / 1.5, "≤ 1.5 s" + (" (on Apache Kafka)" if flavour != "apache" else ""), 1.0)
    kip848 = m("bridge start-up consumer protocol")
    if kip848 is not None:
        row("bridge start-up, `-n 1`, fresh group, `group.protocol=consumer`", f"{kip848:.2f} s", "1.5 s target (absolute)", kip848 / 1.5, "≤ 1.5 s", 1.0)
    py = m("python -c pass")
    row("`evrelay --version`", f"{m('evrelay --version') * 1000:.0f} ms", f"python -c pass {py * 1000:.0f} ms", m("evrelay --version") / py, "≤ 1.5x", 1.5)
    row("`evrelay tail --help`", f"{m('evrelay tail --help') * 1000:.0f} ms", f"python -c pass {py * 1000:.0f} ms", m("evrelay tail --help") / py, "≤ 3x", 3.0)
    for what in ("tail", "bridge"):
        big, small = m(f"{what} RSS {big_label}"), m(f"{what} RSS 10,000")
        if big and small:
            row(f"{what} of {big_label} messages, peak RSS", f"{big:.0f} MB", f"{what} of 10,000: {small:.0f} MB", big / small, "≤ 1.3x", 1.3)
        else:
            row(f"{what} of {big_label} messages, peak RSS", "-", "-", None, "≤ 1.3x", 1.3)
    timed("`publish nats:`", "publish nats evrelay", "publish nats loop", "nats-py publish_async loop", 1.5)
    timed("`tail nats: -o raw`", "tail nats evrelay raw", "tail nats loop", "nats-py ordered consumer", 1.5)
    timed("`tail nats: -o json`", "tail nats evrelay json", "tail nats loop", "nats-py ordered consumer", 1.5)
    return table()


if __name__ == "__main__":
    raise SystemExit(main())
