"""Defects found reviewing the bridge's sink process (evrelay/subprocess_producer.py) and
the other changes of the session, each with the test that failed before its fix."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid

import pytest

from tests.conftest import REPO
from tests.crash import fill_redis_stream, redis_values


@pytest.mark.redis
def test_sink_process_is_not_shadowed_by_an_evrelay_package_in_the_working_directory(redis_server, tmp_path):
    """`python -m` puts the working directory first on sys.path: a bridge run from a
    directory holding another `evrelay` package (a checkout of another version, a project
    of that name) started its sink process on that code instead of its own."""
    shadow = tmp_path / "evrelay"
    shadow.mkdir()
    (shadow / "__init__.py").write_text('raise SystemExit("the evrelay of the working directory was imported")\n')
    url = f"redis://127.0.0.1:{redis_server.port}/0"
    source, sink = f"src-{uuid.uuid4().hex[:6]}", f"dst-{uuid.uuid4().hex[:6]}"
    fill_redis_stream(url, source, [b'{"n": 1}', b'{"n": 2}'])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    env.pop("EVRELAY_BRIDGE_SINK_PROCESS", None)
    # -P: the parent runs as its console script does, without the working directory on sys.path
    done = subprocess.run(
        [sys.executable, "-P", "-m", "evrelay", "bridge", f"{url}/{source}", f"{url}/{sink}", "--from", "beginning", "-n", "2", "--idle-timeout", "10", "--sink-process"],
        cwd=tmp_path, env=env, capture_output=True, timeout=60,
    )
    err = done.stderr.decode()
    assert done.returncode == 0, err
    assert "working directory was imported" not in err
    assert redis_values(url, sink) == [b'{"n": 1}', b'{"n": 2}']


_SHARED_FILE_SCRIPT = """
import os, resource, subprocess, sys
from evrelay.backends.base import Message
from evrelay.backends.jsonl import JsonlProducer
from evrelay.errors import EvrelayError

path = sys.argv[1]
mine = JsonlProducer(path)
mine.send([Message(b"mine")])
mine.flush()
# Another process appends to the same file meanwhile (bridges sharing a --dead-letter file).
subprocess.run([sys.executable, "-m", "evrelay", "publish", f"file:{path}", "theirs"], check=True)
limit = os.path.getsize(path) + 100
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
try:
    mine.send([Message(b"x" * 3000)])
except EvrelayError as exc:
    print(exc.message)
"""


def test_a_failed_append_to_a_shared_file_keeps_what_another_process_appended(tmp_path):
    """The file sink cuts a failed batch off again (a full disk, a size limit), but it
    measured the file's end with tell(), which in append mode is where *this* process last
    wrote: a line another process appended since (acked at its source) was cut off too."""
    target = tmp_path / "shared.jsonl"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    done = subprocess.run([sys.executable, "-c", _SHARED_FILE_SCRIPT, str(target)], env=env, capture_output=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr.decode()
    assert b"cannot write to" in done.stdout and b"File too large" in done.stdout, done.stdout
    values = [line for line in subprocess.run(
        [sys.executable, "-m", "evrelay", "tail", f"file:{target}", "-o", "raw"], env=env, capture_output=True, timeout=60,
    ).stdout.splitlines()]
    assert values == [b"mine", b"theirs"]
    assert target.read_bytes().endswith(b"\n")


@pytest.mark.redis
def test_sink_process_finds_the_standard_library_before_site_packages(redis_server, tmp_path):
    """evrelay installed in a site-packages directory (a wheel in a venv): the sink process
    got that directory prepended to PYTHONPATH, i.e. before the standard library, so an
    old backport there (`dataclasses`, `pathlib` from PyPI) shadowed the real module in the
    child only, and every bridge failed with 'exited with code 1'."""
    import sysconfig

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    python = venv / "bin" / "python"
    site_packages = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], check=True, capture_output=True, text=True,
    ).stdout.strip()
    # evrelay "installed" in the venv; its dependencies from this interpreter's site-packages.
    os.symlink(REPO / "evrelay", os.path.join(site_packages, "evrelay"))
    with open(os.path.join(site_packages, "dependencies.pth"), "w") as pth:
        pth.write(sysconfig.get_paths()["purelib"] + "\n")
    with open(os.path.join(site_packages, "dataclasses.py"), "w") as backport:
        backport.write('raise SystemExit("a backport in site-packages shadowed the standard library")\n')
    url = f"redis://127.0.0.1:{redis_server.port}/0"
    source, sink = f"src-{uuid.uuid4().hex[:6]}", f"dst-{uuid.uuid4().hex[:6]}"
    fill_redis_stream(url, source, [b'{"n": 1}'])
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "EVRELAY_BRIDGE_SINK_PROCESS")}
    done = subprocess.run(
        [str(python), "-P", "-c", "from evrelay.cli import main; main()",
         "bridge", f"{url}/{source}", f"{url}/{sink}", "--from", "beginning", "-n", "1", "--idle-timeout", "10", "--sink-process"],
        cwd=tmp_path, env=env, capture_output=True, timeout=60,
    )
    err = done.stderr.decode()
    assert done.returncode == 0, err
    assert "shadowed" not in err
    assert redis_values(url, sink) == [b'{"n": 1}']
