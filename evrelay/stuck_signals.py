"""Letting a second Ctrl-C or SIGTERM end a process stuck in C code that never returns.

Python runs a signal's handler only between bytecodes. jq evaluates an expression in C,
without returning to Python until it is done, so `--filter 'until(false; .)'` never lets
evrelay hear a signal. While such a call runs, the handlers carry SA_RESETHAND: the
kernel resets a signal to its default action once it is delivered, so the first signal
is still handled (when the call returns) and a second one during the same call ends the
process by the signal (exit 130 for Ctrl-C, 143 for SIGTERM). Outside the call the
handlers are restored as they were, so two signals in quick succession while Python runs
are both heard by its handlers, as without jq. Linux only (the struct's layout); elsewhere
only SIGKILL stops such a call.
"""

from __future__ import annotations

import contextlib
import signal
import sys
from collections.abc import Iterator
from typing import Any

SA_RESETHAND = 0x80000000
HEARD_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_sigaction: Any = None  # (libc.sigaction, the struct's ctypes class), built on first use


def _libc_sigaction() -> Any:
    global _sigaction
    if _sigaction is None:
        import ctypes

        class SigAction(ctypes.Structure):  # struct sigaction of glibc and musl on Linux (152 bytes on x86_64)
            _fields_ = [
                ("handler", ctypes.c_void_p),
                ("mask", ctypes.c_ulong * (1024 // (8 * ctypes.sizeof(ctypes.c_ulong)))),
                ("flags", ctypes.c_int),
                ("restorer", ctypes.c_void_p),
            ]

        _sigaction = (ctypes.CDLL(None, use_errno=True).sigaction, SigAction, ctypes.byref)
    return _sigaction


def current_action(signum: int) -> Any:
    """The kernel's struct sigaction for `signum` (handler address, mask, flags)."""
    sigaction, action_type, byref = _libc_sigaction()
    action = action_type()
    if sigaction(signum, None, byref(action)) != 0:
        raise OSError(f"sigaction({signum}) failed")
    return action


@contextlib.contextmanager
def second_signal_ends_a_stuck_call() -> Iterator[None]:
    """Around a call into C that may not return (a jq evaluation): see the module's docstring."""
    if not sys.platform.startswith("linux"):
        yield
        return
    sigaction, _, byref = _libc_sigaction()
    saved = {}
    for signum in HEARD_SIGNALS:
        action = current_action(signum)
        if action.handler is None or action.handler == signal.SIG_IGN:  # the default, or ignored: nothing to reset
            continue
        saved[signum] = action
        reset = type(action).from_buffer_copy(action)
        reset.flags |= SA_RESETHAND - (1 << 32)  # the flag in a signed int
        sigaction(signum, byref(reset), None)
    try:
        yield
    finally:
        # Also undoes the kernel's reset of a signal that came during the call: its
        # Python handler is still pending and runs once this returns.
        for signum, action in saved.items():
            sigaction(signum, byref(action), None)
