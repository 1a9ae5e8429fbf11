"""The scoring server's ASGI app (Starlette, orjson).

Routes (``{m}`` is a model's route name; the unprefixed routes go to the first model):

* ``POST /score``: Azure ML's contract, ``{"data": [[...], ...]}`` or ``{"data": [{...}, ...]}``;
  an entry script's ``run()`` gets the raw body. Answers a JSON list.
* ``POST /invocations``: MLflow's scoring protocol (``dataframe_split``, ``dataframe_records``,
  ``instances``, ``inputs``, ``text/csv``). Answers ``{"predictions": [...]}``.
* Open Inference Protocol v2: ``GET /v2/health/live``, ``/v2/health/ready``, ``/v2``,
  ``/v2/models/{m}``, ``/v2/models/{m}/ready``, ``POST /v2/models/{m}/infer`` (JSON and the
  binary tensor extension used by ``tritonclient``).
* ``GET /health``, ``GET /metadata``, ``GET /metrics``, ``GET /openapi.json``, ``GET /docs``.
* ``/models/{m}/score``, ``/models/{m}/invocations``, ``/models/{m}/metadata``.

Scoring and metadata need ``Authorization: Bearer <key>`` when the deployment has keys; health
probes, the OpenAPI document and the docs page do not.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import orjson
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, Response
from starlette.routing import Route as StarletteRoute

from ..errors import (
    InvalidRequest,
    MalformedRequest,
    MlopsLabError,
    NotFound,
    PayloadTooLarge,
    Unauthorized,
)
from ..monitoring.collector import Record
from .inputs import to_jsonable
from .metrics import TEXT_TYPE, Counters, Snapshots, aggregate, render, wants_text
from .runtime import Route, ServedModel, new_error_id

log = logging.getLogger("mlops_lab.serving")

DEFAULT_BODY_LIMIT = 16 * 1024 * 1024
_JSON = "application/json"
_INVOCATION_KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")  # MLflow's scoring protocol
_DUMP_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS

V2_DTYPES = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64, "BYTES": np.object_,
}
_V2_OF_KIND = {"b": "BOOL", "i": "INT", "u": "UINT", "f": "FP"}


def v2_datatype(arr: np.ndarray) -> str:
    if arr.dtype.kind in "OUS":
        return "BYTES"
    return _V2_OF_KIND[arr.dtype.kind] + ("" if arr.dtype.kind == "b" else str(arr.dtype.itemsize * 8))


class KeyCheck:
    """Bearer keys, checked against the SHA-256 hashes in a file (re-read when it changes, at
    most once a second, so a regenerated key takes effect without a restart)."""

    def __init__(self, path: str | None) -> None:
        self.path = Path(path) if path else None
        self._hashes: list[bytes] = []
        self._mtime = None
        self._checked = 0.0
        self._reload(force=True)

    def _reload(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked < 1.0:
            return
        self._checked = now
        if self.path is None:
            return
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            self._hashes = []
            return
        if mtime != self._mtime:
            data = orjson.loads(self.path.read_bytes())
            self._hashes = [bytes.fromhex(h) for h in data.values() if h]
            self._mtime = mtime

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def check(self, header: str | None) -> None:
        if self.path is None:
            return
        self._reload()
        if not header:
            raise Unauthorized(
                "this deployment needs a key: send 'Authorization: Bearer <key>'",
                hint="Deployment.keys gives the keys",
            )
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key:
            raise Unauthorized("the Authorization header must be 'Bearer <key>'")
        digest = hashlib.sha256(key.strip().encode()).digest()
        if not any(hmac.compare_digest(digest, h) for h in self._hashes):
            raise Unauthorized("the key is not valid for this deployment (it may have been regenerated)")


class ScoringApp:
    """State of one server: its routes (models), keys, limits."""

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
        self.asgi = self._build()

    def metrics_snapshot(self) -> dict[str, Any]:
        return self.counters.snapshot(None if self.collector is None else self.collector.stats())

    def write_metrics(self) -> None:
        """This server's counters, for the deployment's other servers to sum (once a second)."""
        self.snapshots.write(self.metrics_snapshot())

    def prometheus_text(self) -> str:
        """The whole deployment's metrics: this server's live counters and the others' last
        snapshots."""
        return render(self.deployment, aggregate([self.metrics_snapshot(), *self.snapshots.others()]))

    # -- helpers ---------------------------------------------------------------------------

    def _route(self, name: str | None) -> Route:
        if name is None:
            return self.default
        route = self.routes.get(name)
        if route is None:
            raise NotFound(f"this deployment serves no model named {name!r}", hint="it serves " + ", ".join(self.routes))
        return route

    async def _body(self, request: Request) -> bytes:
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

    def _json(self, body: bytes) -> Any:
        if not body:
            raise MalformedRequest("the body is empty: send JSON", field="body")
        try:
            return orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            raise MalformedRequest(f"the body is not valid JSON: {exc}", field="body") from None

    def _respond(self, payload: Any, request_id: str, model: ServedModel | None = None, status: int = 200, headers: dict | None = None) -> Response:
        hdrs = {"x-request-id": request_id}
        if model is not None:
            hdrs["x-model-version"] = model.ref
        if self.draining:
            hdrs["connection"] = "close"
        if headers:
            hdrs.update(headers)
        try:
            content = orjson.dumps(payload, option=_DUMP_OPTS)
        except TypeError:
            content = orjson.dumps(_deep_jsonable(payload), option=_DUMP_OPTS)
        return Response(content, status_code=status, media_type=_JSON, headers=hdrs)

    def _error(self, exc: MlopsLabError, request_id: str, v2: bool = False, mlflow: bool = False) -> Response:
        body = exc.to_dict()
        body["request_id"] = request_id
        if v2:
            # Open Inference Protocol: {"error": message}; the details stay beside it.
            body["type"] = body.pop("error")
            body["error"] = str(exc)
        elif mlflow:
            # MLflow's scoring server: {"error_code": ..., "message": ...}, read by its clients.
            body["error_code"] = mlflow_error_code(exc.http_status)
        headers = {"www-authenticate": "Bearer"} if exc.http_status == 401 else None
        return self._respond(body, request_id, status=exc.http_status, headers=headers)

    def _collect(self, model: ServedModel | None, request_id: str, t0: float, status: int, chunk=None, out=None, error_id: str | None = None) -> None:
        """Hand the request's record to the collector (sampled); never blocks."""
        collector = self.collector
        if collector is None or model is None or not collector.sampled():
            return
        inputs = None
        n = 0
        columns, types = model.collect_columns, model.collect_types
        if chunk is not None:
            n = chunk.n
            if chunk.form in ("array", "rows"):
                inputs = chunk.data
            elif chunk.form == "records" and chunk.data:
                columns, types = list(chunk.data[0]), None
                inputs = [[r.get(c) for c in columns] for r in chunk.data]
            if columns is None and isinstance(inputs, np.ndarray) and inputs.ndim == 2:
                columns = [f"f{i}" for i in range(inputs.shape[1])]
                types = ["float"] * inputs.shape[1]
        if n and out is not None and (not hasattr(out, "__len__") or len(out) != n):
            out = None  # not one result per row: keep the inputs, leave the prediction out
        collector.add(Record(
            time.time(), request_id, model.ref, status, (time.perf_counter() - t0) * 1000.0, error_id,
            inputs, columns, types, out, n,
        ))

    async def _score(self, request: Request, route_name: str | None, protocol: str) -> Response:
        request_id = request.headers.get("x-request-id") or os.urandom(8).hex()
        model = None
        chunk = None
        t0 = time.perf_counter()
        try:
            self.keys.check(request.headers.get("authorization"))
            route = self._route(route_name)
            model = route.pick()
            body = await self._body(request)
            if model.raw_body:
                out = await model.raw(body.decode("utf-8", "replace"))
                payload = to_jsonable(out)
                raw_out = None
            else:
                if protocol == "score":
                    chunk = self._parse_score(model, body)
                else:
                    chunk = self._parse_invocations(model, body, request.headers.get("content-type", ""))
                model.stats.rows += chunk.n
                raw_out = await model.predict(chunk)
                out = to_jsonable(raw_out)
                payload = out if protocol == "score" else {"predictions": out}
            model.stats.requests += 1
            elapsed = time.perf_counter() - t0
            model.stats.latency_s += elapsed
            response = self._respond(payload, request_id, model)
            self.counters.request(model.ref, protocol, 200, elapsed, chunk.n if chunk is not None else 0)
            self._collect(model, request_id, t0, 200, chunk, raw_out)
            return response
        except MlopsLabError as exc:
            if model is not None:
                model.stats.requests += 1
                model.stats.errors += 1
            self.counters.request(model.ref if model is not None else "", protocol, exc.http_status, time.perf_counter() - t0)
            self._collect(model, request_id, t0, exc.http_status, None, None, getattr(exc, "error_id", None))
            return self._error(exc, request_id, mlflow=protocol == "invocations")

    # -- protocols -------------------------------------------------------------------------

    def _parse_score(self, model: ServedModel, body: bytes):
        chunk = model.spec.from_json(body, ("data",), ("data",))
        if chunk is not None:
            return chunk
        doc = self._json(body)
        if not isinstance(doc, dict):
            raise InvalidRequest("the body must be a JSON object with 'data'", field="body")
        if "data" not in doc:
            raise InvalidRequest("the body has no 'data' key: send {\"data\": [[...], ...]}", field="data")
        return model.spec.from_rows(doc["data"], "data")

    def _parse_invocations(self, model: ServedModel, body: bytes, content_type: str):
        ctype = content_type.split(";", 1)[0].strip().lower()
        if ctype == "text/csv":
            import pandas as pd

            try:
                df = pd.read_csv(io.BytesIO(body))
            except Exception as exc:  # noqa: BLE001 - any parse failure is the client's
                raise MalformedRequest(f"the body is not valid CSV: {exc}", field="body") from None
            if model.spec.kind == "columns":
                return model.spec.from_columns({str(c): df[c].tolist() for c in df.columns})
            return model.spec.from_rows(df.to_numpy().tolist())
        if ctype not in ("application/json", ""):
            raise InvalidRequest(
                f"unsupported content type {ctype!r}: use application/json or text/csv",
                field="Content-Type",
            )
        chunk = model.spec.from_json(body, _INVOCATION_KEYS, ("instances", "inputs"), exclusive=True)
        if chunk is not None:
            return chunk
        doc = self._json(body)
        if not isinstance(doc, dict):
            raise InvalidRequest(
                "the body must be an object with one of dataframe_split, dataframe_records, "
                "instances, inputs", field="body",
            )
        unknown = [k for k in doc if k not in _INVOCATION_KEYS]
        if unknown:
            raise InvalidRequest(
                f"unexpected key {unknown[0]!r}: the body takes one of dataframe_split, dataframe_records, "
                "instances, inputs", field=str(unknown[0]),
            )
        keys = [k for k in _INVOCATION_KEYS if k in doc]
        if len(keys) != 1:
            raise InvalidRequest(
                "the body must have exactly one of dataframe_split, dataframe_records, instances, inputs"
                + (f" (it has {', '.join(keys)})" if keys else ""),
                field="body",
            )
        key = keys[0]
        value = doc[key]
        if key == "dataframe_split":
            return model.spec.from_split(value, key)
        if isinstance(value, dict):
            return model.spec.from_columns(dict(value), key)
        return model.spec.from_rows(value, key)

    async def _v2_infer(self, request: Request) -> Response:
        request_id = request.headers.get("x-request-id") or os.urandom(8).hex()
        model = None
        t0 = time.perf_counter()
        try:
            self.keys.check(request.headers.get("authorization"))
            route = self._route(request.path_params["model"])
            model = _v2_version(route, request.path_params.get("version")) or route.pick()
            if model.raw_body:
                raise InvalidRequest("this deployment runs an entry script: use POST /score", field="path")
            body = await self._body(request)
            doc, chunk, want_binary = self._v2_parse(model, body, request.headers.get("inference-header-content-length"))
            model.stats.rows += chunk.n
            out = await model.predict(chunk)
            arr = np.asarray(out.to_numpy() if hasattr(out, "to_numpy") else out)
            model.stats.requests += 1
            self.counters.request(model.ref, "v2_infer", 200, time.perf_counter() - t0, chunk.n)
            self._collect(model, request_id, t0, 200, chunk, out)
            out_desc = {"name": model.output_name, "datatype": v2_datatype(arr), "shape": list(arr.shape)}
            resp = {"model_name": route.name, "model_version": str(model.version), "outputs": [out_desc]}
            if "id" in doc:
                resp["id"] = doc["id"]
            if want_binary and arr.dtype.kind in "biuf":
                raw = np.ascontiguousarray(arr).tobytes()
                out_desc["parameters"] = {"binary_data_size": len(raw)}
                head = orjson.dumps(resp)
                hdrs = {"x-request-id": request_id, "x-model-version": model.ref,
                        "inference-header-content-length": str(len(head))}
                if self.draining:
                    hdrs["connection"] = "close"
                return Response(head + raw, media_type="application/octet-stream", headers=hdrs)
            out_desc["data"] = arr.ravel().tolist() if arr.dtype.kind in "OUS" else np.ascontiguousarray(arr).ravel()
            return self._respond(resp, request_id, model)
        except MlopsLabError as exc:
            if model is not None:
                model.stats.requests += 1
                model.stats.errors += 1
            self.counters.request(model.ref if model is not None else "", "v2_infer", exc.http_status, time.perf_counter() - t0)
            self._collect(model, request_id, t0, exc.http_status, None, None, getattr(exc, "error_id", None))
            return self._error(exc, request_id, v2=True)

    def _v2_parse(self, model: ServedModel, body: bytes, header_len: str | None):
        """An inference request's JSON (and binary tensors after it) -> (document, chunk,
        whether the outputs are wanted as binary), every part checked before the model runs."""
        binary = b""
        if header_len is not None:
            try:
                n = int(header_len)
            except ValueError:
                n = -1
            if not 0 <= n <= len(body):
                raise MalformedRequest("Inference-Header-Content-Length must be the JSON part's size in bytes",
                                       field="Inference-Header-Content-Length")
            body, binary = body[:n], body[n:]
        doc = self._json(body)
        if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list) or not doc["inputs"]:
            raise InvalidRequest("the body needs a non-empty 'inputs' list", field="inputs")
        want_binary = bool(_v2_parameters(doc, "parameters").get("binary_data_output"))
        outputs = doc.get("outputs") or []
        if not isinstance(outputs, list):
            raise InvalidRequest("'outputs' must be a list of objects", field="outputs")
        for i, o in enumerate(outputs):
            if not isinstance(o, dict):
                raise InvalidRequest(f"outputs[{i}] must be an object", field=f"outputs[{i}]")
            if _v2_parameters(o, f"outputs[{i}].parameters").get("binary_data"):
                want_binary = True
        arrays = _v2_inputs(doc["inputs"], binary)
        spec = model.spec
        first_name, first = next(iter(arrays.items()))
        if spec.kind == "columns" and len(arrays) == 1 and first.ndim == 2 and first_name not in spec.index:
            # One [N, F] tensor for a tabular model, as KServe's and MLServer's scikit-learn
            # runtimes take it: its columns in the signature's order.
            return doc, spec.from_array(first, "inputs[0]"), want_binary
        if spec.kind == "columns" or (spec.kind is None and len(arrays) > 1):
            columns = {k: v.reshape(len(v), -1)[:, 0].tolist() if v.ndim > 1 else v.tolist() for k, v in arrays.items()}
            return doc, spec.from_columns(columns, "inputs"), want_binary
        if len(arrays) != 1:
            raise InvalidRequest(f"this model takes one input tensor, got {len(arrays)}", field="inputs")
        return doc, spec.from_array(first, "inputs[0]"), want_binary

    # -- app -------------------------------------------------------------------------------

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
            ],
        }

    def _build(self) -> Starlette:
        app = self

        async def score(request: Request) -> Response:
            return await app._score(request, request.path_params.get("model"), "score")

        async def invocations(request: Request) -> Response:
            return await app._score(request, request.path_params.get("model"), "invocations")

        async def health(request: Request) -> Response:
            return app._respond(
                {"status": "draining" if app.draining else "ok", "deployment": app.deployment,
                 "revision": app.revision, "models": [m.ref for r in app.routes.values() for m in r.models],
                 "pid": os.getpid()},
                request.headers.get("x-request-id") or "health",
            )

        async def metadata(request: Request) -> Response:
            rid = request.headers.get("x-request-id") or os.urandom(8).hex()
            try:
                app.keys.check(request.headers.get("authorization"))
                name = request.path_params.get("model")
                return app._respond(app.metadata(app._route(name) if name else None), rid)
            except MlopsLabError as exc:
                return app._error(exc, rid)

        async def metrics(request: Request) -> Response:
            rid = os.urandom(8).hex()
            try:
                app.keys.check(request.headers.get("authorization"))
                fmt = request.query_params.get("format")
                if fmt is not None and fmt.lower() not in ("prometheus", "text", "json"):
                    raise InvalidRequest(f"unknown format {fmt!r}: use prometheus or json", field="format")
            except MlopsLabError as exc:
                return app._error(exc, rid)
            if wants_text(request.headers.get("accept"), fmt):
                return Response(app.prometheus_text(), media_type=TEXT_TYPE, headers={"x-request-id": rid})
            collection = None if app.collector is None else app.collector.stats()
            return app._respond(
                {"pid": os.getpid(), "revision": app.revision,
                 "models": {m.ref: m.stats.as_dict() for r in app.routes.values() for m in r.models},
                 "collection": collection},
                rid,
            )

        async def feedback(request: Request) -> Response:
            rid = request.headers.get("x-request-id") or os.urandom(8).hex()
            try:
                app.keys.check(request.headers.get("authorization"))
                if app.collector is None:
                    raise InvalidRequest("this deployment does not collect data, so it takes no feedback", field="path")
                doc = app._json(await app._body(request))
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
                app.collector.add_feedback(clean)
                return app._respond({"recorded": len(clean)}, rid)
            except MlopsLabError as exc:
                return app._error(exc, rid)

        async def v2_live(request: Request) -> Response:
            return Response(status_code=200)

        async def v2_ready(request: Request) -> Response:
            return Response(status_code=503 if app.draining else 200)

        async def v2_server(request: Request) -> Response:
            from .. import __version__

            return app._respond({"name": "mlops_lab", "version": __version__, "extensions": ["binary_tensor_data"]}, "v2")

        async def v2_model(request: Request) -> Response:
            rid = os.urandom(8).hex()
            try:
                route = app._route(request.path_params["model"])
                m = _v2_version(route, request.path_params.get("version")) or route.models[0]
            except MlopsLabError as exc:
                return app._error(exc, rid, v2=True)
            return app._respond(_v2_model_metadata(route, m), rid)

        async def v2_model_ready(request: Request) -> Response:
            rid = os.urandom(8).hex()
            try:
                route = app._route(request.path_params["model"])
                _v2_version(route, request.path_params.get("version"))
            except MlopsLabError as exc:
                return app._error(exc, rid, v2=True)
            return Response(status_code=503 if app.draining else 200)

        async def v2_infer(request: Request) -> Response:
            return await app._v2_infer(request)

        async def openapi(request: Request) -> Response:
            return app._respond(app.openapi(), "openapi")

        async def docs(request: Request) -> Response:
            return HTMLResponse(app.docs_html())

        async def not_found(request: Request, exc: Exception) -> Response:
            status = getattr(exc, "status_code", 404)
            err = NotFound(f"no route {request.method} {request.url.path}", hint="see /docs") if status == 404 else None
            rid = os.urandom(8).hex()
            if err is None:
                allow = (getattr(exc, "headers", None) or {}).get("Allow")  # RFC 9110: a 405 says what is
                return app._respond({"error": "MethodNotAllowed", "message": f"{request.method} is not allowed on {request.url.path}"
                                     + (f" (allowed: {allow})" if allow else "")}, rid, status=status,
                                    headers={"allow": allow} if allow else None)
            return app._error(err, rid)

        async def server_error(request: Request, exc: Exception) -> Response:
            error_id = new_error_id()
            log.exception("error %s handling %s %s", error_id, request.method, request.url.path)
            return app._respond({"error": "ServerError", "message": str(exc), "error_id": error_id}, error_id, status=500)

        routes = [
            StarletteRoute("/score", score, methods=["POST"]),
            StarletteRoute("/invocations", invocations, methods=["POST"]),
            StarletteRoute("/v2/models/{model}/infer", v2_infer, methods=["POST"]),
            StarletteRoute("/v2/models/{model}/versions/{version}/infer", v2_infer, methods=["POST"]),
            StarletteRoute("/health", health, methods=["GET"]),
            StarletteRoute("/metadata", metadata, methods=["GET"]),
            StarletteRoute("/metrics", metrics, methods=["GET"]),
            StarletteRoute("/feedback", feedback, methods=["POST"]),
            StarletteRoute("/models/{model}/score", score, methods=["POST"]),
            StarletteRoute("/models/{model}/invocations", invocations, methods=["POST"]),
            StarletteRoute("/models/{model}/metadata", metadata, methods=["GET"]),
            StarletteRoute("/v2/health/live", v2_live, methods=["GET"]),
            StarletteRoute("/v2/health/ready", v2_ready, methods=["GET"]),
            StarletteRoute("/v2", v2_server, methods=["GET"]),
            StarletteRoute("/v2/", v2_server, methods=["GET"]),
            StarletteRoute("/v2/models/{model}", v2_model, methods=["GET"]),
            StarletteRoute("/v2/models/{model}/versions/{version}", v2_model, methods=["GET"]),
            StarletteRoute("/v2/models/{model}/ready", v2_model_ready, methods=["GET"]),
            StarletteRoute("/v2/models/{model}/versions/{version}/ready", v2_model_ready, methods=["GET"]),
            StarletteRoute("/openapi.json", openapi, methods=["GET"]),
            StarletteRoute("/docs", docs, methods=["GET"]),
        ]
        return Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found, 500: server_error})

    # -- documentation ---------------------------------------------------------------------

    def openapi(self) -> dict[str, Any]:
        from .openapi import build_openapi

        return build_openapi(self)

    def docs_html(self) -> str:
        from .openapi import docs_page

        return docs_page(self)


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


