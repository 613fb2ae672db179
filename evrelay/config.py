"""Configuration: finding, reading and writing the TOML profiles file (CONTRACT.md §5).

Lookup order: `--config`, `$EVRELAY_CONFIG`, `./evrelay.toml`,
`$XDG_CONFIG_HOME/evrelay/config.toml` (`~/.config/evrelay/config.toml`). With no file at
all the configuration is a single embedded `local` profile, so evrelay works out of the box.

Values may refer to the environment as `${VAR}` (`$${` is a literal `${`); references are
resolved only for the profile in use, so an unset variable in another profile is harmless.
Secrets never leave this module unmasked through `masked()`.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evrelay.errors import ConfigError

PROFILE_KEYS = frozenset({"backend", "topic", "stream", "group"})
DEFAULT_PROFILE = "local"
DEFAULT_PROFILE_BACKEND = "local"
"""The backend of the built-in default profile: an embedded store, so evrelay works with no server."""
_VAR = re.compile(r"\$(\$?)\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SECRET_KEY = re.compile(r"pass|secret|token|credential|seed|api[_.-]?key|private|jaas|\bpem\b|\.pem$", re.IGNORECASE)
# A URL's userinfo runs to the LAST '@' before the query: an unencoded '@' in the user
# name (`alice@corp.com:PW@host`), the password or a token must not leave part of the
# secret showing. It never spans into a second URL (`A->B`).
_URL_USERINFO = re.compile(r"(://)((?:(?!://)[^\s?#])*)@")
_QUERY_PAIR = re.compile(r"([?&;])([^=&;#\s]+)=([^&;#\s]*)")
MASK = "********"


def xdg_config_home() -> Path:
    return Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")


def xdg_data_home() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")


def candidate_paths(explicit: str | os.PathLike[str] | None = None) -> list[tuple[Path, str]]:
    """Every place a config file is looked for, in order, with where the idea came from."""
    paths: list[tuple[Path, str]] = []
    if explicit:
        paths.append((Path(explicit), "--config"))
    env = os.environ.get("EVRELAY_CONFIG")
    if env:
        paths.append((Path(env), "$EVRELAY_CONFIG"))
    paths.append((Path("evrelay.toml"), "./evrelay.toml"))
    paths.append((xdg_config_home() / "evrelay" / "config.toml", "$XDG_CONFIG_HOME"))
    return paths


def locate_config(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """The config file in use, or None. A file named by --config or $EVRELAY_CONFIG must exist."""
    for path, source in candidate_paths(explicit):
        if path.is_file():
            return path
        if source in ("--config", "$EVRELAY_CONFIG"):
            if path.is_dir():
                raise ConfigError(f"config file {path} (from {source}) is a directory, not a TOML file")
            raise ConfigError(f"config file {path} (from {source}) does not exist")
    return None


def is_secret_key(key: str) -> bool:
    return bool(_SECRET_KEY.search(key))


def _masked_userinfo(match: re.Match[str]) -> str:
    """`user:password@` keeps the user (up to its first ':'); a userinfo without a colon
    may be a token (`nats://TOKEN@host`) and is masked whole."""
    user, colon, _ = match.group(2).partition(":")
    return f"{match.group(1)}{user}:{MASK}@" if colon else f"{match.group(1)}{MASK}@"


def mask_url(text: str) -> str:
    """`redis://user:pw@host` -> `redis://user:********@host`, `nats://TOKEN@host` ->
    `nats://********@host` (a lone userinfo may be a token), and every secret-looking
    query option (`?sasl.password=...`) masked too."""
    from urllib.parse import unquote

    text = _URL_USERINFO.sub(_masked_userinfo, text)
    if "=" in text:
        text = _QUERY_PAIR.sub(
            lambda m: f"{m.group(1)}{m.group(2)}={MASK}" if is_secret_key(unquote(m.group(2))) else m.group(0), text
        )
    return text


def mask_secrets(text: str, secrets: list[str]) -> str:
    """`text` (an error from a client library, say) with each of the given secret values
    replaced, and any URL credentials masked."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret:
            text = text.replace(secret, MASK)
    return mask_url(text)


