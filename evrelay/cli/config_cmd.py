"""`evrelay config path|list|show|init|add|set|remove`: inspect and edit the profiles file.

Edits are written with tomli-w (comments in an edited file are not kept) and re-read
before they replace the old file. `show` and `list` mask every secret.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any, Optional

import typer

from evrelay import backends
from evrelay.cli.common import OutputOption, Session, command, force_option
from evrelay.errors import ConfigError, UsageError

app = typer.Typer(help="Show and edit connection profiles (the TOML config file).", no_args_is_help=True)

KEY_ARGUMENT = typer.Argument(metavar="KEY", help="default_profile, PROFILE.KEY or PROFILE.options.CLIENT_KEY", show_default=False)


def _target_file(session: Session) -> Path:
    """The file to edit: the one in use, or the one --config names (created on write)."""
    from evrelay.config import candidate_paths, locate_config

    config = session.config_option
    if config and not Path(config).is_file():
        return Path(config)
    located = locate_config(config)
    if located is not None:
        return located
    return candidate_paths(config)[0][0] if config else candidate_paths(None)[-1][0]


PROFILE_NAME = re.compile(r"^[A-Za-z0-9_-]+$")


def _check_profile_name(name: str) -> None:
    """A profile name is used in ADDRESS (`PROFILE:NAME`) and in keys (`PROFILE.KEY`)."""
    if not PROFILE_NAME.match(name):
        raise UsageError(f"profile name {name!r} may contain only letters, digits, '_' and '-' (it is used as PROFILE:NAME)")


def _check_backend(name: object) -> None:
    if not isinstance(name, str) or not name:
        raise ConfigError(f"backend must be a name ({', '.join(backends.backend_names())}), not {name!r}")
    if name not in backends.backend_names():
        backends.load_backend_class(name)  # raises with a did-you-mean


def _load_document(path: Path) -> dict[str, Any]:
    from evrelay.config import parse_config, read_config_text

    if not path.exists():
        return {}
    text = read_config_text(path)
    parse_config(text, path)  # validates and reports line numbers
    return tomllib.loads(text)


def _parse_value(text: str) -> Any:
    """A TOML literal when the text is one (42, true, [1, 2]), otherwise the text itself."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def _profile_keys(backend: str, table: dict[str, Any], where: str, *, complete: bool) -> None:
    """Check a profile's keys against what its backend takes (`option_names`) and, for a
    whole profile (`complete`), that its `required_options` are there: a typo is caught
    when it is written, not when the profile is first used."""
    import difflib

    from evrelay.config import PROFILE_KEYS

    cls = backends.load_backend_class(backend)
    known = PROFILE_KEYS | cls.option_names
    for key in table:
        if key not in known:
            close = difflib.get_close_matches(key, sorted(known), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ConfigError(f"{where}: the {cls.name} backend takes no key {key!r}{hint} (keys: {', '.join(sorted(known))})")
    missing = sorted(cls.required_options - set(table))
    if complete and missing:
        raise ConfigError(
            f"{where}: a {cls.name} profile needs {', '.join(missing)}",
            hint=f"evrelay config add PROFILE -b {cls.name} {' '.join(f'{key}=...' for key in missing)}",
        )


def _split_key(key: str) -> tuple[str, list[str]]:
    """`prod.options.sasl.mechanism` -> ("prod", ["options", "sasl.mechanism"])."""
    if key == "default_profile":
        return key, []
    profile, _, rest = key.partition(".")
    if not profile or not rest:
        raise UsageError(f"KEY must be default_profile or PROFILE.KEY (e.g. kafka.topic), not {key!r}")
    if rest.startswith("options."):
        return profile, ["options", rest[len("options.") :]]
    return profile, [rest]


@app.command("path")
@command(session_options=("config",))
def path_cmd(*, session: Session) -> None:
    """Print the config file in use (or where `config init` would create one)."""
    from evrelay.config import DEFAULT_PROFILE, candidate_paths, locate_config

    config = session.config_option
    located = locate_config(config)
    if located is not None:
        session.write_text(f"{located}\n")
        return
    target = _target_file(session)
    session.write_text(f"{target}\n")
    session.stderr.write(f"evrelay: no config file yet (built-in defaults: one {DEFAULT_PROFILE!r} profile); looked in:\n")
    for candidate, source in candidate_paths(config):
        session.stderr.write(f"  {candidate}  ({source})\n")


@app.command("list")
@command(session_options=("config",))
def list_cmd(*, session: Session, output: OutputOption = None) -> None:
    """List profiles: name, backend, default topic/stream, and where it points (masked)."""
    import orjson

    from evrelay.config import masked

    cfg = session.config
    rows = []
    for name in sorted(cfg.profiles):
        profile = cfg.profiles[name]
        options = masked(profile.options, secret_keys=_secret_keys(profile.backend))
        target = options.get(_target_option(profile.backend) or "") or ""
        rows.append(
            {
                "name": name,
                "backend": profile.backend,
                "stream": profile.stream,
                "target": str(target),
                "default": name == cfg.default_profile,
            }
        )
    if output == "json" or (output is None and not session.stdout_is_tty):
        for row in rows:
            session.write_text(orjson.dumps(row).decode() + "\n")
        return
    width = max(len(r["name"]) for r in rows) + 2
    for row in rows:
        mark = "*" if row["default"] else " "
        stream = f"  {row['stream']}" if row["stream"] else ""
        target = f"  {row['target']}" if row["target"] else ""
        session.write_text(f"{mark} {row['name']:<{width}}{row['backend']}{stream}{target}\n")


def _stream_key(backend: str) -> str:
    """`topic` or `stream`: how the backend's profiles name their default one."""

    try:
        return backends.load_backend_class(backend).stream_key
    except ConfigError:  # a plug-in that cannot be loaded here: still show its profile
        return "stream"


def _target_option(backend: str) -> str | None:
    try:
        return backends.load_backend_class(backend).target_option
    except ConfigError:
        return None


def _secret_keys(backend: str) -> frozenset[str]:

    try:
        return backends.load_backend_class(backend).secret_options
    except ConfigError:
        return frozenset()


@app.command("show")
@command(session_options=("config",))
def show_cmd(
    profile: Annotated[Optional[str], typer.Argument(metavar="PROFILE", help="Only this profile.", show_default=False)] = None,
    *,
    session: Session,
) -> None:
    """Print the configuration as TOML with every secret masked."""
    import tomli_w

    from evrelay.config import masked, starter_document

    cfg = session.config
    session.stderr.write(f"# {cfg.source}\n")
    if profile is not None:
        p = cfg.profile(profile)
        table = {"backend": p.backend}
        if p.stream:
            table[_stream_key(p.backend)] = p.stream
        if p.group:
            table["group"] = p.group
        table.update(p.options)
        session.write_text(tomli_w.dumps({"profiles": {profile: masked(table, secret_keys=_secret_keys(p.backend))}}))
        return
    document = dict(cfg.document) if cfg.document else {}
    document.setdefault("default_profile", cfg.default_profile)
    if not cfg.document:
        document["profiles"] = starter_document()["profiles"]
    shown = masked(document)
    for name, table in (document.get("profiles") or {}).items():
        if isinstance(table, dict):
            shown["profiles"][name] = masked(table, secret_keys=_secret_keys(str(table.get("backend", ""))))
    session.write_text(tomli_w.dumps(shown))


@app.command("init")
@command(session_options=("config",))
def init_cmd(
    *,
    session: Session,
    force: Annotated[bool, force_option("Overwrite an existing file.")] = False,
) -> None:
    """Create a starter config file with the local profile as default."""
    from evrelay.config import candidate_paths, starter_document, write_document

    config = session.config_option
    target = Path(config) if config else candidate_paths(None)[-1][0]
    if target.exists() and not force:
        raise ConfigError(f"{target} already exists; use --force to overwrite it")
    write_document(target, starter_document())
    session.write_text(f"{target}\n")


@app.command("add")
@command(session_options=("config",))
def add_cmd(
    name: Annotated[str, typer.Argument(metavar="PROFILE", show_default=False)],
    settings: Annotated[Optional[list[str]], typer.Argument(metavar="KEY=VALUE", help="Profile keys, e.g. bootstrap_servers=localhost:9092 topic=orders options.sasl.mechanism=PLAIN", show_default=False)] = None,
    backend: Annotated[str, typer.Option("--backend", "-b", metavar="BACKEND", help=f"{backends.help_backend_names()}.", show_default=False)] = "",
    *,
    session: Session,
    force: Annotated[bool, force_option("Replace an existing profile.")] = False,
) -> None:
    """Add a profile, e.g. `evrelay config add kafka -b kafka bootstrap_servers=localhost:9092`."""
    from evrelay.config import write_document

    if not backend:
        raise UsageError(f"--backend is required ({', '.join(backends.backend_names())})")
    _check_profile_name(name)
    _check_backend(backend)
    path = _target_file(session)
    document = _load_document(path)
    profiles = document.setdefault("profiles", {})
    if name in profiles and not force:
        raise ConfigError(f"profile {name!r} already exists in {path}; use --force to replace it")
    table: dict[str, Any] = {"backend": backend}
    for setting in settings or []:
        key, sep, value = setting.partition("=")
        if not sep or not key:
            raise UsageError(f"expected KEY=VALUE, got {setting!r}")
        _, parts = _split_key(f"{name}.{key}")
        if len(parts) == 2:
            table.setdefault("options", {})[parts[1]] = _parse_value(value)
        else:
            table[parts[0]] = _parse_value(value)
    _profile_keys(backend, table, f"profile {name!r}", complete=True)
    profiles[name] = table
    write_document(path, document)
    session.stderr.write(f"added profile {name!r} to {path}\n")


@app.command("set")
@command(session_options=("config",))
def set_cmd(
    key: Annotated[str, KEY_ARGUMENT],
    value: Annotated[str, typer.Argument(metavar="VALUE", show_default=False)],
    *,
    session: Session,
) -> None:
    """Set one key: `evrelay config set kafka.topic orders`, `... set default_profile kafka`."""
    from evrelay.config import DEFAULT_PROFILE, write_document

    path = _target_file(session)
    document = _load_document(path)
    profile, parts = _split_key(key)
    if not parts:
        known = set(document.get("profiles", {})) | {DEFAULT_PROFILE}
        if value not in known:
            raise ConfigError(f"default_profile {value!r} is not a profile in {path} (profiles: {', '.join(sorted(known))})")
        document["default_profile"] = value
    else:
        table = document.setdefault("profiles", {}).get(profile)
        if table is None:
            raise ConfigError(f"no profile {profile!r} in {path}; create it with `evrelay config add {profile} -b BACKEND`")
        if parts == ["backend"]:
            _check_backend(_parse_value(value))
        elif "backend" in table:
            # options.KEY too: a backend without an options table must refuse it
            # here, not write a file every later command refuses.
            candidate = {parts[0]: value} if len(parts) == 1 else {"options": {parts[1]: _parse_value(value)}}
            _profile_keys(str(table["backend"]), candidate, f"profile {profile!r} in {path}", complete=False)
        if len(parts) == 2:
            table.setdefault("options", {})[parts[1]] = _parse_value(value)
        else:
            table[parts[0]] = _parse_value(value)
    write_document(path, document)
    session.stderr.write(f"set {key} in {path}\n")


@app.command("remove")
@command(session_options=("config",))
def remove_cmd(
    key: Annotated[str, typer.Argument(metavar="PROFILE[.KEY]", help="A profile, or one key of it.", show_default=False)],
    *,
    session: Session,
) -> None:
    """Remove a profile, or one key of a profile (`kafka.group`, `kafka.options.sasl.password`)."""
    from evrelay.config import write_document

    path = _target_file(session)
    if not path.exists():
        raise ConfigError(f"no config file at {path}")
    document = _load_document(path)
    profiles = document.get("profiles", {})
    name, _, rest = key.partition(".")
    if name not in profiles:
        raise ConfigError(f"no profile {name!r} in {path}")
    if not rest:
        del profiles[name]
    else:
        _, parts = _split_key(key)
        table = profiles[name]
        container = table.get("options", {}) if len(parts) == 2 else table
        if parts[-1] not in container:
            raise ConfigError(f"profile {name!r} in {path} has no key {rest!r}")
        del container[parts[-1]]
    write_document(path, document)
    session.stderr.write(f"removed {key} from {path}\n")
