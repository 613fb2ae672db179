"""The one capability check, through the CLI: a command declares what it needs and the
session refuses, with one wording and exit 2, before anything is connected. The addresses
point at closed ports (and a missing file), so a refusal that came after connecting would
be exit 3 instead."""

from __future__ import annotations

import re

import pytest

from evrelay import backends
from evrelay.backends.base import Capability
from tests.conftest import evrelay

UNREACHABLE = {
    "kafka": "kafka://127.0.0.1:1/t",
    "redis": "redis://127.0.0.1:1/0/t",
    "nats": "nats://127.0.0.1:1/t",
    "file": "file:/nonexistent/evrelay/t.jsonl",
    "local": "nosuchdir-local-profile:t",
}

# The command line that needs each capability (with ADDRESS in it).
NEEDS = {
    Capability.GROUPS: ["lag", "ADDRESS", "-g", "g"],
    Capability.CLAIM: ["ack", "ADDRESS", "-g", "g", "--claim"],
    Capability.GROUP_SEEK: ["replay", "ADDRESS", "-g", "g", "--from", "beginning", "--yes"],
    Capability.GROUP_DELETE: ["groups", "ADDRESS", "--delete", "g", "--yes"],
    Capability.INSPECT: ["info", "ADDRESS"],
    Capability.SEEK_TIME: ["tail", "ADDRESS", "--from", "-1h"],
    Capability.PARTITIONS: ["tail", "ADDRESS", "--partition", "0"],
    Capability.GROUP_RANGE_END: ["tail", "ADDRESS", "-g", "g", "--to", "end"],
}


def cases():
    for name, address in UNREACHABLE.items():
        cls = backends.load_backend_class(name)
        for capability, argv in NEEDS.items():
            if capability not in cls.capabilities:
                yield pytest.param(name, address, capability, argv, id=f"{name}-{capability.name.lower()}")


@pytest.fixture
def local_profile(tmp_path):
    config = tmp_path / "evrelay.toml"
    config.write_text(f'[profiles.nosuchdir-local-profile]\nbackend = "local"\npath = "{tmp_path}/x.db"\n')
    return str(config)


@pytest.mark.parametrize(("name", "address", "capability", "argv"), list(cases()))
def test_a_missing_capability_is_refused_before_connecting(name, address, capability, argv, local_profile):
    run = evrelay(*[address if arg == "ADDRESS" else arg for arg in argv], "--config", local_profile)
    assert run.returncode == 2, run.err
    lacking = [c.value for c in Capability if c not in backends.load_backend_class(name).capabilities]
    wording = re.match(rf"evrelay: error: the {name} backend does not support (.+) \((\S.*) needs it\)\n(evrelay: hint: .*\n)?$", run.err)
    assert wording, run.err
    assert wording.group(1) in lacking
    # The capability this command line is about, unless an earlier one is already missing.
    assert wording.group(1) == capability.value or Capability.GROUPS.value in lacking


def test_every_builtin_backend_lacks_something_or_has_everything():
    """The table above covers what commands refuse: a backend that lacks none of it is
    fine, but every such capability is checked on some backend."""
    covered = {capability for _, _, capability, _ in (case.values for case in cases())}
    assert Capability.GROUP_RANGE_END in covered and Capability.PARTITIONS in covered and Capability.CLAIM in covered
