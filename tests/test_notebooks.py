"""The tutorials in ``notebooks/`` run top to bottom in a fresh kernel, each against its own home
folder, and are exported to HTML as nbconvert renders them. Outputs are stripped in git.

The tutorials read as a user's story: they hold no assert. What they must show is checked here
(``CHECKS``): after the cell with a given id has run, its check runs in the same kernel (code),
or is looked for in that cell's printed output (``output:`` followed by the text)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))

CHECKS: dict[str, dict[str, list[str]]] = {
    "01_register": {
        "6480daca": [
            'assert v1.ref == "breast-cancer:1"',
            'assert v1.tags == {"team": "oncology", "algorithm": "logreg"}',
            'assert v1.has_baseline and len(v1.signature["columns"]) == X.shape[1]',
        ],
        "5fb66890": ["assert v2.version == 2"],
        "72e20356": [
            'assert [v.ref for v in found] == ["breast-cancer:2", "breast-cancer:1"]',
            'assert ml.get_model("breast-cancer@production").version == 1',
        ],
        "1314ac32": ["output:same answers as the trained model: True"],
        "38bce231": ["output:did you mean 'breast-cancer'?"],
    },
    "02_deploy": {
        "08a7e380": ["assert d.status().healthy"],
        "528f27fa": ["assert answers == clf.predict(X.head(5)).tolist()"],
        "55a9db9c": ["assert json.loads(answer[0]) == clf.predict(X.head(2)).tolist()"],
        "e60adc2f": ['assert refused == ["401"]'],
        "73ebc8da": ["output:mean texture"],
        "e83ea8a5": [
            'assert client.is_model_ready("tumour", headers={"Authorization": f"Bearer {key}"})',
            'assert result.as_numpy("predict").tolist() == clf.predict(X.head(3)).tolist()',
        ],
        "e579560b": ["assert ml.list_deployments() == []"],
    },
    "03_monitor": {
        "a1667ea6": [
            # (the tutorial waits one flush interval; a slow machine may need more before all is read)
            "from mlops_lab.deployers.base import wait_until\n"
            "wait_until(lambda: len(ml.collected_data('cancer-svc')) >= 400, timeout=30)\n"
            "data = ml.collected_data('cancer-svc')",
            "assert len(data) == 400 and data.request_id.nunique() == 40",
            'assert {"mean radius", "prediction", "latency_ms", "status_code"} <= set(data.columns)',
        ],
        "3cdb652a": ['assert "mean radius" in flagged and "mean texture" not in flagged'],
        "c5da41d5": ["assert joined.label.notna().sum() >= 10"],
        "36d77371": [
            'assert chart.to_dict()["title"]["text"] == "Deployment cancer-svc"',
            # 40 requests over ten seconds: a timeline of buckets, not one dot
            'assert len(chart.to_dict()["datasets"][chart.to_dict()["vconcat"][0]["data"]["name"]]) >= 8',
        ],
    },
    "04_update": {
        "326b217f": ['assert [(m["version"], m["traffic"]) for m in d.models] == [(1, 75), (2, 25)]'],
        "3e1bc35f": ['assert [m["version"] for m in d.models] == [2]'],
        "166cf6fd": ['assert [(m["version"], m["traffic"]) for m in d.models] == [(1, 75), (2, 25)]'],
        "47c95d4f": ['assert [m["version"] for m in d.models] == [1]'],
        "20be7be3": ["output:is used by deployment 'iris-svc'"],
    },
    "05_cicd": {
        "8b77dca2": ["assert json.loads(out.n) == [0, 0, 0]"],
        "7400424f": ["output:exit code: 3"],
    },
    "06_decide": {
        "3f9b2d64": ['assert d.shadows == [{"name": "tumour", "version": 2, "traffic": 0, "route": "tumour", "shadow": 1.0}]'],
        "d41e7a93": ['assert set(ml.collected_data("tumour-svc").model_version) == {"tumour:1"}'],
        "b7c4e158": [
            'assert (shadow_readout.kind, shadow_readout.pairs) == ("classification", len(X_live))',
            "assert shadow_readout.agreement == (stump.predict(X_live) == logreg.predict(X_live)).mean() < 1",
        ],
        "e90f3a2c": ["output:MonitorChart"],
        "c3e85b07": ['assert ab.significant and ab.winner == "tumour:2", ab.verdict'],
        "4b96d7a2": ['assert not check.ok and [f["rule"]["kind"] for f in check.firings] == ["accuracy"]'],
        "91c0f4ad": ['assert [(m["version"], m["traffic"]) for m in d.models] == [(2, 100)]'],
        "a26f9e31": ['assert "tumour-svc" in card._repr_html_() and "Logistic regression" in card._repr_html_()'],
    },
}


def test_the_tutorials_tell_the_whole_story():
    names = [p.stem for p in NOTEBOOKS]
    assert names == ["01_register", "02_deploy", "03_monitor", "04_update", "05_cicd", "06_decide"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_outputs_are_stripped_and_no_assert_is_in_the_readers_way(path):
    nb = nbformat.read(path, as_version=4)
    ids = {c.id for c in nb.cells}
    for cell in nb.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None, f"{path.name}: strip the outputs before committing"
            assert "assert " not in cell.source, f"{path.name}: move the check into CHECKS"
    assert set(CHECKS[path.stem]) <= ids, "a check follows a cell that is gone"


def _text(cell) -> str:
    parts = []
    for o in cell.outputs:
        if o.output_type == "stream":
            parts.append(o.text)
        elif o.output_type in ("execute_result", "display_data"):
            parts.append(o.get("data", {}).get("text/plain", ""))
    return "".join(parts)


def _run(client, nb, checks) -> None:
    """Execute every cell, and each cell's checks right after it, in one kernel."""
    with client.setup_kernel():
        for index, cell in enumerate(nb.cells):
            client.execute_cell(cell, index)
            for check in checks.get(cell.get("id"), []):
                if check.startswith("output:"):
                    assert check[len("output:"):] in _text(cell), f"cell {cell.id}: {check!r} not in {_text(cell)!r}"
                else:
                    probe = nbformat.v4.new_code_cell(check)
                    client.execute_cell(probe, index)  # raises CellExecutionError when it fails
                    nb.cells[index] = cell  # nbclient stores the cell it ran at that index


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_tutorial_runs_top_to_bottom_and_renders(path, tmp_path, _isolated_home, monkeypatch):
    # The kernel finds this interpreter's `mlops-lab` command, as it would in an activated env.
    monkeypatch.setenv("PATH", f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}})
    try:
        _run(client, nb, CHECKS[path.stem])
    finally:
        import mlops_lab as ml

        for d in ml.list_deployments():  # a failed notebook leaves nothing running
            d.delete()
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == "error"]
    assert errors == []
    # Every code cell ran and the rich objects rendered (no cell skipped by an early stop)
    assert all(c.execution_count for c in nb.cells if c.cell_type == "code")
    # As nbconvert's HTML shows it (nbviewer, a CI artefact): no script from a CDN, and the
    # monitoring chart as the image its bundle carries
    from nbconvert import HTMLExporter

    html, _ = HTMLExporter().from_notebook_node(nb)
    assert "cdn.jsdelivr.net/npm/vega" not in html
    if path.stem == "03_monitor":
        assert html.count('src="data:image/png;base64,') == 1


