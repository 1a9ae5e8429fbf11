"""Model cards: built from the registry alone for a version without traffic, and with its
deployment's live numbers, accuracy from feedback, drift, the alerts that fired and the chart
for one with traffic; written as HTML and Markdown through the API, the CLI and the magic.
(The HTML drawn in a browser with no network: tests/ui/test_card.py.)"""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

import mlops_lab as ml


class Summer:
    def predict(self, X):
        return (X["a"].to_numpy() + X["b"].to_numpy() > 0).astype(int)


def _frame(rng, n, shift=0.0):
    return pd.DataFrame({"a": rng.normal(shift, 1, n), "b": rng.normal(0, 1, n), "plan": rng.choice(["basic", "pro"], n)})


@pytest.fixture
def rng():
    return np.random.default_rng(11)


def _section(card, title):
    return next(s for s in card.sections if s.title.startswith(title))


def test_a_version_without_traffic_has_a_card_from_the_registry(sqlite_registry, rng, tmp_path):
    base = _frame(rng, 1000)
    ml.register_model(Summer(), "churn", sample_input=base.head(), baseline=base, tags={"team": "growth"},
                      properties={"auc": "0.91"}, description="Who leaves next month.")
    card = ml.model_card("churn:1")
    assert card.ref == "churn:1" and _section(card, "Description").text == "Who leaves next month."
    assert [r["column"] for r in _section(card, "Signature").rows] == ["a", "b", "plan"]
    assert {(r["key"], r["kind"]) for r in _section(card, "Tags").rows} == {("team", "tag"), ("auc", "property")}
    stats = {r["feature"]: r for r in _section(card, "Baseline").rows}
    assert stats["a"]["mean"] == pytest.approx(base.a.mean()) and stats["a"]["rows"] == 1000
    assert "basic" in stats["plan"]["top values"]
    assert _section(card, "Deployments").text == "Not deployed."
    assert not any(s.svg for s in card.sections)
    md = card.markdown
    assert md.startswith("# churn:1\n") and "| feature | rows | mean |" in md and "Not deployed." in md
    page = card.html
    assert "<h1>churn:1</h1>" in page and "Who leaves next month." in page
    assert "<script" not in page and "src=" not in page  # nothing to fetch
    card.save(tmp_path / "card.md")
    assert (tmp_path / "card.md").read_text() == md
    with pytest.raises(ml.InvalidInput, match="a card is written as .html or .md, not .pdf"):
        card.save(tmp_path / "card.pdf")
    with pytest.raises(ml.VersionNotFound):
        ml.model_card("churn:7")


def test_a_version_with_traffic_has_its_deployments_numbers_drift_alerts_and_chart(sqlite_registry, rng, tmp_path):
    base = _frame(rng, 1000)
    ml.register_model(Summer(), "churn", sample_input=base.head(), baseline=base)
    d = ml.deploy("churn:1", name="churn-svc", progress=False, collect={"flush_seconds": 0.3})
    try:
        import httpx

        live = _frame(rng, 200, shift=1.5)
        with httpx.Client(headers={"Authorization": f"Bearer {d.keys['primary']}"}) as http:
            ids = [http.post(f"{d.url}/score", json={"data": live.iloc[i:i + 4].to_dict("records")}).headers["x-request-id"]
                   for i in range(0, 200, 4)]
        deadline = time.monotonic() + 30
        while len(ml.collected_data("churn-svc")) < 200 and time.monotonic() < deadline:
            time.sleep(0.2)
        ml.record_feedback("churn-svc", ids, [0] * len(ids))  # the first row of each request: label 0
        ml.set_alerts("churn-svc", {"drift": 0}, every="1h")
        assert not ml.check_alerts("churn-svc").ok
        card = ml.model_card("churn:1")
        numbers = _section(card, "Live numbers (churn-svc").rows[0]
        assert numbers["requests"] == 50 and numbers["rows"] == 200 and numbers["errors"] == 0
        first_rows = live.iloc[::4]
        assert numbers["labelled rows"] == 50
        assert numbers["accuracy"] == pytest.approx(np.mean(Summer().predict(first_rows) == 0))
        drifted = {r["feature"] for r in _section(card, "Drift (churn-svc").rows if r["drifted"]}
        assert "a" in drifted and "b" not in drifted
        alerts = _section(card, "Alerts (churn-svc")
        assert alerts.rows and alerts.rows[0]["rule"] == "drift"
        assert alerts.text == "1 firing in the last 24 hours; 1 rule firing now."
        assert _section(card, "Monitoring (churn-svc").svg.startswith("<svg")
        out = tmp_path / "card.html"
        proc = subprocess.run([sys.executable, "-m", "mlops_lab.cli", "card", "churn:1", "-o", str(out)],
                              capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, proc.stderr
        assert "<svg" in out.read_text() and "Drift (churn-svc)" in out.read_text()
        from IPython.core.interactiveshell import InteractiveShell

        sh = InteractiveShell.instance()
        sh.run_line_magic("load_ext", "mlops_lab")
        assert sh.run_line_magic("model_card", f"churn:1 -o {tmp_path / 'c.md'}").ref == "churn:1"
        assert (tmp_path / "c.md").read_text().startswith("# churn:1")
    finally:
        d.delete()
