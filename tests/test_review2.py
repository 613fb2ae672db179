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
    env.pop("EVRELAY_BRIDGE_IN_PROCESS", None)
    # -P: the parent runs as its console script does, without the working directory on sys.path
    done = subprocess.run(
        [sys.executable, "-P", "-m", "evrelay", "bridge", f"{url}/{source}", f"{url}/{sink}", "--from", "beginning", "-n", "2", "--idle-timeout", "10"],
        cwd=tmp_path, env=env, capture_output=True, timeout=60,
    )
    err = done.stderr.decode()
    assert done.returncode == 0, err
    assert "working directory was imported" not in err
    assert redis_values(url, sink) == [b'{"n": 1}', b'{"n": 2}']
