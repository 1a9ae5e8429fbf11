"""Shadow traffic on the local target, with real supervisors and servers: a version beside the
serving one gets a copy of the requests, its answers collected apart and never returned; the
readout compares the two on the same requests; promote and delete_shadow end it. The bounded
queue of copies is checked in process (a server whose shadow cannot keep up)."""

from __future__ import annotations

import asyncio
import time

import httpx
import numpy as np
import pytest

import mlops_lab as ml
from mlops_lab.deployers.base import wait_until

from .test_local import BrokenAtStart


class Scaled:
    """Answers ``factor`` times the first column: which version answered shows in the value."""

    def __init__(self, factor):
        self.factor = factor

    def predict(self, X):
        return np.asarray(X, dtype=float)[:, 0] * self.factor


class SlowAndFailing:
    """Takes 0.3 s a call and fails on any row whose first value is over 0.5 (its input example,
    zeros, passes)."""

    def predict(self, X):
        time.sleep(0.3)
        x = np.asarray(X, dtype=float)
        if (x[:, 0] > 0.5).any():
            raise ValueError("this version cannot take values over 0.5")
        return x[:, 0] * 3


class Labeller:
    """A classifier: 'high' when the first value is over ``cut``."""

    def __init__(self, cut):
        self.cut = cut

    def predict(self, X):
        return np.where(np.asarray(X, dtype=float)[:, 0] > self.cut, "high", "low")


def _post(d, client, rows):
    return client.post(f"{d.url}/score", json={"data": rows}, headers={"Authorization": f"Bearer {d.keys['primary']}"})


def _rows_when(fn, n, timeout=20.0):
    """``fn()`` (a DataFrame) once it has ``n`` rows."""
    assert wait_until(lambda: len(fn()) >= n, timeout=timeout, every=0.2), len(fn())
    return fn()


@pytest.fixture
def scaled(sqlite_registry):
    sample = np.zeros((3, 2))
    for factor in (1.0, 1.1):
        ml.register_model(Scaled(factor), "m", sample_input=sample)
    ml.register_model(SlowAndFailing(), "m", sample_input=sample)
    yield
    for d in ml.list_deployments():
        d.delete()


def test_a_shadow_answers_copies_that_are_collected_apart_and_compared(scaled):
    d = ml.deploy("m:1", name="svc", progress=False, drain_seconds=0.2, collect={"flush_seconds": 0.3})
    d.update("m:2", shadow=True, progress=False)
    assert d.shadows == [{"name": "m", "version": 2, "traffic": 0, "route": "m", "shadow": 1.0}]
    assert "m:2 (shadow of 100%)" in repr(d)
    assert [m["ref"] for m in d.call("metadata", method="GET")["models"]] == ["m:1", "m:2"]
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, size=(40, 3, 2))
    ids = []
    with httpx.Client(timeout=30) as client:
        for rows in x:
            r = _post(d, client, rows.tolist())
            assert r.status_code == 200 and r.headers["x-model-version"] == "m:1"
            assert r.json() == pytest.approx(rows[:, 0].tolist())  # the serving version's answer, never the shadow's
            ids.append(r.headers["x-request-id"])
    shadow = _rows_when(lambda: ml.collected_data("svc", shadow=True), 120)
    assert set(shadow["model_version"]) == {"m:2"} and set(shadow["status_code"]) == {200}
    assert sorted(set(shadow["request_id"])) == sorted(ids)
    by_id = dict(zip(ids, x))
    want = np.concatenate([by_id[i][:, 0] * 1.1 for i in shadow.sort_values(["request_id", "row"])["request_id"].unique()])
    np.testing.assert_allclose(shadow.sort_values(["request_id", "row"])["prediction"], want)
    served = _rows_when(lambda: ml.collected_data("svc"), 120)
    assert set(served["model_version"]) == {"m:1"} and len(served) == 120  # the shadow's rows are not in the served ones
    # Prometheus: the shadow in its own series (its workers write their counters once a second),
    # never in the callers' requests
    def scrape():
        return httpx.get(f"{d.url}/metrics", headers={"Authorization": f"Bearer {d.keys['primary']}",
                                                       "Accept": "text/plain"}).text

    answered = 'mlops_lab_shadow_request_total{deployment="svc",model_name="m",model_version="2",outcome="200"} 40'
    assert wait_until(lambda: answered in scrape(), timeout=20, every=0.3)
    text = scrape()
    assert not [line for line in text.splitlines() if line.startswith("mlops_lab_request_total") and 'model_version="2"' in line]
    # the readout: regression (values are not whole), on the same 120 rows
    r = ml.compare("svc")
    assert (r.kind, r.serving, r.shadow, r.pairs) == ("regression", ["m:1"], "m:2", 120)
    assert r.differences["mean"] == pytest.approx(0.1 * x[:, :, 0].mean(), rel=1e-6)
    assert r.differences["max_abs"] == pytest.approx(0.1 * x[:, :, 0].max(), rel=1e-6)
    assert list(r.versions["version"]) == ["m:1", "m:2"] and list(r.versions["requests"]) == [40, 40]
    assert (r.versions["latency_p50_ms"] > 0).all()
    assert "m:2 differs from m:1 by +0.0" in r.verdict
    spec = r.chart().to_dict()
    assert len(spec["hconcat"]) == 3 and "in the shadow of m:1" in spec["title"]["text"]
    # the shadow's model card: its role, and its own live numbers (from its collected answers)
    card = ml.model_card("m:2").markdown
    assert "in the shadow of its route (a copy of 100% of the requests)" in card
    assert "| 40 | 120 | 0 |" in card  # requests, rows, errors
    # promote: the shadow serves, and no shadow is left
    d.promote(progress=False)
    assert [(m["version"], m["traffic"], m.get("shadow")) for m in d.models] == [(2, 100, None)]
    with httpx.Client(timeout=30) as client:
        assert _post(d, client, [[1.0, 0.0]]).json() == [pytest.approx(1.1)]
    # its answers as a shadow stay, and the readout can still be asked for
    assert ml.compare("svc", shadow=True).pairs == 120


