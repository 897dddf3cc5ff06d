"""Child processes of the embedded stack die with their parent, even when the parent is SIGKILLed.

Used for redis-server, the broker subprocess and the screener processes the demo and tests start, so that an
interrupted run never leaves servers behind on the machine. Linux only (PR_SET_PDEATHSIG); elsewhere a no-op.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
from collections.abc import Callable
from typing import Any

_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def _prctl() -> Callable[..., int] | None:
    if not sys.platform.startswith("linux"):
        return None
    libc = ctypes.CDLL(None, use_errno=True)
    prctl = libc.prctl
    prctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong, ctypes.c_ulong]
    prctl.restype = ctypes.c_int
    return prctl


def set_parent_death_signal(sig: int) -> None:
    """Deliver `sig` to this process when the thread that started it exits (call early in a child)."""
    prctl = _prctl()
    if prctl is not None and prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0) != 0:
        raise OSError(ctypes.get_errno(), "prctl(PR_SET_PDEATHSIG) failed")


def parent_death_preexec(sig: int = signal.SIGKILL) -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child receive ``sig`` when its parent exits.

    prctl is looked up here, in the parent: the function runs in the forked child before exec, where loading
    a library could deadlock on a lock another parent thread held at fork time. The signal fires when the
    *thread* that forked the child exits, so start long-lived children from a long-lived thread.
    """
    prctl = _prctl()
    if prctl is None:
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl: nobody would ever signal us
            os.kill(os.getpid(), sig)

    return preexec


def child_process_kwargs(sig: int = signal.SIGTERM) -> dict[str, Any]:
    """subprocess.Popen keyword arguments for a child that must not outlive this process.

    SIGTERM by default so a screener child still drains and commits when its parent dies.
    """
    return {"preexec_fn": parent_death_preexec(sig)}
