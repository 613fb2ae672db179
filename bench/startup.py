"""Start-up only: `evrelay --version` and `evrelay tail --help` against `python -c pass`.

    python bench/startup.py                      # 20 alternating rounds, as bench/run.py's start-up rows
    python bench/startup.py --rounds 40
    python bench/startup.py --baseline /tmp/old   # also an older evrelay (a directory holding its evrelay/ package)

The start-up rows of bench/run.py without its servers and data, for working on start-up
alone: the same contenders, measured the same way (each a separate process, alternating
order round by round, medians compared as ratios within one run). The environment is
passed through as it is, so run it once with PYTHONDONTWRITEBYTECODE=1 and once without
to see what bytecode caching is worth.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from run import Results, alternate, evrelay_command, run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", "-r", type=int, default=20)
    parser.add_argument("--baseline", metavar="DIR", help="also time the evrelay package in DIR (put first on PYTHONPATH), in the same rounds")
    args = parser.parse_args()
    ev = evrelay_command()
    work = Path(tempfile.mkdtemp(prefix="evrelay-startup-"))
    env = dict(os.environ, XDG_DATA_HOME=str(work / "xdg-data"), XDG_CONFIG_HOME=str(work / "xdg-config"))
    results = Results()

    baseline_env = dict(env, PYTHONPATH=os.pathsep.join(filter(None, [args.baseline, env.get("PYTHONPATH")])))

    def secs(cmd: list[str], environment: dict[str, str] = env) -> float:
        return run(cmd, env=environment).seconds

    contenders = [
        ("python -c pass", lambda: secs([sys.executable, "-c", "pass"])),
        ("evrelay --version", lambda: secs([*ev, "--version"])),
        ("evrelay tail --help", lambda: secs([*ev, "tail", "--help"])),
    ]
    if args.baseline:
        contenders += [
            ("baseline --version", lambda: secs([*ev, "--version"], baseline_env)),
            ("baseline tail --help", lambda: secs([*ev, "tail", "--help"], baseline_env)),
        ]
    for r in range(args.rounds):
        alternate(r, contenders, results)
    py = results.median("python -c pass")
    bytecode = "off" if os.environ.get("PYTHONDONTWRITEBYTECODE") else "on"
    print(f"{args.rounds} alternating rounds, medians; bytecode caching {bytecode} (PYTHONDONTWRITEBYTECODE)")
    print(f"python -c pass       {py * 1000:6.1f} ms")
    for name, _ in contenders[1:]:
        value = results.median(name)
        print(f"{name:20} {value * 1000:6.1f} ms  {value / py:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
