"""Progress lines for operations slower than a second (deploying, updating, scoring).

Writes to stderr. On a terminal or in a notebook's stream output the line is rewritten in place
with ``\\r``; anywhere else (a CI log, ``make demo | tee``) each step comes as a line of its own,
and a step that only updates its figures (elapsed seconds, rows done) is written again at most
every ``LINE_EVERY_S`` seconds, so a log stays readable. Ends with the outcome and the time taken.
Core code stays free of IPython.
"""

from __future__ import annotations

import re
import sys
import time

LINE_EVERY_S = 10.0
_FIGURES = re.compile(r"[\d,.]+")


def _rewrites_in_place(stream) -> bool:
    """True where ``\\r`` returns to the start of the line: a terminal, or ipykernel's stream
    (JupyterLab and Notebook render carriage returns in stream outputs)."""
    if type(stream).__module__.startswith("ipykernel"):
        return True
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


class Progress:
    def __init__(self, label: str, enabled: bool = True) -> None:
        self.label = label
        self.enabled = enabled
        self.t0 = time.perf_counter()
        self._width = 0
        self._in_place: bool | None = None
        self._last_shape: str | None = None
        self._last_line_t = 0.0

    def _write(self, line: str, final: bool = False) -> None:
        stream = sys.stderr
        if self._in_place is None:
            self._in_place = _rewrites_in_place(stream)
        if self._in_place:
            pad = max(0, self._width - len(line))
            stream.write("\r" + line + " " * pad + ("\n" if final else ""))
            self._width = len(line)
        else:
            shape = _FIGURES.sub("#", line)
            now = time.perf_counter()
            if not final and shape == self._last_shape and now - self._last_line_t < LINE_EVERY_S:
                return
            self._last_shape, self._last_line_t = shape, now
            stream.write(line + "\n")
        stream.flush()

    def step(self, text: str) -> None:
        if self.enabled:
            self._write(f"{self.label}: {text}")

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def done(self, text: str) -> None:
        if self.enabled:
            self._write(f"{self.label}: {text} ({self.elapsed():.1f} s)", final=True)
