"""MLflow's scoring protocol: ``POST /invocations`` with one of ``dataframe_split``,
``dataframe_records``, ``instances``, ``inputs`` (JSON) or a ``text/csv`` body, answered with
``{"predictions": [...]}``; errors carry MLflow's ``error_code``."""

from __future__ import annotations

import io
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route as StarletteRoute

from ...errors import InvalidRequest, MalformedRequest, MlopsLabError
from ...registry.inputs import Chunk, to_jsonable
from ..dataplane import DataPlane, Protocol
from ..runtime import Route, ServedModel

KEYS = ("dataframe_split", "dataframe_records", "instances", "inputs")
_ONE_OF = "dataframe_split, dataframe_records, instances, inputs"

_CODES = {400: "BAD_REQUEST", 401: "UNAUTHENTICATED", 403: "PERMISSION_DENIED",
          404: "RESOURCE_DOES_NOT_EXIST", 409: "RESOURCE_CONFLICT", 413: "BAD_REQUEST",
          422: "BAD_REQUEST", 429: "REQUEST_LIMIT_EXCEEDED"}


def mlflow_error_code(status: int) -> str:
    """The ``error_code`` MLflow's scoring server gives an error of this HTTP status."""
    return _CODES.get(status, "BAD_REQUEST" if 400 <= status < 500 else "INTERNAL_ERROR")


class Invocations(Protocol):
    name = "invocations"

    def parse(self, model: ServedModel, body: bytes, request: Request) -> tuple[Chunk, Any]:
        ctype = request.headers.get("content-type", "").split(";", 1)[0].strip().lower()
        if ctype == "text/csv":
            return _csv(model, body), None
        if ctype not in ("application/json", ""):
            raise InvalidRequest(
                f"unsupported content type {ctype!r}: use application/json or text/csv",
                field="Content-Type",
            )
        chunk = model.spec.from_json(body, KEYS, ("instances", "inputs"), exclusive=True)
        if chunk is not None:
            return chunk, None
        doc = self.plane.json(body)
        if not isinstance(doc, dict):
            raise InvalidRequest(f"the body must be an object with one of {_ONE_OF}", field="body")
        unknown = [k for k in doc if k not in KEYS]
        if unknown:
            raise InvalidRequest(f"unexpected key {unknown[0]!r}: the body takes one of {_ONE_OF}", field=str(unknown[0]))
        keys = [k for k in KEYS if k in doc]
        if len(keys) != 1:
            raise InvalidRequest(
                f"the body must have exactly one of {_ONE_OF}" + (f" (it has {', '.join(keys)})" if keys else ""),
                field="body",
            )
        key = keys[0]
        value = doc[key]
        if key == "dataframe_split":
            return model.spec.from_split(value, key), None
        if isinstance(value, dict):
            return model.spec.from_columns(dict(value), key), None
        return model.spec.from_rows(value, key), None

    def answer(self, plane: DataPlane, route: Route, model: ServedModel, out: Any, ctx: Any, request_id: str) -> Response:
        return plane.respond({"predictions": to_jsonable(out)}, request_id, model)

    def error_body(self, exc: MlopsLabError, body: dict[str, Any]) -> dict[str, Any]:
        # MLflow's scoring server: {"error_code": ..., "message": ...}, read by its clients.
        body["error_code"] = mlflow_error_code(exc.http_status)
        return body

    def routes(self) -> list[StarletteRoute]:
        return self.scoring_routes("invocations")



def _csv(model: ServedModel, body: bytes) -> Chunk:
    import pandas as pd

    try:
        df = pd.read_csv(io.BytesIO(body))
    except Exception as exc:  # noqa: BLE001 - any parse failure is the client's
        raise MalformedRequest(f"the body is not valid CSV: {exc}", field="body") from None
    if model.spec.kind == "columns":
        return model.spec.from_columns({str(c): df[c].tolist() for c in df.columns})
    return model.spec.from_rows(df.to_numpy().tolist())
