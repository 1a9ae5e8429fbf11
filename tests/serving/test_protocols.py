"""Every protocol with real payloads, over loopback HTTP against deployed servers."""

from __future__ import annotations

import numpy as np
import pytest

import mlops_lab as ml

from .conftest import auth


def test_azure_score_rows_and_records(served, http):
    d, clf, X = served["iris"], served["clf"], served["X"]
    rows = X.iloc[:10]
    expected = clf.predict(rows).tolist()
    r = http.post(f"{d.url}/score", json={"data": rows.to_dict("records")}, headers=auth(d))
    assert r.status_code == 200, r.text
    assert r.json() == expected
    assert r.headers["x-model-version"] == "iris:1"
    assert len(r.headers["x-request-id"]) >= 8
    r = http.post(f"{d.url}/score", json={"data": rows.to_numpy().tolist()}, headers=auth(d))
    assert r.json() == expected
    # the Python client says the same
    assert d.predict(rows) == expected


def test_mlflow_invocations_every_format(served, http):
    d, clf, X = served["iris"], served["clf"], served["X"]
    rows = X.iloc[20:30]
    expected = {"predictions": clf.predict(rows).tolist()}
    bodies = [
        {"dataframe_split": rows.to_dict("split")},
        {"dataframe_split": {"columns": list(rows.columns), "data": rows.to_numpy().tolist()}},
        {"dataframe_records": rows.to_dict("records")},
        {"instances": rows.to_dict("records")},
        {"instances": rows.to_numpy().tolist()},
        {"inputs": {c: rows[c].tolist() for c in rows.columns}},
        {"inputs": rows.to_numpy().tolist()},
    ]
    for body in bodies:
        r = http.post(f"{d.url}/invocations", json=body, headers=auth(d))
        assert r.status_code == 200, (body, r.text)
        assert r.json() == expected, body
    csv = rows.to_csv(index=False)
    r = http.post(f"{d.url}/invocations", content=csv, headers={**auth(d), "Content-Type": "text/csv"})
    assert r.status_code == 200, r.text
    assert r.json() == expected


def test_mlflow_client_side_format(served, http):
    """The payload MLflow's own pyfunc client builds for a DataFrame (pandas split orient with
    an index) is accepted unchanged."""
    d, clf, X = served["iris"], served["clf"], served["X"]
    rows = X.iloc[:4]
    body = {"dataframe_split": rows.to_dict(orient="split")}
    assert "index" in body["dataframe_split"]
    r = http.post(f"{d.url}/invocations", json=body, headers=auth(d))
    assert r.json() == {"predictions": clf.predict(rows).tolist()}


def test_open_inference_v2_with_tritonclient(served):
    """The v2 protocol driven by NVIDIA's own client, binary tensors and JSON both."""
    import tritonclient.http as tc

    d, lr, A = served["arr"], served["lr"], served["A"]
    client = tc.InferenceServerClient(url=d.url.removeprefix("http://"))
    headers = auth(d)
    assert client.is_server_live(headers=headers)
    assert client.is_server_ready(headers=headers)
    assert client.is_model_ready("arr", headers=headers)
    meta = client.get_model_metadata("arr", headers=headers)
    assert meta["name"] == "arr" and meta["inputs"][0]["shape"] == [-1, 20]
    batch = A[:7].astype(np.float64)
    for binary in (True, False):
        inp = tc.InferInput("input-0", list(batch.shape), "FP64")
        inp.set_data_from_numpy(batch, binary_data=binary)
        out = tc.InferRequestedOutput("predict", binary_data=binary)
        # tritonclient writes its own headers into the dict it is given: a fresh one per call
        res = client.infer("arr", [inp], outputs=[out], headers=dict(headers))
        np.testing.assert_array_equal(res.as_numpy("predict"), lr.predict(batch))


