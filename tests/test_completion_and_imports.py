"""Shell completions in completions/ are current; `--help` stays free of client libraries."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from evrelay.cli.completion import completion_script
from tests.conftest import REPO, evrelay
from tests.test_plugins import plugin_path  # noqa: F401  (a fixture)

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


# --- help pages answered without the CLI framework (evrelay/cli/help_pages.py) ---------

def test_help_pages_are_current():
    from evrelay.cli.app import render_help_pages

    committed = (REPO / "evrelay" / "cli" / "help_pages.py").read_text()
    assert committed == render_help_pages(), (
        "evrelay/cli/help_pages.py is stale: run "
        "python -c 'from evrelay.cli.app import render_help_pages as r; print(r(), end=\"\")' > evrelay/cli/help_pages.py"
    )


def test_tail_help_is_printed_without_importing_typer():
    # typer and what it imports were two thirds of `tail --help`'s start-up (README, Start-up).
    probe = PROBE.replace('("confluent_kafka", "redis", "rich")', '("typer",)')
    for flag in ("--help", "-h"):
        proc = subprocess.run([sys.executable, "-c", probe, "tail", flag], capture_output=True,
                              env={**__import__("os").environ, "PYTHONPATH": str(REPO), "COLUMNS": "120"})
        assert proc.stdout.startswith(b"Usage: evrelay tail [OPTIONS] {ADDRESS...}\n"), proc.stdout[:200]
        assert proc.stderr.decode().rsplit("LOADED=", 1)[1].strip() == "", proc.stderr


@pytest.mark.parametrize("columns", ["100", "80", "79", "60", "", "junk"])
def test_generated_help_pages_print_what_the_live_cli_prints(columns):
    # Narrower terminals wrap differently: those pages are rendered live, and either way
    # the bytes are the live CLI's.
    env = {"COLUMNS": columns}
    for command in ("tail", "replay"):
        generated = evrelay(command, "--help", env=env)
        live = subprocess.run(
            [sys.executable, "-c", f"from evrelay.cli import main; main([{command!r}, '--help'], help_pages=False)"],
            capture_output=True, env={**__import__("os").environ, "PYTHONPATH": str(REPO), **env},
        )
        assert (generated.returncode, generated.out, generated.err) == (live.returncode, live.stdout.decode(), live.stderr.decode())


def test_terminal_columns_is_shutils(monkeypatch):
    import shutil

    from evrelay.cli import terminal_columns

    for columns in ("120", "60", "0", "-3", "junk", None):
        if columns is None:
            monkeypatch.delenv("COLUMNS", raising=False)
        else:
            monkeypatch.setenv("COLUMNS", columns)
        assert terminal_columns() == shutil.get_terminal_size().columns, columns


def test_help_pages_that_list_plugins_stay_live(plugin_path):  # noqa: F811
    from evrelay.cli.help_pages import PAGES

    assert "tail" in PAGES and "publish" not in PAGES  # publish's ADDRESS lists plug-in URL schemes
    assert "memo://..." in " ".join(evrelay("publish", "--help", env={"PYTHONPATH": plugin_path}).out.split())
