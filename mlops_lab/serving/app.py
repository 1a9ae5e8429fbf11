"""The scoring server's ASGI app (Starlette, orjson): the protocols' routes over one data plane,
the management routes, and one handler per kind of error.

Routes (``{m}`` is a model's route name; the unprefixed routes go to the first model):

* ``POST /score``: Azure ML's contract (``protocols/azureml.py``).
* ``POST /invocations``: MLflow's scoring protocol (``protocols/mlflow.py``).
* Open Inference Protocol v2: ``GET /v2/health/live``, ``/v2/health/ready``, ``/v2``,
  ``/v2/models/{m}``, ``/v2/models/{m}/ready``, ``POST /v2/models/{m}/infer`` (JSON and the
  binary tensor extension used by ``tritonclient``) (``protocols/v2.py``).
* ``GET /health``, ``GET /metadata``, ``GET /metrics``, ``POST /feedback``, ``GET /openapi.json``,
  ``GET /docs``; ``/models/{m}/score``, ``/models/{m}/invocations``, ``/models/{m}/metadata``.

Scoring and metadata need ``Authorization: Bearer <key>`` when the deployment has keys; health
probes, the OpenAPI document and the docs page do not.
"""

from __future__ import annotations

import logging
import os
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route as StarletteRoute

from ..errors import InvalidRequest, MlopsLabError, NotFound
from .dataplane import (
    DEFAULT_BODY_LIMIT,
    REQUEST_ID,
    DataPlane,
    Protocol,
    protocol_of,
    request_id_of,
)
from .metrics import TEXT_TYPE, wants_text
from .protocols import azureml, mlflow, v2
from .runtime import Route, new_error_id

__all__ = ["DEFAULT_BODY_LIMIT", "PROTOCOLS", "ScoringApp"]

log = logging.getLogger("mlops_lab.serving")

PROTOCOLS: tuple[type[Protocol], ...] = (azureml.Score, mlflow.Invocations, v2.Infer)


class ScoringApp(DataPlane):
    """One server: the data plane, its protocols, and the Starlette app (``.asgi``) serving them."""

    def __init__(self, routes: list[Route], *, protocols: tuple[type[Protocol], ...] = PROTOCOLS, **settings: Any) -> None:
        super().__init__(routes, **settings)
        self.protocols = {p.name: p for p in (cls(self) for cls in protocols)}
        self.asgi = self._build()

    def feedback(self, doc: Any) -> int:
        """Record labels for earlier requests; returns how many."""
        if self.collector is None:
            raise InvalidRequest("this deployment does not collect data, so it takes no feedback", field="path")
        items = doc.get("feedback") if isinstance(doc, dict) and "feedback" in doc else [doc]
        if not isinstance(items, list) or not items:
            raise InvalidRequest("send {\"request_id\": ..., \"label\": ...} or {\"feedback\": [...]}", field="feedback")
        clean = []
        for i, it in enumerate(items):
            if not isinstance(it, dict):
                raise InvalidRequest(f"feedback item {i} must be an object", field="feedback", row=i)
            for key in ("request_id", "label"):
                if key not in it:
                    raise InvalidRequest(f"feedback item {i} has no {key!r}", field=key, row=i)
            row = it.get("row", 0)
            if not isinstance(row, int) or isinstance(row, bool) or row < 0:
                raise InvalidRequest(f"feedback item {i}: 'row' must be a row index", field="row", row=i)
            clean.append({"request_id": str(it["request_id"]), "label": it["label"], "row": row})
        self.collector.add_feedback(clean)
        return len(clean)

    def _build(self) -> Starlette:
        app = self

        async def health(request: Request) -> Response:
            return app.respond(
                {"status": "draining" if app.draining else "ok", "deployment": app.deployment,
                 "revision": app.revision, "models": [m.ref for r in app.routes.values() for m in r.models],
                 "pid": os.getpid()},
                request.headers.get("x-request-id") or "health",
            )

        async def metadata(request: Request) -> Response:
            app.keys.check(request.headers.get("authorization"))
            name = request.path_params.get("model")
            return app.respond(app.metadata(app.route(name) if name else None), request_id_of(request))

        async def metrics(request: Request) -> Response:
            app.keys.check(request.headers.get("authorization"))
            fmt = request.query_params.get("format")
            if fmt is not None and fmt.lower() not in ("prometheus", "text", "json"):
                raise InvalidRequest(f"unknown format {fmt!r}: use prometheus or json", field="format")
            if wants_text(request.headers.get("accept"), fmt):
                return Response(app.prometheus_text(), media_type=TEXT_TYPE, headers={"x-request-id": request_id_of(request)})
            collection = None if app.collector is None else app.collector.stats()
            return app.respond(
                {"pid": os.getpid(), "revision": app.revision,
                 "models": {m.ref: m.stats.as_dict() for r in app.routes.values() for m in r.models},
                 "collection": collection},
                request_id_of(request),
            )

        async def feedback(request: Request) -> Response:
            app.keys.check(request.headers.get("authorization"))
            recorded = app.feedback(app.json(await app.read_body(request)))
            return app.respond({"recorded": recorded}, request_id_of(request))

        async def openapi(request: Request) -> Response:
            return app.respond(app.openapi(), "openapi")

        async def docs(request: Request) -> Response:
            return HTMLResponse(app.docs_html())

        async def domain_error(request: Request, exc: Exception) -> Response:
            assert isinstance(exc, MlopsLabError)
            return app.error(exc, request.scope.get(REQUEST_ID) or request_id_of(request), protocol_of(request))

        async def no_route(request: Request, exc: Exception) -> Response:
            status = getattr(exc, "status_code", 404)
            if status == 404:
                return app.error(NotFound(f"no route {request.method} {request.url.path}", hint="see /docs"), request_id_of(request))
            allow = (getattr(exc, "headers", None) or {}).get("Allow")  # RFC 9110: a 405 says what is
            return app.respond({"error": "MethodNotAllowed", "message": f"{request.method} is not allowed on {request.url.path}"
                                + (f" (allowed: {allow})" if allow else "")}, request_id_of(request), status=status,
                               headers={"allow": allow} if allow else None)

        async def server_error(request: Request, exc: Exception) -> Response:
            error_id = new_error_id()
            log.exception("error %s handling %s %s", error_id, request.method, request.url.path)
            return app.respond({"error": "ServerError", "message": str(exc), "error_id": error_id}, error_id, status=500)

        routes = [
            *(r for p in app.protocols.values() for r in p.routes()),
            StarletteRoute("/health", health, methods=["GET"]),
            StarletteRoute("/metadata", metadata, methods=["GET"]),
            StarletteRoute("/metrics", metrics, methods=["GET"]),
            StarletteRoute("/feedback", feedback, methods=["POST"]),
            StarletteRoute("/models/{model}/metadata", metadata, methods=["GET"]),
            StarletteRoute("/openapi.json", openapi, methods=["GET"]),
            StarletteRoute("/docs", docs, methods=["GET"]),
        ]
        return Starlette(routes=routes, exception_handlers={
            MlopsLabError: domain_error, 404: no_route, 405: no_route, 500: server_error,
        })

    # -- documentation ---------------------------------------------------------------------

    def openapi(self) -> dict[str, Any]:
        from .openapi import build_openapi

        return build_openapi(self)

    def docs_html(self) -> str:
        from .openapi import docs_page

        return docs_page(self)
