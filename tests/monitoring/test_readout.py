"""The A/B readout of a canary (``ml.compare``): its statistics against SciPy's on fixed data,
its verdicts on collected traffic with feedback labels, and a live canary read through the API,
the CLI and the magic."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import httpx
import numpy as np
import pandas as pd
import pytest
from scipy import stats

import mlops_lab as ml
from mlops_lab.monitoring import ab

from .conftest import write_traffic


@pytest.mark.parametrize("k,n", [(0, 10), (3, 10), (10, 10), (412, 1000), (1, 2), (77, 83)])
@pytest.mark.parametrize("confidence", [0.9, 0.95, 0.99])
def test_wilson_interval_is_scipys(k, n, confidence):
    want = stats.binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    assert ab.wilson_interval(k, n, confidence) == pytest.approx((want.low, want.high), abs=1e-12)


@pytest.mark.parametrize("k_a,n_a,k_b,n_b", [(45, 100, 60, 100), (812, 1000, 850, 1000), (3, 7, 9, 11), (50, 50, 49, 50)])
def test_the_two_proportion_test_is_scipys_chi_squared_test_of_the_table(k_a, n_a, k_b, n_b):
    got = ab.two_proportions(k_a, n_a, k_b, n_b)
    want = stats.chi2_contingency([[k_a, n_a - k_a], [k_b, n_b - k_b]], correction=False)
    assert got.statistic ** 2 == pytest.approx(want.statistic, rel=1e-10)
    assert got.p_value == pytest.approx(want.pvalue, rel=1e-9, abs=1e-15)
    assert got.difference == pytest.approx(k_b / n_b - k_a / n_a)
    assert got.ci_low < got.difference < got.ci_high


def test_the_bootstrap_interval_agrees_with_scipys_and_the_sample_size_with_the_textbook():
    rng = np.random.default_rng(7)
    y = rng.normal(size=400)
    p = y + rng.normal(scale=0.7, size=400)
    mae = ab.METRICS["mae"][0]
    lo, hi = ab.bootstrap_interval(y, p, mae, 0.95, resamples=4000)
    want = stats.bootstrap((y, p), lambda a, b: np.mean(np.abs(a - b)), paired=True, vectorized=False,
                           confidence_level=0.95, n_resamples=4000, method="percentile", random_state=1).confidence_interval
    width = want.high - want.low
    assert abs(lo - want.low) < 0.1 * width and abs(hi - want.high) < 0.1 * width
    # Fleiss' formula without continuity correction: 50 % against 60 %, 5 % level, 80 % power
    assert ab.rows_needed(0.5, 0.6) == 388
    assert ab.rows_needed(0.7, 0.7) is None


def _labelled_traffic(store, name, n_a, acc_a, n_b, acc_b, rng, start=0):
    """``n_a`` requests of m:1 and ``n_b`` of m:2 (one row each, predicting 1), labelled so that
    exactly ``acc_a`` and ``acc_b`` of them are right."""
    now = time.time()
    ids = []
    labels = []
    for version, n, acc in (("m:1", n_a, acc_a), ("m:2", n_b, acc_b)):
        frame = pd.DataFrame({"a": rng.normal(size=n)})
        got = write_traffic(store, name, frame, np.full(n, now - 60), version, np.ones(n))
        right = int(round(acc * n))
        ids += [f"{i}" for i in got]
        labels += [1] * right + [0] * (n - right)
    ml.record_feedback(name, ids, labels)


def test_a_shadow_read_out_before_the_served_answers_are_written_says_so(sqlite_registry, collection_store, rng):
    """The shadow's rows and the served rows are written on flushes of their own: a readout
    between the two is one line, not a KeyError from an empty table."""
    frame = pd.DataFrame({"a": rng.normal(size=5)})
    write_traffic(collection_store, "early/shadow", frame, np.full(5, time.time()), "m:2", np.ones(5))
    with pytest.raises(ml.InvalidInput, match="no served answers of 'early' are collected yet to pair the shadow's 5 rows with"):
        ml.compare("early", shadow=True)
    write_traffic(collection_store, "early", frame, np.full(5, time.time()), "m:1", np.ones(5))
    with pytest.raises(ml.InvalidInput, match="answered no request in common"):  # other request ids
        ml.compare("early", shadow=True)


def test_too_few_labels_give_the_rows_still_needed_and_that_many_settle_it(sqlite_registry, collection_store, rng):
    _labelled_traffic(collection_store, "few", 40, 0.80, 40, 0.85, rng)
    r = ml.compare("few", versions=("m:1", "m:2"))
    need = ab.rows_needed(0.80, 0.85)
    assert not r.significant and r.winner is None and r.more_rows == 2 * need - 80
    assert r.verdict.startswith(f"not enough evidence yet: about {2 * need - 80:,} more labelled rows (p = ")
    assert list(r.versions["labelled"]) == [40, 40] and list(r.versions["accuracy"]) == [0.80, 0.85]
    # with as many labelled rows as it said, at the same rates, the difference shows
    _labelled_traffic(collection_store, "enough", need, 0.80, need, 0.85, rng)
    r = ml.compare("enough", versions=("m:1", "m:2"))
    assert r.significant and r.winner == "m:2" and r.test.p_value < 0.05
    assert r.verdict.startswith("m:2 is better than m:1 at level 0.05: accuracy 0.850 against 0.800, difference +0.050")
    row = r.versions.iloc[1]
    want = stats.binomtest(int(round(0.85 * need)), need).proportion_ci(0.95, method="wilson")
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((want.low, want.high))


def test_a_regression_metric_is_compared_with_a_bootstrap(sqlite_registry, collection_store, rng):
    now = time.time()
    ids, labels = [], []
    for version, noise in (("m:1", 1.0), ("m:2", 0.5)):
        frame = pd.DataFrame({"a": rng.normal(size=300)})
        truth = frame.a.to_numpy() * 3
        ids += write_traffic(collection_store, "reg", frame, np.full(300, now - 60), version,
                             truth + rng.normal(scale=noise, size=300))
        labels += list(truth)
    ml.record_feedback("reg", ids, labels)
    r = ml.compare("reg", metric="mae", versions=("m:1", "m:2"))
    assert r.test.method == "bootstrap" and r.test.difference < 0 and r.significant and r.winner == "m:2"
    assert r.versions.loc[1, "mae"] < r.versions.loc[0, "mae"]
    # 2,000 resamples cannot show p below 1/1000: at a stricter level there is no verdict
    r = ml.compare("reg", metric="mae", versions=("m:1", "m:2"), level=1e-6)
    assert not r.significant and r.winner is None and r.test.p_value >= 2 / 2001 and "better" not in r.verdict


def test_what_compare_refuses(sqlite_registry, collection_store, rng):
    write_traffic(collection_store, "one", pd.DataFrame({"a": [1.0, 2.0]}), [time.time()] * 2, "m:1", [1, 1])
    with pytest.raises(ml.InvalidInput, match="'one' has one version in its collected data: there is nothing to compare"):
        ml.compare("one")
    with pytest.raises(ml.InvalidInput, match="unknown metric 'f1'"):
        ml.compare("one", metric="f1")
    with pytest.raises(ml.InvalidInput, match="level must be between 0 and 0.5"):
        ml.compare("one", level=0.7)
    with pytest.raises(ml.DeploymentNotFound):
        ml.compare("nothing-here")


class Const:
    def __init__(self, value):
        self.value = value

    def predict(self, X):
        return np.full(len(X), self.value)


def test_a_live_canary_read_out_through_the_api_the_cli_and_the_magic(sqlite_registry):
    sample = np.zeros((2, 2))
    ml.register_model(Const(1.0), "m", sample_input=sample)
    ml.register_model(Const(2.0), "m", sample_input=sample)
    d = ml.deploy("m:1", name="ab", progress=False)
    try:
        d.update("m:2", traffic=50, progress=False)
        with httpx.Client(headers={"Authorization": f"Bearer {d.keys['primary']}"}) as http:
            ids = [http.post(f"{d.url}/score", json={"data": [[i, 0]]}).headers["x-request-id"] for i in range(120)]
        deadline = time.monotonic() + 30
        while len(df := ml.collected_data("ab")) < 120 and time.monotonic() < deadline:
            time.sleep(0.3)
        assert len(df) == 120
        r = ml.compare("ab")
        assert list(r.versions["version"]) == ["m:1", "m:2"]  # the stable version is A, the canary B
        assert r.verdict == "not enough evidence yet: m:1 and m:2 have fewer than 2 labelled rows (record_feedback)"
        served = dict(zip(df.request_id, df.model_version))
        # the truth is 2 for nine requests in ten: the canary (answering 2) is right far more often
        labels = [2.0 if i % 10 else 1.0 for i in range(len(ids))]
        ml.record_feedback("ab", ids, labels)
        r = ml.compare("ab")
        assert r.significant and r.winner == "m:2", r.verdict
        acc = dict(zip(r.versions["version"], r.versions["accuracy"]))
        for v, answer in (("m:1", 1.0), ("m:2", 2.0)):
            mine = [lab for rid, lab in zip(ids, labels) if served[rid] == v]
            assert acc[v] == pytest.approx(np.mean([lab == answer for lab in mine]))
        proc = subprocess.run([sys.executable, "-m", "mlops_lab.cli", "compare", "ab", "--json"], capture_output=True,
                              text=True, timeout=120)
        assert proc.returncode == 0, proc.stderr
        assert json.loads(proc.stdout)["verdict"] == r.verdict
        from IPython.core.interactiveshell import InteractiveShell

        sh = InteractiveShell.instance()
        sh.run_line_magic("load_ext", "mlops_lab")
        assert sh.run_line_magic("compare", "ab --level 0.01").winner == "m:2"
        assert "m:2 is better than m:1" in r._repr_html_()
    finally:
        d.delete()