def test_v2_columns_as_named_inputs(served, http):
    d, clf, X = served["iris"], served["clf"], served["X"]
    rows = X.iloc[:5]
    body = {
        "id": "req-1",
        "inputs": [{"name": c, "shape": [5], "datatype": "FP64", "data": rows[c].tolist()} for c in rows.columns],
    }
    r = http.post(f"{d.url}/v2/models/iris/infer", json=body, headers=auth(d))
    assert r.status_code == 200, r.text
    doc = r.json()
    assert doc["id"] == "req-1" and doc["model_name"] == "iris" and doc["model_version"] == "1"
    assert doc["outputs"][0]["data"] == clf.predict(rows).tolist()
    assert doc["outputs"][0]["shape"] == [5]
    # errors follow the v2 format ({"error": message}) and still name the field
    body["inputs"] = body["inputs"][:3]
    r = http.post(f"{d.url}/v2/models/iris/infer", json=body, headers=auth(d))
    assert r.status_code == 422
    assert r.json()["error"] == "missing column 'petal width (cm)'" and r.json()["field"] == "petal width (cm)"
    r = http.post(f"{d.url}/v2/models/nope/infer", json=body, headers=auth(d))
    assert r.status_code == 404 and "no model named 'nope'" in r.json()["error"]


def test_health_metadata_openapi_docs(served, http):
    d = served["iris"]
    h = http.get(f"{d.url}/health").json()
    assert h["status"] == "ok" and h["models"] == ["iris:1"]
    assert http.get(f"{d.url}/v2/health/live").status_code == 200
    assert http.get(f"{d.url}/v2/health/ready").status_code == 200
    assert http.get(f"{d.url}/metadata").status_code == 401
    meta = http.get(f"{d.url}/metadata", headers=auth(d)).json()
    model = meta["models"][0]
    assert model["ref"] == "iris:1"
    assert [c["name"] for c in model["signature"]["columns"]] == list(served["X"].columns)
    spec = http.get(f"{d.url}/openapi.json").json()
    schema = spec["paths"]["/score"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    record = schema["properties"]["data"]["oneOf"][1]["items"]
    assert record["required"] == list(served["X"].columns)
    # iris was registered with no missing value anywhere: no column takes null (true/false read as 1/0)
    assert record["properties"]["sepal length (cm)"] == {"type": ["number", "boolean"]}
    assert spec["components"]["securitySchemes"]["bearer"]["scheme"] == "bearer"
    page = http.get(f"{d.url}/docs")
    assert page.status_code == 200 and "sepal length (cm)" in page.text and "<script>" in page.text


@pytest.mark.parametrize(
    "body, status, field, row, fragment",
    [
        ({"data": [{"sepal length (cm)": 1, "sepal width (cm)": 1, "petal length (cm)": 1}]}, 422, "petal width (cm)", 0, "missing column"),
        ({"data": [{"sepal length (cm)": 1, "sepal width (cm)": 1, "petal length (cm)": 1, "petal width (cm)": 1, "colour": 2}]}, 422, "colour", 0, "unexpected column"),
        ({"data": [[1, 2, 3, 4], [1, 2, "wide", 4]]}, 422, "petal length (cm)", 1, "expects float, got string 'wide'"),
        ({"data": [[1, 2, 3, 4], [1, 2, 3]]}, 422, None, 1, "row 1 has 3 values, expected 4"),
        ({"data": [[1, 2, 3, 4], [1, 2, True, 4]]}, 200, None, None, ""),  # JSON true reads as 1
        ({"rows": [[1, 2, 3, 4]]}, 422, "data", None, "no 'data' key"),
        ({"data": []}, 422, "data", None, "holds no rows"),
        ({"data": "nope"}, 422, "data", None, "must be a list of rows"),
        ([1, 2], 422, "body", None, "must be a JSON object"),
    ],
)
def test_bad_inputs_get_a_status_and_the_field_at_fault(served, http, body, status, field, row, fragment):
    d = served["iris"]
    r = http.post(f"{d.url}/score", json=body, headers=auth(d))
    assert r.status_code == status, r.text
    if status == 200:
        return
    doc = r.json()
    assert doc["error"] == "InvalidRequest"
    assert fragment in doc["message"]
    assert doc.get("field") == field
    assert doc.get("row") == row


def test_a_missing_value_where_the_signature_has_none_gets_422_naming_column_and_row(served, http):
    # Given iris, registered with a sample that lacks no value (LogisticRegression takes no NaN)
    d = served["iris"]
    # When a request lacks a value, as null in any protocol's body or as an empty CSV cell
    for path, kwargs in [
        ("/score", {"json": {"data": [[1, 2, 3, 4], [1, 2, None, 4]]}}),
        ("/score", {"json": {"data": [{"sepal length (cm)": 1, "sepal width (cm)": 2, "petal length (cm)": None, "petal width (cm)": 4}] * 2}}),
        ("/invocations", {"json": {"dataframe_split": {"columns": list(served["X"].columns), "data": [[1, 2, 3, 4], [1, 2, None, 4]]}}}),
        ("/invocations", {"content": b"sepal length (cm),sepal width (cm),petal length (cm),petal width (cm)\n1,2,3,4\n1,2,,4\n",
                          "headers": {"Content-Type": "text/csv"}}),
    ]:
        headers = {**auth(d), **kwargs.pop("headers", {})}
        r = http.post(f"{d.url}{path}", headers=headers, **kwargs)
        # Then it is refused before the model sees it, naming the column (and the row, when there are two)
        assert r.status_code == 422, (path, r.text)
        doc = r.json()
        assert doc["field"] == "petal length (cm)" and "has no value" in doc["message"], doc
        assert doc["row"] in (0, 1) and "allow_missing" in doc["hint"]
        if path == "/invocations":
            assert doc["error_code"] == "BAD_REQUEST"


def test_allow_missing_lets_a_model_that_takes_nan_have_it(module_home, http):
    # Given a model that handles NaN itself, registered with allow_missing for one column
    import pandas as pd

    class NanCount:
        def predict(self, X):
            return X.isna().sum(axis=1).to_numpy()

    sample = pd.DataFrame({"a": [1.0, 2.0], "b": [3.0, 4.0], "c": [None, 5.0]})
    mv = ml.register_model(NanCount(), "nans", sample_input=sample, allow_missing=["a"])
    # The signature records it: "a" as the user said, "c" as the sample shows, "b" not
    assert {c["name"]: c["missing"] for c in mv.signature["columns"]} == {"a": True, "b": False, "c": True}
    d = ml.deploy("nans:1", name="nans", progress=False)
    try:
        r = http.post(f"{d.url}/score", json={"data": [[None, 1, None], [1, 1, 1]]}, headers=auth(d))
        assert r.status_code == 200 and r.json() == [2, 0]
        r = http.post(f"{d.url}/score", json={"data": [[1, None, 1]]}, headers=auth(d))
        assert r.status_code == 422 and r.json()["field"] == "b"
        # the OpenAPI document says the same
        spec = http.get(f"{d.url}/openapi.json").json()
        props = spec["paths"]["/score"]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]["data"]["oneOf"][1]["items"]["properties"]
        assert props == {"a": {"type": ["number", "boolean", "null"]}, "b": {"type": ["number", "boolean"]},
                         "c": {"type": ["number", "boolean", "null"]}}
    finally:
        d.delete()
    with pytest.raises(ml.InvalidInput, match="allow_missing names 'z', not a column"):
        ml.register_model(NanCount(), "nans", sample_input=sample, allow_missing=["z"])


