"""Each bridge beside its floor: a hand-written Python loop doing the same job with no model.

    python bench/bridge_floor.py                        # tansu, 300,000 messages, 3 rounds, window 1000
    python bench/bridge_floor.py -n 300000 -r 5 --window 5000 --kafka apache

The question it answers: can a bridge in one Python process reach 0.8x the slower of its
two halves (issue 16's target) at all? The floor loops (bench/kafka_redis_floor.py,
bench/redis_kafka_floor.py) read as a consumer group, write what evrelay's bridge writes
(the value, the `evrelay-source` header, Kafka: the source timestamp), and ack a window
at its source only once the sink has confirmed it, pipelined as the relay is; they build
no Message, handle no error and print nothing. If a floor misses the target, no change
to evrelay's relay can meet it: the cost is in the client libraries and the round trips.

For every contender: the CPU time (user + system, all threads) and the wall time of a run
of N minus a run of 1 (start-up and the group join do not count), medians of alternating
rounds, beside the slower half: `tail -o raw` of the source or `publish` into the sink,
whichever costs more. Every sink is checked to hold N messages after the first round.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import run as bench  # bench/run.py: servers, data, topics  # noqa: E402


def measure(cmd: list[str], stdin: Path | None, env: dict) -> tuple[float, float]:
    """(CPU seconds, wall seconds) of one contender run as its own process."""
    with open(stdin or os.devnull, "rb") as source, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=source, stdout=subprocess.DEVNULL, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - started
        if os.waitstatus_to_exitcode(status) != 0:
            err.seek(0)
            raise RuntimeError(f"{' '.join(map(str, cmd[:6]))} ... failed: {err.read().decode('utf-8', 'replace')[-800:]}")
    return usage.ru_utime + usage.ru_stime, wall


def kafka_count(bootstrap: str, topic: str) -> int:
    """Messages in a topic, read to the end of every partition (tansu's watermarks lag)."""
    from confluent_kafka.cimpl import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": bootstrap, "group.id": "bench-count", "enable.partition.eof": True, "enable.auto.commit": False})
    partitions = list(consumer.list_topics(topic, timeout=10).topics[topic].partitions)
    consumer.assign([TopicPartition(topic, p, -2) for p in partitions])
    seen, ended, deadline = 0, set(), time.monotonic() + 60
    while len(ended) < len(partitions) and time.monotonic() < deadline:
        for record in consumer.consume(10000, 0.5):
            if record.error() is None:
                seen += 1
            else:
                ended.add(record.partition())
    consumer.close()
    return seen


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", "-n", type=int, default=300_000)
    parser.add_argument("--repeat", "-r", type=int, default=3)
    parser.add_argument("--window", type=int, default=1000, help="the bridge's --window, and the floors' (default 1000, the bridge's default)")
    parser.add_argument("--kafka", choices=("tansu", "apache"), default="tansu")
    args = parser.parse_args()
    n, window = args.messages, str(args.window)
    ev = bench.evrelay_command()
    work = Path(tempfile.mkdtemp(prefix="evrelay-bridge-floor-"))
    data, one = work / "lines.jsonl", work / "one.jsonl"
    bench.make_data(data, n)
    bench.make_data(one, 1)
    env = dict(os.environ, XDG_DATA_HOME=str(work / "data"), XDG_CONFIG_HOME=str(work / "config"), PYTHONPYCACHEPREFIX=str(work / "pycache"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    python = sys.executable
    results: dict[str, list[tuple[float, float]]] = {}
    loads = []
    with bench.kafka_server(args.kafka) as kafka, bench.RedisServer() as redis_server:
        import redis as redis_py

        b, port = kafka.bootstrap, redis_server.port
        redis_url = f"redis://127.0.0.1:{port}/0"
        rclient = redis_py.Redis(port=port)
        topics = bench.Topics(b)
        kafka_src = topics.new("src")
        measure([*ev, "publish", f"kafka://{b}/{kafka_src}", "-q"], data, env)
        measure([*ev, "publish", f"{redis_url}/src", "-q"], data, env)
        counter = iter(range(1_000_000))
        sinks: dict[str, tuple[str, str]] = {}
        """Contender -> (kind, name) of the sink its last run wrote, checked after round 1."""

        def into_redis(name: str, make: Callable[[str], list[str]], stdin: Path | None = None) -> Callable[[], tuple[float, float]]:
            def go() -> tuple[float, float]:
                stream = f"out-{next(counter)}"
                sinks[name] = ("redis", stream)
                return measure(make(stream), stdin, env)
            return go

        def into_kafka(name: str, make: Callable[[str], list[str]], stdin: Path | None = None) -> Callable[[], tuple[float, float]]:
            def go() -> tuple[float, float]:
                topic = topics.new("out")
                sinks[name] = ("kafka", topic)
                return measure(make(topic), stdin, env)
            return go

        contenders: dict[str, Callable[[], tuple[float, float]]] = {}
        for count, suffix in ((n, "N"), (1, "1")):
            c = str(count)

            def add(name: str, fn: Callable[[str], Callable[[], tuple[float, float]]], suffix: str = suffix) -> None:
                contenders[f"{name} {suffix}"] = fn(f"{name} {suffix}")

            add("kafka->redis floor", lambda k, c=c: into_redis(k, lambda s: [python, str(HERE / "kafka_redis_floor.py"), b, kafka_src, f"g{next(counter)}", str(port), s, c, window]))
            add("kafka->redis bridge", lambda k, c=c: into_redis(k, lambda s: [*ev, "bridge", f"kafka://{b}/{kafka_src}", f"{redis_url}/{s}", "-g", f"g{next(counter)}", "-n", c, "--window", window, "-q"]))
            add("redis->kafka floor", lambda k, c=c: into_kafka(k, lambda t: [python, str(HERE / "redis_kafka_floor.py"), str(port), "src", f"g{next(counter)}", b, t, c, window]))
            add("redis->kafka bridge", lambda k, c=c: into_kafka(k, lambda t: [*ev, "bridge", f"{redis_url}/src", f"kafka://{b}/{t}", "-g", f"g{next(counter)}", "-n", c, "--window", window, "-q"]))
            add("tail kafka", lambda k, c=c: lambda: measure([*ev, "tail", f"kafka://{b}/{kafka_src}", "--from", "beginning", "-n", c, "-o", "raw"], None, env))
            add("tail redis", lambda k, c=c: lambda: measure([*ev, "tail", f"{redis_url}/src", "--from", "beginning", "-n", c, "-o", "raw"], None, env))
            stdin = data if count == n else one
            add("publish redis", lambda k, stdin=stdin: into_redis(k, lambda s: [*ev, "publish", f"{redis_url}/{s}", "-q"], stdin))
            add("publish kafka", lambda k, stdin=stdin: into_kafka(k, lambda t: [*ev, "publish", f"kafka://{b}/{t}", "-q"], stdin))
        names = list(contenders)
        for r in range(args.repeat):
            print(f"# round {r + 1}", file=sys.stderr)
            for name in names if r % 2 == 0 else names[::-1]:
                results.setdefault(name, []).append(contenders[name]())
            loads.append(os.getloadavg()[0])
            if r == 0:  # every contender moved everything (a floor that drops messages measures nothing)
                for name, (kind, where) in sinks.items():
                    want = n if name.endswith(" N") else 1
                    got = rclient.xlen(where) if kind == "redis" else kafka_count(b, where)
                    if got != want:
                        raise SystemExit(f"{name}: its sink {where} holds {got} messages, not {want}")

    def marginal(name: str) -> tuple[float, float]:
        """(CPU us per message, wall msg/s) of a run of N minus a run of 1."""
        cpu = statistics.median(x[0] for x in results[f"{name} N"]) - statistics.median(x[0] for x in results[f"{name} 1"])
        wall = statistics.median(x[1] for x in results[f"{name} N"]) - statistics.median(x[1] for x in results[f"{name} 1"])
        return cpu / (n - 1) * 1e6, (n - 1) / wall if wall > 0 else 0.0

    print(f"\n{n:,} messages of ~89 bytes on {args.kafka}, window {args.window:,}, medians of {args.repeat} alternating rounds, "
          f"run of N minus run of 1; load average {min(loads):.1f}-{max(loads):.1f}\n")
    print("| contender | CPU us/msg | ratio to slower half (CPU) | wall msg/s | ratio to slower half (wall) |")
    print("| --- | --- | --- | --- | --- |")
    for label, source, sink in (("kafka->redis", "tail kafka", "publish redis"), ("redis->kafka", "tail redis", "publish kafka")):
        halves = {half: marginal(half) for half in (source, sink)}
        slow_cpu = max(halves, key=lambda h: halves[h][0])
        slow_wall = min(halves, key=lambda h: halves[h][1] or float("inf"))
        for half, (cpu, rate) in halves.items():
            print(f"| {half} | {cpu:.2f} | | {rate:,.0f} | |")
        for who in ("floor", "bridge"):
            cpu, rate = marginal(f"{label} {who}")
            cpu_ratio = f"{halves[slow_cpu][0] / cpu:.2f}x ({slow_cpu})" if cpu > 0 else "n/a (too few messages)"
            wall_ratio = f"{rate / halves[slow_wall][1]:.2f}x ({slow_wall})" if rate > 0 and halves[slow_wall][1] > 0 else "n/a (too few messages)"
            print(f"| {label} {who} | {cpu:.2f} | {cpu_ratio} | {rate:,.0f} | {wall_ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
