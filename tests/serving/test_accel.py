"""Faster calls with the same results (mlops_lab.serving.accel): forests scored tree by tree,
and models fitted on a DataFrame given their rows as an array; the same bits as scikit-learn's
own call, used by the server only after it checked that on the model's example."""

from __future__ import annotations

import logging
import warnings

import numpy as np
import pandas as pd
import pytest
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import (
    ExtraTreesClassifier,
    ExtraTreesRegressor,
    RandomForestClassifier,
    RandomForestRegressor,
)
from sklearn.linear_model import LinearRegression, LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

import mlops_lab as ml
from mlops_lab.deployers.base import wait_until
from mlops_lab.registry.flavors import load_folder
from mlops_lab.serving import accel
from mlops_lab.serving.runtime import ServedModel, make_record

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
    class MyLogistic(LogisticRegression):
        pass

    assert accel.faster_call(MyLogistic().fit(X, Y_BIN), "predict") is None
    assert accel.faster_call(LogisticRegression().fit(X, Y_BIN), "decision_function") is None
    assert accel.faster_call(LinearRegression().fit(X, Y_REG), "predict_proba") is None
    assert accel.faster_call(LogisticRegression(), "predict") is None  # not fitted
    assert accel.faster_call(RandomForestClassifier(n_estimators=5), "predict") is None  # not fitted


def _linear_models():
    two_outputs = np.c_[Y_REG, X[:, 4]]
    return [
        (LogisticRegression().fit(X, Y_BIN), "predict"),
        (LogisticRegression().fit(X, Y_BIN), "predict_proba"),
        (LogisticRegression(max_iter=500).fit(X, Y_STR), "predict"),  # three classes named by strings
        (LogisticRegression(max_iter=500).fit(X, Y_STR), "predict_proba"),
        (LogisticRegression(solver="liblinear").fit(X, Y_BIN), "predict_proba"),
        (LinearRegression().fit(X, Y_REG), "predict"),
        (LinearRegression().fit(X, Y_REG[:, None]), "predict"),  # one output as a column stays a column
        (LinearRegression(fit_intercept=False).fit(X, two_outputs), "predict"),
        (Ridge(alpha=0.5).fit(X, Y_REG), "predict"),
        (Ridge(alpha=0.5).fit(X, two_outputs), "predict"),
    ]


@pytest.mark.parametrize("model,method", _linear_models(), ids=lambda v: v if isinstance(v, str) else type(v).__name__)
def test_the_faster_call_gives_the_linear_models_own_results_bit_for_bit(model, method):
    fast = accel.faster_call(model, method)
    assert fast is not None and "linear model" in fast.how
    own = getattr(model, method)
    for rows in (1, 7, 400):
        for q in (RNG.normal(size=(rows, 12)) * 3, np.asfortranarray(RNG.normal(size=(rows, 12))),
                  RNG.normal(size=(rows, 24))[:, ::2]):  # C order, Fortran order, a strided view
            a, b = fast(q), own(q)
            assert a.dtype == b.dtype and a.shape == b.shape
            assert np.array_equal(a, b), rows
    # what the product does not take goes to the model's own call: the same answer or error
    ints = RNG.integers(-3, 3, size=(5, 12))
    assert np.array_equal(fast(ints), own(ints))
    for bad in (np.ones((2, 5)), np.where(np.eye(3, 12) > 0, np.nan, 1.0), np.full((1, 12), np.inf)):
        with pytest.raises(ValueError) as mine:
            fast(bad)
        with pytest.raises(ValueError) as theirs:
            own(bad)
        assert str(mine.value) == str(theirs.value)


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
    lr = LogisticRegression().fit(X, Y_BIN)
    served = _served("lr", lr, tmp_path)
    with caplog.at_level(logging.INFO, logger="mlops_lab.serving"):
        served.warm_up()
    assert served.model._call.__name__ == "predict" and served.model._call.how.startswith("the linear model's")
    assert "lr:1: scored the linear model's product" in caplog.text
    assert np.array_equal(served.model.predict(q), lr.predict(q))


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


# -- rows as an array for models fitted on a DataFrame ---------------------------------------

FRAME = pd.DataFrame(X[:, :6], columns=[f"x{i}" for i in range(6)]).assign(
    count=RNG.integers(0, 9, size=len(X)), flag_int=RNG.integers(0, 2, size=len(X)),
)