def test_tensor_shape_and_dtype_errors(served, http):
    d = served["arr"]
    r = http.post(f"{d.url}/score", json={"data": [[0.1] * 19]}, headers=auth(d))
    assert r.status_code == 422 and "expected rows of shape N x 20, got shape 1 x 19" in r.json()["message"]
    r = http.post(f"{d.url}/score", json={"data": [0.1] * 20}, headers=auth(d))
    assert r.status_code == 422 and r.json()["hint"] == "wrap a single row in a list"
    r = http.post(f"{d.url}/score", json={"data": [[0.1] * 19 + ["x"]]}, headers=auth(d))
    doc = r.json()
    assert r.status_code == 422 and doc["row"] == 0 and doc["field"] == "data[0][19]"


def test_malformed_bodies(served, http):
    d = served["iris"]
    r = http.post(f"{d.url}/score", content=b'{"data": [[1,2', headers={**auth(d), "Content-Type": "application/json"})
    assert r.status_code == 400 and r.json()["error"] == "MalformedRequest" and r.json()["field"] == "body"
    r = http.post(f"{d.url}/score", content=b"", headers=auth(d))
    assert r.status_code == 400 and "empty" in r.json()["message"]
    r = http.post(f"{d.url}/invocations", json={"dataframe_records": [], "instances": []}, headers=auth(d))
    assert r.status_code == 422 and "exactly one of" in r.json()["message"]
    r = http.post(f"{d.url}/invocations", content=b"a,b\n1", headers={**auth(d), "Content-Type": "application/xml"})
    assert r.status_code == 422 and r.json()["field"] == "Content-Type"
    assert http.get(f"{d.url}/nowhere").status_code == 404
    assert http.get(f"{d.url}/score").status_code == 405


