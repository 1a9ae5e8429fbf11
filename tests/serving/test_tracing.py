"""Optional OpenTelemetry traces: each request a span, with children for parsing (validation
inside it), predicting and collecting, checked with the SDK's in-memory exporter; nothing is
imported or wrapped when tracing is not configured."""

from __future__ import annotations

import asyncio
import subprocess
import sys

import httpx
import pytest

import mlops_lab as ml
from mlops_lab.serving import tracing
from mlops_lab.serving.server import build_app

sdk = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry.sdk.trace import TracerProvider  # noqa: E402
from opentelemetry.sdk.trace.export import SimpleSpanProcessor  # noqa: E402
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter  # noqa: E402


def test_configuration_follows_the_standard_environment():
    assert not tracing.configured({})
    assert tracing.configured({"OTEL_TRACES_EXPORTER": "console"})
    assert tracing.configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"})
    assert not tracing.configured({"OTEL_TRACES_EXPORTER": "none"})
    assert not tracing.configured({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318", "OTEL_SDK_DISABLED": "true"})


def test_untraced_server_imports_no_opentelemetry():
    code = ("import sys; import mlops_lab.serving.server, mlops_lab.serving.tracing; "
            "print(any(m.startswith('opentelemetry') for m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PATH": ""})
    assert out.stdout.strip() == "False", out.stderr


def test_each_request_is_a_span_with_its_stages_as_children(sqlite_registry, iris, trained, tmp_path):
    X, _ = iris
    ml.register_model(trained, "iris", sample_input=X)
    folder = ml.download_model("iris:1", tmp_path / "iris")
    app = build_app({"deployment": "traced", "models": [{"folder": str(folder)}],
                     "collect": {"enabled": True, "folder": str(tmp_path / "collected"), "stage_budget_mb": 0}})
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracing.install(app, provider.get_tracer("test"))

    async def go():
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app.asgi), base_url="http://t") as c:
            ok = await c.post("/score", json={"data": X.iloc[:2].to_dict("records")},
                              headers={"traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"})
            bad = await c.post("/invocations", json={"instances": [[1, 2]]})
            v2 = await c.post("/v2/models/iris/infer", json={"inputs": [{"name": "input-0", "shape": [1, 4], "datatype": "FP64",
                                                                         "data": [5.0, 3.0, 1.5, 0.2]}]})
            return ok, bad, v2

    ok, bad, v2 = asyncio.run(go())
    app.collector.close()
    assert (ok.status_code, bad.status_code, v2.status_code) == (200, 422, 200)
    spans = exporter.get_finished_spans()
    roots = [s for s in spans if s.name.startswith(("POST ", "GET "))]
    assert [r.name for r in roots] == ["POST /score", "POST /invocations", "POST /v2/models/iris/infer"]
    by_parent: dict = {}
    for s in spans:
        if s.parent is not None:
            by_parent.setdefault(s.parent.span_id, []).append(s)
    for root in (roots[0], roots[2]):
        kids = sorted(s.name for s in by_parent[root.context.span_id])
        assert kids == ["collect", "parse", "predict"], kids
        parse = next(s for s in by_parent[root.context.span_id] if s.name == "parse")
        assert [s.name for s in by_parent[parse.context.span_id]] == ["validate"]  # once, not nested
        assert root.attributes["http.response.status_code"] == 200
    # the caller's trace is continued; a refused request ends at its validation, status kept
    assert format(roots[0].context.trace_id, "032x") == "0af7651916cd43dd8448eb211c80319c"
    assert roots[1].attributes["http.response.status_code"] == 422
    assert "predict" not in [s.name for s in by_parent[roots[1].context.span_id]]


def test_a_deployment_traces_with_the_standard_environment(sqlite_registry, iris, trained, monkeypatch):
    """The SDK's console exporter, chosen by OTEL_TRACES_EXPORTER, writes each request's spans to
    the deployment's log (an OTLP collector is the same code path with another exporter)."""
    from mlops_lab.deployers.base import wait_until

    X, _ = iris
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "console")
    monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "100")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "iris-traced")
    ml.register_model(trained, "iris", sample_input=X)
    d = ml.deploy("iris:1", name="traced", progress=False)
    try:
        assert d.predict(X.iloc[:2]) == trained.predict(X.iloc[:2]).tolist()
        wait_until(lambda: '"name": "POST /score"' in d.logs(tail=400), timeout=20)
        log = d.logs(tail=400)
        assert "tracing requests with OpenTelemetry" in log and '"service.name": "iris-traced"' in log
        assert '"name": "predict"' in log
    finally:
        d.delete()
