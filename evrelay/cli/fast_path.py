"""`evrelay publish ADDRESS [VALUE...]` without the CLI framework.

Importing typer (and the click it carries) and building the command costs ~19 ms of CPU
on every call (one message published: 78 ms through typer, 59 ms here), 7% of publishing
300,000 lines and three times what a C client spends starting up (issue 16; README,
Performance). The plainest invocations of `publish` are therefore recognised here and run directly: the word `publish`, then exactly one ADDRESS and any VALUEs
(words that do not start with `-`), and among them only the flags -q/--quiet and
-v/--verbose. Anything else (another option, `--`, `-h`, an option before the command,
a word that is not printable, shell completion) returns None, and the app parses the
line as it always does; so this path accepts a subset of what typer accepts, and
produces the same outcome for it (tests/test_publish_fast_path.py runs a representative
set of command lines both ways and compares exit status, stdout and stderr).
"""

from __future__ import annotations

import sys

FLAGS = {"-q": "quiet", "--quiet": "quiet", "-v": "verbose", "--verbose": "verbose"}
"""The options the fast path takes (session options without a value)."""


class PlainPublish:
    """A command line the fast path runs: `publish ADDRESS [VALUE...]` with these flags.
    (A plain class: a dataclass or a NamedTuple costs 3-6 ms of imports and class
    building, a fifth of what this path saves.)"""

    def __init__(self, address: str, values: list[str], *, quiet: bool = False, verbose: bool = False) -> None:
        self.address = address
        self.values = values
        self.quiet = quiet
        self.verbose = verbose


def parse_plain_publish(args: list[str]) -> PlainPublish | None:
    """The invocation, when `args` is a plain `publish` the fast path can run; else None."""
    if len(args) < 2 or args[0] != "publish":
        return None
    words: list[str] = []
    flags: set[str] = set()
    for arg in args[1:]:
        if arg in FLAGS:
            flags.add(FLAGS[arg])
        elif arg.startswith("-") and arg != "-":
            return None  # another option, `--`, -h: typer parses it
        elif not arg.isprintable():
            return None  # control characters or undecodable bytes: as typer hands them on
        else:
            words.append(arg)
    if not words:
        return None  # no ADDRESS: typer shows the usage error
    return PlainPublish(words[0], words[1:], quiet="quiet" in flags, verbose="verbose" in flags)


def run_plain_publish(call: PlainPublish) -> int:
    """Run it as the app would (its Session, its exit statuses); the exit status."""
    from evrelay.cli.exits import exit_status
    from evrelay.cli.publish_run import publish_messages
    from evrelay.cli.session import Session

    session = Session(stdin=sys.stdin.buffer, stdout=sys.stdout.buffer, stderr=sys.stderr)
    session.apply_options(quiet=call.quiet, verbose=call.verbose)
    try:
        publish_messages(session, call.address, call.values or None)
    except (Exception, KeyboardInterrupt) as exc:
        return exit_status(exc, session)
    return 0