_MLFLOW_CODES = {400: "BAD_REQUEST", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
                 404: "RESOURCE_DOES_NOT_EXIST", 409: "RESOURCE_CONFLICT", 413: "BAD_REQUEST",
                 422: "BAD_REQUEST", 429: "REQUEST_LIMIT_EXCEEDED"}


def mlflow_error_code(status: int) -> str:
    """The ``error_code`` MLflow's scoring server gives an error of this HTTP status."""
    return _MLFLOW_CODES.get(status, "BAD_REQUEST" if 400 <= status < 500 else "INTERNAL_ERROR")


def _v2_parameters(obj: dict[str, Any], field: str) -> dict[str, Any]:
    """An object's ``parameters`` (the protocol's free-form settings): an object, or none."""
    params = obj.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise InvalidRequest(f"'{field}' must be an object", field=field)
    return params


def _v2_version(route: Route, version: str | None) -> ServedModel | None:
    """The model a v2 path's ``/versions/{v}`` names (None when the path names no version)."""
    if version is None:
        return None
    for m in route.models:
        if str(m.version) == version:
            return m
    raise NotFound(f"{route.name} has no version {version} here",
                   hint="versions: " + ", ".join(str(m.version) for m in route.models))


def _v2_model_metadata(route: Route, m: ServedModel) -> dict[str, Any]:
    sig = m.meta.get("signature") or {}
    if sig.get("kind") == "tensor":
        inputs = [{"name": "input-0", "datatype": v2_datatype(np.empty(0, dtype=sig["dtype"])), "shape": sig["shape"]}]
    elif sig.get("kind") == "columns":
        inputs = [
            {"name": c["name"], "datatype": {"integer": "INT64", "float": "FP64", "boolean": "BOOL"}.get(c["type"], "BYTES"), "shape": [-1]}
            for c in sig["columns"]
        ]
    else:
        inputs = []
    return {
        "name": route.name,
        "versions": [str(x.version) for x in route.models],
        "platform": "mlops_lab",
        "inputs": inputs,
        "outputs": [{"name": m.output_name, "datatype": "FP64", "shape": [-1]}],
    }