def test_the_canary_in_tutorial_6_tells_its_versions_apart_on_all_but_1_in_1000_random_splits():
    """Tutorial 6's canary sends each request to version 1 or 2 at random (``Route.pick``), and
    its check wants the A/B readout significant. With each case sent twice, one run in about sixty
    fell short (p = 0.059 in a CI run): so many passes that chance cannot fail it. The models and
    split are those of the tutorial's first cell; the passes are read from its canary cell."""
    import re

    import numpy as np
    from sklearn.datasets import load_breast_cancer
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.tree import DecisionTreeClassifier

    from mlops_lab.monitoring.ab import two_proportions

    nb = nbformat.read(next(p for p in NOTEBOOKS if p.stem == "06_decide"), as_version=4)
    canary = next(c.source for c in nb.cells if c.get("id") == "8a1f6d39")
    passes = int(re.search(r"for rep in range\((\d+)\)", canary).group(1))
    X, y = load_breast_cancer(return_X_y=True, as_frame=True)
    X_train, X_live, y_train, y_live = train_test_split(X, y, test_size=0.5, random_state=0)
    stump = DecisionTreeClassifier(max_depth=1, random_state=0).fit(X_train, y_train)
    logreg = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000)).fit(X_train, y_train)
    right_1 = np.tile(stump.predict(X_live) == y_live.to_numpy(), passes)
    right_2 = np.tile(logreg.predict(X_live) == y_live.to_numpy(), passes)
    rng = np.random.default_rng(0)
    short = 0
    for _ in range(5000):
        to_2 = rng.random(len(right_1)) < 0.5
        test = two_proportions(int(right_1[~to_2].sum()), int((~to_2).sum()), int(right_2[to_2].sum()), int(to_2.sum()))
        short += not (test.p_value < 0.05 and test.difference > 0)
    assert short / 5000 < 1e-3, f"{passes} passes: {short} of 5,000 random splits not significant"
