"""The backend registry: names to lazily imported classes, plus third-party plug-ins.

Built-in backends are listed as `"module:Class"` strings so that nothing (and no client
library) is imported until a command actually uses that backend. Third-party backends
register a `Backend` subclass under the `evrelay.backends` entry-point group:

    [project.entry-points."evrelay.backends"]
    mq = "my_package.evrelay_mq:MQBackend"

and are then usable as `backend = "mq"` in a profile, or as `mq://...` addresses when the
class implements `options_from_url`.
"""

from __future__ import annotations

import difflib
import importlib
from functools import cache
from typing import TYPE_CHECKING

from evrelay.errors import UnknownBackendError

if TYPE_CHECKING:
    from evrelay.backends.base import Backend

ENTRY_POINT_GROUP = "evrelay.backends"

BUILTIN_BACKENDS: dict[str, str] = {
    "local": "evrelay.backends.local:LocalBackend",
    "file": "evrelay.backends.jsonl:JsonlBackend",
    "kafka": "evrelay.backends.kafka:KafkaBackend",
    "redis": "evrelay.backends.redis_streams:RedisStreamsBackend",
    "nats": "evrelay.backends.nats:NatsBackend",
}

# URL schemes of inline addresses (`kafka://host/topic`) and the backend that parses them.
BUILTIN_SCHEMES: dict[str, str] = {"kafka": "kafka", "redis": "redis", "rediss": "redis", "nats": "nats"}


@cache
def _plugin_targets() -> dict[str, str]:
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def backend_names() -> list[str]:
    return sorted(set(BUILTIN_BACKENDS) | set(_plugin_targets()))


def is_backend_scheme(scheme: str) -> bool:
    return scheme in BUILTIN_SCHEMES or scheme in _plugin_targets()


def backend_for_scheme(scheme: str) -> str:
    return BUILTIN_SCHEMES.get(scheme, scheme)


def _target(name: str) -> str:
    if name in BUILTIN_BACKENDS:
        return BUILTIN_BACKENDS[name]
    plugins = _plugin_targets()
    if name in plugins:
        return plugins[name]
    close = difflib.get_close_matches(name, backend_names(), n=1)
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise UnknownBackendError(
        f"unknown backend {name!r}; {hint}known backends: {', '.join(backend_names())}",
        hint=f"third-party backends register under the {ENTRY_POINT_GROUP!r} entry-point group",
    )


def load_backend_class(name: str) -> type[Backend]:
    """Import and return the Backend class registered under `name`."""
    from evrelay.backends.base import Backend

    target = _target(name)
    module_name, _, attribute = target.partition(":")
    try:
        module = importlib.import_module(module_name)
        cls = getattr(module, attribute) if attribute else module
    except ImportError as exc:
        raise UnknownBackendError(
            f"backend {name!r} could not be loaded from {target!r}: {exc}",
            hint="is the package that provides it (and its client library) installed?",
        ) from None
    except AttributeError:
        raise UnknownBackendError(f"backend {name!r}: {target!r} does not exist") from None
    if not (isinstance(cls, type) and issubclass(cls, Backend)):
        raise UnknownBackendError(f"backend {name!r}: {target!r} is not an evrelay Backend subclass")
    return cls
