"""score_batch(engine="dask") on a real Dask cluster: a `dask scheduler` and two `dask worker`
processes on loopback, started here."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pandas as pd
import pytest

import mlops_lab as ml

distributed = pytest.importorskip("distributed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory, s3_server):
    """The scheduler's address; two single-threaded workers (each under its nanny), with the
    test S3 server's credentials in their environment."""
    log = open(tmp_path_factory.mktemp("dask") / "dask.log", "wb")
    env = {**os.environ, **s3_server.env()}
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    procs = [subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], stdout=log, stderr=subprocess.STDOUT)]
    for i in range(2):
        procs.append(subprocess.Popen([sys.executable, "-m", "dask", "worker", address, "--host", "127.0.0.1",
                                       "--nthreads", "1", "--no-dashboard", "--name", f"w{i}", "--memory-limit", "4GB"],
                                      stdout=log, stderr=subprocess.STDOUT, env=env))
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with distributed.Client(address, timeout=5) as client:
                    client.wait_for_workers(2, timeout=max(1, deadline - time.monotonic()))
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        yield address
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
        log.close()


def _data(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"x0": rng.normal(size=n), "x1": rng.normal(size=n), "x2": rng.normal(size=n),
                         "plan": rng.choice(["basic", "pro", "max"], n)})


