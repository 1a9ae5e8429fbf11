"""Progress lines for operations slower than a second (deploying, updating).

Writes to stderr, overwriting the line with ``\\r`` where that works (a terminal, a notebook's
stream output), and ends with the outcome and the time taken. Core code stays free of IPython.
"""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, label: str, enabled: bool = True) -> None:
        self.label = label
        self.enabled = enabled
        self.t0 = time.perf_counter()
        self._width = 0

    def step(self, text: str) -> None:
        if not self.enabled:
            return
        line = f"{self.label}: {text}"
        pad = max(0, self._width - len(line))
        sys.stderr.write("\r" + line + " " * pad)
        sys.stderr.flush()
        self._width = len(line)

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def done(self, text: str) -> None:
        self.step(f"{text} ({self.elapsed():.1f} s)")
        if self.enabled:
            sys.stderr.write("\n")
            sys.stderr.flush()