def masked(value: Any, key: str = "", *, secret_keys: frozenset[str] = frozenset()) -> Any:
    """A copy of a config value with every secret replaced (secret-looking keys, the
    backend's own `secret_keys`, URL passwords)."""
    if isinstance(value, dict):
        return {k: masked(v, str(k), secret_keys=secret_keys) for k, v in value.items()}
    if isinstance(value, list):
        return [masked(v, key, secret_keys=secret_keys) for v in value]
    if isinstance(value, str):
        if key and (is_secret_key(key) or key in secret_keys):
            return MASK
        return mask_url(value)
    return value


def interpolate(value: Any, where: str, key: str = "") -> Any:
    """Resolve `${VAR}` in strings (recursively); raises ConfigError for unset variables,
    naming `where` (file, line, profile) and the key."""
    if isinstance(value, dict):
        return {k: interpolate(v, where, f"{key}.{k}" if key else str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, where, f"{key}[{i}]") for i, v in enumerate(value)]
    if not isinstance(value, str) or "${" not in value:
        return value

    def replace(match: re.Match[str]) -> str:
        escaped, name = match.groups()
        if escaped:
            return "${" + name + "}"
        if name not in os.environ:
            raise ConfigError(f"{where}: {key or 'a value'} refers to ${{{name}}}, which is not set in the environment")
        return os.environ[name]

    return _VAR.sub(replace, value)


@dataclass(slots=True)
class Profile:
    """One `[profiles.NAME]` table, as written (not yet interpolated)."""

    name: str
    backend: str
    stream: str | None = None
    group: str | None = None
    options: dict[str, Any] = field(default_factory=dict)
    line: int | None = None
    implicit: bool = False

    def resolved_options(self, where: str) -> dict[str, Any]:
        """Options with ${VAR} resolved; `where` (file, line, profile) prefixes errors."""
        return interpolate(self.options, where)


@dataclass(slots=True)
class Config:
    path: Path | None
    default_profile: str
    profiles: dict[str, Profile]
    document: dict[str, Any] = field(default_factory=dict)

    @property
    def source(self) -> str:
        return str(self.path) if self.path else "built-in defaults"

    def where(self, profile: Profile) -> str:
        if self.path is None or profile.implicit:
            return f"profile {profile.name!r} (built in)"
        line = f", line {profile.line}" if profile.line else ""
        return f"{self.path}{line}: profile {profile.name!r}"

    def profile(self, name: str) -> Profile:
        try:
            return self.profiles[name]
        except KeyError:
            import difflib  # imported for errors only, as tomllib for a config file: ~7 ms of every start

            close = difflib.get_close_matches(name, list(self.profiles), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            known = ", ".join(sorted(self.profiles)) or "none"
            raise ConfigError(f"unknown profile {name!r} in {self.source}{hint} (profiles: {known})") from None


def _table_line(text: str, dotted: str) -> int | None:
    name = re.escape(dotted).replace(r"\.", r"[ \t]*\.[ \t]*")
    pattern = re.compile(rf"^[ \t]*\[[ \t]*{name}[ \t]*\]", re.MULTILINE)
    match = pattern.search(text)
    if match is None:
        quoted = dotted.split(".", 1)
        if len(quoted) == 2:
            pattern = re.compile(
                rf'^[ \t]*\[[ \t]*{re.escape(quoted[0])}[ \t]*\.[ \t]*"{re.escape(quoted[1])}"[ \t]*\]', re.MULTILINE
            )
            match = pattern.search(text)
    return text.count("\n", 0, match.start()) + 1 if match else None


def parse_config(text: str, path: Path | None) -> Config:
    where = str(path) if path else "<config>"
    import tomllib

    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: invalid TOML: {exc}") from None
    default = document.get("default_profile", DEFAULT_PROFILE)
    if not isinstance(default, str):
        raise ConfigError(f"{where}: default_profile must be a string")
    unknown_top = set(document) - {"default_profile", "profiles"}
    if unknown_top:
        raise ConfigError(
            f"{where}: unknown top-level key(s) {', '.join(sorted(unknown_top))}; profiles go under [profiles.NAME]"
        )
    raw_profiles = document.get("profiles", {})
    if not isinstance(raw_profiles, dict):
        raise ConfigError(f"{where}: 'profiles' must be a table of [profiles.NAME] tables")
    profiles: dict[str, Profile] = {}
    for name, table in raw_profiles.items():
        line = _table_line(text, f"profiles.{name}")
        at = f"{where}{f', line {line}' if line else ''}: profile {name!r}"
        if not isinstance(table, dict):
            raise ConfigError(f"{at} must be a table")
        backend = table.get("backend")
        if backend is None:
            raise ConfigError(f"{at} has no 'backend' key (kafka, redis, local, file or a plug-in)")
        if not isinstance(backend, str):
            raise ConfigError(f"{at}: 'backend' must be a string")
        if "topic" in table and "stream" in table:
            raise ConfigError(f"{at} sets both 'topic' and 'stream'; they are the same thing, keep one")
        stream = table.get("topic", table.get("stream"))
        group = table.get("group")
        for key, value in (("topic/stream", stream), ("group", group)):
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"{at}: {key!r} must be a string")
        options = {k: v for k, v in table.items() if k not in PROFILE_KEYS}
        profiles[name] = Profile(name, backend, stream, group, options, line)
    if DEFAULT_PROFILE not in profiles:
        profiles[DEFAULT_PROFILE] = Profile(DEFAULT_PROFILE, DEFAULT_PROFILE_BACKEND, implicit=True)
    return Config(path, default, profiles, document)


