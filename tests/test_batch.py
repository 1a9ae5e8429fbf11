"""Batch scoring: a million rows match in-process predict; files in and out; errors name the field."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

import mlops_lab as ml
from mlops_lab.errors import InvalidInput, InvalidRequest


@pytest.fixture(scope="module")
def million():
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(7)
    X = pd.DataFrame(rng.normal(size=(1_000_000, 20)), columns=[f"f{i}" for i in range(20)])
    y = (X.f0 - X.f3 > 0).astype(int)
    return X, LogisticRegression().fit(X[:20_000], y[:20_000])


def test_a_million_rows_match_in_process_predict(sqlite_registry, million):
    X, model = million
    ml.register_model(model, "lr", sample_input=X[:5])
    scored = ml.score_batch("lr", X, progress=False)
    assert len(scored) == 1_000_000 and list(scored.columns) == ["prediction"]
    assert scored.index.equals(X.index)
    np.testing.assert_array_equal(scored["prediction"].to_numpy(), model.predict(X))


def test_fixed_chunks_give_the_same_answer_and_keep_inputs(sqlite_registry, million):
    X, model = million
    ml.register_model(model, "lr", sample_input=X[:5])
    part = X.iloc[1000:4000]
    scored = ml.score_batch("lr", part, chunk_rows=7, keep_inputs=True, progress=False)
    assert list(scored.columns) == [*X.columns, "prediction"] and scored.index.equals(part.index)
    np.testing.assert_array_equal(scored["prediction"].to_numpy(), model.predict(part))
    pd.testing.assert_frame_equal(scored[X.columns], part)
    # reordered and extra columns: the signature's columns are taken, in order
    shuffled = part[list(reversed(X.columns))].assign(extra="x")
    np.testing.assert_array_equal(ml.score_batch("lr", shuffled, progress=False)["prediction"].to_numpy(), model.predict(part))


def test_parquet_and_csv_in_parquet_out(sqlite_registry, million, tmp_path):
    X, model = million
    tmp_path = tmp_path / "data"
    tmp_path.mkdir()
    ml.register_model(model, "lr", sample_input=X[:5])
    data = X.iloc[:50_000]
    data.to_parquet(tmp_path / "in.parquet")
    data.to_csv(tmp_path / "in.csv", index=False)
    expected = model.predict(data)
    for name in ("in.parquet", "in.csv"):
        out = tmp_path / f"{name}.scored.parquet"
        scored = ml.score_batch("lr", tmp_path / name, output=out, chunk_rows=12_345, progress=False)
        np.testing.assert_array_equal(scored["prediction"].to_numpy(), expected)
        np.testing.assert_array_equal(pd.read_parquet(out)["prediction"].to_numpy(), expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "in.csv.scored.parquet", "in.parquet", "in.parquet.scored.parquet"]


def test_a_model_that_fails_midway_leaves_no_partial_output(sqlite_registry, tmp_path):
    class FailsLater:
        def __init__(self):
            self.calls = 0

        def predict(self, X):
            if len(X) and X["a"].iloc[0] >= 100:
                raise RuntimeError("boom at row 100")
            return X["a"] * 2

    frame = pd.DataFrame({"a": np.arange(300.0)})
    ml.register_model(FailsLater(), "late", sample_input=frame[:2])
    tmp_path = tmp_path / "out"
    tmp_path.mkdir()
    out = tmp_path / "scored.parquet"
    with pytest.raises(RuntimeError, match="boom"):
        ml.score_batch("late", frame, output=out, chunk_rows=50, progress=False)
    assert list(tmp_path.iterdir()) == []  # neither the output nor its temporary file


def test_bad_input_names_the_field(sqlite_registry, million, tmp_path):
    X, model = million
    ml.register_model(model, "lr", sample_input=X[:5])
    with pytest.raises(InvalidRequest, match="missing column 'f3'") as info:
        ml.score_batch("lr", X.iloc[:10].drop(columns=["f3"]), progress=False)
    assert info.value.field == "f3"
    with pytest.raises(InvalidRequest, match="column 'f5' must hold float values") as info:
        ml.score_batch("lr", X.iloc[:10].assign(f5="high"), progress=False)
    assert info.value.field == "f5"
    with pytest.raises(InvalidInput, match="no such file"):
        ml.score_batch("lr", tmp_path / "missing.parquet", progress=False)
    with pytest.raises(InvalidInput, match=r"\.parquet or \.csv"):
        (tmp_path / "data.xlsx").write_text("x")
        ml.score_batch("lr", tmp_path / "data.xlsx", progress=False)
    with pytest.raises(ml.ModelNotFound):
        ml.score_batch("nope", X.iloc[:10], progress=False)


def test_tensor_models_take_arrays(sqlite_registry):
    class Sum:
        def predict(self, X):
            return X.sum(axis=1)

    A = np.arange(60.0).reshape(20, 3)
    ml.register_model(Sum(), "sum", sample_input=A[:2])
    np.testing.assert_array_equal(ml.score_batch("sum", A, chunk_rows=6, progress=False)["prediction"].to_numpy(), A.sum(axis=1))
    with pytest.raises(InvalidRequest, match="expected rows of shape N x 3"):
        ml.score_batch("sum", np.ones((4, 2)), progress=False)


def test_slow_runs_show_progress(sqlite_registry, capfd):
    class Slow:
        def predict(self, X):
            time.sleep(0.3 if len(X) < 1000 else 1.8)
            return X["a"]

    frame = pd.DataFrame({"a": np.arange(1000.0)})
    ml.register_model(Slow(), "slow", sample_input=frame[:2])
    # chunks: rows done and rows/s
    ml.score_batch("slow", frame, chunk_rows=250)
    err = capfd.readouterr().err
    assert "scoring slow:1: " in err and "1,000 rows (" in err and "rows/s)" in err
    # one long call: its elapsed time while it runs
    ml.score_batch("slow", frame)
    err = capfd.readouterr().err
    assert "0/1,000 rows done, scoring 1,000 more (1 s)" in err and "1,000 rows (" in err


def test_cli_scores_a_file_in_batch(sqlite_registry, million, tmp_path):
    X, model = million
    ml.register_model(model, "lr", sample_input=X[:5])
    X.iloc[:1000].to_parquet(tmp_path / "in.parquet")
    cli = [sys.executable, "-m", "mlops_lab.cli"]
    out = subprocess.run([*cli, "score", "--model", "lr:1", "--input", str(tmp_path / "in.parquet"),
                          "--output", str(tmp_path / "out.parquet"), "--json"], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["rows"] == 1000
    np.testing.assert_array_equal(pd.read_parquet(tmp_path / "out.parquet")["prediction"].to_numpy(), model.predict(X.iloc[:1000]))
    bad = subprocess.run([*cli, "score", "--model", "lr:1", "--input", str(tmp_path / "nope.csv")], capture_output=True, text=True)
    assert bad.returncode == 4 and "no such file" in bad.stderr and "Traceback" not in bad.stderr
