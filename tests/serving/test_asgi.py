"""The scoring app in process, through httpx's ASGI transport: no server, no socket, a few
milliseconds a request. The same contract as the real-HTTP tests beside it (which also cover
what only a server shows: keep-alive, draining, several workers, tritonclient)."""

from __future__ import annotations

import asyncio
import hashlib
import json

import httpx
import numpy as np
import pytest
from starlette.responses import Response
from starlette.routing import Route as StarletteRoute

import mlops_lab as ml
from mlops_lab.errors import InvalidRequest
from mlops_lab.serving.app import PROTOCOLS, ScoringApp
from mlops_lab.serving.dataplane import Protocol, speaks
from mlops_lab.serving.server import build_app

KSERVE_IRIS_V2 = {"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP32",
                              "data": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]}]}


@pytest.fixture
def app(sqlite_registry, iris, trained, tmp_path):
    X, _ = iris
    ml.register_model(trained, "iris", sample_input=X)
    folder = ml.download_model("iris:1", tmp_path / "iris")  # what a deployment's revision holds
    return build_app({"deployment": "inproc", "revision": 1, "models": [{"folder": str(folder)}], "body_limit": 4096})


def call(app, method: str, path: str, **kwargs) -> httpx.Response:
    async def go():
        transport = httpx.ASGITransport(app=app.asgi)
        async with httpx.AsyncClient(transport=transport, base_url="http://inproc") as client:
            return await client.request(method, path, **kwargs)

    return asyncio.run(go())


def test_every_protocol_scores_in_process(app, iris, trained):
    X, _ = iris
    rows = X.iloc[:3]
    want = trained.predict(rows).tolist()
    assert call(app, "POST", "/score", json={"data": rows.to_dict("records")}).json() == want
    assert call(app, "POST", "/invocations", json={"dataframe_split": rows.to_dict("split")}).json() == {"predictions": want}
    csv = call(app, "POST", "/invocations", content=rows.to_csv(index=False), headers={"Content-Type": "text/csv"})
    assert csv.json() == {"predictions": want}
    v2 = call(app, "POST", "/v2/models/iris/versions/1/infer", json=KSERVE_IRIS_V2).json()
    frame = X.iloc[:0]._constructor(np.array(KSERVE_IRIS_V2["inputs"][0]["data"], dtype=np.float32).astype(float), columns=X.columns)
    assert v2["outputs"][0]["data"] == trained.predict(frame).tolist() and v2["model_version"] == "1"


@pytest.mark.parametrize(
    "method, path, kwargs, status, check",
    [
        ("POST", "/score", {"json": {"data": [[1, 2, None, 4]]}}, 422, lambda d: d["field"] == "petal length (cm)" and d["row"] == 0),
        ("POST", "/invocations", {"json": {"instances": [[1, 2]]}}, 422, lambda d: d["error_code"] == "BAD_REQUEST"),
        ("POST", "/invocations", {"json": {"instances": [[1, 2, 3, 4]], "extra": 1}}, 422, lambda d: d["field"] == "extra"),
        ("POST", "/v2/models/iris/infer", {"json": {"inputs": [{"name": "x", "shape": [1], "datatype": {}, "data": [1]}]}}, 422,
         lambda d: isinstance(d["error"], str) and d["field"] == "inputs[0].datatype"),
        ("POST", "/v2/models/iris/infer", {"json": {"inputs": [], "parameters": []}}, 422, lambda d: "inputs" in d["error"]),
        ("GET", "/v2/models/iris/versions/9", {}, 404, lambda d: "no version 9" in d["error"]),
        ("POST", "/score", {"content": b"[" * 5000}, 413, lambda d: d["error"] == "PayloadTooLarge"),
        ("GET", "/score", {}, 405, lambda d: "allowed: POST" in d["message"]),
    ],
)
def test_bad_requests_get_their_4xx_in_process(app, method, path, kwargs, status, check):
    r = call(app, method, path, **kwargs)
    assert r.status_code == status, r.text
    assert check(r.json()), r.json()
    if status == 405:
        assert r.headers["allow"] == "POST"


def test_metrics_in_prometheus_text_in_process(app, iris):
    X, _ = iris
    for _ in range(3):
        call(app, "POST", "/score", json={"data": X.iloc[:2].to_numpy().tolist()})
    call(app, "POST", "/score", json={"data": [[1, 2]]})
    r = call(app, "GET", "/metrics", headers={"Accept": "text/plain;version=0.0.4"})
    assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = r.text
    assert 'mlops_lab_request_total{deployment="inproc",model_name="iris",model_version="1",endpoint="score",http_response_code="200"} 3' in text
    assert 'http_response_code="422"} 1' in text
    assert 'mlops_lab_rows_total{deployment="inproc",model_name="iris",model_version="1"} 6' in text
    assert call(app, "GET", "/metrics").json()["models"]["iris:1"]["requests"] == 4


def test_a_v2_request_with_bad_outputs_is_refused_before_the_model_runs(app):
    body = {**KSERVE_IRIS_V2, "outputs": ["predict"]}
    r = call(app, "POST", "/v2/models/iris/infer", json=body)
    assert r.status_code == 422 and r.json()["field"] == "outputs[0]"
    stats = call(app, "GET", "/metrics").json()["models"]["iris:1"]
    assert stats["rows"] == 0 and stats["requests"] == 1 and stats["errors"] == 1  # not scored, counted once


