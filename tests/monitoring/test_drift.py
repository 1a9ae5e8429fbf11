"""Drift: the statistics are right, a shifted feature is flagged and an unshifted one is not."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
from scipy import stats

import mlops_lab as ml
from mlops_lab.monitoring import drift as D

from .conftest import write_traffic


def test_statistics_match_scipy(rng):
    a = rng.normal(0, 1, 3000)
    b = rng.normal(0.1, 1.2, 2000)
    d, p = D.ks_2samp(a, b)
    ref = stats.ks_2samp(a, b, method="asymp")
    assert d == pytest.approx(ref.statistic, abs=1e-12)
    assert p == pytest.approx(ref.pvalue, rel=0.05, abs=1e-6)
    r = np.array([120, 80, 50])
    c = np.array([100, 100, 60])
    stat, p = D.chi2_homogeneity(r, c)
    ref_stat, ref_p, _, _ = stats.chi2_contingency(np.vstack([r, c]), correction=False)
    assert stat == pytest.approx(ref_stat) and p == pytest.approx(ref_p, rel=1e-6)
    from scipy.spatial.distance import jensenshannon

    assert D.js_distance(r.astype(float), c.astype(float)) == pytest.approx(jensenshannon(r / r.sum(), c / c.sum(), base=2))
    for x, k in [(0.5, 1), (3.0, 4), (40.0, 10), (250.0, 200)]:
        assert D._chi2_sf(x, k) == pytest.approx(stats.chi2.sf(x, k), rel=1e-8)
    assert D.psi(a, a) == pytest.approx(0, abs=1e-9)
    assert D.psi(a, a + 1) > 0.5


class Summer:
    def predict(self, X):
        return X["a"].to_numpy() + X["b"].to_numpy()


def _frame(rng, n, shift_a=0.0, probs=(0.5, 0.3, 0.2)):
    return pd.DataFrame({
        "a": rng.normal(shift_a, 1, n),
        "b": rng.normal(0, 1, n),
        "c": rng.choice(["x", "y", "z"], size=n, p=probs),
    })


def test_shifted_feature_is_flagged_and_unshifted_is_not(sqlite_registry, collection_store, rng):
    baseline = _frame(rng, 3000)
    ml.register_model(Summer(), "m", sample_input=baseline.head(), baseline=baseline)
    live = _frame(rng, 2000, shift_a=1.0)
    now = time.time()
    write_traffic(collection_store, "svc", live, np.linspace(now - 1800, now - 1, 2000), "m:1", live.a + live.b)
    result = ml.drift("svc", window="1h")
    flags = dict(zip(result.feature, result.drifted))
    assert flags == {"a": True, "b": False, "c": False, "prediction": True}
    row = result.set_index("feature")
    assert row.loc["a", "kind"] == "numeric" and row.loc["a", "psi"] > 0.2 and row.loc["a", "ks_pvalue"] < 1e-6
    assert row.loc["b", "psi"] < 0.1 and row.loc["c", "kind"] == "categorical" and row.loc["c", "js_distance"] < 0.05
    assert row.loc["a", "n_reference"] == 3000 and row.loc["a", "n_live"] == 2000
    assert result.attrs["reference"] == "baseline registered with m:1 (3000 rows)"


def test_categorical_shift_is_flagged(sqlite_registry, collection_store, rng):
    baseline = _frame(rng, 3000)
    ml.register_model(Summer(), "m", sample_input=baseline.head(), baseline=baseline)
    live = _frame(rng, 2000, probs=(0.2, 0.3, 0.5))
    now = time.time()
    write_traffic(collection_store, "svc", live, np.linspace(now - 600, now - 1, 2000), "m:1", live.a + live.b)
    flags = dict(zip(*ml.drift("svc", window="1h")[["feature", "drifted"]].T.values))
    assert flags["c"] is True and flags["a"] is False and flags["b"] is False


def test_without_baseline_the_first_window_is_the_reference(sqlite_registry, collection_store, rng):
    ml.register_model(Summer(), "nb", sample_input=_frame(rng, 5))
    now = time.time()
    first = _frame(rng, 1500)
    later = _frame(rng, 1500, shift_a=1.5)
    write_traffic(collection_store, "svc", first, np.linspace(now - 7200, now - 3700, 1500), "nb:1", first.a)
    write_traffic(collection_store, "svc", later, np.linspace(now - 3000, now - 1, 1500), "nb:1", later.a)
    result = ml.drift("svc", window="1h")
    assert result.attrs["reference"].startswith("first 1h of live data")
    assert "no baseline registered" in result.attrs["reference"]
    flags = dict(zip(result.feature, result.drifted))
    assert flags["a"] is True and flags["b"] is False


def test_thresholds_are_configurable(sqlite_registry, collection_store, rng):
    baseline = _frame(rng, 3000)
    ml.register_model(Summer(), "m", sample_input=baseline.head(), baseline=baseline)
    live = _frame(rng, 2000, shift_a=0.25)
    now = time.time()
    write_traffic(collection_store, "svc", live, np.linspace(now - 600, now - 1, 2000), "m:1", live.a + live.b)
    lenient = ml.drift("svc", thresholds={"psi": 10, "ks_pvalue": 1e-30})
    strict = ml.drift("svc", thresholds={"psi": 0.01, "ks_statistic": 0.01})
    assert not lenient.set_index("feature").loc["a", "drifted"]
    assert strict.set_index("feature").loc["a", "drifted"]


def test_unknown_deployment_and_bad_window(sqlite_registry, rng):
    with pytest.raises(ml.DeploymentNotFound):
        ml.drift("nothing-here")
    with pytest.raises(ml.DeploymentNotFound):
        ml.collected_data("nothing-here")
    live = _frame(rng, 10)
    write_traffic(sqlite_registry.home, "svc", live, np.full(10, time.time()), "m:1", live.a)
    with pytest.raises(ml.InvalidInput, match="cannot read the duration 'soon'"):
        ml.drift("svc", window="soon")
