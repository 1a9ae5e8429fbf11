"""The scoring app in process, through httpx's ASGI transport: no server, no socket, a few
milliseconds a request. The same contract as the real-HTTP tests beside it (which also cover
what only a server shows: keep-alive, draining, several workers, tritonclient)."""

from __future__ import annotations

import asyncio

import httpx
import numpy as np
import pytest

import mlops_lab as ml
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
