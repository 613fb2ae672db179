"""confluent-kafka's C extension (`confluent_kafka.cimpl`), loaded without its package.

Producer, Consumer, TopicPartition, KafkaError and KafkaException all live in the C
extension; the package's `__init__` adds the serialising clients, which import asyncio
and the schema-registry plumbing: ~40 ms of CPU before the first message, a quarter of
kcat's whole 300,000-line publish and more than evrelay's own imports. Once `load()` has
run, `from confluent_kafka.cimpl import Producer` takes the module from `sys.modules`
without importing the package (Python looks a dotted name up there before its parents);
the classes are the very objects the package exports, so code that later imports the
package (admin commands use `confluent_kafka.admin`) shares them, exceptions included.
"""

from __future__ import annotations

import sys
from types import ModuleType

NAME = "confluent_kafka.cimpl"


def load() -> ModuleType:
    """The extension module; ImportError when confluent-kafka is not installed (or not
    laid out as a package with its extension beside it: the caller then imports the
    package the ordinary way, which reports what is missing)."""
    loaded = sys.modules.get(NAME)
    if loaded is not None:
        return loaded
    from importlib.machinery import PathFinder
    from importlib.util import find_spec, module_from_spec

    package = find_spec("confluent_kafka")  # a top-level name: found, not imported
    locations = package.submodule_search_locations if package is not None else None
    spec = PathFinder.find_spec(NAME, locations) if locations else None
    if spec is None or spec.loader is None:
        raise ImportError(f"no {NAME} extension module")
    module = module_from_spec(spec)
    sys.modules[NAME] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[NAME]
        raise
    sys.meta_path.insert(0, _BindToPackage)
    return module


class _BindToPackage:
    """Sets the package's `cimpl` attribute when the package is imported after `load()`:
    Python binds a submodule to its parent only when it loads the submodule itself, so
    `confluent_kafka.cimpl` would otherwise be missing (`import confluent_kafka.cimpl`
    followed by attribute access, in a plug-in say). A one-shot meta path finder: it
    finds the package as the rest of the path would, and wraps the loader's exec_module."""

    @staticmethod
    def find_spec(name: str, path: object = None, target: object = None) -> object:
        if name != "confluent_kafka":
            return None
        sys.meta_path.remove(_BindToPackage)
        from importlib.util import find_spec

        spec = find_spec(name)
        if spec is None or spec.loader is None or not hasattr(spec.loader, "exec_module"):
            return spec
        exec_module = spec.loader.exec_module

        def exec_and_bind(module: ModuleType) -> None:
            module.cimpl = sys.modules[NAME]  # type: ignore[attr-defined]
            exec_module(module)

        spec.loader.exec_module = exec_and_bind  # type: ignore[method-assign]
        return spec
