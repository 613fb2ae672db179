"""Configuration and addresses (CONTRACT.md §1, §5), as a user meets them on the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evrelay.addresses import resolve_address
from evrelay.config import load_config, mask_url, masked, parse_config
from evrelay.errors import AddressError, ConfigError
from tests.conftest import evrelay

CONFIG = """\
default_profile = "work"

[profiles.work]
backend = "local"
stream = "jobs"
group = "crew"
path = "work.db"

[profiles.other]
backend = "local"
path = "other.db"
"""


def write(path: str | Path, text: str) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


def test_no_config_means_a_local_default_profile():
    config = load_config()
    assert config.path is None and config.default_profile == "local"
    address = resolve_address("demo", config)
    assert (address.backend, address.stream, address.profile) == ("local", "demo", "local")


def test_address_forms():
    write("evrelay.toml", CONFIG)
    config = load_config()
    assert resolve_address("work", config).stream == "jobs"
    assert resolve_address("work", config).group == "crew"
    assert resolve_address("work:other-stream", config).stream == "other-stream"
    bare = resolve_address("thing", config)
    assert (bare.profile, bare.stream) == ("work", "thing")
    assert resolve_address("thing", config, profile="other").profile == "other"
    assert resolve_address("-", config).backend == "file"
    file_address = resolve_address("file:x/y.jsonl", config)
    assert (file_address.backend, file_address.options["path"]) == ("file", "x/y.jsonl")
    with pytest.raises(AddressError, match="did you mean work:s"):
        resolve_address("wrok:s", config)
    with pytest.raises(AddressError, match="no backend handles mqtt://"):
        resolve_address("mqtt://host/subject", config)


def test_inline_urls():
    config = load_config()
    kafka = resolve_address("kafka://h1:9092,h2:9093/orders?client.id=me", config)
    assert (kafka.backend, kafka.stream) == ("kafka", "orders")
    assert kafka.options == {"bootstrap_servers": "h1:9092,h2:9093", "options": {"client.id": "me"}}
    redis = resolve_address("redis://user:pw@host:6380/2/orders%3Aeu", config)
    assert (redis.backend, redis.stream, redis.options["url"]) == ("redis", "orders:eu", "redis://user:pw@host:6380/2")
    assert redis.display == "redis://user:********@host:6380/2/orders%3Aeu"
    tls = resolve_address("rediss://host/s", config)
    assert (tls.backend, tls.options["url"], tls.stream) == ("redis", "rediss://host", "s")
    with pytest.raises(AddressError):
        resolve_address("redis://host/not-a-db/s", config)


def test_profile_without_default_stream_says_how_to_name_one():
    write("evrelay.toml", CONFIG)
    run = evrelay("tail", "other")
    assert run.returncode == 2
    assert "profile 'other', which has no default stream" in run.err and "other:NAME" in run.err


def test_lookup_order(tmp_path, monkeypatch):
    xdg = Path(__import__("os").environ["XDG_CONFIG_HOME"]) / "evrelay" / "config.toml"
    write(xdg, 'default_profile = "x"\n[profiles.x]\nbackend = "local"\n')
    assert load_config().path == xdg
    write("evrelay.toml", 'default_profile = "cwd"\n[profiles.cwd]\nbackend = "local"\n')
    assert load_config().default_profile == "cwd"
    env_file = write(tmp_path / "env.toml", 'default_profile = "env"\n[profiles.env]\nbackend = "local"\n')
    monkeypatch.setenv("EVRELAY_CONFIG", str(env_file))
    assert load_config().default_profile == "env"
    flag_file = write(tmp_path / "flag.toml", 'default_profile = "flag"\n[profiles.flag]\nbackend = "local"\n')
    assert load_config(flag_file).default_profile == "flag"
    monkeypatch.setenv("EVRELAY_CONFIG", str(tmp_path / "missing.toml"))
    with pytest.raises(ConfigError, match="EVRELAY_CONFIG"):
        load_config()


def test_env_interpolation(monkeypatch):
    write("evrelay.toml", '[profiles.p]\nbackend = "local"\npath = "${DB_DIR}/x.db"\nstream = "s"\n')
    monkeypatch.setenv("DB_DIR", "/tmp/somewhere")
    assert resolve_address("p", load_config()).options["path"] == "/tmp/somewhere/x.db"
    monkeypatch.delenv("DB_DIR")
    with pytest.raises(ConfigError, match=r"\$\{DB_DIR\}, which is not set"):
        resolve_address("p", load_config())
    config = parse_config('[profiles.p]\nbackend = "local"\npath = "$${LITERAL}"\n', None)
    assert config.profiles["p"].resolved_options("profile 'p'")["path"] == "${LITERAL}"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ('[profiles.a]\nbackend = "local"\nstream = \n', r"evrelay\.toml: invalid TOML: .*line 3"),
        ('x = 1\n', "unknown top-level key"),
        ('\n\n[profiles.broken]\nstream = "s"\n', r"evrelay\.toml, line 3: profile 'broken' has no 'backend' key"),
        ('[profiles.a]\nbackend = "lcoal"\nstream = "s"\n', "unknown backend 'lcoal'; did you mean 'local'"),
        ('[profiles.a]\nbackend = "local"\nstream = "s"\npaht = "x"\n', "unknown local option 'paht'; did you mean 'path'"),
    ],
)
def test_config_errors_exit_2_naming_file_line_or_profile(text, expected):
    write("evrelay.toml", text)
    run = evrelay("tail", "a")
    assert run.returncode == 2, run.err
    assert run.stdout == b""
    assert __import__("re").search(expected, run.err), run.err
    assert "Traceback" not in run.err


def test_unknown_profile_exit_2():
    write("evrelay.toml", CONFIG)
    run = evrelay("tail", "x", "--profile", "nope")
    assert run.returncode == 2 and "unknown profile 'nope'" in run.err
    run = evrelay("tail", "x", env={"EVRELAY_PROFILE": "wrk"})
    assert run.returncode == 2 and "did you mean 'work'" in run.err


def test_masking():
    assert mask_url("redis://user:s3cret@host:6379/0") == "redis://user:********@host:6379/0"
    assert mask_url("rediss://:s3cret@host/0") == "rediss://:********@host/0"
    data = masked({"options": {"sasl.password": "p", "sasl.username": "u", "ssl.key.password": "k"}, "url": "redis://a:b@h"})
    assert data == {"options": {"sasl.password": "********", "sasl.username": "u", "ssl.key.password": "********"}, "url": "redis://a:********@h"}


def test_config_show_and_list_never_print_secrets(monkeypatch):
    text = CONFIG + '\n[profiles.remote]\nbackend = "local"\npath = "x.db"\n[profiles.remote.secrets]\npassword = "hunter2"\n'
    text += '[profiles.url]\nbackend = "local"\npath = "redis://me:hunter2@h/0"\n'
    write("evrelay.toml", text)
    for args in (["config", "show"], ["config", "show", "url"], ["config", "list"], ["config", "list", "-o", "json"]):
        run = evrelay(*args)
        assert run.returncode == 0, run.err
        assert "hunter2" not in run.out + run.err
    assert "********" in evrelay("config", "show").out
    rows = [json.loads(line) for line in evrelay("config", "list", "-o", "json").lines()]
    assert {r["name"] for r in rows} == {"work", "other", "remote", "url", "local"}
    assert [r["name"] for r in rows if r["default"]] == ["work"]


def test_config_path():
    run = evrelay("config", "path")
    assert run.returncode == 0 and run.out.strip().endswith("evrelay/config.toml")
    assert "no config file yet" in run.err
    write("evrelay.toml", CONFIG)
    assert evrelay("config", "path").out.strip() == "evrelay.toml"


def test_config_init_add_set_remove(tmp_path):
    path = str(tmp_path / "cfg.toml")
    assert evrelay("config", "init", "--config", path).returncode == 0
    assert evrelay("config", "init", "--config", path).returncode == 2
    add = evrelay("config", "add", "box", "-b", "local", "stream=orders", "max_len=100", "--config", path)
    assert add.returncode == 0, add.err
    assert evrelay("config", "set", "default_profile", "box", "--config", path).returncode == 0
    assert evrelay("config", "set", "box.path", "box.db", "--config", path).returncode == 0
    config = load_config(path)
    assert config.default_profile == "box"
    assert config.profiles["box"].options == {"max_len": 100, "path": "box.db"}
    assert evrelay("publish", "box", "hi", "--config", path).returncode == 0
    assert evrelay("tail", "box", "-o", "raw", "--config", path).stdout == b"hi\n"
    assert evrelay("config", "remove", "box.max_len", "--config", path).returncode == 0
    assert "max_len" not in load_config(path).profiles["box"].options
    assert evrelay("config", "set", "nope.x", "1", "--config", path).returncode == 2
    assert evrelay("config", "add", "bad", "-b", "nosuch", "--config", path).returncode == 2
    assert evrelay("config", "remove", "box", "--config", path).returncode == 0
    assert "box" not in load_config(path).profiles


def test_examples_toml_is_a_valid_config_documenting_every_backend_option(monkeypatch):
    """examples.toml loads as a config, every profile opens (options validated as the CLI
    does), and every option of every built-in backend appears in it."""
    import re

    from evrelay.addresses import open_backend
    from evrelay.backends import BUILTIN_BACKENDS, load_backend_class
    from evrelay.backends.base import BackendSettings

    examples = Path(__file__).resolve().parent.parent / "examples.toml"
    text = examples.read_text()
    for variable in set(re.findall(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}", text)):
        monkeypatch.setenv(variable, "from-the-environment")
    config = parse_config(text, examples)
    documented: dict[str, set[str]] = {}
    for name, profile in config.profiles.items():
        address = resolve_address(f"{name}:x", config)
        backend = open_backend(address, BackendSettings())
        assert backend.name == profile.backend
        documented.setdefault(profile.backend, set()).update(profile.options)
    assert set(documented) >= set(BUILTIN_BACKENDS)
    for backend_name in BUILTIN_BACKENDS:
        cls = load_backend_class(backend_name)
        assert set(cls.option_names) <= documented[backend_name], set(cls.option_names) - documented[backend_name]
    assert config.default_profile in config.profiles


def test_config_add_and_set_check_keys_against_the_backend(tmp_path):
    """The backend says which keys a profile takes and needs; a typo fails when written."""
    path = str(tmp_path / "c.toml")
    assert evrelay("config", "init", "--config", path).returncode == 0
    missing = evrelay("config", "add", "k", "-b", "kafka", "topic=orders", "--config", path)
    assert missing.returncode == 2
    assert "profile 'k': a kafka profile needs bootstrap_servers" in missing.err
    assert "evrelay config add PROFILE -b kafka bootstrap_servers=..." in missing.err
    typo = evrelay("config", "add", "r", "-b", "redis", "urll=redis://h:6379/0", "--config", path)
    assert typo.returncode == 2 and "the redis backend takes no key 'urll'; did you mean 'url'?" in typo.err
    assert evrelay("config", "add", "k", "-b", "kafka", "bootstrap_servers=h:9092", "topic=orders", "--config", path).returncode == 0
    bad_set = evrelay("config", "set", "k.bootstrap_server", "h:9093", "--config", path)
    assert bad_set.returncode == 2 and "did you mean 'bootstrap_servers'?" in bad_set.err
    assert evrelay("config", "set", "k.group", "billing", "--config", path).returncode == 0
    # config show names the default topic as the backend does.
    shown = evrelay("config", "show", "k", "--config", path)
    assert 'topic = "orders"' in shown.out and "stream =" not in shown.out
    listed = [json.loads(line) for line in evrelay("config", "list", "-o", "json", "--config", path).out.splitlines()]
    assert {row["name"]: row["target"] for row in listed}["k"] == "h:9092"


def test_a_lone_url_credential_is_masked_as_a_token(cli):
    """`nats://TOKEN@host` carries its token as the userinfo: it was printed verbatim."""
    from evrelay.config import mask_url

    assert mask_url("nats://s3cr3tTOKEN@127.0.0.1:4222/s") == "nats://********@127.0.0.1:4222/s"
    assert mask_url("redis://u:pw@h:1/0/s") == "redis://u:********@h:1/0/s"
    run = cli("tail", "nats://s3cr3tTOKEN@127.0.0.1:1/s", "--timeout", "2s", "-v")
    assert run.returncode == 3
    assert "s3cr3tTOKEN" not in run.out + run.err