def _served_frame(name: str, model, tmp_path, frame=FRAME) -> ServedModel:
    ml.register_model(model, name, sample_input=frame.head())
    loaded, meta = load_folder(ml.download_model(f"{name}:1", tmp_path / name))
    return ServedModel(name, 1, loaded, meta)


def _requests(served: ServedModel, frame: pd.DataFrame):
    """Request chunks as the protocols make them: rows of JSON numbers, 1 to 100 at a time, some
    all-integer (an integer array), and a batch of several."""
    spec = served.spec
    rows = frame.to_numpy().tolist()
    chunks = [spec.from_rows(rows[i:i + n]) for i, n in ((0, 1), (1, 7), (8, 100))]
    ints = [[int(v) for v in r] for r in frame.round().to_numpy().tolist()[:5]]
    chunks.append(spec.from_rows(ints))
    return [[c] for c in chunks] + [chunks[:3]]


def _frame_of(served: ServedModel, chunks) -> pd.DataFrame:
    """What the server gave such models before: the signature's DataFrame."""
    spec = served.spec
    return spec._cast(pd.DataFrame(np.concatenate([c.data for c in chunks]), columns=spec.columns))


@pytest.mark.parametrize("build", [
    lambda: LogisticRegression(max_iter=500),
    lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)),
    lambda: RandomForestClassifier(n_estimators=20, random_state=0),
], ids=["logistic", "scaler+logistic", "forest"])
def test_a_model_fitted_on_a_dataframe_is_scored_on_an_array_with_the_same_results(build, caplog, tmp_path):
    model = build().fit(FRAME, Y_BIN)
    served = _served_frame("framed", model, tmp_path)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with caplog.at_level(logging.INFO, logger="mlops_lab.serving"):
            served.warm_up()
        assert served.spec.array_input and "scored on an array in the fitted column order" in caplog.text
        for chunks in _requests(served, FRAME):
            x = served.spec.model_input(chunks)
            assert isinstance(x, np.ndarray)
            got, want = served.model.predict(x), model.predict(_frame_of(served, chunks))
            assert got.dtype == want.dtype and np.array_equal(got, want)
    assert not [w for w in seen if "feature names" in str(w.message)]  # nothing for the server's log


def test_an_all_integer_signature_gets_the_integer_array_the_frame_would_give(tmp_path):
    frame = FRAME[["count", "flag_int"]]
    model = LogisticRegression().fit(frame, Y_BIN)
    served = _served_frame("ints", model, tmp_path, frame)
    with warnings.catch_warnings():
        served.warm_up()
        chunk = served.spec.from_rows([[3.0, 1.0], [4, 0]])  # floats that are integers: a float array
        x = served.spec.model_input([chunk])
        assert x.dtype == np.int64 == np.asarray(_frame_of(served, [chunk])).dtype
        assert np.array_equal(served.model.predict(x), model.predict(_frame_of(served, [chunk])))


def test_models_that_need_the_dataframe_keep_it(tmp_path):
    # the user's code reading columns by name; columns fitted in another order
    reordered = LogisticRegression().fit(FRAME[FRAME.columns[::-1]], Y_BIN)
    assert not accel.takes_array(reordered, list(FRAME.columns))  # (its warm-up fails on the frame anyway)

    class ByName:
        def predict(self, X):
            return (X["x0"] > 0).astype(int).to_numpy()

    served = _served_frame("user", ByName(), tmp_path, FRAME)
    served.warm_up()
    assert not served.spec.array_input and not served.spec.rows_input
    chunk = served.spec.from_rows(FRAME.head(20).to_dict("records"))
    x = served.spec.model_input([chunk])
    assert isinstance(x, pd.DataFrame)
    assert np.array_equal(served.model.predict(x), ByName().predict(FRAME.head(20)))


# -- pipelines that select their columns by name, scored on the rows as an array -------------

STRINGS = FRAME.assign(
    colour=np.array(["red", "green", "blue"])[RNG.integers(0, 3, size=len(X))],
    size=np.array(["S", "M", "L", "XL"])[RNG.integers(0, 4, size=len(X))],
)
NUMS = [f"x{i}" for i in range(6)]


