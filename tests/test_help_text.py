"""Help texts that say which backends can do what are built from the registry: the
built-ins from evrelay/backends/help_index.py (generated from the Backend classes),
plug-ins from their own classes."""

from __future__ import annotations

import re
from pathlib import Path

from evrelay.backends import help_backends_with, help_sentences, render_help_index
from tests.conftest import REPO, evrelay
from tests.test_plugins import plugin_path  # noqa: F401  (a fixture)


def help_of(*args: str, env: dict | None = None) -> str:
    run = evrelay(*args, "--help", env=env)
    assert run.returncode == 0, run.err
    return " ".join(run.out.split())  # as one line: wrapping depends on the terminal


def test_help_index_is_current():
    committed = (REPO / "evrelay" / "backends" / "help_index.py").read_text()
    assert committed == render_help_index(), (
        "evrelay/backends/help_index.py is stale: run "
        "python -c 'from evrelay.backends import render_help_index as r; print(r(), end=\"\")' > evrelay/backends/help_index.py"
    )


def test_built_in_traits_and_sentences():
    assert help_backends_with("PARTITIONS") == "kafka or a plug-in"
    assert help_backends_with("PENDING") == "local, redis or a plug-in"
    assert help_sentences("ack_help").startswith("kafka: acks are cumulative per partition")


def test_plugin_declaring_a_capability_appears_in_help(plugin_path):  # noqa: F811
    module = Path(plugin_path) / "evrelay_memo" / "__init__.py"
    source = module.read_text()
    module.write_text(
        source.replace(
            "capabilities = frozenset({Capability.PUBLISH, Capability.READ})",
            "capabilities = frozenset({Capability.PUBLISH, Capability.READ, Capability.PENDING})\n"
            "    cumulative_ack = True\n"
            '    ack_help = "acks go to the memo pad."',
        )
    )
    env = {"PYTHONPATH": plugin_path}
    assert "where the backend keeps them (local, memo, redis)" in help_of("lag", env=env)
    ack = help_of("ack", env=env)
    assert "for backends with cumulative acks (kafka, memo), the lag" in ack, ack
    assert "memo: acks go to the memo pad." in ack
    # Without the capability, the plug-in is not listed (but is a backend all the same).
    module.write_text(source)
    assert "where the backend keeps them (local, redis)" in help_of("lag", env=env)


def test_a_broken_plugin_leaves_help_alone(plugin_path):  # noqa: F811
    (Path(plugin_path) / "evrelay_memo" / "__init__.py").write_text("raise RuntimeError('broken plug-in')\n")
    run = evrelay("lag", "--help", env={"PYTHONPATH": plugin_path})
    assert run.returncode == 0 and run.err == "", run.err
    assert "where the backend keeps them (local, redis)" in " ".join(run.out.split())


def test_commands_list_backends_from_the_registry():
    assert "Backends with partitions (kafka or a plug-in): only this partition" in help_of("tail")
    assert "consumer groups (kafka, local, nats, redis or a plug-in) are read" in help_of("bridge")
    assert "kafka: a group is cluster-wide" in help_of("groups")


# Where a backend's name may still appear in the commands: examples, which name PROFILES
# (`kafka:orders` is the profile `kafka` of examples.toml), host names and paths.
NEUTRAL_MENTIONS = re.compile(
    r"evrelay [a-z]"  # an example command line: `evrelay tail kafka:orders`
    r"|\b(kafka|local)\.(topic|group|options)\b"  # PROFILE.KEY examples of config set/remove
    r"|localhost|~/\.local/"  # a host name, a path
    r"|the local profile"  # the profile `config init` writes
)


def test_commands_name_no_backend_outside_examples():
    mentions = []
    for path in [*sorted((REPO / "evrelay" / "cli").glob("*.py")), REPO / "evrelay" / "output.py"]:
        if path.name == "help_pages.py":
            continue  # generated from the live help texts, which are checked here
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"kafka|redis|nats|local", line, re.IGNORECASE) and not NEUTRAL_MENTIONS.search(line):
                mentions.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert not mentions, "ask the registry (evrelay.backends.help_backends_with) instead:\n" + "\n".join(mentions)
