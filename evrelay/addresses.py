"""ADDRESS resolution (CONTRACT.md §1): from what the user typed to a backend and a stream.

    PROFILE               that profile, with its default topic/stream
    PROFILE:NAME          topic/stream NAME in that profile
    NAME                  NAME in the default profile (--profile / $EVRELAY_PROFILE / config)
    kafka://h:p[,h:p]/T   inline Kafka;  redis://[u:p@]h:p[/DB]/S, rediss://... inline Redis
    file:PATH             a JSONL file of envelopes;  -  stdin/stdout as JSONL
    SCHEME://...          any backend, built in or plug-in, that parses its own URLs

Every profile and URL form takes a query string of backend options
(`redis:tasks?layout=taskiq`, `kafka://h:9092/t?acks=all`). It is cut off here, before a
URL reaches a backend (and so a client library), and handed to the backend class, which
turns it into options validated like a profile's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl

from evrelay import backends
from evrelay.backends.base import Backend, BackendSettings
from evrelay.config import Config, mask_url
from evrelay.errors import AddressError, ConfigError


@dataclass(slots=True)
class Address:
    text: str
    backend: str
    stream: str | None
    options: dict[str, Any] = field(default_factory=dict)
    group: str | None = None
    profile: str | None = None
    where: str = ""
    """Where this came from, for error messages: the config file, line and profile."""

    @property
    def display(self) -> str:
        """The address as typed, with any password masked: safe to print."""
        return mask_url(self.text)

    def require_stream(self, noun: str = "topic/stream") -> str:
        if self.stream:
            return self.stream
        if self.profile:
            raise AddressError(
                f"address {self.display!r} names profile {self.profile!r}, which has no default {noun}; "
                f"write {self.profile}:NAME"
            )
        raise AddressError(f"address {self.display!r} does not name a {noun}")


def resolve_address(text: str, config: Config, *, profile: str | None = None) -> Address:
    """Resolve ADDRESS text; `profile` overrides the default profile for bare names."""
    address = _resolve(text, config, profile)
    check_stream_name(address)
    return address


def check_stream_name(address: Address) -> None:
    """Refuse a topic/stream/file name that is blank or begins or ends with whitespace
    (`publish " " v`, `redis://h:6379/%20`, a profile's `stream = " x"`), on every
    backend, before anything is sent: such a name is a quoting mistake far more often than
    a real stream, and Redis and the local store would take it and make one."""
    name = address.stream
    if name is None or name == name.strip():
        return
    try:
        noun = f"{backends.load_backend_class(address.backend).stream_noun} name"
    except ConfigError:
        noun = "topic/stream name"
    origin = f"address {address.display!r}"
    if address.profile:  # which profile, from where: its own `stream` may be the culprit
        origin += f" ({address.where.split(' (address ')[0]})"
    if not name.strip():
        raise AddressError(f"{origin}: the {noun} is blank ({name!r})")
    raise AddressError(
        f"{origin}: the {noun} {name!r} begins or ends with whitespace; "
        f"names are taken as written, so write {name.strip()!r} if that is the one"
    )


def _resolve(text: str, config: Config, profile: str | None) -> Address:
    if not text:
        raise AddressError("empty address")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise AddressError(f"address {os.fsencode(text)!r} is not valid UTF-8; topic and stream names are text") from None
    if text == "-":
        return Address(text, "file", "-", {"path": "-"}, where="stdin/stdout")
    if text.startswith("file:") and not text.startswith("file://"):
        path = text[len("file:") :]
        if not path:
            raise AddressError("file: needs a path, e.g. file:events.jsonl")
        return Address(text, "file", path, {"path": path}, where=f"file {path}")
    if text.startswith("file://"):
        path = text[len("file://") :]
        return Address(text, "file", path, {"path": path}, where=f"file {path}")
    base, query = split_query(text)
    scheme, sep, _ = base.partition("://")
    if sep and scheme and scheme.replace("+", "").isalnum():
        if not backends.is_backend_scheme(scheme):
            raise AddressError(
                f"address {mask_url(text)!r}: no backend handles {scheme}:// URLs "
                f"(known: {', '.join(f'{known}://' for known in backends.url_schemes())}, file:PATH)"
            )
        name = backends.backend_for_scheme(scheme)
        cls = backends.load_backend_class(name)
        try:
            options, stream = cls.options_from_url(base)
        except ValueError as exc:  # urllib's own refusals: "Invalid IPv6 URL", a bad port
            raise AddressError(f"address {mask_url(text)!r} is not a valid URL: {exc}") from None
        address = Address(text, name, stream, options, where=f"address {mask_url(text)!r}")
        return _with_query(address, query)

    default = profile or os.environ.get("EVRELAY_PROFILE") or config.default_profile
    return _with_query(_profile_address(text, base, config, default), query)


def split_query(text: str) -> tuple[str, dict[str, str]]:
    """`NAME?a=1&b=2` -> (`NAME`, {"a": "1", "b": "2"}); every option needs a value."""
    base, mark, query = text.partition("?")
    if not mark:
        return text, {}
    options: dict[str, str] = {}
    for part in query.split("&"):
        if not part:
            continue
        name, equals, _ = part.partition("=")
        if not equals or not name:
            raise AddressError(f"address {mask_url(text)!r}: the query string takes NAME=VALUE options, not {part!r}")
    for name, value in parse_qsl(query, keep_blank_values=True):
        if name in options:
            raise AddressError(f"address {mask_url(text)!r}: option {name!r} is given twice")
        options[name] = value
    if not base:
        raise AddressError(f"address {mask_url(text)!r}: nothing before the '?'")
    return base, options


def _with_query(address: Address, query: dict[str, str]) -> Address:
    """The address with its query-string options laid over the profile's (tables merged)."""
    if not query:
        return address
    try:
        cls = backends.load_backend_class(address.backend)
    except ConfigError as exc:
        raise ConfigError(f"{address.where}: {exc}", hint=exc.hint) from None
    try:
        extra = cls.options_from_query(query)
    except ConfigError as exc:
        raise ConfigError(f"{address.where}: {exc}", hint=exc.hint) from None
    merged = dict(address.options)
    for name, value in extra.items():
        if isinstance(value, dict) and isinstance(merged.get(name), dict):
            merged[name] = {**merged[name], **value}
        else:
            merged[name] = value
    address.options = merged
    address.where = f"{address.where} (address {mask_url(address.text)!r})" if address.profile else address.where
    return address


def _profile_address(text: str, base: str, config: Config, default: str) -> Address:
    head, colon, tail = base.partition(":")
    if colon:
        if head not in config.profiles:
            import difflib  # for errors only (~2 ms of every start otherwise)

            close = difflib.get_close_matches(head, list(config.profiles), n=1)
            hint = f"; did you mean {close[0]}:{tail}?" if close else ""
            raise AddressError(
                f"address {mask_url(text)!r}: {head!r} is not a profile in {config.source}{hint} "
                f"(profiles: {', '.join(sorted(config.profiles))})"
            )
        return _from_profile(text, config, head, tail or None)
    if base in config.profiles:
        return _from_profile(text, config, base, None)
    return _from_profile(text, config, default, base)


def _from_profile(text: str, config: Config, name: str, stream: str | None) -> Address:
    profile = config.profile(name)
    where = config.where(profile)
    options = profile.resolved_options(where)
    if not stream and not profile.stream:
        stream = _backend_default_stream(profile.backend, options, where)
    return Address(
        text,
        profile.backend,
        stream or profile.stream,
        options,
        group=profile.group,
        profile=profile.name,
        where=where,
    )


def _backend_default_stream(backend: str, options: dict[str, Any], where: str) -> str | None:
    """The stream a profile with no `stream` of its own means, if its backend has one."""
    try:
        cls = backends.load_backend_class(backend)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}", hint=exc.hint) from None
    return cls.default_stream(options)