def _pipelines():
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import OrdinalEncoder

    return {
        "scaler+onehot+logistic": make_pipeline(
            ColumnTransformer([("num", StandardScaler(), NUMS + ["count"]), ("cat", OneHotEncoder(handle_unknown="ignore"), ["colour"])]),
            LogisticRegression(max_iter=500)),
        "sparse, two encoders, columns dropped": make_pipeline(
            ColumnTransformer([("num", StandardScaler(), ["x0", "x3"]),
                               ("cat", OneHotEncoder(handle_unknown="ignore"), ["colour", "size"])], sparse_threshold=1.0),
            LogisticRegression(max_iter=500)),
        "nested pipeline, ordinal, forest": make_pipeline(
            ColumnTransformer([("num", make_pipeline(SimpleImputer(), StandardScaler()), NUMS),
                               ("cat", OrdinalEncoder(handle_unknown="use_encoded_value", unknown_value=-1), ["size", "colour"])]),
            StandardScaler(), RandomForestClassifier(n_estimators=15, random_state=0)),
    }


@pytest.mark.parametrize("name", list(_pipelines()))
def test_a_pipeline_that_selects_columns_by_name_is_scored_on_its_rows_with_the_same_results(name, caplog, tmp_path):
    model = _pipelines()[name].fit(STRINGS, Y_BIN)
    served = _served_frame("piped", model, tmp_path, STRINGS)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with caplog.at_level(logging.INFO, logger="mlops_lab.serving"):
            served.warm_up()
        assert served.spec.rows_input and not served.spec.array_input
        assert "scored transformer by transformer on the rows as an array" in caplog.text
        spec = served.spec
        rows = STRINGS.to_numpy().tolist()
        unseen = [r[:-2] + ["purple", "S"] for r in rows[:3]]  # a category the encoders never saw
        cases = [[spec.from_rows(rows[:1])], [spec.from_rows(rows[1:8])], [spec.from_rows(rows[8:108])],
                 [spec.from_rows(STRINGS.iloc[200:230].to_dict("records"))], [spec.from_rows(unseen)],
                 [spec.from_rows(rows[300:305]), spec.from_rows(rows[310:311]), spec.from_rows(rows[320:360])]]
        for chunks in cases:
            x = spec.model_input(chunks)
            assert isinstance(x, np.ndarray) and x.dtype == object
            want = model.predict(pd.DataFrame([r for c in chunks for r in c.data], columns=spec.columns).pipe(spec._cast))
            got = served.model.predict(x)
            assert got.dtype == want.dtype and np.array_equal(got, want)
            if len(chunks) == 1:  # the request's collected record is split from the same array: made once
                record = make_record(served, "r", 1.0e9, 1.0, 200, chunks[0], got)
                assert chunks[0].objects(x.shape[1]) is x
                assert np.array_equal(record.inputs.objects(record.types), x)
    assert not [w for w in seen if "feature names" in str(w.message)]


def test_pipelines_the_array_could_score_otherwise_keep_the_dataframe(tmp_path):
    from sklearn.preprocessing import FunctionTransformer

    cases = {
        "passthrough columns": ColumnTransformer([("cat", OneHotEncoder(), ["colour"]), ("no", "drop", ["size"])],
                                                 remainder="passthrough"),
        "weights": ColumnTransformer([("num", StandardScaler(), NUMS), ("cat", OneHotEncoder(), ["colour"])],
                                     transformer_weights={"num": 2.0, "cat": 1.0}),
        "DataFrame output": ColumnTransformer([("num", StandardScaler(), NUMS), ("cat", OneHotEncoder(sparse_output=False), ["colour"])]
                                              ).set_output(transform="pandas"),
        "the user's code": ColumnTransformer([("num", FunctionTransformer(np.log1p), ["count"]), ("cat", OneHotEncoder(), ["colour"])]),
        "numbers and strings in one encoder": ColumnTransformer([("cat", OneHotEncoder(), ["colour", "count"])]),
    }
    for i, (name, ct) in enumerate(cases.items()):
        model = make_pipeline(ct, LogisticRegression(max_iter=500)).fit(STRINGS, Y_BIN)
        served = _served_frame(f"kept{i}", model, tmp_path, STRINGS)
        served.warm_up()
        assert not served.spec.rows_input, name
        chunk = served.spec.from_rows(STRINGS.head(20).to_numpy().tolist())
        x = served.spec.model_input([chunk])
        assert isinstance(x, pd.DataFrame), name
        assert np.array_equal(served.model.predict(x), model.predict(STRINGS.head(20))), name
    # a string column that may lack a value: pandas reads it as NaN or None by its version
    model = _pipelines()["scaler+onehot+logistic"].fit(STRINGS, Y_BIN)
    spec = ServedModel("m", 1, None, {"signature": {"kind": "columns", "columns": [
        {"name": c, "type": "string" if c in ("colour", "size") else "float", "missing": c == "colour"} for c in STRINGS.columns]}}).spec
    frame = spec._cast(STRINGS.head())
    assert accel.columns_call(model, "predict", spec.columns, spec.types, spec.may_miss, dict(frame.dtypes)) is None
    spec.may_miss[spec.columns.index("colour")] = False
    assert accel.columns_call(model, "predict", spec.columns, spec.types, spec.may_miss, dict(frame.dtypes)) is not None


