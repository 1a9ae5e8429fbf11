"""Data collection over real servers: what is stored is what was sent and answered."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import httpx
import numpy as np
import pyarrow.parquet as pq
import pytest

import mlops_lab as ml
from mlops_lab.deployers.base import wait_until
from mlops_lab.monitoring import staging


@pytest.fixture
def iris_model(sqlite_registry, collection_store, iris, trained):
    X, _ = iris
    ml.register_model(trained, "iris", sample_input=X, baseline=X)
    yield X, trained
    for d in ml.list_deployments():
        d.delete()


def _post(d, rows, client=None):
    c = client or httpx
    return c.post(f"{d.url}/score", json={"data": rows}, headers={"Authorization": f"Bearer {d.keys['primary']}"}, timeout=30)


def _files(store, deployment: str, kind: str = "requests") -> list[str]:
    """Whole files of collected requests in the collection store: Parquet, and (in a folder)
    staged files not compacted yet."""
    from pyarrow.fs import FileSelector, FileType

    root = store.deployment(deployment)
    infos = root.fs.get_file_info(FileSelector(root.path(kind), recursive=True, allow_not_found=True))
    found = [i.path for i in infos if i.type == FileType.File and i.path.endswith(".parquet") and "/." not in i.path]
    if kind == "requests" and root.local:
        found += [str(p) for p in staging.staged_files(root.folder)]
    return sorted(found)


def _read(store, path: str):
    if path.endswith(staging.SUFFIX):
        return staging.read_file(Path(path))
    return pq.read_table(path, filesystem=store.fs)


def test_collected_rows_equal_what_was_sent_and_answered(iris_model, collection_store):
    X, clf = iris_model
    d = ml.deploy("iris", name="svc", collect={"flush_seconds": 0.3}, progress=False)
    sent = {}
    with httpx.Client() as client:
        for i in range(30):
            rows = X.iloc[i * 3 : i * 3 + 1 + i % 3]
            r = _post(d, rows.to_dict("records"), client)
            assert r.status_code == 200
            sent[r.headers["x-request-id"]] = (rows, r.json())
        bad = _post(d, [[1, 2, "x", 4]], client)
        assert bad.status_code == 422
    assert wait_until(lambda: len(ml.collected_data("svc")) == sum(len(v[0]) for v in sent.values()) + 1, timeout=10)
    df = ml.collected_data("svc")
    ok = df[df.status_code == 200]
    assert set(ok.request_id) == set(sent)
    for rid, (rows, answer) in sent.items():
        got = ok[ok.request_id == rid].sort_values("row")
        assert got["row"].tolist() == list(range(len(rows)))
        np.testing.assert_allclose(got[list(X.columns)].to_numpy(), rows.to_numpy())
        assert got["prediction"].tolist() == answer
        assert (got["model_version"] == "iris:1").all() and (got["latency_ms"] > 0).all()
    err = df[df.status_code == 422]
    assert len(err) == 1 and err["request_id"].iloc[0] == bad.headers["x-request-id"]
    assert err[list(X.columns)].isna().all(axis=None)
    # time and version filters
    assert len(ml.collected_data("svc", since="1h", version="iris:1")) == len(df)
    assert len(ml.collected_data("svc", version="iris:9")) == 0
    assert list(ml.collected_data("svc", columns=["request_id", "prediction"]).columns) == ["request_id", "prediction"]
    with pytest.raises(ml.InvalidInput, match="no collected column 'nope'"):
        ml.collected_data("svc", columns=["nope"])
    m = ml.metrics("svc", every="1h")
    assert m["requests"].sum() == 31 and m["errors"].sum() == 1
    assert m["rows"].sum() == len(df)


def test_sampling_and_column_exclusion(iris_model, collection_store):
    X, _ = iris_model
    d = ml.deploy("iris", name="sampled", collect={"rate": 0.3, "exclude": ["petal width (cm)"], "flush_seconds": 0.3}, progress=False)
    with httpx.Client() as client:
        for i in range(600):
            assert _post(d, [X.iloc[i % 150].tolist()], client).status_code == 200
    time.sleep(1.0)
    df = ml.collected_data("sampled")
    assert 130 <= df.request_id.nunique() <= 230  # binomial(600, 0.3): mean 180, sd 11
    assert "petal width (cm)" not in df.columns and "petal length (cm)" in df.columns
    off = ml.deploy("iris", name="off", collect=False, progress=False)
    assert _post(off, [X.iloc[0].tolist()]).status_code == 200
    time.sleep(0.5)
    assert _files(collection_store, "off") == []


def test_full_queue_drops_and_counts_but_answers_every_request(iris_model, collection_store):
    X, _ = iris_model
    d = ml.deploy("iris", name="tiny", collect={"max_queue_rows": 50, "flush_seconds": 3600, "flush_rows": 10**9}, progress=False)
    with httpx.Client() as client:
        codes = [_post(d, [X.iloc[i % 150].tolist()], client).status_code for i in range(300)]
    assert codes == [200] * 300
    stats = d.call("metrics", method="GET")["collection"]
    assert stats["queued_rows"] == 50 and stats["dropped_rows"] == 250
    d.delete()  # graceful stop: the 50 queued rows and the drop count are written
    assert len(ml.collected_data("tiny")) == 50
    drops = _read(collection_store, _files(collection_store, "tiny", "drops")[0]).to_pydict()
    assert sum(drops["dropped"]) == 250


def test_sigterm_loses_nothing(iris_model, collection_store):
    X, _ = iris_model
    d = ml.deploy("iris", name="term", collect={"flush_seconds": 3600}, progress=False)
    with httpx.Client() as client:
        ids = [_post(d, [X.iloc[i % 150].tolist()], client).headers["x-request-id"] for i in range(200)]
    assert _files(collection_store, "term") == []  # nothing flushed yet
    pid = d.status().details["servers"][0]["pid"]
    os.kill(pid, signal.SIGTERM)
    assert wait_until(lambda: len(_files(collection_store, "term")) > 0, timeout=20)
    assert set(ml.collected_data("term").request_id) == set(ids)


def test_sigkill_loses_at_most_the_last_interval_and_every_file_reads(iris_model, collection_store):
    X, _ = iris_model
    d = ml.deploy("iris", name="kill", collect={"flush_seconds": 0.5}, progress=False)
    with httpx.Client() as client:
        early = [_post(d, [X.iloc[i % 150].tolist()], client).headers["x-request-id"] for i in range(100)]
        time.sleep(1.5)  # three flush intervals: all of these are on disk
        late = [_post(d, [X.iloc[i % 150].tolist()], client).headers["x-request-id"] for i in range(100)]
    os.kill(d.status().details["servers"][0]["pid"], signal.SIGKILL)
    time.sleep(0.2)
    for f in _files(collection_store, "kill"):
        assert _read(collection_store, f).num_rows > 0  # no half-written file is visible
    got = set(ml.collected_data("kill").request_id)
    assert set(early) <= got
    assert got <= set(early) | set(late)
    # the supervisor restarts the server, which collects again
    assert wait_until(lambda: d.status().state == "healthy" and d.status().details["restarts"] == 1, timeout=30)
    rid = _post(d, [X.iloc[0].tolist()]).headers["x-request-id"]
    assert wait_until(lambda: rid in set(ml.collected_data("kill").request_id), timeout=10)


def test_feedback_joins_to_its_request(iris_model, collection_store):
    X, clf = iris_model
    d = ml.deploy("iris", name="fb", collect={"flush_seconds": 0.3}, progress=False)
    h = {"Authorization": f"Bearer {d.keys['primary']}"}
    ids = []
    with httpx.Client() as client:
        for i in range(0, 150, 10):
            ids.append(_post(d, [X.iloc[i].tolist(), X.iloc[i + 1].tolist()], client).headers["x-request-id"])
        r = client.post(f"{d.url}/feedback", json={"request_id": ids[0], "label": 0, "row": 1}, headers=h)
        assert r.status_code == 200 and r.json() == {"recorded": 1}
        r = client.post(f"{d.url}/feedback", json={"feedback": [{"request_id": ids[1], "label": 2}]}, headers=h)
        assert r.json() == {"recorded": 1}
        r = client.post(f"{d.url}/feedback", json={"label": 2}, headers=h)
        assert r.status_code == 422 and r.json()["field"] == "request_id"
    assert ml.record_feedback("fb", ids[2:4], [0, 0]) == 2
    time.sleep(0.8)
    df = ml.collected_data("fb", with_feedback=True)
    labelled = df.dropna(subset=["label"]).sort_values(["request_id", "row"])
    assert {(r.request_id, r.row, float(r.label)) for r in labelled.itertuples()} == {
        (ids[0], 1, 0.0), (ids[1], 0, 2.0), (ids[2], 0, 0.0), (ids[3], 0, 0.0),
    }
    from mlops_lab.monitoring.data import accuracy

    acc = accuracy(collection_store.deployment("fb"), every="1h")
    assert acc["labelled"].sum() == 4
    expected = np.mean([p == lab for p, lab in zip(labelled["prediction"], labelled["label"])])
    assert acc["accuracy"].iloc[0] == pytest.approx(expected)


def test_writer_slices_are_bounded_in_rows_and_records_and_keep_order():
    from mlops_lab.monitoring.records import CHUNK_RECORDS, CHUNK_ROWS, Record, _slices

    def rec(i, n):
        return Record(0.0, f"r{i}", "m:1", 200, 1.0, None, None, None, None, None, n)

    big = [rec(i, 100) for i in range(1000)]  # 100,000 rows
    small = [rec(i, 1) for i in range(10_000)]
    for records in (big, small, big[:3], []):
        pieces = list(_slices(records))
        assert [r for p in pieces for r in p] == records
        for p in pieces:
            assert len(p) <= CHUNK_RECORDS and sum(r.n for r in p) <= CHUNK_ROWS + 100
    assert max(sum(r.n for r in p) for p in _slices(big)) < CHUNK_ROWS + 100  # cut after the record that reaches it
    assert len(list(_slices(small))) == -(-10_000 // CHUNK_RECORDS)


def test_bad_collect_settings_get_a_clear_error_and_start_nothing(iris_model, collection_store):
    for bad, message in (
        ({"stage_budget_mb": -1}, "stage_budget_mb must be a whole number of MiB, 0 or more, got -1"),
        ({"stage_budget_mb": 1.5}, "stage_budget_mb must be a whole number"),
        ({"stage_budget_mb": True}, "stage_budget_mb must be a whole number"),
        ({"rate": 0}, "collect rate must be in"),
        ({"stage_budget": 10}, "unknown collect setting 'stage_budget'"),
    ):
        with pytest.raises(ml.InvalidInput, match=message):
            ml.deploy("iris", name="bad", collect=bad, progress=False)
    assert [d.name for d in ml.list_deployments()] == []
    # 0 is allowed: no staging, Parquet directly
    d = ml.deploy("iris", name="direct", collect={"stage_budget_mb": 0, "flush_seconds": 0.3}, progress=False)
    X, _ = iris_model
    assert _post(d, [X.iloc[0].tolist()]).status_code == 200
    assert wait_until(lambda: len(_files(collection_store, "direct")) == 1, timeout=10)
    if collection_store.local:
        assert staging.staged_files(collection_store.deployment("direct").folder) == []
