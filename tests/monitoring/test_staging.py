"""Staged collection: records copied into blocks, written as staged files, read back as they
were sent, and compacted to the same Parquet files the collector writes directly. No server
here (the records are what the scoring server hands over); the files are real, written with
O_DIRECT where the file system takes it, and the compactor runs as a real process."""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import subprocess
import sys
import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from mlops_lab.deployers.base import wait_until
from mlops_lab.monitoring import staging
from mlops_lab.monitoring.collector import CollectConfig, Collector
from mlops_lab.monitoring.data import read_requests
from mlops_lab.monitoring.records import Record

COLS = [f"x{i}" for i in range(6)]
TYPES = ["float"] * 6
NOON = dt.datetime(2026, 11, 30, 12, tzinfo=dt.timezone.utc).timestamp()


def _collector(tmp_path, name, **settings):
    settings = {"flush_seconds": 3600, "flush_rows": 10**9, "max_queue_rows": 10**9, **settings}
    col = Collector(name, CollectConfig(folder=str(tmp_path), **settings))
    col._stop.set()  # flush by hand: the writer thread stops before any record comes
    col._wake.set()
    col._thread.join()
    col._wake.clear()
    col.batch = 1  # each record taken as it comes, to look at the lane after each one
    col._start_compactor = lambda: None  # compaction is driven by the tests
    return col


def _traffic(rng, n=60, t0=NOON):
    """Requests as the server records them: float and integer rows, int and float predictions,
    failed requests (no rows), answers the collector keeps without a prediction."""
    out = []
    for i in range(n):
        rows = 1 + i % 5
        X = rng.normal(size=(rows, 6))
        if i % 11 == 3:
            X = rng.integers(0, 9, size=(rows, 6))
        pred = rng.integers(0, 3, rows) if i % 2 else rng.normal(size=rows)
        if i % 13 == 5:
            out.append(Record(t0 + i, f"err{i}", "m:1", 500, 3.0, f"e{i}", None, COLS, TYPES, None, 0))
        elif i % 17 == 7:
            out.append(Record(t0 + i, f"nop{i}", "m:2", 200, 1.0, None, X, COLS, TYPES, None, rows))
        else:
            out.append(Record(t0 + i, f"r{i}", "m:1" if i % 3 else "m:2", 200, 1.0 + i, None, X, COLS, TYPES, pred, rows))
    return out


def _sorted(table):
    return table.sort_by([("request_id", "ascending"), ("row", "ascending")])


@pytest.mark.parametrize("batch", [1, 16])
def test_staged_records_read_back_exactly_as_the_direct_parquet_path_writes_them(tmp_path, batch):
    # Given the same records sent to a staging collector and to one that writes Parquet directly,
    # taken one at a time or 16 at a time (most batches then mix failed requests, integer rows
    # and answers without a prediction with the others)
    rng = np.random.default_rng(7)
    records = _traffic(rng) + [r._replace(time=r.time + 100) for r in _traffic(np.random.default_rng(8), 40)]
    staged, direct = _collector(tmp_path, "staged"), _collector(tmp_path, "direct", stage_budget_mb=0)
    staged.batch = batch
    for r in records:
        staged.add(r)
        direct.add(r)
    staged.flush()
    direct.flush()
    # Then the staging one wrote a staged file and no Parquet, the other Parquet only
    assert len(staging.staged_files(tmp_path / "staged")) == 1 and not (tmp_path / "staged" / "requests").exists()
    assert staging.staged_files(tmp_path / "direct") == [] and list((tmp_path / "direct" / "requests").rglob("*.parquet"))
    # and both read back as the same table, value for value, with the same types
    a, b = _sorted(read_requests(tmp_path / "staged")), _sorted(read_requests(tmp_path / "direct"))
    assert a.schema == b.schema and a.num_rows == sum(max(r.n, 1) for r in records)
    assert a.equals(b)
    assert str(a.schema.field("prediction").type) == "double"  # floats and ints: one float column
    assert staged.written_rows == direct.written_rows == a.num_rows
    # When it is compacted
    assert staging.compact(tmp_path / "staged") == a.num_rows
    # Then the staged file is gone, its Parquet file is what the direct path wrote, and reading is unchanged
    assert staging.staged_files(tmp_path / "staged") == []
    [parquet] = (tmp_path / "staged" / "requests").rglob("*.parquet")
    [direct_file] = (tmp_path / "direct" / "requests").rglob("*.parquet")
    assert pq.read_table(parquet).equals(pq.read_table(direct_file))
    assert _sorted(read_requests(tmp_path / "staged")).equals(b)


