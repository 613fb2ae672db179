"""What backends can do and what they need: the capability model and client libraries.

A backend declares its `Capability` set; a command declares what it needs (`read_needs`
works it out for a read) and `refuse_missing` is the one check that refuses, in one
wording for every command and backend, before anything connects. `ClientLibrary` names
the third-party client a backend talks through, and `import_client` turns a missing one
into a usage error with the pip command that installs it.

Part of the adapter interface: import these names from `evrelay.backends.base`.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from evrelay.errors import MissingClientError, UnsupportedError

if TYPE_CHECKING:
    from evrelay.backends.base import Backend
    from evrelay.backends.messaging import ReadSpec


@dataclass(frozen=True, slots=True)
class ClientLibrary:
    """The third-party client a backend talks through, and how to install it."""

    module: str
    """The import name (`confluent_kafka`)."""
    package: str
    """The PyPI name (`confluent-kafka`)."""
    extra: str | None = None
    """evrelay's optional extra that pulls it in (`nats` for `evrelay[nats]`), if any."""

    @property
    def install_command(self) -> str:
        if self.extra:
            return f"pip install 'evrelay[{self.extra}]'   (or: pip install {self.package})"
        return f"pip install {self.package}"


def import_client(library: ClientLibrary, backend: str) -> Any:
    """The client library's module, or a usage error (exit 2) with the pip command that
    installs it: a missing optional client is the user's set-up, not an evrelay bug."""
    import importlib

    try:
        return importlib.import_module(library.module)
    except ImportError:
        raise MissingClientError(
            f"the {backend} backend needs the {library.package} client library, which is not installed",
            hint=library.install_command,
        ) from None


class Capability(enum.Enum):
    PUBLISH = "publishing"
    READ = "reading"
    FOLLOW = "following new messages (-f)"
    GROUPS = "consumer groups (-g)"
    PENDING = "listing pending messages"
    CLAIM = "claiming idle messages"
    SEEK_POSITION = "starting at a native position"
    SEEK_TIME = "starting at a time"
    GROUP_SEEK = "moving a consumer group (replay -g)"
    GROUP_DELETE = "deleting a consumer group"
    KEEP_TIMESTAMP = "keeping the original timestamp"
    INSPECT = "inspection (ls, info, groups, lag)"
    GROUP_RANGE_END = "ending a group read at a position (--to with -g)"
    PARTITIONS = "choosing partitions (--partition)"
    EXACTLY_ONCE = "exactly-once delivery (transactions that include the source's progress)"


REFUSAL_HINTS = {
    Capability.GROUP_RANGE_END: "end a group read with -n or --idle-timeout",
}


def read_needs(spec: ReadSpec) -> frozenset[Capability]:
    """What reading `spec` needs from a backend: commands declare it, and the session
    refuses (`refuse_missing`) before anything is connected."""
    from evrelay.positions import AtTime, EntryId, Offset, PartitionOffsets

    needed = {Capability.READ}
    if spec.follow:
        needed.add(Capability.FOLLOW)
    if spec.group:
        needed.add(Capability.GROUPS)
        if spec.stop is not None:
            needed.add(Capability.GROUP_RANGE_END)
    if spec.partitions:
        needed.add(Capability.PARTITIONS)
    for position in (spec.start, spec.stop):
        if isinstance(position, AtTime):
            needed.add(Capability.SEEK_TIME)
        elif isinstance(position, (Offset, EntryId, PartitionOffsets)):
            needed.add(Capability.SEEK_POSITION)
    return frozenset(needed)


def refuse_missing(backend: type[Backend] | Backend, needed: Iterable[Capability], command: str | None = None) -> None:
    """The one capability check: UnsupportedError (exit 2) naming the first capability
    `backend` lacks, in one wording for every command and backend."""
    for capability in sorted(needed, key=lambda c: list(Capability).index(c)):
        if capability not in backend.capabilities:
            needs = f" ({command} needs it)" if command else ""
            raise UnsupportedError(f"the {backend.name} backend does not support {capability.value}{needs}", hint=REFUSAL_HINTS.get(capability))
