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
from mlops_lab.monitoring.records import Record

COLS = [f"x{i}" for i in range(5)]
TYPES = ["float"] * 5


@pytest.fixture
def collector(tmp_path):
    col = Collector("d", CollectConfig(folder=str(tmp_path), flush_seconds=3600, flush_rows=10**9, max_queue_rows=10**9, stage_budget_mb=0))
    col._stop.set()  # flush by hand
    return col


def _rec(t, rid, X, pred, version="m:1", status=200, error=None, columns=COLS, types=TYPES):
    n = 0 if X is None else len(X)
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
