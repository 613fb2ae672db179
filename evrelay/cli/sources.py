"""Opening what a command reads: one address, several, or `~PATTERN` addresses.

One plain address gets its backend's own consumer, exactly as before; several addresses
or a pattern get a `MultiConsumer` (evrelay/multi.py) over one consumer per stream, with
every backend opened on the command's ExitStack.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from evrelay.backends.base import Backend, Consumer, ReadSpec
from evrelay.cli.common import Session


def open_reader(
    session: Session,
    stack: contextlib.ExitStack,
    texts: Sequence[str],
    spec: ReadSpec,
    *,
    command: str,
    needs: Callable[[ReadSpec], list[Any]],
) -> tuple[Consumer, Backend, str]:
    """The reader for `texts` (spec.stream is filled per stream), the first backend, and
    the stream (or pattern) name of a single address."""
    from evrelay.multi import MultiConsumer, StreamSource, stream_pattern

    sources = []
    for text in texts:
        address = session.address(text)
        backend = stack.enter_context(session.backend(address))
        name = address.require_stream(backend.stream_noun)
        backend.require(*needs(replace(spec, stream=name)), command=command)
        sources.append(StreamSource(address.display, backend, name, stream_pattern(name)))
    first = sources[0]
    if len(sources) == 1 and first.pattern is None:
        return stack.enter_context(first.backend.consumer(replace(spec, stream=first.stream))), first.backend, first.stream or ""
    reader = stack.enter_context(MultiConsumer(sources, spec, warn=session.warn))
    return reader, first.backend, first.stream or ""
