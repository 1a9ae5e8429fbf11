"""The main job (`make demo` runs it): examples/quickstart.py, end to end on the embedded
defaults, in a fresh home folder."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_quickstart_runs_end_to_end_on_the_embedded_defaults(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_LAB_")}
    env["MLOPS_LAB_HOME"] = str(tmp_path / "home")
    proc = subprocess.run([sys.executable, str(ROOT / "examples" / "quickstart.py")], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = proc.stdout
    assert f"registry : sqlite:///{tmp_path / 'home' / 'registry.db'}" in out
    assert "registered breast-cancer:1" in out and "predictions identical to the original" in out
    assert re.search(r"deployed at http://127\.0\.0\.1:\d+: 20 rows scored over HTTP, same answers", out)
    assert "rolled back: revision 3 serves breast-cancer:1" in out
    assert re.search(r"collected \d+ rows from \d+ requests", out) and "deployment deleted; done in" in out
    assert (tmp_path / "monitor.html").stat().st_size > 10_000
