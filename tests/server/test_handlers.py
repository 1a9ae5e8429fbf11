"""The server extension in a real Jupyter server (pytest-jupyter's ``jp_fetch``, base URL ``/a%40b/``),
over a real registry and real local deployments."""

from __future__ import annotations

import asyncio
import json
import time

import pytest
from tornado.httpclient import HTTPClientError

import mlops_lab as ml


@pytest.fixture
def jp_server_config():
    return {"ServerApp": {"jpserver_extensions": {"mlops_lab.server": True}}, "MlopsLabApp": {"probe_timeout": 1.0}}


@pytest.fixture
def registered(sqlite_registry, iris, trained):
    X, _ = iris
    ml.register_model(trained, "iris", tags={"team": "growth"}, sample_input=X.iloc[:3])
    ml.register_model(trained, "iris", sample_input=X.iloc[:3])
    ml.set_alias("iris", "production", 1)
    yield X
    for d in ml.list_deployments():
        d.delete()


async def get_json(jp_fetch, *parts, **kw):
    r = await jp_fetch(*parts, **kw)
    return r.code, json.loads(r.body)


async def error_of(jp_fetch, *parts, **kw):
    with pytest.raises(HTTPClientError) as info:
        await jp_fetch(*parts, **kw)
    return info.value.code, json.loads(info.value.response.body)


async def test_the_extension_is_loaded_with_its_traitlets(jp_serverapp):
    app = jp_serverapp.web_app.settings["mlops_lab"]
    assert app.probe_timeout == 1.0 and app.proxy_timeout == 60.0


async def test_models_list_one_model_and_errors(jp_fetch, registered):
    code, body = await get_json(jp_fetch, "mlops-lab", "api", "models")
    assert code == 200 and [m["name"] for m in body["models"]] == ["iris"]
    assert body["models"][0]["versions"] == 2 and body["models"][0]["aliases"] == {"production": 1}
    code, model = await get_json(jp_fetch, "mlops-lab", "api", "models", "iris")
    assert [v["ref"] for v in model["model_versions"]] == ["iris:2", "iris:1"]
    assert model["model_versions"][1]["tags"] == {"team": "growth"}
    assert model["model_versions"][1]["aliases"] == ["production"]
    assert model["model_versions"][0]["signature"]["kind"] == "columns"
    # A wrong name is a JSON 404 with the closest names; an invalid one a 400 naming the rule
    code, err = await error_of(jp_fetch, "mlops-lab", "api", "models", "irs")
    assert code == 404 and err["error"] == "ModelNotFound" and err["suggestions"] == ["iris"]
    code, err = await error_of(jp_fetch, "mlops-lab", "api", "models", "-bad")
    assert code == 422 and err["error"] == "InvalidReference" and "-bad" in err["message"]


async def test_deployments_carry_probed_status_revisions_and_traffic(jp_fetch, registered):
    X = registered
    d = ml.deploy("iris:1", name="svc", collect={"flush_seconds": 0.2})
    for i in range(6):
        d.predict(X.iloc[i : i + 1])
    for _ in range(150):  # flushed every 0.2 s: wait for all six (a busy machine takes longer)
        if len(await asyncio.to_thread(ml.collected_data, "svc")) == 6:
            break
        await asyncio.sleep(0.2)
    code, body = await get_json(jp_fetch, "mlops-lab", "api", "deployments")
    (dep,) = body["deployments"]
    assert dep["name"] == "svc" and dep["status"] == "healthy" and dep["models"][0]["version"] == 1
    assert dep["proxy_url"] == "/a%40b/mlops-lab/proxy/svc/"
    assert dep["summary"]["requests"] == 6 and dep["summary"]["errors"] == 0
    assert "keys" not in json.dumps(dep)  # never a key in the API
    assert d.keys["primary"] not in json.dumps(body)
    code, one = await get_json(jp_fetch, "mlops-lab", "api", "deployments", "svc")
    assert one["status"] == "healthy" and [r["revision"] for r in one["revisions"]] == [1]
    assert one["summary"]["window"] == "15min"
    code, err = await error_of(jp_fetch, "mlops-lab", "api", "deployments", "nope")
    assert code == 404 and err["error"] == "DeploymentNotFound"


