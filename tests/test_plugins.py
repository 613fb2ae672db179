"""A third-party backend registered through the `evrelay.backends` entry-point group."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from tests.conftest import evrelay
from tests.contract import BackendContract

PLUGIN = '''
"""A toy plug-in backend: one JSONL file per stream in a directory."""
import os
import time
from evrelay.backends.base import Backend, Capability, Consumer, DeliveryReport, Producer
from evrelay.envelope import Position, decode_envelope, encode_envelope
from evrelay.errors import NotFoundError
from evrelay.positions import Last


class MemoProducer(Producer):
    def __init__(self, path):
        self.path, self.report = path, DeliveryReport()

    def send(self, messages):
        for m in messages:
            if m.timestamp is None:
                m.timestamp = int(time.time() * 1000)
        with open(self.path, "ab") as f:
            f.write(b"".join(encode_envelope(m) for m in messages))
        self.report.delivered += len(messages)

    def flush(self, timeout=None):
        report, self.report = self.report, DeliveryReport()
        return report


class MemoConsumer(Consumer):
    def __init__(self, path, spec):
        if not os.path.exists(path):
            raise NotFoundError(f"memo stream {spec.stream!r} does not exist")
        with open(path, "rb") as f:
            self.pending = [decode_envelope(line) for line in f if line.strip()]
        for n, m in enumerate(self.pending):
            m.position = Position("memo", spec.stream, n)
        if isinstance(spec.start, Last):
            self.pending = self.pending[len(self.pending) - spec.start.count:] if spec.start.count else []

    def read(self, max_messages, timeout):
        out, self.pending = self.pending[:max_messages], self.pending[max_messages:]
        self.exhausted = not self.pending
        return out


class MemoBackend(Backend):
    name = "memo"
    capabilities = frozenset({Capability.PUBLISH, Capability.READ})
    option_names = frozenset({"dir"})

    @classmethod
    def options_from_url(cls, url):
        rest = url[len("memo://"):]
        directory, _, stream = rest.rpartition("/")
        return {"dir": directory}, stream

    def producer(self, stream):
        return MemoProducer(os.path.join(self.options["dir"], stream))

    def consumer(self, spec):
        return MemoConsumer(os.path.join(self.options["dir"], spec.stream), spec)
'''


@pytest.fixture
def plugin_path(tmp_path: Path) -> str:
    site = tmp_path / "site"
    (site / "evrelay_memo").mkdir(parents=True)
    (site / "evrelay_memo" / "__init__.py").write_text(PLUGIN)
    dist = site / "evrelay_memo-1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: evrelay-memo\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text(textwrap.dedent("""\
        [evrelay.backends]
        memo = evrelay_memo:MemoBackend
    """))
    return str(site)


def test_plugin_backend_from_a_profile_and_from_its_url(plugin_path, tmp_path):
    store = tmp_path / "memo"
    store.mkdir()
    Path("evrelay.toml").write_text(f'[profiles.m]\nbackend = "memo"\ndir = "{store}"\n')
    env = {"PYTHONPATH": plugin_path}
    sent = evrelay("publish", "m:notes", "-k", "k1", "first", "second", env=env)
    assert sent.returncode == 0, sent.err
    assert "published 2 message(s) to m:notes" in sent.err
    got = evrelay("tail", "m:notes", "--from", "beginning", "-o", "raw", env=env)
    assert got.returncode == 0, got.err
    assert got.lines() == [b"first", b"second"]
    via_url = evrelay("tail", f"memo://{store}/notes", "--from", "beginning", "--format", "{backend} {id} {value}", env=env)
    assert via_url.lines() == [b"memo 0 first", b"memo 1 second"]
    refused = evrelay("tail", "m:notes", "-g", "grp", env=env)
    assert refused.returncode == 2 and "memo backend does not support consumer groups" in refused.err


def test_without_the_plugin_the_backend_is_unknown():
    Path("evrelay.toml").write_text('[profiles.m]\nbackend = "memo"\n')
    run = evrelay("tail", "m:notes")
    assert run.returncode == 2
    assert "unknown backend 'memo'" in run.err and "evrelay.backends" in run.err


def load_plugin_module(site: str):
    """The plug-in's module, imported from its site directory as evrelay would load it."""
    import importlib
    import sys

    sys.path.insert(0, site)
    try:
        sys.modules.pop("evrelay_memo", None)
        return importlib.import_module("evrelay_memo")
    finally:
        sys.path.remove(site)


class TestPluginContract(BackendContract):
    """The contract suite, on the toy entry-point backend: what a plug-in author runs."""

    @pytest.fixture
    def backend(self, plugin_path, tmp_path):
        store = tmp_path / "memo-store"
        store.mkdir()
        with load_plugin_module(plugin_path).MemoBackend({"dir": str(store)}) as backend:
            yield backend

    @pytest.fixture
    def stream(self):
        return "notes"


def test_help_lists_plugin_backends(plugin_path):
    # The root help is built only when shown (evrelay/cli/app.py), after the plug-ins are found.
    env = {"PYTHONPATH": plugin_path}
    root = evrelay("--help", env=env)
    text = " ".join(root.out.split())  # help is wrapped to the terminal
    assert root.returncode == 0 and "(file, kafka, local, memo, nats, redis)" in text and "memo://..." in text
    publish = evrelay("publish", "--help", env=env)
    assert "memo://..." in " ".join(publish.out.split())
    tail = evrelay("tail", "--help", env=env)
    assert tail.returncode == 0 and "Usage: evrelay tail" in tail.out
