"""Fault injection for the crash-consistency tests.

``crashpoint(name)`` kills the current process with SIGKILL when the environment variable
``MLOPS_LAB_CRASHPOINT`` equals ``name``. The tests use it to stop a registration at exact points
(after serializing, between two blobs, inside the transaction) and check that the registry is
consistent afterwards. It costs one dictionary look-up when unset.
"""

from __future__ import annotations

import os
import signal

ENV = "MLOPS_LAB_CRASHPOINT"


def crashpoint(name: str) -> None:
    if os.environ.get(ENV) == name:
        os.kill(os.getpid(), signal.SIGKILL)