def test_body_over_the_limit_gets_413(served, http):
    d = served["iris"]  # deployed with body_limit=64 KiB
    rows = [[1.0, 2.0, 3.0, 4.0]] * 5000
    r = http.post(f"{d.url}/score", json={"data": rows}, headers=auth(d))
    assert r.status_code == 413
    assert "over this deployment's limit of 65536" in r.json()["message"]

    def chunks():
        yield b'{"data": ['
        for _ in range(5000):
            yield b"[1.0, 2.0, 3.0, 4.0],"
        yield b"[1, 2, 3, 4]]}"

    r = http.post(f"{d.url}/score", content=chunks(), headers=auth(d))
    assert r.status_code == 413


def test_model_that_raises_gets_500_with_an_error_id_in_the_logs(served, http):
    d = served["flaky"]
    r = http.post(f"{d.url}/score", json={"data": [[-1, 0, 0]]}, headers=auth(d))
    assert r.status_code == 500
    doc = r.json()
    assert doc["error"] == "ModelError" and "negative input" in doc["message"]
    error_id = doc["error_id"]
    assert error_id in d.logs(tail=200)
    # and it keeps serving
    r = http.post(f"{d.url}/score", json={"data": [[2, 0, 0]]}, headers=auth(d))
    assert r.status_code == 200 and r.json() == [4.0]


def test_auth_keys(served, http):
    d = served["arr"]
    url = f"{d.url}/score"
    body = {"data": [[0.5] * 20]}
    r = http.post(url, json=body)
    assert r.status_code == 401 and "Authorization: Bearer" in r.json()["message"]
    assert r.headers["www-authenticate"] == "Bearer"
    assert http.post(url, json=body, headers={"Authorization": "Bearer wrong"}).status_code == 401
    assert http.post(url, json=body, headers={"Authorization": "Basic abc"}).status_code == 401
    assert http.post(url, json=body, headers={"Authorization": f"Bearer {d.keys['secondary']}"}).status_code == 200
    # only hashes are stored: neither key appears in the registry database or the server's files
    from mlops_lab.deployers.keys import read_keys

    reg = d._registry
    db = b"".join(p.read_bytes() for p in reg.home.glob("registry.db*"))
    for key in d.keys.values():
        assert key.encode() not in db
        for f in (reg.home / "deployments").rglob("*"):
            if f.is_file():
                assert key.encode() not in f.read_bytes()
    # regenerate the primary: the old one stops working, the secondary never does
    old = d.keys["primary"]
    new = d.regenerate_key("primary")
    import time

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if http.post(url, json=body, headers={"Authorization": f"Bearer {old}"}).status_code == 401:
            break
        time.sleep(0.1)
    assert http.post(url, json=body, headers={"Authorization": f"Bearer {old}"}).status_code == 401
    assert http.post(url, json=body, headers={"Authorization": f"Bearer {new}"}).status_code == 200
    assert http.post(url, json=body, headers={"Authorization": f"Bearer {d.keys['secondary']}"}).status_code == 200
    assert read_keys(reg.home, "arr")["primary"] == new  # what get_deployment hands out