def open_backend(address: Address, settings: BackendSettings) -> Backend:
    """Instantiate (not yet open) the backend an address points at, validating its options."""
    try:
        cls = backends.load_backend_class(address.backend)
    except ConfigError as exc:
        raise ConfigError(f"{address.where}: {exc}", hint=exc.hint) from None
    unknown = set(address.options) - set(cls.option_names)
    if unknown:
        key = sorted(unknown)[0]
        import difflib

        close = difflib.get_close_matches(key, list(cls.option_names), n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        known = ", ".join(sorted(cls.option_names)) or "none"
        raise ConfigError(f"{address.where}: unknown {cls.name} option {key!r}{hint} (known: {known})")
    refuse_dates(address)
    cls.check_client()
    try:
        return cls(address.options, settings)
    except ConfigError as exc:
        if exc.message.startswith(address.where):
            raise
        raise ConfigError(f"{address.where}: {exc}", hint=exc.hint) from None


def refuse_dates(address: Address) -> None:
    """A TOML date or time is no option's value on any backend: refused here, once, with
    the key, instead of reaching a client library as text (`linger.ms = 1979-05-27`)."""
    import datetime

    def check(options: dict[str, Any], prefix: str) -> None:
        for key, value in options.items():
            if isinstance(value, dict):
                check(value, f"{prefix}{key}.")
            elif isinstance(value, (datetime.date, datetime.time)) or (
                isinstance(value, list) and any(isinstance(item, (datetime.date, datetime.time)) for item in value)
            ):
                from evrelay.backends.base import toml_kind

                name = f"{key!r} (in {prefix[:-1]})" if prefix else key
                shown = value.isoformat() if isinstance(value, (datetime.date, datetime.time)) else repr(value)
                raise ConfigError(
                    f"{address.where}: {address.backend} option {name} is a TOML {toml_kind(value)} ({shown}); "
                    "no option takes one (quote it to pass text)"
                )

    check(address.options, "")