def test_callers_never_wait_for_a_slow_or_failing_shadow_and_delete_shadow_stops_it(scaled):
    d = ml.deploy("m:1", name="svc", progress=False, drain_seconds=0.2, collect={"flush_seconds": 0.3})
    d.update("m:3", shadow=0.5, progress=False)
    took = []
    with httpx.Client(timeout=30) as client:
        for i in range(40):
            t0 = time.perf_counter()
            r = _post(d, client, [[0.9 if i % 2 else 0.1, 0.0]])
            took.append(time.perf_counter() - t0)
            assert r.status_code == 200 and r.json() == [pytest.approx(0.9 if i % 2 else 0.1)]
    assert max(took) < 0.25, took  # the shadow takes 0.3 s a call: nobody waited for it
    shadow = _rows_when(lambda: ml.collected_data("svc", shadow=True), 8, timeout=30)
    time.sleep(1.0)
    shadow = ml.collected_data("svc", shadow=True)
    assert 8 <= len(shadow) <= 32, len(shadow)  # half of 40, give or take (binomial, p > 0.999)
    failed = shadow[shadow["status_code"] == 500]
    assert len(failed) and failed["error_id"].notna().all() and failed["prediction"].isna().all()
    np.testing.assert_allclose(shadow[shadow["status_code"] == 200]["prediction"], 0.3)
    assert set(ml.collected_data("svc")["status_code"]) == {200}  # the callers got answers
    # an update keeps the shadow; delete_shadow stops it, and what serves is unchanged
    d.update("m:2", progress=False)
    assert [(m["version"], bool(m.get("shadow"))) for m in d.models] == [(2, False), (3, True)]
    ml.delete_shadow("svc", progress=False)
    d.refresh()
    assert d.shadows == [] and [(m["version"], m["traffic"]) for m in d.models] == [(2, 100)]
    assert [m["ref"] for m in d.call("metadata", method="GET")["models"]] == ["m:2"]
    assert d.revisions()[-1].note == "delete shadow m:3"
    with pytest.raises(ml.InvalidInput, match="has no shadow"):
        d.delete_shadow(progress=False)


def test_shadow_settings_are_checked_before_anything_changes(scaled):
    d = ml.deploy("m:1", name="svc", progress=False, drain_seconds=0.2, collect=False)
    for kwargs, message in (({"shadow": True, "traffic": 10}, "not both"),
                            ({"shadow": 1.5}, r"shadow must be True or the share of requests to copy, in \(0, 1\], got 1.5"),
                            ({"shadow": "yes"}, "shadow must be True")):
        with pytest.raises(ml.InvalidInput, match=message):
            d.update("m:2", progress=False, **kwargs)
    with pytest.raises(ml.InvalidInput, match="m:1 serves route 'm' of 'svc' already"):
        d.update("m:1", shadow=True, progress=False)
    with pytest.raises(ml.InvalidInput, match="no canary or shadow to promote"):
        d.promote(progress=False)
    # a shadow version that cannot start fails the update, and the current revision serves on
    ml.register_model(BrokenAtStart(), "m", sample_input=np.zeros((3, 2)))
    with pytest.raises(ml.DeploymentFailed, match="the shadow version did not start: .*this version is broken"):
        d.update("m:4", shadow=True, progress=False)
    assert d.refresh().revision == 1 and d.shadows == []
    with httpx.Client(timeout=30) as client:
        assert _post(d, client, [[0.5, 0.0]]).json() == [pytest.approx(0.5)]
    # without collection a shadow still runs (and is counted), with nothing to compare
    d.update("m:2", shadow=True, progress=False)
    with httpx.Client(timeout=30) as client:
        assert _post(d, client, [[0.5, 0.0]]).json() == [pytest.approx(0.5)]
    with pytest.raises(ml.InvalidInput, match="has no shadow answers collected"):
        ml.compare("svc")


