"""The tutorials in ``notebooks/`` run top to bottom in a fresh kernel, each against its own home
folder; their assert cells check what they show. Outputs are stripped in git."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_the_tutorials_tell_the_whole_story():
    names = [p.stem for p in NOTEBOOKS]
    assert names == ["01_register", "02_deploy", "03_monitor", "04_update", "05_cicd"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_outputs_are_stripped(path):
    nb = nbformat.read(path, as_version=4)
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: strip the outputs before committing"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_tutorial_runs_top_to_bottom(path, tmp_path, _isolated_home, monkeypatch):
    # The kernel finds this interpreter's `mlops-lab` command, as it would in an activated env.
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    try:
        client.execute()
    finally:
        import mlops_lab as ml

        for d in ml.list_deployments():  # a failed notebook leaves nothing running
            d.delete()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors == []
    # Every code cell ran and the rich objects rendered (no cell skipped by an early stop)
    assert all(c.execution_count for c in nb.cells if c.cell_type == "code")