class Lines(Protocol):
    """A protocol of this test's own: one row of comma-separated numbers per line, answered one
    prediction per line; its errors are plain text's 'ERROR <field>: <message>' in JSON."""

    name = "lines"

    def parse(self, model, body, request):
        try:
            rows = [[float(v) for v in line.split(",")] for line in body.decode().splitlines() if line]
        except ValueError:
            raise InvalidRequest("every line must hold numbers", field="body") from None
        return model.spec.from_rows(rows, "body"), None

    def answer(self, plane, route, model, out, ctx, request_id):
        return Response("\n".join(str(v) for v in out) + "\n", media_type="text/plain", headers=plane.headers(request_id, model))

    def error_body(self, exc, body):
        return {"line": f"ERROR {body.get('field')}: {exc}"}

    def routes(self):
        @speaks(self)
        async def lines(request):
            return await self.plane.infer(request, self, None)

        return [StarletteRoute("/lines", lines, methods=["POST"])]


def test_a_new_protocol_is_one_class_over_the_shared_request_path(app, iris, trained, tmp_path):
    """Given a protocol written only as parse, answer and error shape, when a server is built
    with it beside the others, then it scores, is counted, and its errors (the signature's own
    checks, and the key check) take its shape, while the other protocols answer as before."""
    X, _ = iris
    rows = X.iloc[:3]
    served = ScoringApp(list(app.routes.values()), deployment="inproc", protocols=(*PROTOCOLS, Lines))
    keyed = tmp_path / "keys.json"
    keyed.write_text(json.dumps({"primary": hashlib.sha256(b"k").hexdigest()}))
    locked = ScoringApp(list(app.routes.values()), keys_file=str(keyed), protocols=(*PROTOCOLS, Lines))
    assert call(locked, "POST", "/lines", content="1,2,3,4").json()["line"].startswith("ERROR None: this deployment needs a key")
    assert call(locked, "POST", "/lines", content="1,2,3,4", headers={"Authorization": "Bearer k"}).status_code == 200
    body = "\n".join(",".join(str(v) for v in r) for r in rows.to_numpy().tolist())
    r = call(served, "POST", "/lines", content=body)
    assert r.status_code == 200 and r.text.split() == [str(v) for v in trained.predict(rows)]
    assert r.headers["x-model-version"] == "iris:1"
    bad = call(served, "POST", "/lines", content="1,2\n")  # too few columns: the signature refuses it
    assert bad.status_code == 422 and bad.json()["line"].startswith("ERROR ") and "4" in bad.json()["line"]
    assert call(served, "POST", "/lines", content="a,b").json() == {"line": "ERROR body: every line must hold numbers"}
    assert call(served, "POST", "/invocations", json={"instances": [[1, 2]]}).json()["error_code"] == "BAD_REQUEST"
    text = call(served, "GET", "/metrics?format=prometheus").text
    assert 'endpoint="lines",http_response_code="200"} 1' in text and 'endpoint="lines",http_response_code="422"} 2' in text


def test_dataframe_shaped_requests_are_collected_on_the_fast_path(sqlite_registry, tmp_path, monkeypatch):
    """Given a model registered with a DataFrame sample, when clients send records, MLflow's
    dataframe_split and rows, then every request's rows are copied into the staging lane on
    its fast path (the general check, Lane.fits, runs once: for the first record) and read back."""
    import pandas as pd
    from sklearn.linear_model import LogisticRegression

    from mlops_lab.monitoring import data as D
    from mlops_lab.monitoring import staging

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(200, 5)), columns=[f"x{i}" for i in range(5)])
    model = LogisticRegression().fit(frame, (frame.x0 > 0).astype(int))
    ml.register_model(model, "framed", sample_input=frame.head())
    folder = ml.download_model("framed:1", tmp_path / "framed")
    app = build_app({"deployment": "framed", "revision": 1, "models": [{"folder": str(folder)}],
                     "collect": {"enabled": True, "folder": str(tmp_path / "collected")}})
    app.collector._start_compactor = lambda: None
    fits = []
    real = staging.Lane.fits
    monkeypatch.setattr(staging.Lane, "fits", lambda self, r: fits.append(r) or real(self, r))
    sent = 0
    for i in range(0, 60, 3):
        q = frame.iloc[i:i + 3]
        assert call(app, "POST", "/score", json={"data": q.to_dict("records")}).status_code == 200
        assert call(app, "POST", "/invocations", json={"dataframe_split": q.to_dict("split")}).status_code == 200
        assert call(app, "POST", "/invocations", json={"inputs": q.to_numpy().tolist()}).status_code == 200
        sent += 9
    app.collector.flush()
    assert len(fits) == 1 and staging.staged_files(tmp_path / "collected" / "framed")  # staged, not queued
    got = D.read_requests(tmp_path / "collected" / "framed").to_pandas()
    assert len(got) == sent and np.allclose(np.sort(got["x0"]), np.sort(np.tile(frame.x0[:60], 3)))