def test_a_pipeline_call_that_answers_otherwise_keeps_the_dataframe(monkeypatch, caplog, tmp_path):
    """Replaces ``accel.columns_call`` with one whose call answers the example otherwise (as a
    change in how scikit-learn's ColumnTransformer stacks its parts would): the server must
    notice it on the example and keep the DataFrame."""
    real = accel.columns_call

    def off(*args):
        call = real(*args)
        return lambda x: 1 - call(x)

    monkeypatch.setattr(accel, "columns_call", off)
    model = _pipelines()["scaler+onehot+logistic"].fit(STRINGS, Y_BIN)
    served = _served_frame("off", model, tmp_path, STRINGS)
    with caplog.at_level(logging.INFO, logger="mlops_lab.serving"):
        served.warm_up()
    assert not served.spec.rows_input and "answers its rows as an array differently" in caplog.text
    x = served.spec.model_input([served.spec.from_rows(STRINGS.head(3).to_numpy().tolist())])
    assert isinstance(x, pd.DataFrame) and np.array_equal(served.model.predict(x), model.predict(STRINGS.head(3)))


def test_an_array_that_answers_otherwise_keeps_the_dataframe(monkeypatch, caplog, tmp_path):
    """Replaces ``accel.takes_array`` with one that says yes to a model which answers an array
    otherwise than the frame (as a change in scikit-learn's conversions would): the server
    must notice it on the example."""

    class Differs:
        def predict(self, X):
            return np.zeros(len(X)) if isinstance(X, pd.DataFrame) else np.ones(len(X))

    monkeypatch.setattr(accel, "takes_array", lambda model, columns: True)
    served = _served_frame("differs", Differs(), tmp_path)
    with caplog.at_level(logging.INFO, logger="mlops_lab.serving"):
        served.warm_up()
    assert not served.spec.array_input and "answers an array differently" in caplog.text
    assert isinstance(served.spec.model_input([served.spec.from_rows(FRAME.head(2).to_numpy().tolist())]), pd.DataFrame)


@pytest.mark.parametrize("case", ["numbers", "category"])
def test_a_deployed_model_fitted_on_a_dataframe_answers_and_collects_as_before(case):
    """A scaler + LogisticRegression fitted on numbers (scored on an array), and a one-hot
    pipeline with a category (its transformers scored on the rows as an array): the answers
    are scikit-learn's, by records and by rows, nothing is warned, bad input is refused as
    before, and the rows are collected as sent."""
    if case == "numbers":
        model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(FRAME, Y_BIN)
        frame, said, column = FRAME, "scored on an array in the fitted column order", "x0"
    else:
        model = _pipelines()["scaler+onehot+logistic"].fit(STRINGS, Y_BIN)
        frame, said, column = STRINGS, "scored transformer by transformer on the rows as an array", "colour"
    ml.register_model(model, "framed", sample_input=frame.head())
    d = ml.deploy("framed", progress=False, workers=1)
    try:
        q = frame.sample(40, random_state=2)
        assert d.predict(q.to_dict("records")) == model.predict(q).tolist()
        assert d.predict(q.to_numpy().tolist()) == model.predict(q).tolist()
        assert said in d.logs(tail=50) and "feature names" not in d.logs(tail=200)
        bad = q.to_numpy().tolist()[0]
        bad[list(frame.columns).index(column)] = "x" if case == "numbers" else 3
        with pytest.raises(ml.InvalidInput, match=column):  # the signature's checks come first, as before
            d.predict([bad])
        assert wait_until(lambda: len(ml.collected_data("framed")) >= 80, timeout=30)
        got = ml.collected_data("framed").sort_values(["request_time", "row"])
        assert set(frame.columns) <= set(got.columns)
        assert got[column].dropna().tolist()[:40] == q[column].tolist()
    finally:
        d.delete()
