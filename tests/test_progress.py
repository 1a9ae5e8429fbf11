"""Progress output: rewritten in place on a terminal, one line per step in a log."""

from __future__ import annotations

import io
import os
import pty

from mlops_lab import _progress
from mlops_lab._progress import Progress


def test_a_log_gets_one_line_per_step_and_repeated_figures_are_thinned(monkeypatch):
    # Given stderr that is a file (a CI log, `make demo | tee`)
    log = io.StringIO()
    monkeypatch.setattr("sys.stderr", log)
    clock = [100.0]
    monkeypatch.setattr(_progress.time, "perf_counter", lambda: clock[0])
    p = Progress("deploying churn:1 as 'svc'")
    # When the steps come, some of them only updating their figures
    p.step("starting the server")
    for s in range(1, 25):
        clock[0] += 1.0
        p.step(f"waiting for the first server ({s} s)")
    p.step("scoring the input example")
    p.done("ready at http://127.0.0.1:8000")
    # Then there is no carriage return, each line is whole, and the ticking step is written
    # when it starts and then every LINE_EVERY_S seconds
    out = log.getvalue()
    assert "\r" not in out
    assert out.splitlines() == [
        "deploying churn:1 as 'svc': starting the server",
        "deploying churn:1 as 'svc': waiting for the first server (1 s)",
        "deploying churn:1 as 'svc': waiting for the first server (11 s)",
        "deploying churn:1 as 'svc': waiting for the first server (21 s)",
        "deploying churn:1 as 'svc': scoring the input example",
        "deploying churn:1 as 'svc': ready at http://127.0.0.1:8000 (24.0 s)",
    ]


def test_a_terminal_gets_the_line_rewritten_in_place(monkeypatch):
    main, sub = pty.openpty()
    tty = os.fdopen(sub, "w")
    monkeypatch.setattr("sys.stderr", tty)
    p = Progress("building")
    p.step("copying the model files")
    p.step("done")
    p.done("ok")
    tty.close()
    chunks = []
    while True:  # read to the end: under load the terminal may hand the output over in pieces
        try:
            chunk = os.read(main, 4096)
        except OSError:  # EIO: the other side is closed and everything was read
            break
        if not chunk:
            break
        chunks.append(chunk)
    out = b"".join(chunks).decode()
    os.close(main)
    assert out.startswith("\rbuilding: copying the model files\rbuilding: done")
    assert out.count("\n") == 1 and "building: ok (" in out


def test_disabled_progress_writes_nothing(monkeypatch):
    log = io.StringIO()
    monkeypatch.setattr("sys.stderr", log)
    p = Progress("x", enabled=False)
    p.step("a")
    p.done("b")
    assert log.getvalue() == ""
