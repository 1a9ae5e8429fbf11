"""Optional OpenTelemetry traces of a scoring server: each request is a span, with children for
parsing the body (and, inside it, validating it against the signature; a numeric body over
1 KiB read straight into an array is checked while it is parsed), predicting and handing the
record to the collector.

Nothing of it is imported or run unless tracing is configured the standard way: the SDK
installed (``pip install mlops-lab[tracing]``) and ``OTEL_TRACES_EXPORTER`` (``otlp``,
``console``) or ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` set
(``OTEL_SDK_DISABLED=true`` turns it off). Then :func:`install` wraps the app's stages in spans
once, at start-up, so the request path of an untraced server is exactly the plain one. The
service is named by ``OTEL_SERVICE_NAME``, else ``mlops_lab/<deployment>``; an incoming W3C
``traceparent`` header makes the request a child of the caller's trace.
"""

from __future__ import annotations

import functools
import os
from typing import Any


def configured(env: dict[str, str] | None = None) -> bool:
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").lower() == "true":
        return False
    exporter = env.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if exporter == "none":
        return False
    return bool(exporter or env.get("OTEL_EXPORTER_OTLP_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))


def tracer_from_env(deployment: str):
    """A tracer whose spans go to the exporters the environment names, or None (not configured,
    or the SDK not installed: the server then says so in its log and serves untraced)."""
    if not configured():
        return None
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, ConsoleSpanExporter
    except ImportError:
        import logging

        logging.getLogger("mlops_lab.serving").warning(
            "OTEL_* is set but the OpenTelemetry SDK is not installed (pip install mlops-lab[tracing]): no traces")
        return None
    import sys

    name = os.environ.get("OTEL_SERVICE_NAME") or f"mlops_lab/{deployment or 'server'}"
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    for exporter in (os.environ.get("OTEL_TRACES_EXPORTER") or "otlp").split(","):
        exporter = exporter.strip().lower()
        if exporter == "console":  # stderr: a server's stdout is its supervisor's READY pipe
            provider.add_span_processor(BatchSpanProcessor(ConsoleSpanExporter(out=sys.stderr)))
        elif exporter == "otlp":
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider.get_tracer("mlops_lab.serving")


def install(app: Any, tracer: Any) -> None:
    """Wrap ``app`` (a :class:`~mlops_lab.serving.app.ScoringApp`) in spans: a root span per
    request (an ASGI wrapper), and children around its stages."""
    from opentelemetry import context, propagate, trace

    def child(name: str, fn, attrs=None):
        if name == "validate":  # InputSpec's entry points call one another: one span, the outer
            @functools.wraps(fn)
            def once(*args, **kwargs):
                if getattr(trace.get_current_span(), "name", None) == "validate":
                    return fn(*args, **kwargs)
                with tracer.start_as_current_span(name, attributes=attrs):
                    return fn(*args, **kwargs)
            return once
        if _is_coroutine(fn):
            @functools.wraps(fn)
            async def traced(*args, **kwargs):
                with tracer.start_as_current_span(name, attributes=attrs):
                    return await fn(*args, **kwargs)
        else:
            @functools.wraps(fn)
            def traced(*args, **kwargs):
                with tracer.start_as_current_span(name, attributes=attrs):
                    return fn(*args, **kwargs)
        return traced

    for protocol in app.protocols.values():
        protocol.parse = child("parse", protocol.parse)
    app.collect = child("collect", app.collect)
    for route in app.routes.values():
        for m in route.models:
            m.predict = child("predict", m.predict, {"mlops_lab.model": m.ref})
            spec = m.spec
            # (numeric bodies over 1 KiB read straight into an array are checked while parsed:
            # their parse span has no validate child)
            for method in ("from_rows", "from_columns", "from_split", "from_array"):
                setattr(spec, method, child("validate", getattr(spec, method)))

    inner = app.asgi

    async def asgi(scope, receive, send):
        if scope["type"] != "http":
            return await inner(scope, receive, send)
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope.get("headers", [])}
        parent = propagate.extract(headers)
        name = f"{scope['method']} {scope['path']}"
        token = context.attach(parent)
        try:
            with tracer.start_as_current_span(name, kind=trace.SpanKind.SERVER, attributes={
                "http.request.method": scope["method"], "url.path": scope["path"],
                "mlops_lab.deployment": app.deployment,
            }) as span:
                async def send_status(message):
                    if message["type"] == "http.response.start":
                        span.set_attribute("http.response.status_code", message["status"])
                        if message["status"] >= 500:
                            span.set_status(trace.Status(trace.StatusCode.ERROR))
                    await send(message)

                await inner(scope, receive, send_status)
        finally:
            context.detach(token)

    app.asgi = asgi


def _is_coroutine(fn) -> bool:
    import inspect

    return inspect.iscoroutinefunction(fn)
