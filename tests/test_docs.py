"""The README documents every command, and every command has help text."""

from __future__ import annotations

import re

from evrelay.cli.app import app
from tests.conftest import REPO


def commands() -> dict[str, object]:
    import typer.main

    group = typer.main.get_command(app)
    found = {}
    for name, command in group.commands.items():
        found[name] = command
        for sub_name, sub in getattr(command, "commands", {}).items():
            found[f"{name} {sub_name}"] = sub
    return found


def test_every_command_has_help_text():
    for name, command in commands().items():
        assert (command.help or "").strip(), f"`evrelay {name}` has no help text"


def test_every_command_is_shown_in_the_readme_with_an_example():
    readme = (REPO / "README.md").read_text()
    for name in commands():
        top = name.split()[0]
        assert re.search(rf"^### .*\b{re.escape(top)}\b", readme, re.MULTILINE), f"README has no section for `evrelay {top}`"
        assert re.search(rf"\$ evrelay {re.escape(name)}\b", readme), f"README shows no example of `evrelay {name}`"
