"""Rows of numbers read straight from the JSON text (simdjson) give the same answers as the
general path, and anything unusual in a large body still gets the general path's precise 4xx."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mlops_lab.registry.inputs import FAST_JSON_MIN_BYTES, InputSpec

from .conftest import auth

TENSOR = {"kind": "tensor", "dtype": "float64", "shape": [-1, 3]}
KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")


def _body(obj) -> bytes:
    return json.dumps(obj).encode()


def _rows(n=100, width=3, seed=0):
    return np.random.RandomState(seed).rand(n, width).round(6)


def test_from_json_reads_rectangular_numbers_and_declines_the_rest():
    spec = InputSpec(TENSOR)
    X = _rows()
    chunk = spec.from_json(_body({"inputs": X.tolist()}), KEYS, ("instances", "inputs"))
    assert chunk is not None and chunk.form == "array" and chunk.n == 100
    np.testing.assert_array_equal(chunk.data, X)
    ints = (X * 100).astype(int)
    np.testing.assert_array_equal(spec.from_json(_body({"inputs": ints.tolist()}), KEYS, ("inputs",)).data, ints)
    rows = X.tolist()
    declined = {
        "small body": {"inputs": rows[:2]},
        "ragged, same count": {"inputs": [rows[0][:2], rows[1] + [1.0]] + rows[2:]},
        "nested row": {"inputs": [[[v] for v in rows[0]]] + rows[1:]},
        "a string": {"inputs": [rows[0][:2] + ["x"]] + rows[1:]},
        "a boolean": {"inputs": [rows[0][:2] + [True]] + rows[1:]},
        "a null": {"inputs": [rows[0][:2] + [None]] + rows[1:]},
        "two keys": {"inputs": rows, "instances": rows},
        "another key": {"dataframe_records": rows},
        "columns form": {"inputs": {"a": [r[0] for r in rows], "b": [r[1] for r in rows]}},
        "another array beside": {"inputs": rows, "params": [1]},
        "wrong width": {"inputs": [r + [0.0] for r in rows]},
    }
    for why, obj in declined.items():
        body = _body(obj)
        if why != "small body":
            assert len(body) >= FAST_JSON_MIN_BYTES, why
        assert spec.from_json(body, KEYS, ("instances", "inputs")) is None, why
    for bad in (b"[" * 2000, b'{"inputs": [[1,2,3],' + b"[1,2,3]," * 300 + b"[1,2", b'{"inputs": [[NaN,1,2]' + b",[1,2,3]" * 300 + b"]}"):
        assert spec.from_json(bad, KEYS, ("inputs",)) is None
    # after every refusal and parse error above, the same parser still reads a good body
    np.testing.assert_array_equal(spec.from_json(_body({"inputs": rows}), KEYS, ("inputs",)).data, X)


def test_only_float_signatures_take_it():
    assert InputSpec(TENSOR).fast_width == 3
    assert InputSpec({"kind": "tensor", "dtype": "int64", "shape": [-1, 3]}).fast_width is None  # integers are checked
    cols = [{"name": c, "type": "float"} for c in "abc"]
    assert InputSpec({"kind": "columns", "columns": cols}).fast_width == 3
    cols[1]["type"] = "integer"
    assert InputSpec({"kind": "columns", "columns": cols}).fast_width is None
    assert InputSpec(None).fast_width is None


def test_large_bodies_over_http_answer_as_the_model_does(served, http):
    d, lr, A = served["arr"], served["lr"], served["A"]
    expected = lr.predict(A[:200]).tolist()
    for url, body in (
        ("score", {"data": A[:200].tolist()}),
        ("invocations", {"inputs": A[:200].tolist()}),
        ("invocations", {"instances": A[:200].tolist()}),
    ):
        raw = _body(body)
        assert len(raw) > FAST_JSON_MIN_BYTES
        r = http.post(f"{d.url}/{url}", content=raw, headers={**auth(d), "Content-Type": "application/json"})
        assert r.status_code == 200, r.text
        got = r.json()
        assert (got["predictions"] if url == "invocations" else got) == expected
    d, clf, X = served["iris"], served["clf"], served["X"]
    r = http.post(f"{d.url}/score", json={"data": X.to_numpy().tolist()}, headers=auth(d))  # a columns signature
    assert r.status_code == 200 and r.json() == clf.predict(X).tolist()


@pytest.mark.parametrize(
    "tweak, fragment, row",
    [
        (lambda rows: rows.__setitem__(7, rows[7][:3]), "row 7 has 3 values, expected 4", 7),
        (lambda rows: rows.__setitem__(9, rows[9][:3] + ["x"]), "expects float, got string 'x'", 9),
        (lambda rows: rows.__setitem__(5, rows[5][:3] + [rows[5][3:]]), "expects float, got array", 5),
    ],
)
def test_large_bad_bodies_still_name_the_row_at_fault(served, http, tweak, fragment, row):
    d, X = served["iris"], served["X"]
    rows = X.to_numpy().tolist()
    tweak(rows)
    raw = _body({"data": rows})
    assert len(raw) > FAST_JSON_MIN_BYTES
    r = http.post(f"{d.url}/score", content=raw, headers={**auth(d), "Content-Type": "application/json"})
    assert r.status_code == 422, r.text
    assert fragment in r.json()["message"] and r.json()["row"] == row


MIXED = {"kind": "columns", "columns": [
    {"name": "x", "type": "float", "missing": False}, {"name": "n", "type": "integer", "missing": False},
    {"name": "flag", "type": "boolean", "missing": False}, {"name": "colour", "type": "string", "missing": True},
    {"name": "y", "type": "float", "missing": True}]}


@pytest.mark.parametrize("rows, error", [
    ([[1.5, 2, True, "red", None], [0, 3, False, None, float("nan")]], None),  # ints as floats, allowed gaps
    ([[True, 2, True, "red", 1.0]], None),  # a JSON boolean is 1 in a number column
    ([[1.5, 2.0, True, "red", 1.0]], None),  # a whole float in an integer column
    ([[1.5, 2.5, True, "red", 1.0]], "row 0: column 'n' expects integer, got float 2.5"),
    ([[1.5, 2, True, "red", 1.0], [None, 2, True, "red", 1.0]], "row 1: column 'x' has no value"),
    ([[1.5, 2, True, "red", 1.0], [float("nan"), 2, True, "red", 1.0]], "row 1: column 'x' has no value"),
    ([[1.5, 2, 1, "red", 1.0]], "row 0: column 'flag' expects boolean, got integer 1"),
    ([[1.5, 2, True, 7, 1.0]], "row 0: column 'colour' expects string, got integer 7"),
    ([[1.5, 2, True, "red"]], "row 0 has 4 values, expected 5"),
    ([[1.5, 2, True, "red", 1.0], "row"], "row 1 is string, expected a list of 5 values"),
])
def test_mixed_rows_are_accepted_or_refused_naming_the_cell(rows, error):
    """Rows with strings beside numbers are checked a column at a time (the common, valid case)
    and value by value when something is off: the outcome and the message are the same either
    way, naming the row and the column at fault."""
    from mlops_lab.errors import InvalidRequest

    spec = InputSpec(MIXED)
    if error is None:
        chunk = spec.from_rows(rows)
        assert (chunk.form, chunk.n, chunk.data) == ("rows", len(rows), rows)
    else:
        with pytest.raises(InvalidRequest) as info:
            spec.from_rows(rows)
        assert str(info.value).startswith(error), str(info.value)
