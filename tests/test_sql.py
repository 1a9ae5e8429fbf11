"""A registered version as a DuckDB SQL function: the answers, the errors, collection, the CLI."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import mlops_lab as ml
from mlops_lab.cli import main

duckdb = pytest.importorskip("duckdb")


def _customers(n: int, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"age": rng.integers(18, 80, n), "plan": rng.choice(["basic", "pro", "max"], n),
                         "usage": rng.normal(10, 3, n).round(3)})


@pytest.fixture
def churn(sqlite_registry):
    """A pipeline that needs column names and a text column: OneHotEncoder + StandardScaler + LR."""
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    df = _customers(5000)
    y = (((df.usage > 10) & (df.plan != "basic")) ^ (df.age > 70)).astype(int)
    pipe = make_pipeline(make_column_transformer((OneHotEncoder(), ["plan"]), (StandardScaler(), ["age", "usage"])),
                         LogisticRegression()).fit(df, y)
    ml.register_model(pipe, "churn", sample_input=df.head(20))
    ml.set_alias("churn", "production", 1)
    return pipe


def test_answers_equal_predict_on_a_million_rows_read_from_parquet_files(churn, tmp_path):
    data = _customers(1_000_000, seed=1)
    for i in range(4):
        data.iloc[i * 250_000:(i + 1) * 250_000].to_parquet(tmp_path / f"part-{i}.parquet")
    con = duckdb.connect()
    fn = ml.sql_function(con, "churn@production", name="churn")
    assert (fn.ref, fn.columns, fn.return_type) == ("churn:1", ["age", "plan", "usage"], "BIGINT")
    got = con.sql(f"SELECT churn(age, plan, usage) AS p FROM '{tmp_path}/part-*.parquet'").fetchnumpy()["p"]
    expected = churn.predict(data)
    assert len(got) == 1_000_000 and got.dtype.kind == "i"
    np.testing.assert_array_equal(np.sort(got), np.sort(expected))  # DuckDB may read the files in any order
    ordered = con.sql(f"SELECT churn(age, plan, usage) AS p FROM read_parquet('{tmp_path}/part-*.parquet', "
                      "file_row_number=true, filename=true) ORDER BY filename, file_row_number").fetchnumpy()["p"]
    np.testing.assert_array_equal(ordered, expected)
    assert fn.rows == 2_000_000 and fn.calls >= 2 * 1_000_000 // 2048


def test_a_wrong_count_type_or_missing_value_is_one_line_naming_the_column(churn):
    con = duckdb.connect()
    ml.sql_function(con, "churn")
    con.execute("CREATE TABLE c AS SELECT * FROM (VALUES (30, 'pro', 12.5), (45, 'basic', 3.0)) t(age, plan, usage)")
    for query, message in (
        ("SELECT churn(age, plan) FROM c", "churn() takes 3 arguments (age, plan, usage), got 2"),
        ("SELECT churn(age, usage, plan) FROM c", "churn() argument 2 is column 'plan', which takes string values, got a number"),
        ("SELECT churn(usage, plan, usage) FROM c", "churn() argument 1 is column 'age', which takes integer values, got a number"),
        ("SELECT churn(NULL::BIGINT, plan, usage) FROM c", "churn() argument 1, column 'age', has a missing value (NULL) in row 1"),
    ):
        with pytest.raises(duckdb.InvalidInputException) as info:
            con.sql(query).fetchall()
        assert message in str(info.value) and "\n" not in str(info.value), str(info.value)
    assert con.sql("SELECT churn(age, plan, usage) FROM c").fetchall() == [(int(v),) for v in churn.predict(
        pd.DataFrame({"age": [30, 45], "plan": ["pro", "basic"], "usage": [12.5, 3.0]}))]


def test_a_tensor_model_or_a_bad_name_is_refused_before_anything_is_registered(sqlite_registry):
    class Doubler:
        def predict(self, x):
            return x[:, 0] * 2

    ml.register_model(Doubler(), "tensor", sample_input=np.zeros((3, 2)))
    con = duckdb.connect()
    with pytest.raises(ml.InvalidInput, match="tensor:1 takes a tensor: a SQL function needs named input columns"):
        ml.sql_function(con, "tensor")
    with pytest.raises(ml.NotFound, match="nope"):
        ml.sql_function(con, "nope:1")
    with pytest.raises(duckdb.CatalogException):
        con.sql("SELECT tensor(1.0, 2.0)").fetchall()


def test_collected_calls_read_back_like_a_deployments_requests(churn):
    con = duckdb.connect()
    fn = ml.sql_function(con, "churn", collect=True)
    data = _customers(3000, seed=2)
    con.register("customers", data)
    got = con.sql("SELECT churn(age, plan, usage) AS p FROM customers").fetchnumpy()["p"]
    fn.flush()
    df = ml.collected_data("churn-sql")
    assert len(df) == 3000 and (df.model_version == "churn:1").all() and (df.status_code == 200).all()
    back = df.sort_values(["request_time", "request_id", "row"])
    assert sorted(zip(back.age.astype(int), back.plan, back.prediction)) == sorted(zip(data.age, data.plan, got))
    assert ml.metrics("churn-sql", every="1h")["rows"].sum() == 3000
    fn.close()


def test_the_cli_runs_a_query_file_with_the_model_as_a_function(churn, tmp_path, capsys):
    data = _customers(500, seed=3)
    data.to_parquet(tmp_path / "customers.parquet")
    query = tmp_path / "score.sql"
    query.write_text(f"SELECT age, plan, churn(age, plan, usage) AS churn FROM '{tmp_path}/customers.parquet'")
    out = tmp_path / "scored.parquet"
    assert main(["sql", str(query), "--model", "churn=churn@production", "--output", str(out)]) == 0
    assert "500 rows -> " in capsys.readouterr().out
    scored = pd.read_parquet(out)
    np.testing.assert_array_equal(scored["churn"].to_numpy(), churn.predict(data))
    # default function name: the model's; CSV on stdout
    query.write_text(f"SELECT count(*) AS n, sum(churn(age, plan, usage)) AS s FROM '{tmp_path}/customers.parquet'")
    assert main(["sql", str(query), "--model", "churn:1"]) == 0
    assert capsys.readouterr().out.splitlines() == ["n,s", f"500,{int(churn.predict(data).sum())}"]
    # a wrong call: one line and the exit code of bad input, no output file
    query.write_text(f"SELECT churn(age, plan) FROM '{tmp_path}/customers.parquet'")
    bad = tmp_path / "bad.parquet"
    code = main(["sql", str(query), "--model", "churn", "--output", str(bad)])
    err = capsys.readouterr().err
    assert code == ml.InvalidInput.exit_code and not bad.exists()
    assert err.strip() == "error: churn() takes 3 arguments (age, plan, usage), got 2"


def test_a_numeric_model_is_given_arrays_when_its_answers_are_the_same(sqlite_registry):
    """A scikit-learn model fitted on a DataFrame of numbers gets each vector as an array in the
    fitted column order (checked on its example, as the server does); a model of the user's own
    keeps the DataFrame it was written for. Both answer as predict does."""
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(4)
    X = pd.DataFrame(rng.normal(size=(20_000, 5)), columns=[f"x{i}" for i in range(5)])
    y = (X.x0 + X.x3 > 0).astype(int)

    class Mine:
        def predict(self, frame):
            return (frame["x0"] * 2.0 + frame["x4"]).to_numpy()

    con = duckdb.connect()
    con.register("x", X)
    for name, model, on_array in (("lr", LogisticRegression().fit(X, y), True),
                                  ("forest", RandomForestClassifier(20, max_depth=5, random_state=0).fit(X, y), True),
                                  ("mine", Mine(), False)):
        ml.register_model(model, name, sample_input=X.head(10))
        fn = ml.sql_function(con, name)
        assert fn.on_array is on_array, name
        got = con.sql(f"SELECT {name}(x0, x1, x2, x3, x4) AS p FROM x").fetchnumpy()["p"]
        np.testing.assert_array_equal(got, model.predict(X))