def test_a_classifier_shadow_gets_its_agreement_rate(sqlite_registry):
    sample = np.zeros((3, 2))
    ml.register_model(Labeller(0.5), "c", sample_input=sample)
    ml.register_model(Labeller(0.6), "c", sample_input=sample)
    d = ml.deploy("c:1", name="cls", progress=False, drain_seconds=0.2, collect={"flush_seconds": 0.3})
    try:
        d.update("c:2", shadow=True, progress=False)
        x = np.linspace(0, 1, 101)[:, None] * np.ones((1, 2))  # 0.00, 0.01, ..., 1.00
        with httpx.Client(timeout=30) as client:
            for part in np.array_split(x, 10):
                assert _post(d, client, part.tolist()).status_code == 200
        # both halves of each pair, each written on its own flush: the shadow's and the served
        _rows_when(lambda: ml.collected_data("cls", shadow=True), 101)
        _rows_when(lambda: ml.collected_data("cls"), 101)
        r = ml.compare("cls")
        # they disagree on 0.51 ... 0.60: 10 of 101 rows
        assert (r.kind, r.pairs) == ("classification", 101)
        assert r.agreement == pytest.approx(91 / 101)
        assert r.verdict.startswith("c:2 agrees with c:1 on 90.1% of 101 rows")
        assert list(r.versions["top_class"]) == ["low", "low"]  # 51 and 61 of the 101 rows
        assert list(r.versions["top_class_share"]) == pytest.approx([51 / 101, 61 / 101])
        assert r.to_dict()["agreement"] == pytest.approx(91 / 101)
        spec = r.chart().to_dict()
        assert len(spec["hconcat"]) == 2
    finally:
        d.delete()


def test_copies_a_busy_worker_has_no_room_for_are_dropped_and_counted(sqlite_registry, tmp_path):
    """In process (httpx's ASGI transport), with the shadow's real worker process: it takes 0.3 s
    a call, and its pipe is cut to one page with no buffer behind it. Five waves of four 100-row
    requests are all answered at once; the worker answers the copies that fit, the rest are
    dropped and counted, and the two add up to the requests sent."""
    import fcntl

    from mlops_lab.serving.server import build_app
    from mlops_lab.serving.shadow import _F_SETPIPE_SZ

    sample = np.zeros((3, 2))
    ml.register_model(Scaled(1.0), "m", sample_input=sample)
    ml.register_model(SlowAndFailing(), "m", sample_input=sample)
    folders = [ml.download_model(f"m:{v}", tmp_path / f"m{v}") for v in (1, 2)]
    app = build_app({"deployment": "inproc", "revision": 1, "metrics_dir": str(tmp_path / "metrics"),
                     "models": [{"folder": str(folders[0])}, {"folder": str(folders[1]), "route": "m", "shadow": 1.0}]})
    (link,) = app.routes["m"].shadows
    link.buffer_bytes = 0
    fcntl.fcntl(link.fd, _F_SETPIPE_SZ, 4096)
    rows = np.full((100, 2), 0.1).tolist()

    async def go():
        transport = httpx.ASGITransport(app=app.asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://inproc") as client:
            answers, took = [], []
            for _ in range(5):
                t0 = time.perf_counter()
                answers += await asyncio.gather(*(client.post("/score", json={"data": rows}) for _ in range(4)))
                took.append(time.perf_counter() - t0)
                await asyncio.sleep(0.05)
        app.close_shadows(10.0)  # what the worker holds is answered and written out
        return answers, took

    answers, took = asyncio.run(go())
    assert [a.status_code for a in answers] == [200] * 20 and max(took) < 0.25, took
    assert link.proc.returncode == 0
    text = app.prometheus_text()

    def count(outcome):
        line = [x for x in text.splitlines() if f'outcome="{outcome}"' in x and x.startswith("mlops_lab_shadow_request_total")]
        return int(line[0].rsplit(" ", 1)[1]) if line else 0

    assert count("dropped") >= 4 and count("200") >= 4, text
    assert count("dropped") + count("200") == 20
