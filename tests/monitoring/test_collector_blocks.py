"""The collector's block lane (rows copied into reused column-major buffers) against its queue
lane (records kept as they are): both write real Parquet files that read back as what was sent.
No server here: the records are what the scoring server hands over (``Record``)."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow.parquet as pq
import pytest

from mlops_lab.monitoring.collector import CollectConfig, Collector, Record
from mlops_lab.monitoring.data import read_requests

COLS = [f"x{i}" for i in range(5)]
TYPES = ["float"] * 5


@pytest.fixture
def collector(tmp_path):
    col = Collector("d", CollectConfig(folder=str(tmp_path), flush_seconds=3600, flush_rows=10**9, max_queue_rows=10**9))
    col._stop.set()  # flush by hand
    return col


def _rec(t, rid, X, pred, version="m:1", status=200, error=None, columns=COLS, types=TYPES):
    n = 0 if X is None else len(X)
    return Record(t, rid, version, status, 1.5, error, X, columns, types, pred, n)


def _files(tmp_path):
    return sorted((tmp_path / "d" / "requests").rglob("*.parquet"))


def test_block_rows_and_queued_records_read_back_as_sent_in_one_file(collector, tmp_path):
    rng = np.random.default_rng(1)
    t0 = dt.datetime(2026, 11, 25, 12, tzinfo=dt.timezone.utc).timestamp()
    sent = []
    for i in range(40):
        X = rng.normal(size=(8 + i % 7, 5))
        pred = rng.integers(0, 3, len(X))
        sent.append((f"r{i}", X, pred))
        collector.add(_rec(t0 + i, f"r{i}", X, pred))
    collector.add(_rec(t0 + 50, "err", None, None, status=500, error="e1"))  # queue lane: no rows
    ints = np.arange(40).reshape(8, 5)  # integer inputs still take the block lane, as floats
    collector.add(_rec(t0 + 51, "ints", ints, np.arange(8) % 2))
    collector.add(_rec(t0 + 52, "one", np.ones((1, 5)), np.array([1])))  # one row: queued as it is
    assert [r.request_id for r in collector.queue] == ["err", "one"]  # the block lane took the rest
    collector.flush()

    files = _files(tmp_path)
    assert len(files) == 1  # block tables and the error's record: row groups of one schema
    assert pq.ParquetFile(files[0]).metadata.num_row_groups >= 2
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


def test_blocks_are_reused_and_carry_nothing_over(collector, tmp_path):
    collector._block_rows = 24  # small blocks: several fill and are handed over
    t0 = dt.datetime(2026, 11, 25, 12, tzinfo=dt.timezone.utc).timestamp()
    rounds = []
    for k in range(3):
        ids = []
        for i in range(10):
            X = np.full((8, 5), float(k * 100 + i))
            collector.add(_rec(t0 + k * 100 + i, f"k{k}-{i}", X, np.full(8, k, dtype=np.int64)))
            ids.append(f"k{k}-{i}")
        used = {id(b) for b in collector._filled} | {id(b) for b in collector._active.values()}
        assert len(used) == 4  # 80 rows in blocks of 24 (an 8-row record never straddles two)
        collector.flush()
        rounds.append((ids, used))
    # the second and third rounds wrote into the blocks of the first
    spare = {id(b) for blocks in collector._spare.values() for b in blocks}
    assert rounds[1][1] & rounds[0][1] and spare
    df = read_requests(tmp_path / "d").to_pandas()
    assert len(df) == 240 and df.request_id.nunique() == 30
    for k, (ids, _) in enumerate(rounds):
        for i, rid in enumerate(ids):
            got = df[df.request_id == rid]
            assert len(got) == 8 and (got[COLS].to_numpy() == k * 100 + i).all() and (got.prediction == k).all()


def test_a_block_across_midnight_is_split_by_day(collector, tmp_path):
    midnight = dt.datetime(2026, 11, 26, tzinfo=dt.timezone.utc).timestamp()
    for i, t in enumerate((midnight - 2, midnight - 1, midnight + 1)):
        collector.add(_rec(t, f"r{i}", np.full((8, 5), float(i)), np.full(8, i)))
    assert len(collector._active) == 1 and not collector.queue  # all three in one block
    collector.flush()
    days = {f.parent.name: pq.read_table(f).column("request_id").to_pylist() for f in _files(tmp_path)}
    assert days == {"date=2026-11-25": ["r0"] * 8 + ["r1"] * 8, "date=2026-11-26": ["r2"] * 8}


def test_records_that_do_not_fit_a_block_take_the_queue(collector, tmp_path):
    t = dt.datetime(2026, 11, 25, 12, tzinfo=dt.timezone.utc).timestamp()
    collector.add(_rec(t, "wide", np.ones((8, 6)), np.ones(8, dtype=int)))  # wider than its columns
    collector.add(_rec(t, "float-pred", np.ones((8, 5)), np.linspace(0, 1, 8)))  # another layout: a block of its own
    collector.add(_rec(t, "error", np.ones((8, 5)), np.ones(8), status=500, error="e9"))  # an error id: queued
    assert [r.request_id for r in collector.queue] == ["wide", "error"]
    assert {k[1] for k in collector._active} == {"f"}
    collector.flush()
    df = read_requests(tmp_path / "d").to_pandas()
    assert set(df.request_id) == {"wide", "float-pred", "error"}
    assert df[df.request_id == "wide"][COLS].isna().all(axis=None)  # not its signature's width: no inputs kept
    np.testing.assert_allclose(df[df.request_id == "float-pred"].sort_values("row").prediction.astype(float), np.linspace(0, 1, 8))


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
