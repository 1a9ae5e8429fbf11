"""Forests scored tree by tree (mlops_lab.serving.accel): the same bits as scikit-learn's own
call, used by the server only after it checked that on the model's example."""

from __future__ import annotations

import logging

import numpy as np
import pytest
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LogisticRegression

import mlops_lab as ml
from mlops_lab.registry.flavors import load_folder
from mlops_lab.serving import accel
from mlops_lab.serving.runtime import ServedModel

RNG = np.random.default_rng(3)
X = RNG.normal(size=(400, 12))
Y_BIN = (X[:, 0] + X[:, 1] > 0).astype(int)
Y_STR = np.array(["low", "mid", "high"])[np.digitize(X[:, 2], [-0.5, 0.5])]
Y_REG = X[:, 0] * 2 + X[:, 3] ** 2


def _models():
    return [
        (RandomForestClassifier(n_estimators=30, random_state=0).fit(X, Y_BIN), "predict_proba"),
        (RandomForestClassifier(n_estimators=30, random_state=0).fit(X, Y_BIN), "predict"),
        (ExtraTreesClassifier(n_estimators=20, max_depth=6, random_state=1).fit(X, Y_STR), "predict_proba"),
        (ExtraTreesClassifier(n_estimators=20, max_depth=6, random_state=1).fit(X, Y_STR), "predict"),
        (RandomForestRegressor(n_estimators=25, random_state=2).fit(X, Y_REG), "predict"),
        (ExtraTreesRegressor(n_estimators=25, random_state=2).fit(X, Y_REG), "predict"),
    ]


@pytest.mark.parametrize("model,method", _models(), ids=lambda v: v if isinstance(v, str) else type(v).__name__)
def test_the_faster_call_gives_the_forests_own_results_bit_for_bit(model, method):
    fast = accel.faster_call(model, method)
    assert fast is not None
    own = getattr(model, method)
    for rows in (1, 7, 400):
        q = RNG.normal(size=(rows, 12)) * 3  # beyond the training range too
        a, b = fast(q), own(q)
        assert a.dtype == b.dtype and a.shape == b.shape
        assert np.array_equal(a, b), (rows, np.abs(a.astype(float) - b.astype(float)).max() if a.dtype.kind == "f" else None)
    # and a wrong width is refused as the forest refuses it
    with pytest.raises(ValueError) as mine:
        fast(np.ones((2, 5)))
    with pytest.raises(ValueError) as theirs:
        own(np.ones((2, 5)))
    assert str(mine.value) == str(theirs.value)


def test_no_faster_call_where_the_results_could_differ():
    class MyForest(RandomForestClassifier):
        pass

    assert accel.faster_call(MyForest(n_estimators=5, random_state=0).fit(X, Y_BIN), "predict") is None  # may score otherwise
    assert accel.faster_call(RandomForestClassifier(n_estimators=5, n_jobs=2).fit(X, Y_BIN), "predict") is None  # order of sums
    two = np.c_[Y_BIN, 1 - Y_BIN]
    assert accel.faster_call(RandomForestClassifier(n_estimators=5).fit(X, two), "predict") is None  # several outputs
    assert accel.faster_call(RandomForestRegressor(n_estimators=5).fit(X, Y_REG), "apply") is None
    assert accel.faster_call(LogisticRegression().fit(X, Y_BIN), "predict") is None
    assert accel.faster_call(RandomForestClassifier(n_estimators=5), "predict") is None  # not fitted


def _served(name: str, model, tmp_path) -> ServedModel:
    ml.register_model(model, name, sample_input=X[:5])
    loaded, meta = load_folder(ml.download_model(f"{name}:1", tmp_path / name))
    return ServedModel(name, 1, loaded, meta)


def test_the_server_uses_it_after_checking_it_on_the_example(caplog, tmp_path):
    rf = RandomForestClassifier(n_estimators=40, random_state=0).fit(X, Y_BIN)
    served = _served("rf", rf, tmp_path)
    with caplog.at_level(logging.INFO, logger="mlops_lab.serving"):
        served.warm_up()
    assert served.model.method == "predict" and served.model._call.__name__ == "predict_class"
    assert "scored tree by tree" in caplog.text
    q = RNG.normal(size=(50, 12))
    assert np.array_equal(served.model.predict(q), rf.predict(q))


def test_a_faster_call_that_answers_otherwise_is_not_used(monkeypatch, caplog, tmp_path):
    """Replaces ``accel.faster_call`` with one returning a call that answers one row of the
    example otherwise (as a change in how scikit-learn scores would): the server must notice
    it on the example and keep the model's own call."""
    rf = RandomForestClassifier(n_estimators=10, random_state=0).fit(X, Y_BIN)
    real = accel.faster_call

    def off(model, method):
        fast = real(model, method)
        def wrong(q):
            out = fast(q).copy()
            out[0] = 1 - out[0]
            return out

        return wrong

    monkeypatch.setattr(accel, "faster_call", off)
    served = _served("rf-off", rf, tmp_path)
    served.warm_up()
    assert served.model._call == served.model.model.predict
    assert "answered the example differently" in caplog.text


def test_a_deployed_forest_answers_what_scikit_learn_answers():
    rf = RandomForestClassifier(n_estimators=50, random_state=0).fit(X, Y_BIN)
    ml.register_model(rf, "forest", sample_input=X[:5])
    d = ml.deploy("forest", progress=False, workers=1)
    try:
        q = RNG.normal(size=(64, 12))
        got = d.predict(q)
        assert np.array_equal(np.asarray(got), rf.predict(q))
        assert "scored tree by tree" in d.logs(tail=50)
    finally:
        d.delete()