def starter_document() -> dict[str, Any]:
    """The config `config init` writes (and `config show` shows when there is no file):
    the built-in default profile, made explicit."""
    return {"default_profile": DEFAULT_PROFILE, "profiles": {DEFAULT_PROFILE: {"backend": DEFAULT_PROFILE_BACKEND}}}


def load_config(explicit: str | os.PathLike[str] | None = None) -> Config:
    path = locate_config(explicit)
    if path is None:
        return Config(None, DEFAULT_PROFILE, {DEFAULT_PROFILE: Profile(DEFAULT_PROFILE, DEFAULT_PROFILE_BACKEND, implicit=True)})
    return parse_config(read_config_text(path), path)


def read_config_text(path: Path) -> str:
    """The text of a config file; ConfigError naming the file (and line) when it cannot be read."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise ConfigError(f"{path}, line {line}: not UTF-8 text (byte {data[exc.start]:#04x}); TOML files are UTF-8") from None


NEW_CONFIG_MODE = 0o600
"""A config file evrelay creates is its owner's only: it may come to hold passwords."""


def write_document(path: Path, document: dict[str, Any]) -> None:
    """Write a config document with tomli-w (comments in the old file are not kept).

    The new text goes to a temporary file beside the real one, then replaces it in one
    rename, so a crash leaves the old file or the new one. The real one: a symlink's
    target (a config kept with one's dotfiles stays there, the link stays a link), and
    its permission bits are kept (a 0600 file holding a password stays 0600)."""
    import tempfile

    import tomli_w

    data = tomli_w.dumps(document)
    parse_config(data, path)  # never write a file we could not read back
    target = Path(os.path.realpath(path))
    tmp = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            mode = stat.S_IMODE(os.stat(target).st_mode)
        except FileNotFoundError:
            mode = NEW_CONFIG_MODE
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)  # 0600 from the start
        with os.fdopen(fd, "wb") as out:
            out.write(data.encode("utf-8"))
            out.flush()
            os.fsync(out.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, target)
        tmp = None
    except OSError as exc:
        blocker = next((parent for parent in reversed(path.parents) if parent.exists() and not parent.is_dir()), None)
        reason = f"{blocker} is a file, not a directory" if blocker is not None else (exc.strerror or str(exc))
        raise ConfigError(f"cannot write the config file {path}: {reason}") from None
    finally:
        if tmp is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
