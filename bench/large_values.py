"""Large values in the local store must not slow down reads of the small ones.

    python bench/large_values.py                  # 50,000 small messages, one 5 MB value
    python bench/large_values.py --small 200000 --big-mb 20 --repeat 7

Builds a fresh store in a temporary directory, then measures (median of --repeat runs,
in-process, so interpreter start-up does not hide the difference):

* reading N small messages, plain and as a consumer group, before any large value exists;
* the same after one large value (and ten of a tenth of its size) were written into the
  same stream, then N more small messages: reading those later N small ones, and reading
  an untouched second stream in the same store;
* `tail` of the last 10 through the CLI, before and after.

Prints a Markdown table with the ratios (after / before); a ratio near 1.0 is the goal.
Exits 0; a regression is reported, not an error (this is a benchmark, not a timed test).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from evrelay.backends.base import BackendSettings, Message, ReadSpec  # noqa: E402
from evrelay.backends.local import LocalBackend  # noqa: E402
from evrelay.positions import Beginning, EntryId  # noqa: E402


def publish(backend: LocalBackend, stream: str, messages: list[Message]) -> None:
    with backend.producer(stream) as producer:
        for start in range(0, len(messages), 5000):
            producer.publish(messages[start : start + 5000])


def read_all(backend: LocalBackend, spec: ReadSpec, *, ack: bool = False) -> int:
    count = 0
    with backend.consumer(spec) as consumer:
        while not consumer.exhausted:
            batch = consumer.read(1000, 0.1)
            count += len(batch)
            if ack:
                consumer.ack(batch)
    return count


def median_seconds(repeat: int, action) -> float:
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        action()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def cli_tail_seconds(repeat: int, env: dict[str, str]) -> float:
    cmd = [sys.executable, "-m", "evrelay", "tail", "mixed", "-o", "raw"]
    return median_seconds(repeat, lambda: subprocess.run(cmd, env=env, capture_output=True, check=True))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--small", type=int, default=50_000, help="small messages per phase")
    parser.add_argument("--big-mb", type=float, default=5.0, help="size of the large value in MB")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="evrelay-bench-") as home:
        env = dict(os.environ, XDG_DATA_HOME=home, PYTHONPATH=str(REPO))
        os.environ["XDG_DATA_HOME"] = home
        backend = LocalBackend({}, BackendSettings())
        backend.open()
        small = [Message(b"small message %08d" % i, b"k", [("h", b"v")]) for i in range(args.small)]
        publish(backend, "mixed", small)
        publish(backend, "untouched", small)
        groups = iter(range(10**6))

        def measure(start, stream: str) -> tuple[float, float]:
            plain = median_seconds(args.repeat, lambda: read_all(backend, ReadSpec(stream, start)))
            group = median_seconds(
                args.repeat, lambda: read_all(backend, ReadSpec(stream, start, group=f"g{next(groups)}", consumer_name="c"), ack=True)
            )
            return plain, group

        before_plain, before_group = measure(Beginning(), "mixed")
        before_other, _ = measure(Beginning(), "untouched")
        before_cli = cli_tail_seconds(args.repeat, env)

        big = int(args.big_mb * 1_000_000)
        publish(backend, "mixed", [Message(b"x" * big)] + [Message(b"y" * (big // 10)) for _ in range(10)])
        last_big = backend.last_id("mixed")
        publish(backend, "mixed", small)
        after_start = EntryId(f"{last_big[0]}-{last_big[1]}")
        after_plain, after_group = measure(after_start, "mixed")
        after_other, _ = measure(Beginning(), "untouched")
        after_cli = cli_tail_seconds(args.repeat, env)
        size_mb = Path(home, "evrelay", "local.db").stat().st_size / 1e6
        backend.close()

    rows = [
        (f"read {args.small:,} small, plain", before_plain, after_plain),
        (f"read {args.small:,} small, group + ack", before_group, after_group),
        (f"read another stream's {args.small:,}", before_other, after_other),
        ("`evrelay tail` (last 10), whole command", before_cli, after_cli),
    ]
    print(f"Large values in the local store: one {args.big_mb:g} MB value and ten of {args.big_mb / 10:g} MB "
          f"among {2 * args.small:,} small messages (store {size_mb:.0f} MB), median of {args.repeat}\n")
    print("| measure | before (s) | after (s) | after / before |")
    print("| --- | ---: | ---: | ---: |")
    worst = 0.0
    for name, before, after in rows:
        ratio = after / before if before else float("nan")
        worst = max(worst, ratio)
        print(f"| {name} | {before:.3f} | {after:.3f} | {ratio:.2f}x |")
    verdict = "ok" if worst < 2.0 else "REGRESSION: large values slow down reads of small ones"
    print(f"\nworst ratio {worst:.2f}x: {verdict}")


if __name__ == "__main__":
    main()
