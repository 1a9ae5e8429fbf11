"""The protocol-neutral core of a scoring server: one request's path, whatever protocol it came in.

authorise -> pick the model -> read the body -> parse and validate (the protocol) -> predict ->
answer (the protocol) -> count and collect. A protocol module (``protocols/``) only translates its
wire format into a :class:`~mlops_lab.registry.inputs.Chunk` and the prediction back; errors are
raised as :class:`~mlops_lab.errors.MlopsLabError` and turned into a response by one handler,
which asks the protocol how its clients expect an error to look.
"""

from __future__ import annotations

import os
import random
import time
from typing import Any

import numpy as np
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute
from starlette.routing import Route as StarletteRoute

from ..errors import InvalidRequest, MalformedRequest, MlopsLabError, NotFound, PayloadTooLarge
from ..registry.inputs import Chunk, to_jsonable
from .auth import KeyCheck
from .metrics import Counters, Snapshots, aggregate, render
from .runtime import Route, ServedModel, make_record

DEFAULT_BODY_LIMIT = 16 * 1024 * 1024
_JSON = "application/json"
_DUMP_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS
REQUEST_ID = "mlops_lab.request_id"  # the scope key a failed request's id is kept under


def speaks(protocol: Protocol):
    """Mark an endpoint as answering in ``protocol``, so the app's one error handler formats its
    errors as that protocol's clients read them (Starlette puts the endpoint in the scope)."""
    def mark(fn):
        fn.mlops_lab_protocol = protocol
        return fn
    return mark


def request_id_of(request: Request) -> str:
    """The caller's ``X-Request-Id``, or a new one."""
    return request.headers.get("x-request-id") or os.urandom(8).hex()


def protocol_of(request: Request) -> Protocol | None:
    return getattr(request.scope.get("endpoint"), "mlops_lab_protocol", None)


class Protocol:
    """A wire protocol: how its requests become a chunk of rows and its answers and errors look.

    ``name`` labels the request counters. ``parse`` returns the chunk and whatever the answer
    needs of the request (``ctx``). One instance per server (tracing wraps its methods).
    """

    name = ""
    takes_raw = True  # an entry script's run() may answer it

    def __init__(self, plane: DataPlane) -> None:
        self.plane = plane

    def routes(self) -> list[BaseRoute]:
        """The protocol's routes; each scoring endpoint calls :meth:`DataPlane.infer`."""
        raise NotImplementedError

    def endpoint(self):
        """The scoring endpoint of this protocol: the path's ``{model}`` (or the first model)."""
        plane = self.plane

        @speaks(self)
        async def score(request: Request) -> Response:
            return await plane.infer(request, self, request.path_params.get("model"))

        return score

    def scoring_routes(self, name: str) -> list[BaseRoute]:
        """``POST /<name>`` for the first model and ``POST /models/{model}/<name>``."""
        score = self.endpoint()
        return [StarletteRoute(f"/{name}", score, methods=["POST"]),
                StarletteRoute(f"/models/{{model}}/{name}", score, methods=["POST"])]

    def pick(self, route: Route, request: Request) -> ServedModel:
        return route.pick()

    def parse(self, model: ServedModel, body: bytes, request: Request) -> tuple[Chunk, Any]:
        raise NotImplementedError

    def answer(self, plane: DataPlane, route: Route, model: ServedModel, out: Any, ctx: Any, request_id: str) -> Response:
        return plane.respond(to_jsonable(out), request_id, model)

    def error_body(self, exc: MlopsLabError, body: dict[str, Any]) -> dict[str, Any]:
        return body