async def test_rollback_promote_and_delete(jp_fetch, registered):
    ml.deploy("iris:1", name="svc")
    ml.update("svc", "iris:2", traffic=10)
    code, d = await get_json(jp_fetch, "mlops-lab", "api", "deployments", "svc", "promote", method="POST", body=b"")
    assert [m["version"] for m in d["models"]] == [2] and d["revision"] == 3
    code, d = await get_json(jp_fetch, "mlops-lab", "api", "deployments", "svc", "rollback", method="POST", body=b"")
    assert [m["version"] for m in d["models"]] == [1, 2] and d["revision"] == 4
    url = d["url"]
    code, d = await get_json(jp_fetch, "mlops-lab", "api", "deployments", "svc", "restart", method="POST", body=b"")
    assert code == 200 and d["revision"] == 4 and d["url"] == url
    assert ml.get_deployment("svc").status().healthy
    code, d = await get_json(jp_fetch, "mlops-lab", "api", "deployments", "svc", method="DELETE")
    assert d == {"deleted": True} and ml.list_deployments() == []
    code, err = await error_of(jp_fetch, "mlops-lab", "api", "deployments", "svc", "rollback", method="POST", body=b"")
    assert code == 404


async def test_every_route_refuses_requests_without_jupyter_auth(jp_fetch, registered):
    ml.deploy("iris:1", name="svc")
    for parts, method in [
        (("mlops-lab", "api", "models"), "GET"),
        (("mlops-lab", "api", "models", "iris"), "GET"),
        (("mlops-lab", "api", "deployments"), "GET"),
        (("mlops-lab", "api", "deployments", "svc"), "GET"),
        (("mlops-lab", "api", "deployments", "svc"), "DELETE"),
        (("mlops-lab", "api", "deployments", "svc", "rollback"), "POST"),
        (("mlops-lab", "api", "deployments", "svc", "restart"), "POST"),
        (("mlops-lab", "proxy", "svc", "health"), "GET"),
        (("mlops-lab", "proxy", "svc", "score"), "POST"),
    ]:
        kw = {"body": b"{}"} if method == "POST" else {}
        with pytest.raises(HTTPClientError) as info:
            await jp_fetch(*parts, method=method, headers={"Authorization": "token wrong"}, **kw)
        assert info.value.code == 403, (parts, method)
    assert ml.get_deployment("svc").status().healthy  # nothing was done


async def test_proxy_forwards_to_the_recorded_deployment_with_its_key(jp_fetch, registered):
    X = registered
    d = ml.deploy("iris:1", name="svc")
    body = json.dumps({"data": X.iloc[:3].to_dict(orient="records")}).encode()
    # The browser's Jupyter token is not forwarded; the proxy adds the deployment's key.
    r = await jp_fetch("mlops-lab", "proxy", "svc", "score", method="POST", body=body, headers={"Content-Type": "application/json"})
    assert r.code == 200 and json.loads(r.body) == [0, 0, 0]
    r = await jp_fetch("mlops-lab", "proxy", "svc", "docs")
    assert r.code == 200 and b"openapi.json" in r.body and r.headers["Content-Type"].startswith("text/html")
    r = await jp_fetch("mlops-lab", "proxy", "svc", "openapi.json")
    assert "sepal length (cm)" in r.body.decode()
    # The deployment's own errors come back as they are (422 naming the field)
    code, err = await error_of(jp_fetch, "mlops-lab", "proxy", "svc", "score", method="POST", body=b'{"data": [{"x": 1}]}')
    assert code == 422 and err["field"] in X.columns
    # Not a recorded deployment: 404, nothing forwarded
    code, err = await error_of(jp_fetch, "mlops-lab", "proxy", "elsewhere", "score", method="POST", body=body)
    assert code == 404 and err["error"] == "DeploymentNotFound"
    assert d.status().healthy


