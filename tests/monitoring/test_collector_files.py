"""The collector's Parquet files (the direct path: staging off, as beyond the staging budget):
what a flush writes reads back as what was sent, split by day, with required columns where
there are no nulls. No server here: the records are what the scoring server hands over
(``Record``); the files are real Parquet read by the real readers. The staged path, which must
give the same tables, is in test_staging.py."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow.parquet as pq
import pytest

from mlops_lab.monitoring.collector import CollectConfig, Collector
from mlops_lab.monitoring.data import read_requests
from mlops_lab.monitoring.records import Record, Split

COLS = [f"x{i}" for i in range(5)]
TYPES = ["float"] * 5


@pytest.fixture
def collector(tmp_path):
    col = Collector("d", CollectConfig(folder=str(tmp_path), flush_seconds=3600, flush_rows=10**9, max_queue_rows=10**9, stage_budget_mb=0))
    col._stop.set()  # flush by hand
    return col


def _rec(t, rid, X, pred, version="m:1", status=200, error=None, columns=COLS, types=TYPES):
    n = 0 if X is None else len(X.numbers) if isinstance(X, Split) else len(X)
    return Record(t, rid, version, status, 1.5, error, X, columns, types, pred, n)


def _files(tmp_path):
    return sorted((tmp_path / "d" / "requests").rglob("*.parquet"))


def test_records_read_back_as_sent_from_one_file(collector, tmp_path):
    rng = np.random.default_rng(1)
    t0 = dt.datetime(2026, 11, 25, 12, tzinfo=dt.timezone.utc).timestamp()
    sent = []
    for i in range(40):
        X = rng.normal(size=(8 + i % 7, 5))
        pred = rng.integers(0, 3, len(X))
        sent.append((f"r{i}", X, pred))
        collector.add(_rec(t0 + i, f"r{i}", X, pred))
    collector.add(_rec(t0 + 50, "err", None, None, status=500, error="e1"))  # queue lane: no rows
    ints = np.arange(40).reshape(8, 5)  # integer inputs are stored as floats, as the signature says
    collector.add(_rec(t0 + 51, "ints", ints, np.arange(8) % 2))
    collector.add(_rec(t0 + 52, "one", np.ones((1, 5)), np.array([1])))
    collector.flush()

    files = _files(tmp_path)
    assert len(files) == 1  # one flush, one day: one file
    df = read_requests(tmp_path / "d").to_pandas()
    assert len(df) == sum(len(X) for _, X, _ in sent) + 1 + 8 + 1
    for rid, X, pred in sent:
        got = df[df.request_id == rid].sort_values("row")
        np.testing.assert_array_equal(got[COLS].to_numpy(), X)
        np.testing.assert_array_equal(got["prediction"].to_numpy(), pred)
        assert got["row"].tolist() == list(range(len(X)))
        assert (got["status_code"] == 200).all() and got["error_id"].isna().all()
    err = df[df.request_id == "err"]
    assert err["status_code"].tolist() == [500] and err["error_id"].tolist() == ["e1"] and err[COLS].isna().all(axis=None)
    np.testing.assert_array_equal(df[df.request_id == "ints"][COLS].to_numpy(), ints.astype(float))
    assert str(read_requests(tmp_path / "d").schema.field("prediction").type) == "int64"
    assert collector.written_rows == len(df) and collector.queued_rows == 0


def test_a_flush_across_midnight_is_split_by_day(collector, tmp_path):
    midnight = dt.datetime(2026, 11, 26, tzinfo=dt.timezone.utc).timestamp()
    for i, t in enumerate((midnight - 2, midnight - 1, midnight + 1)):
        collector.add(_rec(t, f"r{i}", np.full((8, 5), float(i)), np.full(8, i)))
    collector.flush()
    days = {f.parent.name: pq.read_table(f).column("request_id").to_pylist() for f in _files(tmp_path)}
    assert days == {"date=2026-11-25": ["r0"] * 8 + ["r1"] * 8, "date=2026-11-26": ["r2"] * 8}


def test_required_columns_and_files_with_nulls_read_as_one_dataset(collector, tmp_path):
    t = dt.datetime(2026, 11, 25, 12, tzinfo=dt.timezone.utc).timestamp()
    collector.add(_rec(t, "a", np.ones((8, 5)), np.ones(8, dtype=int)))
    collector.flush()
    first = pq.read_schema(_files(tmp_path)[0])
    assert not first.field("x0").nullable and not first.field("prediction").nullable
    assert first.field("error_id").nullable
    collector.add(_rec(t + 1, "err", None, None, status=500, error="e"))
    collector.flush()
    assert len(_files(tmp_path)) == 2
    table = read_requests(tmp_path / "d")
    assert table.schema.field("x0").nullable
    df = table.to_pandas()
    assert len(df) == 9 and df[df.request_id == "err"][COLS + ["prediction"]].isna().all(axis=None)
    assert (df[df.request_id == "a"][COLS] == 1.0).all(axis=None)


@pytest.mark.parametrize("form", ["lists", "objects", "split"])
def test_mixed_rows_read_back_as_the_signature_types_them(collector, tmp_path, form):
    """Rows with a string column (a pipeline with a OneHotEncoder), as JSON gives them: lists of
    Python values, an array of those objects, or as the scoring server hands validated rows over,
    split into a float64 array and an array of the others (rows NumPy cannot split, a string
    among floats, stay an array of objects, and both forms meet in one flush). Columns
    whose values all fit their type are converted by Arrow at once; a column holding a value of
    another type is converted value by value, as before: a string in a float column is missing,
    integers in a boolean column are booleans, numbers in a string column are their text; NaN
    stays NaN, None is missing. Short rows (lists only) are missing their last values."""
    from mlops_lab.monitoring.records import Split, split_positions, split_rows
    from mlops_lab.registry.inputs import objects_of

    cols, types = ["a", "b", "flag", "colour"], ["float", "float", "bool", "string"]
    clean = [[1.5, 2, True, "red"], [0.25, None, False, None], [float("nan"), 1.0, True, "red"]]  # the fast path
    odd = [[1.0, "x", 1, 7], [2.0, 3.0, 0, "blue"]]  # a str among floats, ints as booleans, a number as text
    short = [[3.0, 4.0]]
    t0 = dt.datetime(2026, 11, 25, 12, tzinfo=dt.timezone.utc).timestamp()
    for i, rows in enumerate((clean, odd, short)):
        if form == "objects":
            rows = objects_of(rows, len(cols))
            assert isinstance(rows, np.ndarray) or i == 2  # short rows stay lists
        if form == "split":
            rows = split_rows(objects_of(rows, len(cols)), *split_positions(types))
            assert isinstance(rows, Split) == (i == 0)  # "x" is no number; short rows stay lists
        collector.add(_rec(t0 + i, f"r{i}", rows, np.zeros(len(rows), dtype=np.int64), columns=cols, types=types))
    collector.add(_rec(t0 + 3, "failed", None, None, status=422, error=None, columns=cols, types=types))
    collector.flush()
    df = read_requests(tmp_path / "d").to_pandas().sort_values(["request_time", "row"])
    table = read_requests(tmp_path / "d")
    assert np.isnan(df["a"].iloc[2]) and table.column("a").null_count == 1  # NaN stays NaN; the failed request's null
    assert table.column("b").null_count == 3  # None, a string, the failed request
    got = [[None if v is None or v != v else v for v in row] for row in df[cols].astype(object).to_numpy().tolist()]
    assert got == [[1.5, 2.0, True, "red"], [0.25, None, False, None], [None, 1.0, True, "red"],
                   [1.0, None, True, "7"], [2.0, 3.0, False, "blue"],
                   [3.0, 4.0, None, None], [None] * 4]



def test_split_rows_read_back_as_the_rows_they_were_split_from(collector, tmp_path):
    """Records holding split rows only (the scoring server's form for validated rows with a
    string column), with a request that failed: the numbers are read back as sent, None as
    missing and NaN as NaN, the other columns as the signature types them, the failed request
    as one row of nulls; and the table is the one the same rows as arrays of objects give."""
    import pyarrow as pa

    from mlops_lab.monitoring.records import split_positions, split_rows
    from mlops_lab.registry.inputs import objects_of

    cols, types = ["a", "colour", "b", "flag"], ["float", "string", "float", "bool"]
    first = [[1.5, "red", 2, True], [0.25, None, None, False], [float("nan"), "blue", -1.0, True]]
    second = [[3.0, "green", 4.5, False]] * 4
    t0 = dt.datetime(2026, 11, 25, 12, tzinfo=dt.timezone.utc).timestamp()

    def records(split):
        out = []
        for i, rows in enumerate((first, second)):
            x = objects_of(rows, len(cols))
            if split:
                x = split_rows(x, *split_positions(types))
            out.append(_rec(t0 + i, f"r{i}", x, np.arange(len(rows)), columns=cols, types=types))
        out.append(_rec(t0 + 2, "failed", None, None, status=500, error="e1", columns=cols, types=types))
        return out

    split, objects = records(True), records(False)
    assert [type(r.inputs).__name__ for r in split] == ["Split", "Split", "NoneType"]
    one, other = collector._table(split, pa), collector._table(objects, pa)

    def values(table):  # NaN as a value of its own (Arrow's equals takes NaN for unequal to itself)
        return {n: ["NaN" if v != v else v for v in table.column(n).to_pylist()] for n in table.column_names}

    assert one.schema == other.schema and values(one) == values(other)
    for r in split:
        collector.add(r)
    collector.flush()
    table = read_requests(tmp_path / "d")
    df = table.to_pandas().sort_values(["request_time", "row"])
    got = [[None if v is None or v != v else v for v in row] for row in df[cols].astype(object).to_numpy().tolist()]
    assert got == [[1.5, "red", 2.0, True], [0.25, None, None, False], [None, "blue", -1.0, True],
                   *[[3.0, "green", 4.5, False]] * 4, [None] * 4]
    assert np.isnan(df["a"].iloc[2]) and table.column("a").null_count == 1  # NaN stays NaN; the failed request's null
    assert table.column("b").null_count == 2  # None, and the failed request

def test_rows_of_python_values_are_handed_over_as_untracked_arrays_of_numbers_and_others():
    """The record of a request whose rows are lists (a string column) holds the numbers as one
    float64 array and the other columns as one array of their objects: not the lists, which the
    cyclic garbage collector would go over in every pass while the rows wait for the writer
    (passes of 6-17 ms every half second), and not the request's Python floats, which a flush
    then freed in bulk (100-row requests: the servers' p99 8-10 ms against 2-3 ms without)."""
    import gc
    import sys
    import weakref

    from mlops_lab.monitoring.records import Split
    from mlops_lab.registry.inputs import Chunk
    from mlops_lab.serving.runtime import ServedModel, make_record

    signature = {"kind": "columns", "columns": [{"name": "a", "type": "float"}, {"name": "colour", "type": "string"}]}
    model = ServedModel("m", 1, None, {"signature": signature})

    class Row(list):  # a list that can be watched
        pass

    rows = [Row([float(i) + 0.5, "red"]) for i in range(100)]
    rows[3][0] = None  # a missing number (the signature allows none; validation came before)
    watched = [weakref.ref(r) for r in rows]
    number = rows[7][0]
    held = sys.getrefcount(number)
    chunk = Chunk("rows", rows, 100)
    chunk.objects(2)  # as a pipeline scored on its rows would have made it
    record = make_record(model, "r1", 1.0e9, 1.5, 200, chunk, np.zeros(100))
    del rows, chunk
    gc.collect()
    assert all(w() is None for w in watched)  # the lists are gone with the request
    assert sys.getrefcount(number) == held - 1  # and its floats: only this test's name holds one
    x = record.inputs
    assert isinstance(x, Split) and x.numbers.dtype == np.float64 and x.numbers.shape == (100, 1)
    assert x.others.dtype == object and x.others.shape == (100, 1) and not gc.is_tracked(x.others)
    assert x.numbers[7, 0] == 7.5 and x.others[7, 0] == "red" and np.isnan(x.numbers[3, 0])
    assert x.missing is not None and x.missing[:, 0].tolist() == [i == 3 for i in range(100)]
    assert x.objects(record.types)[3].tolist() == [None, "red"]
    assert record.columns == ["a", "colour"] and record.types == ["float", "string"]
    ragged = [[1.0, "red"], [2.0]]  # not one width: kept as they are
    assert make_record(model, "r2", 1.0e9, 1.5, 200, Chunk("rows", ragged, 2), None).inputs is ragged


def test_slices_of_rows_that_are_not_number_arrays_are_smaller():
    """Rows of Python values are converted one by one: a slice of them is bounded lower, so the
    writer hands the GIL back to the event loop every few milliseconds."""
    from mlops_lab.monitoring.records import CHUNK_ROWS, CHUNK_ROWS_MIXED, _slices

    lists = [_rec(0.0, f"r{i}", [[1.0] * 5] * 100, None) for i in range(400)]
    arrays = [_rec(0.0, f"r{i}", np.ones((100, 5)), None) for i in range(400)]
    assert max(sum(r.n for r in p) for p in _slices(lists)) == CHUNK_ROWS_MIXED + 100 - CHUNK_ROWS_MIXED % 100
    assert max(sum(r.n for r in p) for p in _slices(arrays)) == CHUNK_ROWS + 100 - CHUNK_ROWS % 100
    assert [r for p in _slices(lists) for r in p] == lists
