"""evrelay side by side with kcat, redis-py and redis-benchmark, in one run.

    python bench/run.py                      # N = 300,000 messages of ~90 bytes, 5 rounds
    python bench/run.py --messages 1000000 --repeat 3

Starts its own tansu (Kafka protocol) and redis-server on free ports, as the tests do,
generates its data, and measures each contender as a separate process. The machine may
be shared and noisy, so contenders alternate round by round and medians are compared as
ratios measured in the same run. Prints a Markdown table (also saved under
bench-results/) and exits 0; a target missed is reported, not an error.
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
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.servers import RedisServer, ServerUnavailable, kcat_command  # noqa: E402
from tests.servers import TansuServer as KafkaServer  # noqa: E402 - the published figures are on tansu

REDIS_LOOP = REPO / "bench" / "redis_pipeline_loop.py"


def evrelay_command() -> list[str]:
    found = shutil.which("evrelay")
    return [found] if found else [sys.executable, "-m", "evrelay"]


@dataclass
class Run:
    seconds: float
    max_rss_kb: int
    stderr: str = ""


def run(cmd: list[str], *, stdin: Path | None = None, stdout_null: bool = True, env: dict | None = None) -> Run:
    """Run one contender; wall time and peak RSS of that process alone (os.wait4)."""
    with open(stdin, "rb") if stdin else open(os.devnull, "rb") as source, tempfile.TemporaryFile() as err:
        started = time.perf_counter()
        proc = subprocess.Popen(cmd, stdin=source, stdout=subprocess.DEVNULL if stdout_null else None, stderr=err, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - started
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        text = err.read().decode("utf-8", "replace")
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:4])} ... exited {proc.returncode}: {text[-500:]}")
    return Run(seconds, usage.ru_maxrss, text)


@dataclass
class Measure:
    name: str
    results: dict[str, list[float]] = field(default_factory=dict)

    def add(self, contender: str, value: float) -> None:
        self.results.setdefault(contender, []).append(value)

    def median(self, contender: str) -> float | None:
        values = self.results.get(contender)
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


def create_topic(bootstrap: str, name: str, partitions: int = 3) -> str:
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient({"bootstrap.servers": bootstrap})  # must outlive the futures
    for future in admin.create_topics([NewTopic(name, partitions, 1)]).values():
        future.result(timeout=10)
    return name


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", "-n", type=int, default=300_000)
    parser.add_argument("--repeat", "-r", type=int, default=5)
    parser.add_argument("--memory-messages", type=int, default=1_000_000, help="the big tail for the RSS check")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--only-selection", action="store_true", help="only the bridge --filter/--match-key comparison")
    args = parser.parse_args()
    n, rounds = args.messages, args.repeat
    ev = evrelay_command()
    try:
        kcat = kcat_command()
    except ServerUnavailable as exc:
        print(f"note: {exc}; the kcat comparisons are skipped", file=sys.stderr)
        kcat = None
    work = Path(tempfile.mkdtemp(prefix="evrelay-bench-"))
    data = work / "lines.jsonl"
    make_data(data, n)
    avg = data.stat().st_size / n
    print(f"# {n:,} messages of {avg:.0f} bytes, {rounds} rounds, contenders alternating; medians", file=sys.stderr)
    env = dict(os.environ, XDG_DATA_HOME=str(work / "xdg-data"), XDG_CONFIG_HOME=str(work / "xdg-config"))
    measures: dict[str, Measure] = {}

    def measure(name: str) -> Measure:
        return measures.setdefault(name, Measure(name))

    with KafkaServer() as kafka, RedisServer() as redis_server:
        b = kafka.bootstrap
        redis_url = f"redis://127.0.0.1:{redis_server.port}/0"
        tail_src = create_topic(b, "bench-tail")
        run([*ev, "publish", f"kafka://{b}/{tail_src}", "-q"], stdin=data, env=env)
        keyed_src = create_topic(b, "bench-keyed")
        keyed = work / "keyed.jsonl"
        make_keyed(data, keyed)
        run([*ev, "publish", f"kafka://{b}/{keyed_src}", "--input", "json", "-q"], stdin=keyed, env=env)

        for r in range(rounds):
            # 0. bridge Kafka -> Redis with a selection passing half the messages vs none;
            # the summary's rate counts messages handled (delivered or filtered out) per second
            selections = {"unfiltered": [], "--filter": ["--filter", ".value.id % 2 == 0"], "--match-key": ["--match-key", "even"]}
            for who, extra in list(selections.items())[:: 1 if r % 2 == 0 else -1]:
                tag = who.strip("-")
                bridged = run([*ev, "bridge", f"kafka://{b}/{keyed_src}", f"{redis_url}/sel-{tag}-{r}", "-g", f"sel-{tag}-{r}", "--count", str(n), *extra], env=env)
                measure("bridge selection").add(who, float(re.search(r"\(([\d,]+) msg/s\)", bridged.stderr).group(1).replace(",", "")))
            if args.only_selection:
                continue
            flip = r % 2 == 1  # alternate who goes first
            # 1. publish to Kafka
            order = ["evrelay", "kcat"] if not flip else ["kcat", "evrelay"]
            for who in ([*order, "kcat idempotent"] if not flip else ["kcat idempotent", *order]):
                topic = create_topic(b, f"pub-{who.replace(' ', '-')}-{r}")
                if who == "evrelay":
                    measure("publish Kafka").add(who, run([*ev, "publish", f"kafka://{b}/{topic}", "-q"], stdin=data, env=env).seconds)
                elif kcat and who == "kcat":
                    measure("publish Kafka").add(who, run([*kcat, "-b", b, "-P", "-t", topic, "-l", str(data)]).seconds)
                elif kcat:
                    # kcat with the delivery guarantee evrelay always uses (idempotent, acks=all)
                    idem = ["-X", "enable.idempotence=true", "-X", "acks=all"]
                    measure("publish Kafka").add(who, run([*kcat, "-b", b, *idem, "-P", "-t", topic, "-l", str(data)]).seconds)
            # 2. tail from Kafka
            for who in order:
                if who == "evrelay":
                    measure("tail Kafka").add(who, run([*ev, "tail", f"kafka://{b}/{tail_src}", "--from", "beginning", "-o", "raw"], env=env).seconds)
                elif kcat:
                    measure("tail Kafka").add(who, run([*kcat, "-b", b, "-C", "-t", tail_src, "-o", "beginning", "-e", "-q"]).seconds)
            # 3. publish to Redis
            for who in (["evrelay", "redis-py"] if not flip else ["redis-py", "evrelay"]):
                stream = f"pub-{who}-{r}"
                if who == "evrelay":
                    measure("publish Redis").add(who, run([*ev, "publish", f"{redis_url}/{stream}", "-q"], stdin=data, env=env).seconds)
                else:
                    measure("publish Redis").add(who, run([sys.executable, str(REDIS_LOOP), str(redis_server.port), stream, str(data)]).seconds)
            # 4. bridge Kafka -> Redis (the summary line reports the rate while there was work)
            bridged = run([*ev, "bridge", f"kafka://{b}/{tail_src}", f"{redis_url}/bridge-{r}", "-g", f"bench-{r}", "--count", str(n)], env=env)
            active = float(re.search(r"\(([\d,]+) msg/s\)", bridged.stderr).group(1).replace(",", ""))
            measure("bridge Kafka->Redis").add("evrelay active", active)
            measure("bridge Kafka->Redis").add("evrelay wall", n / bridged.seconds)

        ceiling = None if args.only_selection else subprocess.run(
            ["redis-benchmark", "-p", str(redis_server.port), "-n", str(n), "-P", "1000", "-q", "XADD", "rb", "*", "value", "x" * int(avg)],
            capture_output=True, text=True,
        ) if shutil.which("redis-benchmark") else None
        if ceiling is not None and ceiling.returncode == 0:
            rps = float(re.findall(r"([\d.]+) requests per second", ceiling.stdout)[-1])
            measure("publish Redis").add("redis-benchmark ceiling", n / rps)

        # 5. start-up
        for r in range(0 if args.only_selection else 20):
            for name, cmd in ([("python -c pass", [sys.executable, "-c", "pass"]), ("evrelay --version", [*ev, "--version"]), ("evrelay tail --help", [*ev, "tail", "--help"])][:: 1 if r % 2 == 0 else -1]):
                measure("start-up").add(name, run(cmd, env=env).seconds)

        # 6. memory: tail of a big topic vs a small one (streaming, not accumulating)
        if not args.skip_memory and not args.only_selection:
            big, small = work / "big.jsonl", work / "small.jsonl"
            make_data(big, args.memory_messages)
            make_data(small, 10_000)
            for path, topic in ((big, "mem-big"), (small, "mem-small")):
                create_topic(b, topic)
                run([*ev, "publish", f"kafka://{b}/{topic}", "-q"], stdin=path, env=env)
            for _ in range(3):
                for topic, label in (("mem-big", f"tail {args.memory_messages:,}"), ("mem-small", "tail 10,000")):
                    result = run([*ev, "tail", f"kafka://{b}/{topic}", "--from", "beginning", "-o", "raw"], env=env)
                    measure("peak RSS").add(label, result.max_rss_kb / 1024)
    shutil.rmtree(work, ignore_errors=True)
    report = render(measures, n, avg, rounds, args.memory_messages)
    print(report)
    out = REPO / "bench-results"
    out.mkdir(exist_ok=True)
    (out / "latest.md").write_text(report)
    (out / "latest.json").write_text(json.dumps({m.name: m.results for m in measures.values()}, indent=1))
    return 0


def render(measures: dict[str, Measure], n: int, avg: float, rounds: int, memory_messages: int) -> str:
    def m(name: str, who: str) -> float | None:
        return measures[name].median(who) if name in measures else None

    def ratio(a: float | None, b: float | None) -> str:
        return f"{a / b:.2f}x" if a and b else "n/a"

    def verdict(value: float | None, limit: float, lower_is_better: bool = True) -> str:
        if value is None:
            return "not measured"
        ok = value <= limit if lower_is_better else value >= limit
        return "holds" if ok else "MISSED"

    rows = []
    plain, jq_rate, glob_rate = (m("bridge selection", who) for who in ("unfiltered", "--filter", "--match-key"))
    if plain and jq_rate and glob_rate:
        rows.append(("bridge Kafka → Redis, `--filter` passing half", f"{jq_rate:,.0f} msg/s handled vs {plain:,.0f} unfiltered", ratio(jq_rate, plain), "≥ 0.5x unfiltered", verdict(jq_rate / plain, 0.5, lower_is_better=False)))
        rows.append(("bridge Kafka → Redis, `--match-key` passing half", f"{glob_rate:,.0f} msg/s handled vs {plain:,.0f} unfiltered", ratio(glob_rate, plain), "≥ 0.9x unfiltered", verdict(glob_rate / plain, 0.9, lower_is_better=False)))
    if "publish Kafka" not in measures:
        return render_rows(rows, n, avg, rounds)
    pk, pkk, pki = m("publish Kafka", "evrelay"), m("publish Kafka", "kcat"), m("publish Kafka", "kcat idempotent")
    idem_text = f"; kcat idempotent {pki:.2f}s, ratio {pk / pki:.2f}x" if pk and pki else ""
    rows.append(("publish to Kafka, wall time", f"evrelay {pk:.2f}s, kcat {pkk:.2f}s{idem_text}" if pk and pkk else f"evrelay {pk:.2f}s", ratio(pk, pkk), "≤ 1.5x kcat", verdict(pk / pkk if pk and pkk else None, 1.5)))
    tk, tkk = m("tail Kafka", "evrelay"), m("tail Kafka", "kcat")
    rows.append(("tail from Kafka, wall time", f"evrelay {tk:.2f}s, kcat {tkk:.2f}s" if tk and tkk else f"evrelay {tk:.2f}s", ratio(tk, tkk), "≤ 1.5x kcat", verdict(tk / tkk if tk and tkk else None, 1.5)))
    pr, loop, ceiling = m("publish Redis", "evrelay"), m("publish Redis", "redis-py"), m("publish Redis", "redis-benchmark ceiling")
    ceiling_text = f", redis-benchmark ceiling {ceiling:.2f}s" if ceiling else ""
    rows.append(("publish to Redis, wall time", f"evrelay {pr:.2f}s, redis-py pipeline {loop:.2f}s{ceiling_text}", ratio(pr, loop), "≤ 0.8x redis-py", verdict(pr / loop, 0.8)))
    tail_rate = n / tk if tk else None
    pub_rate = n / pr if pr else None
    slower = min(r for r in (tail_rate, pub_rate) if r)
    active, wall = m("bridge Kafka->Redis", "evrelay active"), m("bridge Kafka->Redis", "evrelay wall")
    rows.append((
        "bridge Kafka → Redis rate",
        f"{active:,.0f} msg/s moving ({wall:,.0f}/s over the wall, incl. group join); tail {tail_rate:,.0f}/s, publish {pub_rate:,.0f}/s",
        ratio(active, slower),
        "≥ 0.7x the slower",
        verdict(active / slower, 0.7, lower_is_better=False),
    ))
    py, ver, hlp = m("start-up", "python -c pass"), m("start-up", "evrelay --version"), m("start-up", "evrelay tail --help")
    rows.append(("`evrelay --version`", f"{ver * 1000:.0f} ms vs python {py * 1000:.0f} ms", ratio(ver, py), "≤ 4x python", verdict(ver / py, 4)))
    rows.append(("`evrelay tail --help`", f"{hlp * 1000:.0f} ms vs python {py * 1000:.0f} ms", ratio(hlp, py), "≤ 8x python", verdict(hlp / py, 8)))
    big, small = m("peak RSS", f"tail {memory_messages:,}"), m("peak RSS", "tail 10,000")
    if big and small:
        rows.append((f"tail of {memory_messages:,} messages, peak RSS", f"{big:.0f} MB vs {small:.0f} MB for 10,000", ratio(big, small), "≤ 1.3x", verdict(big / small, 1.3)))
    return render_rows(rows, n, avg, rounds)


def render_rows(rows: list[tuple[str, str, str, str, str]], n: int, avg: float, rounds: int) -> str:
    lines = [
        f"{n:,} messages of ~{avg:.0f} bytes; medians of {rounds} alternating rounds (start-up: 20); one run, one machine.",
        "",
        "| measure | figures | ratio | target | |",
        "| --- | --- | --- | --- | --- |",
        *(f"| {a} | {b} | {c} | {d} | {e} |" for a, b, c, d, e in rows),
    ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