def test_proxy_targets_only_the_recorded_address():
    from mlops_lab.errors import DeploymentFailed
    from mlops_lab.server.handlers import _target

    base = "http://127.0.0.1:8123"
    assert _target(base, "score", "") == "http://127.0.0.1:8123/score"
    assert _target(base, "v2/models/iris", "a=1") == "http://127.0.0.1:8123/v2/models/iris?a=1"
    from urllib.parse import urlsplit

    for smuggled in ("@evil.example/x", "/@evil.example", "//evil.example/x", "..%2F..%2Fx"):
        assert urlsplit(_target(base, smuggled, "")).netloc == "127.0.0.1:8123"
    with pytest.raises(DeploymentFailed, match="not an http"):
        _target("file:///etc/passwd", "x", "")


async def test_a_hung_probe_is_bounded_and_does_not_block_the_server(jp_fetch, registered, monkeypatch):
    """A deployment whose status probe hangs: `Deployment.status` is replaced by a 5 s sleep (a
    mock of a server that accepts and never answers), to show the handler bounds the probe by
    ``probe_timeout`` and the event loop keeps serving other requests meanwhile."""
    from mlops_lab.deployers.base import Deployment

    ml.deploy("iris:1", name="svc")
    monkeypatch.setattr(Deployment, "status", lambda self: time.sleep(5))
    t0 = time.perf_counter()
    listing = asyncio.ensure_future(get_json(jp_fetch, "mlops-lab", "api", "deployments"))
    await asyncio.sleep(0.1)
    code, models = await get_json(jp_fetch, "mlops-lab", "api", "models")  # served while the probe hangs
    t_models = time.perf_counter() - t0
    code, body = await listing
    elapsed = time.perf_counter() - t0
    assert models["models"][0]["name"] == "iris" and t_models < 0.9
    assert body["deployments"][0]["status"] == "unhealthy"
    assert body["deployments"][0]["status_reason"] == "no answer within 1 s"
    assert elapsed < 3.0


async def test_monitor_view_gives_the_chart_spec_and_the_drift_table(jp_fetch, registered):
    import asyncio

    X = registered
    d = await asyncio.to_thread(ml.deploy, "iris:1", name="svc", collect={"flush_seconds": 0.2}, progress=False)
    for i in range(5):
        await asyncio.to_thread(d.predict, X.iloc[i * 2 : i * 2 + 2])
    for _ in range(150):  # flushed every 0.2 s: wait for all ten rows (a busy machine takes longer)
        if len(await asyncio.to_thread(ml.collected_data, "svc")) == 10:
            break
        await asyncio.sleep(0.2)
    code, view = await get_json(jp_fetch, "mlops-lab", "api", "deployments", "svc", "monitor", params={"since": "15min"})
    assert code == 200 and view["deployment"] == "svc" and view["since"] == "15min"
    # the Vega-Lite v5 spec JupyterLab's renderer draws, with this deployment's data in it
    assert view["spec"]["$schema"].endswith("/vega-lite/v5.json") and view["spec"]["title"]["text"] == "Deployment svc"
    assert {r["feature"] for r in view["drift"]} >= set(X.columns) and all("drifted" in r for r in view["drift"])
    # an unknown deployment and an unknown window get their 4xx, naming them
    code, err = await error_of(jp_fetch, "mlops-lab", "api", "deployments", "nope", "monitor")
    assert code == 404 and "nope" in err["message"]
    code, err = await error_of(jp_fetch, "mlops-lab", "api", "deployments", "svc", "monitor", params={"since": "2y"})
    assert code == 422 and "unknown window '2y'" in err["message"]
