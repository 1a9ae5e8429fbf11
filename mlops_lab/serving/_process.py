"""What a server process and a shadow's worker ask of the system (Linux, through glibc)."""

from __future__ import annotations

import ctypes
import signal
import sys


def libc():
    """glibc through ctypes on Linux, else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6", use_errno=True)
    except OSError:
        return None


def die_with_parent() -> None:
    """Linux: get SIGTERM when the parent dies (a server its supervisor, a shadow's worker its
    server), so nothing outlives what supervises it."""
    lib = libc()
    if lib is not None:
        lib.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
