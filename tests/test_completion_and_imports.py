"""Shell completions in completions/ are current; `--help` stays free of client libraries."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from evrelay.cli.completion import completion_script
from tests.conftest import REPO, evrelay

FILES = {"bash": "evrelay.bash", "zsh": "_evrelay", "fish": "evrelay.fish"}


@pytest.mark.parametrize("shell", sorted(FILES))
def test_completion_files_are_current(shell):
    committed = (REPO / "completions" / FILES[shell]).read_text()
    assert committed == completion_script(shell), (
        f"completions/{FILES[shell]} is stale: run `evrelay completion {shell} > completions/{FILES[shell]}`"
    )
    assert evrelay("completion", shell).out == committed


def test_completion_answers_commands_options_and_profiles():
    Path("evrelay.toml").write_text('[profiles.prod]\nbackend = "local"\n')
    env = {"_EVRELAY_COMPLETE": "complete_bash", "COMP_WORDS": "evrelay ta", "COMP_CWORD": "1"}
    assert evrelay(env=env).out.split() == ["tail"]
    env.update(COMP_WORDS="evrelay tail --fo", COMP_CWORD="2")
    assert "--follow" in evrelay(env=env).out.split()
    env.update(COMP_WORDS="evrelay tail pr", COMP_CWORD="2")
    assert evrelay(env=env).out.split() == ["prod", "prod:"]


def test_unknown_shell_is_a_usage_error():
    run = evrelay("completion", "tcsh")
    assert run.returncode == 2 and "bash, zsh, fish" in run.err


PROBE = """
import sys
from evrelay.cli import main
sys.argv = ["evrelay", *sys.argv[1:]]
try:
    main(sys.argv[1:])
except SystemExit:
    pass
heavy = sorted(m for m in ("confluent_kafka", "redis", "rich") if m in sys.modules)
sys.stderr.write("LOADED=" + ",".join(heavy) + "\\n")
"""


@pytest.mark.parametrize(
    ("args", "allowed"),
    [(["--help"], set()), (["tail", "--help"], set()), (["--version"], set()), (["publish", "demo", "x"], set())],
)
def test_client_libraries_are_imported_lazily(args, allowed):
    proc = subprocess.run([sys.executable, "-c", PROBE, *args], capture_output=True, cwd=str(Path.cwd()),
                          env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    loaded = proc.stderr.decode().rsplit("LOADED=", 1)[1].strip()
    assert set(filter(None, loaded.split(","))) <= allowed, loaded


METADATA_PROBE = PROBE.replace('("confluent_kafka", "redis", "rich")', '("importlib.metadata",)')


@pytest.mark.parametrize(("args", "looks"), [(["tail", "--help"], False), (["--version"], False), (["--help"], True)])
def test_only_help_that_lists_plugins_looks_for_them(args, looks):
    # Finding plug-ins imports importlib.metadata and reads every installed package's
    # metadata (~12 ms, a third of tail --help's own start-up): only help texts that list
    # plug-in backends (evrelay --help, an ADDRESS argument's) may pay for it.
    proc = subprocess.run([sys.executable, "-c", METADATA_PROBE, *args], capture_output=True, cwd=str(Path.cwd()),
                          env={**__import__("os").environ, "PYTHONPATH": str(REPO)})
    loaded = proc.stderr.decode().rsplit("LOADED=", 1)[1].strip()
    assert (loaded == "importlib.metadata") is looks, loaded
