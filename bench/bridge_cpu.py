"""CPU per message of each bridge, in each of its processes, beside its two halves.

    python bench/bridge_cpu.py                  # tansu, 300,000 messages, 4 rounds
    python bench/bridge_cpu.py --kafka apache -n 300000 -r 4

Wall-time rates on a machine shared with other jobs swing 2-3x between runs; CPU time
(user + system, librdkafka's threads included) swings far less, so this is the steady
measure of where the bridge stands. For each contender: CPU of a run of N minus a run of
1, over N - 1 (start-up and the group join do not count), medians of alternating rounds.
A bridge writing from a second process (`--sink-process`, opt-in:
evrelay/subprocess_producer.py) reports its sink process's CPU with -v; the bridge
process's own CPU is the rest. With
two free cores the two run side by side, so the busier one sets the pace: its
microseconds per message against the slower half's give the ratio the bridge can reach
there (`critical path` below).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import run as bench  # bench/run.py: servers, data, topics

SINK_CPU = re.compile(r"used ([\d.]+) s of CPU")


def cpu_run(cmd: list[str], stdin: Path | None, env: dict) -> tuple[float, float]:
    """(CPU of the whole command, CPU of its sink process) in seconds."""
    with open(stdin or os.devnull, "rb") as source, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdin=source, stdout=subprocess.DEVNULL, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        err.seek(0)
        text = err.read().decode("utf-8", "replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(cmd[:5])} ... failed: {text[-500:]}")
    found = SINK_CPU.search(text)
    return usage.ru_utime + usage.ru_stime, float(found.group(1)) if found else 0.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", "-n", type=int, default=300_000)
    parser.add_argument("--repeat", "-r", type=int, default=4)
    parser.add_argument("--kafka", choices=("tansu", "apache"), default="tansu")
    args = parser.parse_args()
    n = args.messages
    ev = bench.evrelay_command()
    work = Path(tempfile.mkdtemp(prefix="evrelay-bridge-cpu-"))
    data, one = work / "lines.jsonl", work / "one.jsonl"
    bench.make_data(data, n)
    bench.make_data(one, 1)
    env = dict(os.environ, XDG_DATA_HOME=str(work / "data"), XDG_CONFIG_HOME=str(work / "config"), PYTHONPYCACHEPREFIX=str(work / "pycache"))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    totals: dict[str, list[float]] = {}
    sinks: dict[str, list[float]] = {}
    with bench.kafka_server(args.kafka) as kafka, bench.RedisServer() as redis_server:
        b = kafka.bootstrap
        redis = f"redis://127.0.0.1:{redis_server.port}/0"
        topics = bench.Topics(b)
        kafka_src = topics.new("src")
        cpu_run([*ev, "publish", f"kafka://{b}/{kafka_src}", "-q"], data, env)
        cpu_run([*ev, "publish", f"{redis}/src", "-q"], data, env)
        counter = iter(range(1_000_000))

        def bridge(source: str, sink: str, count: int, *extra: str) -> Callable[[], tuple[float, float]]:
            return lambda: cpu_run([*ev, "bridge", source, sink, "-g", f"cpu-{next(counter)}", "-n", str(count), "-v", *extra], None, env)

        def command(*cmd: str, stdin: Path | None = None) -> Callable[[], tuple[float, float]]:
            return lambda: cpu_run([*ev, *cmd], stdin, env)

        contenders: dict[str, Callable[[], Callable[[], tuple[float, float]]]] = {}
        for label, source, sink in (
            ("kafka->redis", f"kafka://{b}/{kafka_src}", lambda: f"{redis}/out-{next(counter)}"),
            ("redis->kafka", f"{redis}/src", lambda: f"kafka://{b}/{topics.new('out')}"),
        ):
            for mode, extra in (("two processes", ("--sink-process",)), ("in-process", ())):
                for count, suffix in ((n, "N"), (1, "1")):
                    contenders[f"{label} {mode} {suffix}"] = (lambda s=source, k=sink, c=count, e=extra: bridge(s, k(), c, *e))
        for count, suffix in ((n, "N"), (1, "1")):
            contenders[f"tail kafka {suffix}"] = lambda c=count: command("tail", f"kafka://{b}/{kafka_src}", "--from", "beginning", "-n", str(c), "-o", "raw")
            contenders[f"tail redis {suffix}"] = lambda c=count: command("tail", f"{redis}/src", "--from", "beginning", "-n", str(c), "-o", "raw")
            contenders[f"publish kafka {suffix}"] = lambda c=count: command("publish", f"kafka://{b}/{topics.new('pub')}", "-q", stdin=data if c == n else one)
            contenders[f"publish redis {suffix}"] = lambda c=count: command("publish", f"{redis}/pub-{next(counter)}", "-q", stdin=data if c == n else one)
        names = list(contenders)
        for r in range(args.repeat):
            print(f"# round {r + 1}", file=sys.stderr)
            for name in names if r % 2 == 0 else names[::-1]:
                total, sink = contenders[name]()()
                totals.setdefault(name, []).append(total)
                sinks.setdefault(name, []).append(sink)

    def per_message(name: str, values: dict[str, list[float]]) -> float:
        return (statistics.median(values[f"{name} N"]) - statistics.median(values[f"{name} 1"])) / (n - 1) * 1e6

    halves = {name: per_message(name, totals) for name in ("tail kafka", "tail redis", "publish kafka", "publish redis")}
    print(f"\nCPU per message (us), {n:,} messages on {args.kafka}, medians of {args.repeat} alternating rounds, run of N minus run of 1\n")
    print("| contender | bridge process | sink process | both | critical path | slower half | ratio |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, value in halves.items():
        print(f"| {name} | {value:.2f} | | | | | |")
    for label, (source, sink) in (("kafka->redis", ("tail kafka", "publish redis")), ("redis->kafka", ("tail redis", "publish kafka"))):
        slower_name = max((source, sink), key=halves.__getitem__)
        slower = halves[slower_name]
        for mode in ("in-process", "two processes"):
            both = per_message(f"{label} {mode}", totals)
            child = per_message(f"{label} {mode}", sinks)
            parent = both - child
            critical = max(parent, child)
            # A short run can cost no more CPU than a run of 1 at the clock's resolution.
            ratio = f"{slower / critical:.2f}x" if critical > 0 else "n/a (too few messages to measure)"
            print(f"| bridge {label}, {mode} | {parent:.2f} | {child:.2f} | {both:.2f} | {critical:.2f} | {slower_name} {slower:.2f} | {ratio} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