def _write_files(folder, data: pd.DataFrame, files: int) -> None:
    folder.mkdir()
    size = -(-len(data) // files)
    for i in range(files):
        data.iloc[i * size:(i + 1) * size].to_parquet(folder / f"in-{i:02d}.parquet")


@pytest.fixture
def pipeline(sqlite_registry):
    from sklearn.compose import make_column_transformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import OneHotEncoder, StandardScaler

    train = _data(20_000, 0)
    y = ((train.x0 + train.x1 > 0) ^ (train.plan == "max")).astype(int)
    model = make_pipeline(make_column_transformer((OneHotEncoder(), ["plan"]), (StandardScaler(), ["x0", "x1", "x2"])),
                          LogisticRegression()).fit(train, y)
    ml.register_model(model, "pipe", sample_input=train.head(10))
    ml.set_alias("pipe", "production", 1)
    return model


def test_two_million_rows_in_twenty_files_score_as_predict_does(cluster, pipeline, tmp_path, capsys):
    data = _data(2_000_000, 1)
    _write_files(tmp_path / "in", data, 20)
    summary = ml.score_batch("pipe@production", tmp_path / "in", output=tmp_path / "out", engine="dask", address=cluster)
    assert summary["rows"] == 2_000_000 and summary["files"] == 20
    err = capsys.readouterr().err  # progress: files and rows as they finish, then the total
    assert "scoring pipe:1 on Dask: 1/20 files, 100,000/2,000,000 rows" in err
    assert "2,000,000 rows in 20 files on Dask" in err
    parts = sorted((tmp_path / "out").iterdir())
    assert [p.name for p in parts] == [f"part-{i:05d}.parquet" for i in range(20)]
    got = pd.read_parquet(tmp_path / "out")  # files in name order: the input's order
    np.testing.assert_array_equal(got["prediction"].to_numpy(), pipeline.predict(data))
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out")]  # no staging left


class Slow:
    """A model that takes a while per file, so that a worker can be killed mid-run."""

    def __init__(self, model):
        self.model = model

    def predict(self, frame):
        time.sleep(0.4)
        return self.model.predict(frame)


def test_a_worker_killed_mid_run_leaves_a_complete_and_correct_result(cluster, pipeline, tmp_path):
    ml.register_model(Slow(pipeline), "slow", sample_input=_data(10, 0))
    data = _data(200_000, 2)
    _write_files(tmp_path / "in", data, 20)
    with distributed.Client(cluster) as client:
        pids = client.run(os.getpid)  # worker address -> pid
    result: dict = {}

    def run():
        try:
            result["summary"] = ml.score_batch("slow:1", tmp_path / "in", output=tmp_path / "out", engine="dask",
                                               address=cluster, progress=False)
        except BaseException as exc:  # noqa: BLE001 - reported below
            result["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    deadline = time.monotonic() + 60
    staged = []
    while len(staged) < 3 and time.monotonic() < deadline:
        staged = [p for d in tmp_path.glob(".out.staging-*") for p in d.glob("part-*.parquet")]
        time.sleep(0.05)
    assert len(staged) >= 3, "the run did not start"
    os.kill(next(iter(pids.values())), signal.SIGKILL)  # mid-run: most files are still to do
    thread.join(120)
    assert "error" not in result, result.get("error")
    assert result["summary"]["rows"] == 200_000
    got = pd.read_parquet(tmp_path / "out")
    np.testing.assert_array_equal(got["prediction"].to_numpy(), pipeline.predict(data))


def test_bad_input_fails_in_one_line_naming_file_and_column_and_leaves_no_output(cluster, pipeline, tmp_path):
    _write_files(tmp_path / "in", _data(10_000, 3), 4)
    _data(100, 4).drop(columns=["plan"]).to_parquet(tmp_path / "in" / "in-02.parquet")
    with pytest.raises(ml.InvalidInput, match=r"in-02\.parquet: missing column 'plan'") as info:
        ml.score_batch("pipe", tmp_path / "in", output=tmp_path / "out", engine="dask", address=cluster, progress=False)
    assert "\n" not in str(info.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "in"]  # neither the output nor its staging folder


def test_what_the_engine_refuses_before_it_starts(cluster, pipeline, tmp_path):
    _write_files(tmp_path / "in", _data(1000, 5), 2)
    (tmp_path / "taken").mkdir()
    with pytest.raises(ml.InvalidInput, match="taken exists: remove it or give another output folder"):
        ml.score_batch("pipe", tmp_path / "in", output=tmp_path / "taken", engine="dask", address=cluster)
    with pytest.raises(ml.InvalidInput, match="engine='dask' writes a Parquet dataset: give output='folder'"):
        ml.score_batch("pipe", tmp_path / "in", engine="dask", address=cluster)
    with pytest.raises(ml.InvalidInput, match="no such file or folder"):
        ml.score_batch("pipe", tmp_path / "nothing", output=tmp_path / "o", engine="dask", address=cluster)
    with pytest.raises(ml.InvalidInput, match="unknown engine 'spark'"):
        ml.score_batch("pipe", tmp_path / "in", engine="spark")
    port = _free_port()
    with pytest.raises(ml.InvalidInput, match=f"no Dask scheduler answers at tcp://127.0.0.1:{port}"):
        ml.score_batch("pipe", tmp_path / "in", output=tmp_path / "o", engine="dask", address=f"tcp://127.0.0.1:{port}")
    assert not (tmp_path / "o").exists()


def test_the_cli_scores_a_dataset_on_the_cluster(cluster, pipeline, tmp_path, capsys):
    from mlops_lab.cli import main

    data = _data(50_000, 6)
    _write_files(tmp_path / "in", data, 5)
    code = main(["score", "--model", "pipe@production", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                 "--engine", "dask", "--address", cluster])
    assert code == 0
    assert f"scored 50,000 rows in 5 files with pipe@production on Dask -> {tmp_path / 'out'}" in capsys.readouterr().out
    np.testing.assert_array_equal(pd.read_parquet(tmp_path / "out")["prediction"].to_numpy(), pipeline.predict(data))
    assert main(["score", "--model", "pipe", "--input", str(tmp_path / "in"), "--output", str(tmp_path / "out"),
                 "--engine", "dask", "--address", cluster]) == ml.InvalidInput.exit_code
    assert "out exists" in capsys.readouterr().err


@pytest.mark.s3
def test_a_dataset_on_s3_is_scored_by_the_workers(cluster, pipeline, s3_server, monkeypatch, tmp_path):
    """Input files on the S3 server (the workers read them with the credentials of their own
    environment; the endpoint comes with the caller's settings)."""
    import uuid

    import pyarrow as pa
    import pyarrow.parquet as pq

    from mlops_lab.object_storage import s3_filesystem

    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    fs = s3_filesystem(s3_server.endpoint)
    prefix = f"{s3_server.bucket}/d-{uuid.uuid4().hex[:8]}"
    data = _data(40_000, 7)
    for i in range(4):
        pq.write_table(pa.Table.from_pandas(data.iloc[i * 10_000:(i + 1) * 10_000], preserve_index=False),
                       f"{prefix}/in-{i}.parquet", filesystem=fs)
    summary = ml.score_batch("pipe", f"s3://{prefix}/", output=tmp_path / "out", engine="dask", address=cluster,
                             progress=False)
    assert (summary["rows"], summary["files"]) == (40_000, 4)
    np.testing.assert_array_equal(pd.read_parquet(tmp_path / "out")["prediction"].to_numpy(), pipeline.predict(data))



def test_a_dataset_scored_from_s3_to_s3_is_published_whole_or_not_at_all(cluster, pipeline, s3_server, monkeypatch):
    """Input and output on the S3 server, nothing on a shared folder: the parts are written under
    a hidden staging prefix, copied into place and ``_SUCCESS`` written last; a failed run leaves
    no object under the output prefix, and an output prefix in use is refused."""
    import uuid

    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyarrow import fs as pafs

    from mlops_lab.object_storage import s3_filesystem

    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    fs = s3_filesystem(s3_server.endpoint)
    run = uuid.uuid4().hex[:8]
    data = _data(40_000, 8)
    for i in range(4):
        pq.write_table(pa.Table.from_pandas(data.iloc[i * 10_000:(i + 1) * 10_000], preserve_index=False),
                       f"{s3_server.bucket}/in-{run}/in-{i}.parquet", filesystem=fs)
    out = f"s3://{s3_server.bucket}/out-{run}"

    def objects(prefix: str) -> list[str]:
        found = fs.get_file_info(pafs.FileSelector(prefix, recursive=True, allow_not_found=True))
        return sorted(f.path[len(prefix) + 1:] for f in found if f.type == pafs.FileType.File)

    summary = ml.score_batch("pipe", f"s3://{s3_server.bucket}/in-{run}/", output=out, engine="dask",
                             address=cluster, progress=False)
    assert (summary["rows"], summary["output"]) == (40_000, out)
    assert objects(out[5:]) == ["_SUCCESS"] + [f"part-{i:05d}.parquet" for i in range(4)]
    got = pq.read_table(out[5:], filesystem=fs).to_pandas()  # the reader skips _SUCCESS
    np.testing.assert_array_equal(got["prediction"].to_numpy(), pipeline.predict(data))
    with pytest.raises(ml.InvalidInput, match=f"{out} holds objects already"):
        ml.score_batch("pipe", f"s3://{s3_server.bucket}/in-{run}/", output=out, engine="dask", address=cluster)
    # a bad file among good ones: the run fails in one line and leaves nothing under its prefix;
    # the bad file fails at once while the other worker still scores a large one, and files after
    # them are queued
    pq.write_table(pa.Table.from_pandas(data.drop(columns=["plan"]).head(50), preserve_index=False),
                   f"{s3_server.bucket}/bad-{run}/in-0.parquet", filesystem=fs)
    pq.write_table(pa.Table.from_pandas(_data(400_000, 9), preserve_index=False),
                   f"{s3_server.bucket}/bad-{run}/in-1.parquet", filesystem=fs)
    for i in range(2, 6):
        pq.write_table(pa.Table.from_pandas(data.head(1000), preserve_index=False),
                       f"{s3_server.bucket}/bad-{run}/in-{i}.parquet", filesystem=fs)
    failed = f"s3://{s3_server.bucket}/failed-{run}"
    with pytest.raises(ml.InvalidInput, match=r"in-0\.parquet: missing column 'plan'"):
        ml.score_batch("pipe", f"s3://{s3_server.bucket}/bad-{run}/", output=failed, engine="dask", address=cluster,
                       progress=False)
    assert objects(failed[5:]) == []
    # the run waited for the large file's task before removing the parts: no task of it still runs
    # on a worker (one cancelled while running would), and no part is left, even at once
    with distributed.Client(cluster, timeout=5) as client:
        running = client.run(lambda dask_worker: [str(t.key) for t in dask_worker.state.executing])
    assert [k for keys in running.values() for k in keys if "score_file" in k] == []
    assert [p for p in objects(s3_server.bucket) if ".staging-" in p and p.endswith(".parquet")] == []


def test_a_removal_that_fails_midway_is_repeated_until_the_prefix_is_empty(s3_server, monkeypatch, caplog):
    """On the S3 server, the first removal of a staging prefix fails with an OSError and removes
    nothing, as rclone's refused folder marker made it fail in CI when the driver's and a late
    task's removals met: ``_remove_prefix`` tries again and nothing is left. A store that
    refuses every try leaves the prefix and a warning naming it, and raises nothing (a hidden
    prefix beside the output, never the output)."""
    import logging
    import uuid

    from pyarrow import fs as pafs

    from mlops_lab.dask_batch import _remove_prefix
    from mlops_lab.object_storage import s3_filesystem

    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    fs = s3_filesystem(s3_server.endpoint)
    prefix = f"{s3_server.bucket}/.out.staging-{uuid.uuid4().hex[:8]}"
    for i in range(3):
        with fs.open_output_stream(f"{prefix}/part-{i:05d}.parquet") as f:
            f.write(b"x" * 100)

    def files() -> list[str]:
        found = fs.get_file_info(pafs.FileSelector(prefix, recursive=True, allow_not_found=True))
        return sorted(f.path for f in found if f.type == pafs.FileType.File)

    class FailsFirst:
        """The store, except that its first ``failures`` emptyings remove nothing and raise."""

        def __init__(self, inner, failures: int) -> None:
            self.inner, self.failures, self.calls = inner, failures, 0

        def delete_dir_contents(self, path, missing_dir_ok=False):
            self.calls += 1
            if self.calls <= self.failures:
                raise OSError("AWS Error INTERNAL_FAILURE during PutObject operation")
            return self.inner.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

        def __getattr__(self, name):
            return getattr(self.inner, name)

    flaky = FailsFirst(fs, failures=1)
    assert len(files()) == 3
    _remove_prefix(flaky, prefix)
    assert files() == [] and flaky.calls == 2
    # every try refused: the objects stay, one warning names the prefix, nothing is raised
    # (a new prefix: rclone refuses a write into a folder it has just removed for a moment)
    prefix += "-2"
    for i in range(2):
        with fs.open_output_stream(f"{prefix}/part-{i:05d}.parquet") as f:
            f.write(b"y")
    refusing = FailsFirst(fs, failures=99)
    with caplog.at_level(logging.WARNING, logger="mlops_lab.dask_batch"):
        _remove_prefix(refusing, prefix, attempts=2)
    assert refusing.calls == 2 and len(files()) == 2
    assert any(prefix in r.getMessage() and "INTERNAL_FAILURE" in r.getMessage() for r in caplog.records)
    _remove_prefix(fs, prefix)
    assert files() == []
