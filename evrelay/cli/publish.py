"""`evrelay publish ADDRESS [VALUE...]`: send values, or stdin, and confirm delivery.

The options are declared here; the work is `publish_messages` (evrelay/cli/publish_run.py),
which a plain `publish ADDRESS` reaches without typer (evrelay/cli/fast_path.py).
"""

from __future__ import annotations

from typing import Annotated, Optional

import typer

from evrelay.cli.common import (
    AddressArgument,
    CloudEventsOption,
    HeaderOption,
    KcatJsonOption,
    KeyDelimiterOption,
    KeyOption,
    Session,
    command,
    kcat_mode,
)
from evrelay.cli.publish_run import publish_messages


@command()
def publish(
    address: AddressArgument,
    values: Annotated[Optional[list[str]], typer.Argument(metavar="VALUE", help="Values to send; without them, stdin is read.", show_default=False)] = None,
    key: KeyOption = None,
    header: HeaderOption = None,
    input_mode: Annotated[Optional[str], typer.Option("--input", metavar="MODE", help="stdin as lines (one message per line, the default), json (envelopes), raw (one message), kcat (kcat -J lines) or keyed (KEY:VALUE lines, see -K).", show_default=False)] = None,
    kcat_json: KcatJsonOption = False,
    key_delimiter: KeyDelimiterOption = None,
    skip_invalid: Annotated[bool, typer.Option("--skip-invalid", help="With --input json/kcat: report and skip bad lines instead of stopping.")] = False,
    cloudevents: CloudEventsOption = None,
    *,
    session: Session,
) -> None:
    """Publish VALUEs, or stdin one message per line, and wait until the backend confirms them.

    \b
    Examples:
      evrelay publish demo hello world
      evrelay publish kafka:orders -k order-1 -H source=ci '{"id": 1}'
      cat events.jsonl | evrelay publish redis:orders --input json
      evrelay publish kafka:orders -K: < keyed.txt     # like kcat -P -K: -t orders
    """
    input_mode, delimiter = kcat_mode(input_mode, kcat_json, key_delimiter, "--input")
    publish_messages(
        session, address, values, key=key, header=header, input_mode=input_mode, delimiter=delimiter,
        skip_invalid=skip_invalid, cloudevents=cloudevents,
    )