class DataPlane:
    """State of one server (its routes, keys, limits, counters, collector) and the request path
    every protocol shares."""

    def __init__(
        self,
        routes: list[Route],
        *,
        deployment: str = "",
        revision: int = 0,
        keys_file: str | None = None,
        body_limit: int = DEFAULT_BODY_LIMIT,
        collector: Any = None,
        metrics_dir: str | None = None,
    ) -> None:
        if not routes:
            raise ValueError("a scoring server needs at least one model")
        self.routes = {r.name: r for r in routes}
        self.default = routes[0]
        self.deployment = deployment
        self.revision = revision
        self.keys = KeyCheck(keys_file)
        self.body_limit = body_limit
        self.draining = False
        self.started = time.time()
        self.collector = collector if collector is not None and collector.enabled else None
        self.counters = Counters()
        self.snapshots = Snapshots(metrics_dir)
        for r in routes:
            for m in r.models:
                m.counters = self.counters

    # -- the request path ------------------------------------------------------------------

    async def infer(self, request: Request, protocol: Protocol, route_name: str | None) -> Response:
        """Score one request in ``protocol``; a domain error is counted, collected and raised
        for the app's handler to answer."""
        request_id = request_id_of(request)
        model = route = chunk = None
        t0 = time.perf_counter()
        try:
            self.keys.check(request.headers.get("authorization"))
            route = self.route(route_name)
            model = protocol.pick(route, request)
            if model.raw_body and not protocol.takes_raw:
                raise InvalidRequest("this deployment runs an entry script: use POST /score", field="path")
            body = await self.read_body(request)
            if model.raw_body:
                out = None
                response = self.respond(to_jsonable(await model.raw(body.decode("utf-8", "replace"))), request_id, model)
            else:
                chunk, ctx = protocol.parse(model, body, request)
                model.stats.rows += chunk.n
                out = await model.predict(chunk)
                response = protocol.answer(self, route, model, out, ctx, request_id)
            elapsed = time.perf_counter() - t0
            model.stats.requests += 1
            model.stats.latency_s += elapsed
            self.counters.request(model.ref, protocol.name, 200, elapsed, chunk.n if chunk is not None else 0)
            self.collect(model, request_id, t0, 200, chunk, out)
            if route.shadows and chunk is not None:
                self.mirror(route, chunk, request_id)
            return response
        except MlopsLabError as exc:
            if model is not None:
                model.stats.requests += 1
                model.stats.errors += 1
            self.counters.request(model.ref if model is not None else "", protocol.name, exc.http_status, time.perf_counter() - t0)
            self.collect(model, request_id, t0, exc.http_status, None, None, getattr(exc, "error_id", None))
            if chunk is not None and route is not None and route.shadows:
                self.mirror(route, chunk, request_id)  # the serving model failed on valid rows
            request.scope[REQUEST_ID] = request_id
            raise

    def route(self, name: str | None) -> Route:
        if name is None:
            return self.default
        route = self.routes.get(name)
        if route is None:
            raise NotFound(f"this deployment serves no model named {name!r}", hint="it serves " + ", ".join(self.routes))
        return route

    async def read_body(self, request: Request) -> bytes:
        length = request.headers.get("content-length")
        if length is not None:
            try:
                size = int(length)
            except ValueError:
                raise MalformedRequest("Content-Length is not a number", field="Content-Length") from None
            if size > self.body_limit:
                raise PayloadTooLarge(
                    f"the body is {size} bytes, over this deployment's limit of {self.body_limit}",
                    field="body", hint="send fewer rows per request",
                )
            return await request.body()
        chunks, total = [], 0
        async for chunk in request.stream():
            total += len(chunk)
            if total > self.body_limit:
                raise PayloadTooLarge(f"the body is over this deployment's limit of {self.body_limit} bytes", field="body")
            chunks.append(chunk)
        return b"".join(chunks)

    # -- shadows ---------------------------------------------------------------------------

    def mirror(self, route: Route, chunk: Chunk, request_id: str) -> None:
        """Give each shadow of ``route`` (its share of requests) a copy of a request's rows,
        once the caller has been answered: to its worker process at idle priority
        (:mod:`.shadow`), never scored here."""
        for link in route.shadows:
            if link.shadow >= 1.0 or random.random() < link.shadow:
                link.copy(request_id, chunk)

    def close_shadows(self, timeout: float) -> None:
        """Hand the shadows' workers what is left and wait for them to write out their answers."""
        for route in self.routes.values():
            for link in route.shadows:
                link.close(timeout)

    # -- collection --------------------------------------------------------------------------

    def collect(self, model: ServedModel | None, request_id: str, t0: float, status: int, chunk=None, out=None,
                error_id: str | None = None) -> None:
        """Hand the request's record to the collector (sampled); never blocks."""
        collector = self.collector
        if collector is None or model is None or not collector.sampled():
            return
        collector.add(make_record(model, request_id, time.time(), (time.perf_counter() - t0) * 1000.0, status,
                                  chunk, out, error_id))

    # -- answers ---------------------------------------------------------------------------

    def headers(self, request_id: str, model: ServedModel | None = None) -> dict[str, str]:
        hdrs = {"x-request-id": request_id}
        if model is not None:
            hdrs["x-model-version"] = model.ref
        if self.draining:
            hdrs["connection"] = "close"
        return hdrs

    def respond(self, payload: Any, request_id: str, model: ServedModel | None = None, status: int = 200, headers: dict | None = None) -> Response:
        hdrs = self.headers(request_id, model)
        if headers:
            hdrs.update(headers)
        try:
            content = orjson.dumps(payload, option=_DUMP_OPTS)
        except TypeError:
            content = orjson.dumps(_deep_jsonable(payload), option=_DUMP_OPTS)
        return Response(content, status_code=status, media_type=_JSON, headers=hdrs)

    def error(self, exc: MlopsLabError, request_id: str, protocol: Protocol | None = None) -> Response:
        """The one answer to a domain error: its JSON (field, row, hint), as ``protocol``'s
        clients read it."""
        body = exc.to_dict()
        body["request_id"] = request_id
        if protocol is not None:
            body = protocol.error_body(exc, body)
        headers = {"www-authenticate": "Bearer"} if exc.http_status == 401 else None
        return self.respond(body, request_id, status=exc.http_status, headers=headers)

    # -- state -----------------------------------------------------------------------------

    def json(self, body: bytes) -> Any:
        if not body:
            raise MalformedRequest("the body is empty: send JSON", field="body")
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise MalformedRequest(f"the body is not valid JSON: {exc}", field="body") from None

    def metadata(self, route: Route | None = None) -> dict[str, Any]:
        routes = [route] if route else list(self.routes.values())
        return {
            "deployment": self.deployment,
            "revision": self.revision,
            "models": [
                {
                    "route": r.name,
                    "ref": m.ref,
                    "name": m.name,
                    "version": m.version,
                    "traffic": m.traffic,
                    "flavor": m.meta.get("flavor"),
                    "signature": m.meta.get("signature"),
                    "input_example": m.meta.get("input_example"),
                    "batching": m.can_batch,
                }
                for r in routes
                for m in r.models
            ] + [{"route": r.name, "ref": s.ref, "name": s.ref.rpartition(":")[0],
                  "version": int(s.ref.rpartition(":")[2]), "shadow": s.shadow} for r in routes for s in r.shadows],
        }

    def metrics_snapshot(self) -> dict[str, Any]:
        return self.counters.snapshot(None if self.collector is None else self.collector.stats())

    def write_metrics(self) -> None:
        """This server's counters, for the deployment's other servers to sum (once a second)."""
        self.snapshots.write(self.metrics_snapshot())

    def prometheus_text(self) -> str:
        """The whole deployment's metrics: this server's live counters and the others' last
        snapshots."""
        return render(self.deployment, aggregate([self.metrics_snapshot(), *self.snapshots.others()]))


def _deep_jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_deep_jsonable(v) for v in value]
    value = to_jsonable(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    return str(value)