def test_concurrent_callers_each_get_their_own_rows(served):
    """64 concurrent callers with distinct rows: every answer holds exactly the caller's rows,
    and the server did coalesce them into fewer predict calls than requests."""
    import asyncio

    import httpx

    d = served["echo"]
    headers = auth(d)

    async def one(client, gate, i):
        n = 1 + i % 5
        rows = [[i * 1000 + j, 0, 0, 0] for j in range(n)]
        async with gate:
            r = await client.post(f"{d.url}/score", json={"data": rows}, headers=headers)
        assert r.status_code == 200, r.text
        return i, r.json(), [row[0] for row in rows]

    async def run():
        # 64 callers at a time: httpx's pool slows down quadratically with a long queue of its
        # own (1,500 requests queued took 30-70 s on 2 cores), so the callers wait here instead
        gate = asyncio.Semaphore(64)
        limits = httpx.Limits(max_connections=64)
        async with httpx.AsyncClient(limits=limits, timeout=30) as client:
            return await asyncio.gather(*(one(client, gate, i) for i in range(1500)))

    before = httpx.get(f"{d.url}/metrics", headers=headers).json()["models"]["echo:1"]
    results = asyncio.run(run())
    for _i, got, sent in results:
        assert got == [float(v) for v in sent]
    after = httpx.get(f"{d.url}/metrics", headers=headers).json()["models"]["echo:1"]
    requests = after["requests"] - before["requests"]
    batches = after["batches"] - before["batches"]
    assert requests == 1500
    assert batches < requests  # coalesced


def test_no_auth_deployment(module_home, http):
    import mlops_lab as ml

    ml.register_model(lambda X: [sum(r) for r in X], "summer", sample_input=[[1.0, 2.0]])
    d = ml.deploy("summer", auth=False, progress=False)
    try:
        assert d.keys is None
        r = http.post(f"{d.url}/score", json={"data": [[1, 2], [3, 4.5]]})
        assert r.status_code == 200 and r.json() == [3.0, 7.5]
    finally:
        d.delete()


class Slow:
    """20 ms per call whatever the rows: a model whose calls are worth sharing."""

    def predict(self, X):
        import time as _t

        _t.sleep(0.02)
        return [0.0] * len(X)