def test_batches_with_rows_of_every_layout_keep_every_value(tmp_path):
    """Batches of 16 in which one record, at a different place in each batch, is not a
    row-major float64 array with integer predictions (a column-major array, a strided view,
    float32 rows, a float prediction): every value reads back as sent."""
    rng = np.random.default_rng(5)
    col = _collector(tmp_path, "d")
    col.batch = 16
    sent, preds = [], []
    for i in range(16 * 12):
        X = rng.normal(size=(1 + i % 4, 6))
        pred = np.arange(len(X)) + i
        odd = i % 16 == (i // 16) % 16
        if odd and i // 16 % 4 == 0:
            X = np.asfortranarray(rng.normal(size=(3, 6)))  # several rows: not also in C order
            pred = np.arange(3) + i
        elif odd and i // 16 % 4 == 1:
            X = np.hstack([X, X])[:, ::2]
        elif odd and i // 16 % 4 == 2:
            X = X.astype(np.float32)
        elif odd:
            pred = pred + 0.5
        col.add(Record(NOON + i, f"r{i:04d}", "m:1", 200, 1.0, None, X, COLS, TYPES, pred, len(X)))
        sent.append(np.asarray(X, dtype=np.float64))
        preds.append(pred)
    col.flush()
    df = read_requests(tmp_path / "d").to_pandas().sort_values(["request_id", "row"])
    np.testing.assert_array_equal(df[COLS].to_numpy(), np.concatenate(sent))
    np.testing.assert_array_equal(df["prediction"].to_numpy(), np.concatenate(preds))
    assert df["prediction"].dtype == np.float64  # one float prediction: the file's are floats
    assert col.written_rows == len(df) and col.dropped_total == 0


def test_integer_predictions_stay_integers_and_excluded_columns_are_never_written(tmp_path):
    rng = np.random.default_rng(3)
    col = _collector(tmp_path, "d", exclude=["x2", "x5"])
    sent = []
    for i in range(20):
        X = rng.normal(size=(3, 6))
        col.add(Record(NOON + i, f"r{i}", "m:1", 200, 1.0, None, X, COLS, TYPES, np.arange(3) + i, 3))
        sent.append(X)
    col.flush()
    [path] = staging.staged_files(tmp_path / "d")
    raw = path.read_bytes()
    for X in sent:  # the excluded values are not in the file at all
        assert X[0, 2].tobytes() not in raw and X[0, 5].tobytes() not in raw
        assert X[0, 0].tobytes() in raw
    df = read_requests(tmp_path / "d").to_pandas().sort_values(["request_time", "row"])
    assert [c for c in df.columns if c.startswith("x")] == ["x0", "x1", "x3", "x4"]
    np.testing.assert_array_equal(df[["x0", "x1", "x3", "x4"]].to_numpy(), np.concatenate(sent)[:, [0, 1, 3, 4]])
    assert df["prediction"].dtype == np.int64
    assert df["prediction"].tolist() == [v for i in range(20) for v in range(i, i + 3)]


def test_a_block_never_spans_midnight(tmp_path):
    midnight = dt.datetime(2026, 12, 1, tzinfo=dt.timezone.utc).timestamp()
    col = _collector(tmp_path, "d")
    for i, t in enumerate((midnight - 2, midnight - 1, midnight + 1)):
        col.add(Record(t, f"r{i}", "m:1", 200, 1.0, None, np.full((4, 6), float(i)), COLS, TYPES, np.full(4, i), 4))
    col.flush()
    files = staging.staged_files(tmp_path / "d")
    assert [f.parent.name for f in files] == ["date=2026-11-30", "date=2026-12-01"]
    assert [staging.read_file(f).column("request_id").to_pylist() for f in files] == [["r0"] * 4 + ["r1"] * 4, ["r2"] * 4]
    staging.compact(tmp_path / "d")
    days = sorted(p.parent.name for p in (tmp_path / "d" / "requests").rglob("*.parquet"))
    assert days == ["date=2026-11-30", "date=2026-12-01"]


def test_full_files_are_written_and_a_full_queue_drops_and_counts(tmp_path):
    # Given a lane whose staged files hold 512 rows, a queue bound of 1,024 rows, no writer running
    col = _collector(tmp_path, "d", max_queue_rows=1024)
    X = np.ones((100, 6))
    for i in range(12):  # 1,200 rows: the last ones find no room
        col.add(Record(NOON + i, f"r{i}", "m:1", 200, 1.0, None, X, COLS, TYPES, np.zeros(100), 100))
    lane = col._lane
    assert lane.file_rows == 512 and lane.capacity == 512
    assert col.dropped_total == 200 and col.queued_rows == 1000
    # the first file is whole: its segment and the file itself wait for the writer, who was told
    assert [type(w).__name__ for w in lane.work] == ["Segment", "StagedFile"] and col._wake.is_set()
    # When the writer writes what is whole (a wake-up, not the timer)
    col.flush(everything=False)
    assert len(staging.staged_files(tmp_path / "d")) == 1 and col.queued_rows == 500
    # Then the open file is written at the next timed flush, with the drop count beside it
    col.flush()
    assert len(staging.staged_files(tmp_path / "d")) == 2 and col.queued_rows == 0
    assert read_requests(tmp_path / "d").num_rows == 1000
    assert pq.read_table(next((tmp_path / "d" / "drops").rglob("*.parquet"))).column("dropped").to_pylist() == [200]
    # and the segments are reused, not made anew
    for i in range(10):
        col.add(Record(NOON + 50 + i, f"s{i}", "m:1", 200, 1.0, None, X, COLS, TYPES, np.zeros(100), 100))
    assert lane.segments == 2 and col.dropped_total == 200


def test_a_staged_file_of_many_segments_reads_back_whole(tmp_path):
    # Given segments of 64 rows (set small here) and requests of 1 to 5 rows
    col = _collector(tmp_path, "d")
    rng = np.random.default_rng(3)
    sent = _traffic(rng, n=200)
    col._lane = col._new_lane(COLS)
    col._lane.capacity = 64
    for r in sent:
        col.add(r)
    # When the writer appends the full segments as they come, and finishes the file at the flush
    assert len(col._lane.work) > 3
    col.flush(everything=False)
    tmp = list((tmp_path / "d" / "staging").rglob(".part-*.stage.tmp"))
    assert len(tmp) == 1 and staging.staged_files(tmp_path / "d") == []  # open, not visible to readers
    col.flush()
    # Then one staged file holds every segment, and reads back as the direct path writes it
    [path] = staging.staged_files(tmp_path / "d")
    direct = _collector(tmp_path, "direct", stage_budget_mb=0)
    for r in sent:
        direct.add(r)
    direct.flush()
    assert _sorted(read_requests(tmp_path / "d")).equals(_sorted(read_requests(tmp_path / "direct")))
    assert col._lane.segments == len(col._lane.free)  # every segment written and free for reuse


def test_a_temporary_file_of_a_killed_server_is_removed(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True).stdout.strip()
    day = tmp_path / "d" / "staging" / "date=2026-11-30"
    day.mkdir(parents=True)
    stale = day / f".part-1-{dead}-1.stage.tmp"
    live = day / f".part-1-{os.getpid()}-2.stage.tmp"
    stale.write_bytes(b"x")
    live.write_bytes(b"x")
    _collector(tmp_path, "d")  # a server of the deployment starts again
    assert not stale.exists() and live.exists()


def test_records_of_other_shapes_go_to_parquet_directly(tmp_path):
    col = _collector(tmp_path, "d")
    col.add(Record(NOON, "a", "m:1", 200, 1.0, None, np.ones((2, 6)), COLS, TYPES, np.zeros(2), 2))
    strings = ["city"] + COLS[1:]  # another model of the deployment, with a string column
    col.add(Record(NOON + 1, "b", "m:1", 200, 1.0, None, [["u", 1, 2, 3, 4, 5]], strings, ["string"] + ["float"] * 5, np.zeros(1), 1))
    col.add(Record(NOON + 2, "c", "m:1", 200, 1.0, None, np.ones((1, 3)), ["a", "b", "c"], ["float"] * 3, np.zeros(1), 1))
    col.flush()
    assert len(staging.staged_files(tmp_path / "d")) == 1
    assert len(list((tmp_path / "d" / "requests").rglob("*.parquet"))) == 2  # a file per input layout
    df = read_requests(tmp_path / "d").to_pandas()
    assert sorted(df.request_id) == ["a", "a", "b", "c"]
    assert df.loc[df.request_id == "b", "city"].tolist() == ["u"]
    c = df[df.request_id == "c"]
    assert c[["a", "b", "c"]].to_numpy().tolist() == [[1.0, 1.0, 1.0]] and c["city"].isna().all()


def _both_paths(tmp_path):
    """The same 5 requests through a staging collector (then compacted) and a direct one."""
    cols = [_collector(tmp_path, "staged"), _collector(tmp_path, "direct", stage_budget_mb=0)]
    for col in cols:
        for i in range(5):
            col.add(Record(NOON + i, f"r{i}", "m:1", 200, 1.0, None, np.full((2, 6), float(i)), COLS, TYPES, np.zeros(2), 2))
        col.flush()
    assert len(staging.staged_files(tmp_path / "staged")) == 1
    assert staging.compact(tmp_path / "staged") == 10
    expected = [0.0, 0.0, 1.0, 1.0, 2.0, 2.0, 3.0, 3.0, 4.0, 4.0]
    for name in ("staged", "direct"):
        assert sorted(read_requests(tmp_path / name).column("x0").to_pylist()) == expected
        assert not list((tmp_path / name).rglob("*.tmp"))


def test_without_o_direct_files_are_written_and_read_through_the_page_cache(tmp_path, monkeypatch):
    """Replaces ``os.open`` and ``fcntl.fcntl`` with ones that refuse O_DIRECT (EINVAL) as file
    systems without it do (tmpfs before Linux 6.6, some network file systems): the O_DIRECT
    opens of staged and Parquet files, and the F_SETFL that turns it on to read a staged file."""
    real_open, real_fcntl, refused = os.open, fcntl.fcntl, []

    def open_(path, flags, mode=0o777, **kw):
        if flags & os.O_DIRECT:
            refused.append(path)
            raise OSError(22, "Invalid argument")
        return real_open(path, flags, mode, **kw)

    def fcntl_(fd, cmd, arg=0):
        if cmd == fcntl.F_SETFL and arg & os.O_DIRECT:
            refused.append(fd)
            raise OSError(22, "Invalid argument")
        return real_fcntl(fd, cmd, arg)

    monkeypatch.setattr(os, "open", open_)
    monkeypatch.setattr(fcntl, "fcntl", fcntl_)
    _both_paths(tmp_path)
    assert len(refused) == 4  # staged file, its Parquet file, its read; the direct Parquet file


def test_when_o_direct_transfers_are_refused_files_go_on_through_the_page_cache(tmp_path, monkeypatch):
    """Replaces ``os.pwrite`` and ``os.preadv`` with ones that refuse the first transfer of a file
    opened with O_DIRECT (EINVAL), as file systems that accept the flag at open but not the
    transfer do."""
    real_pwrite, real_preadv, refused = os.pwrite, os.preadv, set()

    def pwrite(fd, data, offset):
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT and os.fstat(fd).st_ino not in refused:
            refused.add(os.fstat(fd).st_ino)
            raise OSError(22, "Invalid argument")
        return real_pwrite(fd, data, offset)

    def preadv(fd, buffers, offset):
        if fcntl.fcntl(fd, fcntl.F_GETFL) & os.O_DIRECT and ("read", os.fstat(fd).st_ino) not in refused:
            refused.add(("read", os.fstat(fd).st_ino))
            raise OSError(22, "Invalid argument")
        return real_preadv(fd, buffers, offset)

    monkeypatch.setattr(os, "pwrite", pwrite)
    monkeypatch.setattr(os, "preadv", preadv)
    _both_paths(tmp_path)
    assert len(refused) == 4


def test_parquet_bigger_than_its_first_buffer_is_written_whole(tmp_path, monkeypatch):
    """Replaces ``records._parquet_bound`` (the size of memory Parquet is encoded into) with
    one that is far too small, and gives this test fresh buffers (this thread's may have grown
    in earlier tests), so that encoding overruns the buffer and is done again in a bigger one."""
    from mlops_lab.monitoring import directio, records

    monkeypatch.setattr(records, "_parquet_bound", lambda table: 1)
    monkeypatch.setattr(directio, "buffers", directio._Buffers())
    table = pa.table({f"c{i}": np.random.default_rng(i).normal(size=50_000) for i in range(8)})  # 3.2 MB
    path = records.write_parquet(table, tmp_path / "out", "x.parquet")
    assert len(directio.buffers.write.aligned(0)) >= path.stat().st_size > 3_000_000
    assert pq.read_table(path).equals(table)
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["x.parquet"]


def test_over_budget_the_collector_writes_parquet_directly(tmp_path):
    col = _collector(tmp_path, "d", stage_budget_mb=1)
    X = np.ones((500, 6))
    for round_ in range(3):
        for i in range(200):  # 100,000 rows of 6 floats: 4.8 MB per flush
            col.add(Record(NOON + round_, f"r{round_}-{i}", "m:1", 200, 1.0, None, X, COLS, TYPES, np.zeros(500), 500))
        col._staged_checked = -1e9  # measure the folder at this flush (it is measured once a second)
        col.flush()
    staged = staging.staged_files(tmp_path / "d")
    parquet = list((tmp_path / "d" / "requests").rglob("*.parquet"))
    assert staged and parquet  # staged until the budget was reached, Parquet after it
    assert staging.staged_bytes(tmp_path / "d") < 12 << 20
    assert read_requests(tmp_path / "d", columns=["request_id"]).num_rows == 300_000


def test_the_default_budget_is_a_quarter_of_the_free_disk_at_most_16_gib(tmp_path):
    import shutil

    from mlops_lab.monitoring.collector import _stage_budget

    free = shutil.disk_usage(tmp_path).free
    budget = _stage_budget(None, tmp_path / "not" / "made" / "yet")  # measured where it will be
    assert abs(budget - min(free // 4, 16 << 30)) < 64 << 20  # other files come and go meanwhile
    assert _stage_budget(3, tmp_path) == 3 << 20 and _stage_budget(0, tmp_path) == 0


def test_readers_never_count_a_file_twice_and_a_second_compactor_waits(tmp_path):
    col = _collector(tmp_path, "d")
    col.add(Record(NOON, "a", "m:1", 200, 1.0, None, np.ones((3, 6)), COLS, TYPES, np.zeros(3), 3))
    col.flush()
    [path] = staging.staged_files(tmp_path / "d")
    # A compaction killed between writing the Parquet file and deleting the staged one
    target = staging.parquet_for(path, tmp_path / "d")
    from mlops_lab.monitoring.records import write_parquet

    write_parquet(staging.read_file(path), target.parent, target.name)
    assert read_requests(tmp_path / "d").num_rows == 3  # not 6: the staged file is skipped
    # Another compactor holds the file: this one leaves it alone
    with open(path, "rb") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        assert staging.compact_file(path, tmp_path / "d") == 0 and path.exists()
    # The next compactor only deletes it (the Parquet file is already whole)
    assert staging.compact_file(path, tmp_path / "d") == 0 and not path.exists()
    assert read_requests(tmp_path / "d").num_rows == 3


def test_a_damaged_staged_file_is_skipped_by_readers_and_left_by_the_compactor(tmp_path):
    col = _collector(tmp_path, "d")
    col.add(Record(NOON, "a", "m:1", 200, 1.0, None, np.ones((3, 6)), COLS, TYPES, np.zeros(3), 3))
    col.flush()
    bad = staging.staged_files(tmp_path / "d")[0].with_name("part-0-0-0.stage")
    bad.write_bytes(b"not a staged file")
    assert read_requests(tmp_path / "d").num_rows == 3
    with pytest.raises(ValueError, match="not a staged file"):
        staging.read_file(bad)


def test_a_staged_file_removed_while_it_is_compacted_is_not_an_error_but_a_damaged_file_is(tmp_path, monkeypatch, caplog):
    import logging
    import shutil

    col = _collector(tmp_path, "d")
    col.add(Record(NOON, "a", "m:1", 200, 1.0, None, np.ones((3, 6)), COLS, TYPES, np.zeros(3), 3))
    col.flush()
    root = tmp_path / "d"
    (staged,) = staging.staged_files(root)
    bad = staged.with_name("part-0-0-0.stage")
    bad.write_bytes(b"not a staged file")
    failed: set = set()
    with caplog.at_level(logging.INFO, logger="mlops_lab.compactor"):
        # a damaged file: logged as an error and left
        staging._compact_or_skip(bad, root, failed)
        assert failed == {bad} and [r.levelname for r in caplog.records] == ["ERROR"]
        caplog.clear()
        # the folder removed (the deployment's data deleted) while its file is being compacted
        write = staging.write_parquet
        monkeypatch.setattr(staging, "write_parquet", lambda *a, **k: (shutil.rmtree(root), write(*a, **k)))
        staging._compact_or_skip(staged, root, failed)
    assert failed == {bad} and [r.levelname for r in caplog.records] == ["INFO"]
    assert f"{staged} was removed while compacting it" in caplog.text


def test_the_compactor_process_compacts_and_exits_after_its_server(tmp_path):
    # Given staged data
    col = _collector(tmp_path, "d")
    for i in range(50):
        col.add(Record(time.time(), f"r{i}", "m:1", 200, 1.0, None, np.full((10, 6), float(i)), COLS, TYPES, np.zeros(10), 10))
    col.flush()
    before = read_requests(tmp_path / "d")
    # When a compactor runs for a server process (here a helper that starts it, as a server
    # does, and exits a second later)
    helper = subprocess.Popen([sys.executable, "-c",
                               "import os, subprocess, sys, time\n"
                               "p = subprocess.Popen([sys.executable, '-m', 'mlops_lab.monitoring.staging', sys.argv[1],"
                               " '--parent', str(os.getpid()), '--poll', '0.2'])\n"
                               "print(p.pid, flush=True)\n"
                               "time.sleep(1.0)\n", str(tmp_path / "d")], stdout=subprocess.PIPE, text=True)
    pid = int(helper.stdout.readline())
    # Then the staged file becomes Parquet, the data reads the same, and the compactor exits
    # once its server is gone and nothing is left
    assert wait_until(lambda: not staging.staged_files(tmp_path / "d"), timeout=30)
    assert list((tmp_path / "d" / "requests").rglob("*.parquet"))
    assert _sorted(read_requests(tmp_path / "d")).equals(_sorted(before))
    helper.wait(timeout=10)
    assert wait_until(lambda: not _alive(pid), timeout=10)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def test_the_idle_gate_waits_while_the_machine_is_busy(monkeypatch):
    """Replaces ``staging._cpu_times`` (the machine's /proc/stat and this process's CPU time)
    with a script of readings, so busy and idle spells are exact."""
    readings = iter([(0, 0), (1, 100), (30, 200), (31, 300), (80, 400)])  # idle 1 %, 29 %, 1 %, 49 %
    monkeypatch.setattr(staging, "_cpu_times", lambda: next(readings))
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    gate = staging.IdleGate(interval=0.0, idle_cpus=0.5)  # idle means at least 25 % (half a CPU of two)
    assert gate.idle() is False
    assert gate.idle() is True
    assert gate.idle() is False
    assert gate.idle() is True


def test_the_idle_gate_by_default_waits_for_a_whole_idle_cpu(monkeypatch):
    """Replaces ``staging._cpu_times`` as above. By default the gate opens only when a whole CPU
    stayed idle (half of two CPUs), or three quarters of a one-CPU machine: the half CPU a
    single client leaves idle is not enough (bench/README.md)."""
    monkeypatch.setattr(staging, "_cpu_times", lambda: next(readings))
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    readings = iter([(0, 0), (49, 100), (99, 200), (179, 300)])  # idle 49 %, 50 %, 80 %
    gate = staging.IdleGate(interval=0.0)
    assert [gate.idle(), gate.idle(), gate.idle()] == [False, True, True]
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    readings = iter([(0, 0), (74, 100), (149, 200)])  # idle 74 %, 75 %
    gate = staging.IdleGate(interval=0.0)
    assert [gate.idle(), gate.idle()] == [False, True]


def test_a_full_disk_loses_only_the_rows_it_could_not_write_and_counts_them(small_disk, fill_disk):
    disk = small_disk
    # Given a collector that has staged one flush
    col = _collector(disk, "d", stage_budget_mb=100)
    X = np.ones((100, 6))

    def send(prefix, count):
        for i in range(count):
            col.add(Record(time.time(), f"{prefix}{i}", "m:1", 200, 1.0, None, X, COLS, TYPES, np.zeros(100), 100))

    send("a", 20)
    col.flush()
    # When the disk fills up and the next flush cannot be written
    filler = fill_disk(disk)
    send("b", 20)
    col.flush()
    # Then nothing half-written is left, what was written reads back, and the loss is counted
    assert not [p for p in (disk / "d").rglob("*") if p.name.endswith(".tmp")]
    assert set(read_requests(disk / "d").column("request_id").to_pylist()) == {f"a{i}" for i in range(20)}
    assert col.dropped_total == 2000 and col.queued_rows == 0
    # and once there is room again, collection goes on and the drop count is written
    filler.unlink()
    send("c", 20)
    col.flush()
    ids = set(read_requests(disk / "d").column("request_id").to_pylist())
    assert ids == {f"a{i}" for i in range(20)} | {f"c{i}" for i in range(20)}
    assert pq.read_table(next((disk / "d" / "drops").rglob("*.parquet"))).column("dropped").to_pylist() == [2000]


def test_a_staged_file_holds_at_most_chunk_records_requests(tmp_path):
    from mlops_lab.monitoring.records import CHUNK_RECORDS

    col = _collector(tmp_path, "d")
    row = np.ones((1, 6))
    for i in range(CHUNK_RECORDS + 10):  # 1-row requests: rows would fit, requests do not
        col.add(Record(NOON, f"r{i}", "m:1", 200, 1.0, None, row, COLS, TYPES, np.zeros(1), 1))
    [whole] = [w for w in col._lane.work if isinstance(w, staging.StagedFile)]
    assert len(whole.meta) == CHUNK_RECORDS
    col.flush()
    assert [staging.read_file(f).num_rows for f in staging.staged_files(tmp_path / "d")] == [CHUNK_RECORDS, 10]


def test_records_are_taken_sixteen_at_a_time_and_none_is_left_behind(tmp_path):
    # Given a collector as a server has it (records taken in batches of 16)
    col = _collector(tmp_path, "d")
    col.batch = 16
    X = np.ones((2, 6))
    for i in range(15):
        col.add(Record(NOON + i, f"r{i}", "m:1", 200, 1.0, None, X, COLS, TYPES, np.zeros(2), 2))
    # Then 15 records wait, by reference, and nothing is in the lane yet
    assert len(col._pending) == 15 and col._lane is None and col.queued_rows == 0
    # When the 16th comes, all 16 are copied into the segment and the list is empty
    col.add(Record(NOON + 15, "r15", "m:1", 200, 1.0, None, X, COLS, TYPES, np.zeros(2), 2))
    assert len(col._pending) == 0 and col._lane.seg.rows == 32 and col.queued_rows == 32
    # and the counters for /metrics, or a flush, take the ones still waiting
    col.add(Record(NOON + 16, "r16", "m:1", 200, 1.0, None, X, COLS, TYPES, np.zeros(2), 2))
    assert col.stats()["queued_rows"] == 34 and not col._pending
    col.add(Record(NOON + 17, "r17", "m:1", 200, 1.0, None, X, COLS, TYPES, np.zeros(2), 2))
    col.flush()
    assert sorted(read_requests(tmp_path / "d").column("request_id").to_pylist()) == sorted(f"r{i}" for i in range(18) for _ in range(2))


def test_a_staged_file_of_format_1_still_reads(tmp_path):
    """Format 1 (one region of values, one of predictions; written by the previous release)
    may still be on disk, not yet compacted, after an upgrade."""
    import pyarrow as pa

    f = staging.StagedFile(NOON + 3600)
    f.meta = [(NOON, "a", "m:1", 200, 1.0, None, 2, True)]
    sink = pa.BufferOutputStream()
    meta = staging.file_meta(f, COLS)
    with pa.ipc.new_file(sink, meta.schema) as w:
        w.write_batch(meta)
    ipc = sink.getvalue().to_pybytes()
    page = 4096
    values = np.arange(12.0).reshape(2, 6).tobytes().ljust(page, b"\0")
    preds = np.array([3.0, 4.0]).tobytes().ljust(page, b"\0")
    footer = staging._FOOTER.pack(staging._MAGIC, 1, 6, 2, 0, 96, page, 16, 2 * page, len(ipc))
    day = tmp_path / "d" / "staging" / "date=2026-11-30"
    day.mkdir(parents=True)
    (day / "part-1-1-1.stage").write_bytes(values + preds + ipc + footer)
    t = read_requests(tmp_path / "d")
    assert t.column("x0").to_pylist() == [0.0, 6.0] and t.column("x5").to_pylist() == [5.0, 11.0]
    assert t.column("prediction").to_pylist() == [3, 4]


def test_the_writer_is_woken_once_for_work_that_waits(tmp_path):
    # Given a collector with no writer running, counting how often it would be woken
    col = _collector(tmp_path, "d", max_queue_rows=10**6, flush_rows=512)
    wakes = []
    real_set = col._wake.set
    col._wake.set = lambda: (wakes.append(1), real_set())
    X = np.ones((100, 6))
    # When 30 requests come after the first segment is full (flush_rows rows: its work waits all along)
    for i in range(36):
        col.add(Record(NOON + i, f"r{i}", "m:1", 200, 1.0, None, X, COLS, TYPES, np.zeros(100), 100))
    assert col._lane.capacity == 512 and col._lane.file_rows > 512  # files span several segments
    # Then the writer was woken once, not once per request
    assert len(wakes) == 1 and col._lane.work
    # and after it took the work, the next full segment wakes it once more
    col.flush(everything=False)
    for i in range(36, 48):
        col.add(Record(NOON + i, f"r{i}", "m:1", 200, 1.0, None, X, COLS, TYPES, np.zeros(100), 100))
    assert len(wakes) == 2


def test_finishing_a_file_of_4096_requests_sets_off_no_garbage_collection(tmp_path):
    """A staged file's per-request values are built in the writer thread, holding the GIL: that
    must not make an object the cyclic garbage collector tracks per request (``zip(*meta)`` made
    an iterator for each: 4,096 of them set off collections there, now and then a full one over
    the whole server's objects, 87 ms in ``bench/inprocess.py --pair``)."""
    import gc

    col = _collector(tmp_path, "d")
    rng = np.random.default_rng(5)
    n = staging.CHUNK_RECORDS
    for i in range(n):
        col.add(Record(NOON + i, f"r{i}", "m:1", 200, 1.0, None, rng.normal(size=(1, 6)), COLS, TYPES, np.array([i % 3]), 1))
    f = col._lane.open
    assert len(f.meta) == n
    started: list[int] = []

    def seen(phase, info):
        if phase == "start":
            started.append(info["generation"])

    staging.file_meta(f, COLS)  # the first call imports what Arrow's conversions need
    threshold = gc.get_threshold()
    gc.collect()
    gc.set_threshold(700, 10, 10)  # CPython's defaults, whatever the test run set
    gc.callbacks.append(seen)
    try:
        batch = staging.file_meta(f, COLS)
    finally:
        gc.callbacks.remove(seen)
        gc.set_threshold(*threshold)
    assert started == []
    assert batch.num_rows == n
    assert batch.column("request_id")[n - 1].as_py() == f"r{n - 1}"
    assert batch.column("time")[7].as_py() == NOON + 7
