"""`evrelay completion bash|zsh|fish`: print the shell completion script.

The scripts call back into evrelay (typer's completion protocol, `_EVRELAY_COMPLETE`),
so they complete commands, options and profile names of the installed version. The same
scripts are kept in `completions/`; a test fails when they go stale.
"""

from __future__ import annotations

from typing import Annotated

import typer

from evrelay.cli.common import Session, command
from evrelay.errors import UsageError

SHELLS = ("bash", "zsh", "fish")
COMPLETE_VAR = "_EVRELAY_COMPLETE"


def completion_script(shell: str) -> str:
    from typer._completion_shared import get_completion_script

    if shell not in SHELLS:
        raise UsageError(f"shell must be one of {', '.join(SHELLS)}, not {shell!r}")
    script = get_completion_script(prog_name="evrelay", complete_var=COMPLETE_VAR, shell=shell)
    return script if script.endswith("\n") else script + "\n"


@command(session_options=())
def completion(
    shell: Annotated[str, typer.Argument(metavar="bash|zsh|fish", help="The shell to complete for.", show_default=False)],
    *,
    session: Session,
) -> None:
    """Print a completion script: `eval "$(evrelay completion bash)"`, or copy one from completions/.

    \b
    bash: evrelay completion bash > ~/.local/share/bash-completion/completions/evrelay
    zsh:  evrelay completion zsh > "${fpath[1]}/_evrelay"
    fish: evrelay completion fish > ~/.config/fish/completions/evrelay.fish
    """
    session.write_text(completion_script(shell))