def test_slow_model_under_concurrent_load_gets_full_batches(module_home):
    """Given 8 callers in a loop against a 20 ms model, the batcher waits a little for the
    callers it just answered, so calls serve about all 8 at once instead of alternating
    between one caller and the seven that queued meanwhile."""
    import threading

    import httpx

    import mlops_lab as ml

    ml.register_model(Slow(), "slow", sample_input=[[0.0, 0.0]])
    d = ml.deploy("slow", progress=False, collect=False)
    headers = auth(d)
    codes = []
    host, port = d.url.removeprefix("http://").split(":")
    body = b'{"data": [[1.0, 2.0]]}'
    request = (
        f"POST /score HTTP/1.1\r\nHost: {host}\r\nAuthorization: {headers['Authorization']}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body

    def caller():
        # A raw keep-alive client, as quick to send its next request as a load generator:
        # a Python HTTP library would be slower than the wait being tested.
        import socket

        with socket.create_connection((host, int(port))) as sock:
            reader = sock.makefile("rb")
            for _ in range(25):
                sock.sendall(request)
                status = int(reader.readline().split()[1])
                length = 0
                while (line := reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":")[1])
                reader.read(length)
                codes.append(status)

    try:
        threads = [threading.Thread(target=caller) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert codes == [200] * 200
        stats = httpx.get(f"{d.url}/metrics", headers=headers).json()["models"]["slow:1"]
        assert stats["requests"] == 200
        assert stats["requests"] / stats["batches"] >= 5, stats
    finally:
        d.delete()


def test_batches_stay_within_max_batch_rows(module_home):
    """8 concurrent callers of 2-row requests against a 20 ms model: with the default bound
    their requests share calls; with ``max_batch_rows=3`` no call takes two requests."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    import mlops_lab as ml

    ml.register_model(Slow(), "slow2", sample_input=[[0.0, 0.0]])
    body = {"data": [[1.0, 2.0], [3.0, 4.0]]}
    for bound in (None, 3):
        d = ml.deploy("slow2", name=f"slow2-{bound}", progress=False, collect=False,
                      **({"max_batch_rows": bound} if bound else {}))
        try:
            with httpx.Client(timeout=30) as client:
                def call(_, d=d):
                    return client.post(f"{d.url}/score", json=body, headers=auth(d)).status_code

                with ThreadPoolExecutor(8) as pool:
                    assert list(pool.map(call, range(80))) == [200] * 80
                stats = client.get(f"{d.url}/metrics", headers=auth(d)).json()["models"]["slow2:1"]
            assert stats["requests"] == 80 and stats["rows"] == 160
            if bound is None:
                assert stats["batches"] < 60, stats  # shared calls
            else:
                assert stats["batches"] == 80, stats  # 2 + 2 rows would pass the bound of 3
        finally:
            d.delete()


def test_the_adaptive_wait_ends_when_the_callers_of_the_last_batch_are_back():
    """Unit test of ``ServedModel._gather`` (no server: the batcher's wait on its own). The
    wait is stretched to an hour, so the test can only finish if the wait ends early."""
    import asyncio

    from mlops_lab.serving.runtime import ServedModel

    class Model:
        method = "predict"

        def predict(self, X):
            return [0.0] * len(X)

    async def scenario():
        m = ServedModel("slow", 1, Model(), {"signature": None})
        m.can_batch, m.inline, m._last_batch, m._call_s = True, False, 3, 3600.0
        m._wait_s = lambda: 3600.0
        m._busy = True  # as if a drainer were running: it is the one gathering here
        gather = asyncio.ensure_future(m._gather())
        callers = []
        for _ in range(3):  # the three callers of the last batch send their next requests
            await asyncio.sleep(0)
            assert not gather.done()
            callers.append(asyncio.ensure_future(m.predict(object())))
        await asyncio.wait_for(gather, timeout=10)
        assert m._filled is None and len(m._pending) == 3
        for c in callers:
            c.cancel()
        m.close()

    asyncio.run(scenario())


def test_a_lone_caller_is_scored_on_the_event_loop_and_concurrent_callers_in_the_predict_thread():
    """Unit test of where ``ServedModel`` calls a model of a few milliseconds a call (no server).
    Given such a model (threaded unless alone), when its requests come one at a time, then each
    is scored on the event loop's own thread (no hop to the predict thread and back); when
    several are in flight together, then they are gathered and scored in the predict thread,
    the event loop free meanwhile. A model of over 10 ms a call, or one that does not batch,
    always runs in the thread."""
    import asyncio
    import threading
    import time

    from mlops_lab.serving.runtime import ServedModel

    class Model:
        method = "predict"

        def __init__(self, seconds):
            self.seconds, self.calls = seconds, []

        def predict(self, X):
            time.sleep(self.seconds)
            self.calls.append((threading.current_thread().name, len(X)))
            return np.zeros(len(X))

    signature = {"kind": "tensor", "dtype": "float64", "shape": [-1, 2]}

    async def scenario(seconds, signature=signature):
        model = Model(seconds)
        m = ServedModel("m", 1, model, {"signature": signature, "input_example": [[0.0, 0.0]]})
        m.warm_up()
        model.calls.clear()
        loop_thread = threading.current_thread().name
        for _ in range(3):
            assert (await m.predict(m.spec.from_rows([[1.0, 2.0]]))).tolist() == [0.0]
        alone = list(model.calls)
        model.calls.clear()
        outs = await asyncio.gather(*(m.predict(m.spec.from_rows([[1.0, 2.0]])) for _ in range(6)))
        assert [o.tolist() for o in outs] == [[0.0]] * 6
        together = list(model.calls)
        m.close()
        return m.mode, loop_thread, alone, together

    mode, loop_thread, alone, together = asyncio.run(scenario(0.003))
    assert mode == "threaded unless alone"
    assert alone == [(loop_thread, 1)] * 3
    assert together and all(name.startswith("predict-m") for name, _ in together)
    assert sum(n for _, n in together) == 6 and len(together) < 6  # gathered into shared calls
    mode, loop_thread, alone, _ = asyncio.run(scenario(0.012))
    assert mode == "threaded" and all(name.startswith("predict-m") for name, _ in alone)
    # a model that does not batch (no signature) is not called one at a time by the batcher:
    # its lone callers stay in the thread, so no two calls can ever meet
    mode, loop_thread, alone, _ = asyncio.run(scenario(0.003, signature=None))
    assert all(name.startswith("predict-m") for name, _ in alone) and len(alone) == 3


# KServe's sklearn v2 example (its docs' iris-input-v2.json): one FP32 tensor of shape [N, 4]
KSERVE_IRIS_V2 = {"inputs": [{"name": "input-0", "shape": [2, 4], "datatype": "FP32",
                              "data": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]}]}


def test_a_tabular_model_takes_one_n_by_f_tensor_as_kserve_and_mlserver_send_it(served, http):
    d, clf = served["iris"], served["clf"]
    import pandas as pd

    rows = pd.DataFrame(np.array(KSERVE_IRIS_V2["inputs"][0]["data"], dtype=np.float32).astype(np.float64),
                        columns=served["X"].columns)
    # KServe's own payload, nested data
    r = http.post(f"{d.url}/v2/models/iris/infer", json=KSERVE_IRIS_V2, headers=auth(d))
    assert r.status_code == 200, r.text
    assert r.json()["outputs"][0]["data"] == clf.predict(rows).tolist()
    # the same, flat in row-major order and with the version in the path, as MLServer's examples send it
    flat = {"inputs": [{**KSERVE_IRIS_V2["inputs"][0], "data": sum(KSERVE_IRIS_V2["inputs"][0]["data"], [])}]}
    r = http.post(f"{d.url}/v2/models/iris/versions/1/infer", json=flat, headers=auth(d))
    assert r.status_code == 200 and r.json()["outputs"][0]["data"] == clf.predict(rows).tolist()
    # INT64 converts without loss
    ints = {"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "INT64", "data": [5, 3, 1, 0]}]}
    r = http.post(f"{d.url}/v2/models/iris/infer", json=ints, headers=auth(d))
    assert r.status_code == 200
    # a tensor of the wrong width is refused naming it, in the v2 error format
    wide = {"inputs": [{"name": "input-0", "shape": [1, 5], "datatype": "FP32", "data": [1, 2, 3, 4, 5]}]}
    r = http.post(f"{d.url}/v2/models/iris/infer", json=wide, headers=auth(d))
    assert r.status_code == 422 and "expected 4 columns" in r.json()["error"] and r.json()["field"] == "inputs[0]"


def test_tritonclient_sends_an_n_by_f_tensor_to_a_tabular_model(served):
    import tritonclient.http as tc

    d, clf, X = served["iris"], served["clf"], served["X"]
    client = tc.InferenceServerClient(url=d.url.removeprefix("http://"))
    batch = X.iloc[:6].to_numpy(dtype=np.float32)
    for binary in (True, False):
        inp = tc.InferInput("input-0", list(batch.shape), "FP32")
        inp.set_data_from_numpy(batch, binary_data=binary)
        res = client.infer("iris", [inp], headers=dict(auth(d)))
        expected = clf.predict(pd_frame(batch.astype(np.float64), X.columns))
        np.testing.assert_array_equal(res.as_numpy("predict"), expected)


def pd_frame(arr, columns):
    import pandas as pd

    return pd.DataFrame(arr, columns=columns)


V2_ROUTES = [  # every path of open_inference_rest.yaml, and the version-less forms inference_rest.md allows
    ("GET", "/v2/health/live", 200),
    ("GET", "/v2/health/ready", 200),
    ("GET", "/v2/models/iris/versions/1/ready", 200),
    ("GET", "/v2/models/iris/ready", 200),
    ("GET", "/v2/", 200),
    ("GET", "/v2", 200),
    ("GET", "/v2/models/iris/versions/1", 200),
    ("GET", "/v2/models/iris", 200),
    ("POST", "/v2/models/iris/versions/1/infer", 200),
    ("POST", "/v2/models/iris/infer", 200),
]


@pytest.mark.parametrize("method, path, status", V2_ROUTES)
def test_every_route_of_the_v2_specification_answers(served, http, method, path, status):
    d = served["iris"]
    r = http.request(method, f"{d.url}{path}", headers=auth(d), json=KSERVE_IRIS_V2 if method == "POST" else None)
    assert r.status_code == status, r.text
    if path.rstrip("/") == "/v2":
        assert set(r.json()) >= {"name", "version", "extensions"}
    if path.startswith("/v2/models/iris/versions/1") and method == "GET" and not path.endswith("ready"):
        assert r.json()["name"] == "iris" and r.json()["versions"] == ["1"] and r.json()["platform"]
    # an unknown model or version: 404 with the specification's error body
    if "/models/iris" in path:
        for wrong in (path.replace("/iris", "/nope"), path.replace("/versions/1", "/versions/7") if "/versions/1" in path else None):
            if wrong is None:
                continue
            r = http.request(method, f"{d.url}{wrong}", headers=auth(d), json=KSERVE_IRIS_V2 if method == "POST" else None)
            assert r.status_code == 404 and isinstance(r.json()["error"], str), (wrong, r.text)


def test_mlflow_errors_carry_error_code_and_message(served, http):
    d = served["iris"]
    cases = [
        ({"json": {"dataframe_records": [{"sepal length (cm)": 1}]}}, 422, "BAD_REQUEST"),
        ({"content": b"{nope", "headers": {"Content-Type": "application/json"}}, 400, "BAD_REQUEST"),
        ({"json": {"instances": [[1, 2, 3, 4]]}, "auth": False}, 401, "UNAUTHENTICATED"),
    ]
    for kwargs, status, code in cases:
        headers = {**(auth(d) if kwargs.pop("auth", True) else {}), **kwargs.pop("headers", {})}
        r = http.post(f"{d.url}/invocations", headers=headers, **kwargs)
        assert r.status_code == status
        doc = r.json()
        # as MLflow's scoring server answers, which its clients read: error_code and message
        assert doc["error_code"] == code and isinstance(doc["message"], str) and doc["message"]
    r = http.post(f"{d.url}/models/nope/invocations", json={"instances": [[1, 2, 3, 4]]}, headers=auth(d))
    assert r.status_code == 404 and r.json()["error_code"] == "RESOURCE_DOES_NOT_EXIST"
