"""A backend whose client library is not installed: exit 2 with the pip command, for every
backend that needs one (the generic `import_client` of the adapter layer), never an
"internal error"; and nothing that does not use the backend needs its client."""

from __future__ import annotations

import os

import pytest

from tests.conftest import REPO, evrelay


@pytest.mark.parametrize(
    ("module", "address", "package"),
    [
        ("confluent_kafka", "kafka://127.0.0.1:1/orders", "pip install confluent-kafka"),
        ("redis", "redis://127.0.0.1:1/0/orders", "pip install redis"),
        ("nats", "nats://127.0.0.1:1/orders", "pip install 'evrelay[nats]'"),
    ],
)
def test_a_missing_client_library_gives_the_install_command(tmp_path, module, address, package):
    shim = tmp_path / "shim"
    shim.mkdir()
    # A module that fails to import, as an uninstalled one does, shadowing the real one.
    (shim / f"{module}.py").write_text(f"raise ImportError(\"No module named '{module}'\")\n")
    env = {"PYTHONPATH": f"{shim}{os.pathsep}{REPO}"}
    run = evrelay("tail", address, env=env)
    assert run.returncode == 2, run.err
    assert package in run.err
    assert "internal error" not in run.err and "Traceback" not in run.err
    assert len([line for line in run.err.splitlines() if "error:" in line]) == 1
    # The local store does not need it.
    assert evrelay("publish", "demo", "x", env=env).returncode == 0
