"""A Python 3.13 virtualenv with Dispytch from PyPI, for the Dispytch interop tests.

Dispytch (https://pypi.org/project/dispytch/) requires Python >= 3.13 and evrelay's own
venv may be older, so the tests run Dispytch's real emitter and dispatcher in a separate
3.13 interpreter as a subprocess (tests/dispytch_service.py). The venv is made once per
machine under the test cache (~/.cache/evrelay-tests/dispytch-py313-HASH, keyed by the
pinned requirements and the interpreter's version); it is built in a staging directory and
renamed into place only when complete, so an interrupted run leaves nothing half-made that a
later run would trust. Making it takes a few seconds (pip install from PyPI).

Where Python 3.13 comes from: $EVRELAY_TEST_PYTHON313, else `python3.13` on PATH (when it
actually runs: a pyenv shim for a version not selected does not), else pyenv's versions
directory. None found raises ServerUnavailable (a skip, a failure with CI=true); a failed
pip install raises RuntimeError (always a failure).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.servers import ServerUnavailable, test_cache_dir

DISPYTCH_REQUIREMENTS = ("dispytch[kafka,redis]==0.11.0",)
"""Dispytch with its Kafka extra (aiokafka) and Redis extra (redis-py, which the
Redis Streams producer and consumer of tests/dispytch_service.py use)."""


def _runs_313(candidate: str) -> bool:
    try:
        result = subprocess.run([candidate, "-c", "import sys; print(sys.version_info[:2] >= (3, 13))"],
                                capture_output=True, text=True, timeout=30)
    except OSError:
        return False
    return result.returncode == 0 and result.stdout.strip() == "True"


def find_python313() -> str:
    """The path of a working Python >= 3.13 interpreter, or ServerUnavailable."""
    explicit = os.environ.get("EVRELAY_TEST_PYTHON313")
    if explicit:
        if not _runs_313(explicit):
            raise ServerUnavailable(f"EVRELAY_TEST_PYTHON313={explicit} is not a working Python >= 3.13")
        return explicit
    candidates = [found] if (found := shutil.which("python3.13")) else []
    pyenv_root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    candidates += sorted(str(p) for p in Path(pyenv_root).glob("versions/3.1[3-9]*/bin/python3"))
    for candidate in candidates:
        if _runs_313(candidate):
            return candidate
    raise ServerUnavailable(
        "Dispytch needs Python >= 3.13: none found (python3.13 on PATH, pyenv's versions, "
        "or set EVRELAY_TEST_PYTHON313=/path/to/python3.13)"
    )


def dispytch_venv_dir(base: str) -> Path:
    """Where the venv for interpreter `base` lives: keyed by its version and the pins."""
    version = subprocess.run([base, "-c", "import sys; print(sys.version)"], capture_output=True, text=True,
                             check=True).stdout.strip()
    key = hashlib.sha256("\n".join([version, *DISPYTCH_REQUIREMENTS]).encode()).hexdigest()[:12]
    return test_cache_dir() / f"dispytch-py313-{key}"


def dispytch_python() -> Path:
    """The python of a 3.13 venv holding Dispytch from PyPI, made on first use."""
    base = find_python313()
    venv = dispytch_venv_dir(base)
    cache = venv.parent
    cache.mkdir(parents=True, exist_ok=True)
    python = venv / "bin" / "python"
    if (venv / ".complete").exists():
        return python
    with open(cache / ".dispytch-venv.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (venv / ".complete").exists():
            return python
        # Holding the lock, any staging directory is a run that died half-way: remove it.
        for stale in cache.glob("staging-dispytch-*"):
            shutil.rmtree(stale, ignore_errors=True)
        staging = Path(tempfile.mkdtemp(prefix="staging-dispytch-", dir=cache))
        try:
            steps = [
                [base, "-m", "venv", str(staging)],
                [str(staging / "bin" / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                 *DISPYTCH_REQUIREMENTS],
                [str(staging / "bin" / "python"), "-c", "import dispytch.kafka, redis.asyncio"],
            ]
            for step in steps:
                result = subprocess.run(step, capture_output=True, text=True, timeout=600)
                if result.returncode != 0:
                    raise RuntimeError(f"making the Dispytch venv failed at {' '.join(step)}:\n"
                                       f"{result.stdout[-2000:]}{result.stderr[-3000:]}")
            (staging / ".complete").write_text("\n".join(DISPYTCH_REQUIREMENTS) + "\n")
            shutil.rmtree(venv, ignore_errors=True)
            staging.rename(venv)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return python