def _v2_inputs(inputs: list[Any], binary: bytes) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    offset = 0
    for i, spec in enumerate(inputs):
        field = f"inputs[{i}]"
        if not isinstance(spec, dict):
            raise InvalidRequest(f"{field} must be an object", field=field)
        name = spec.get("name") or f"input-{i}"
        if not isinstance(name, str):
            raise InvalidRequest(f"{field}: 'name' must be a string", field=f"{field}.name")
        dtype_name = spec.get("datatype")
        shape = spec.get("shape")
        if not isinstance(dtype_name, str) or dtype_name not in V2_DTYPES:
            raise InvalidRequest(f"{field}: unknown datatype {dtype_name!r}", field=f"{field}.datatype")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise InvalidRequest(f"{field}: 'shape' must be a list of sizes", field=f"{field}.shape")
        size = _v2_parameters(spec, f"{field}.parameters").get("binary_data_size")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 0):
            raise InvalidRequest(f"{field}: binary_data_size must be a size in bytes", field=f"{field}.parameters")
        count = int(np.prod(shape)) if shape else 1
        if size is not None:
            chunk = binary[offset : offset + size]
            offset += size
            if len(chunk) != size:
                raise InvalidRequest(f"{field}: binary data is shorter than binary_data_size", field=field)
            if dtype_name == "BYTES":
                arr = np.array(_unpack_bytes(chunk), dtype=object)
            else:
                arr = np.frombuffer(chunk, dtype=V2_DTYPES[dtype_name])
        else:
            if "data" not in spec:
                raise InvalidRequest(f"{field} has no 'data'", field=f"{field}.data")
            data = spec["data"]
            try:
                arr = np.asarray(data, dtype=V2_DTYPES[dtype_name] if dtype_name != "BYTES" else object)
            except (ValueError, TypeError, OverflowError) as exc:
                raise InvalidRequest(f"{field}: data does not match datatype {dtype_name}: {exc}", field=f"{field}.data") from None
        if arr.size != count:
            raise InvalidRequest(f"{field}: {arr.size} values do not fill shape {shape}", field=f"{field}.shape")
        out[name] = arr.reshape(shape)
    return out


def _unpack_bytes(buf: bytes) -> list[str]:
    import struct

    items, i = [], 0
    while i < len(buf):
        (n,) = struct.unpack_from("<I", buf, i)
        i += 4
        items.append(buf[i : i + n].decode("utf-8", "replace"))
        i += n
    return items

