"""The Open Inference Protocol (KServe v2, Triton, MLServer): health, server and model metadata,
and ``POST /v2/models/{m}[/versions/{v}]/infer`` in JSON or with the binary tensor extension
that ``tritonclient`` sends. Errors are ``{"error": message}``, the details beside it."""

from __future__ import annotations

import struct
from typing import Any

import numpy as np
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route as StarletteRoute

from ...errors import InvalidRequest, MalformedRequest, MlopsLabError, NotFound
from ...registry.inputs import Chunk
from ..dataplane import DataPlane, Protocol, speaks
from ..runtime import Route, ServedModel

DTYPES = {
    "BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
    "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64,
    "FP16": np.float16, "FP32": np.float32, "FP64": np.float64, "BYTES": np.object_,
}
_OF_KIND = {"b": "BOOL", "i": "INT", "u": "UINT", "f": "FP"}
HEADER_LENGTH = "inference-header-content-length"


def v2_datatype(arr: np.ndarray) -> str:
    if arr.dtype.kind in "OUS":
        return "BYTES"
    return _OF_KIND[arr.dtype.kind] + ("" if arr.dtype.kind == "b" else str(arr.dtype.itemsize * 8))


class Infer(Protocol):
    name = "v2_infer"
    takes_raw = False

    def pick(self, route: Route, request: Request) -> ServedModel:
        return version_of(route, request.path_params.get("version")) or route.pick()

    def parse(self, model: ServedModel, body: bytes, request: Request) -> tuple[Chunk, Any]:
        """An inference request's JSON (and binary tensors after it) -> the chunk, and (the
        document, whether the outputs are wanted as binary); every part checked before the
        model runs."""
        binary = b""
        header_len = request.headers.get(HEADER_LENGTH)
        if header_len is not None:
            try:
                n = int(header_len)
            except ValueError:
                n = -1
            if not 0 <= n <= len(body):
                raise MalformedRequest("Inference-Header-Content-Length must be the JSON part's size in bytes",
                                       field="Inference-Header-Content-Length")
            body, binary = body[:n], body[n:]
        doc = self.plane.json(body)
        if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list) or not doc["inputs"]:
            raise InvalidRequest("the body needs a non-empty 'inputs' list", field="inputs")
        want_binary = bool(parameters(doc, "parameters").get("binary_data_output"))
        outputs = doc.get("outputs") or []
        if not isinstance(outputs, list):
            raise InvalidRequest("'outputs' must be a list of objects", field="outputs")
        for i, o in enumerate(outputs):
            if not isinstance(o, dict):
                raise InvalidRequest(f"outputs[{i}] must be an object", field=f"outputs[{i}]")
            if parameters(o, f"outputs[{i}].parameters").get("binary_data"):
                want_binary = True
        arrays = tensors(doc["inputs"], binary)
        ctx = (doc, want_binary)
        spec = model.spec
        first_name, first = next(iter(arrays.items()))
        if spec.kind == "columns" and len(arrays) == 1 and first.ndim == 2 and first_name not in spec.index:
            # One [N, F] tensor for a tabular model, as KServe's and MLServer's scikit-learn
            # runtimes take it: its columns in the signature's order.
            return spec.from_array(first, "inputs[0]"), ctx
        if spec.kind == "columns" or (spec.kind is None and len(arrays) > 1):
            columns = {k: v.reshape(len(v), -1)[:, 0].tolist() if v.ndim > 1 else v.tolist() for k, v in arrays.items()}
            return spec.from_columns(columns, "inputs"), ctx
        if len(arrays) != 1:
            raise InvalidRequest(f"this model takes one input tensor, got {len(arrays)}", field="inputs")
        return spec.from_array(first, "inputs[0]"), ctx

    def answer(self, plane: DataPlane, route: Route, model: ServedModel, out: Any, ctx: Any, request_id: str) -> Response:
        doc, want_binary = ctx
        arr = np.asarray(out.to_numpy() if hasattr(out, "to_numpy") else out)
        out_desc = {"name": model.output_name, "datatype": v2_datatype(arr), "shape": list(arr.shape)}
        resp = {"model_name": route.name, "model_version": str(model.version), "outputs": [out_desc]}
        if "id" in doc:
            resp["id"] = doc["id"]
        if want_binary and arr.dtype.kind in "biuf":
            raw = np.ascontiguousarray(arr).tobytes()
            out_desc["parameters"] = {"binary_data_size": len(raw)}
            head = orjson.dumps(resp)
            headers = plane.headers(request_id, model)
            headers[HEADER_LENGTH] = str(len(head))
            return Response(head + raw, media_type="application/octet-stream", headers=headers)
        out_desc["data"] = arr.ravel().tolist() if arr.dtype.kind in "OUS" else np.ascontiguousarray(arr).ravel()
        return plane.respond(resp, request_id, model)

    def error_body(self, exc: MlopsLabError, body: dict[str, Any]) -> dict[str, Any]:
        body["type"] = body.pop("error")
        body["error"] = str(exc)
        return body

    def routes(self) -> list[StarletteRoute]:
        plane, protocol = self.plane, self
        infer = self.endpoint()

        async def live(request: Request) -> Response:
            return Response(status_code=200)

        async def ready(request: Request) -> Response:
            return Response(status_code=503 if plane.draining else 200)

        async def server(request: Request) -> Response:
            from ..._version import __version__

            return plane.respond({"name": "mlops_lab", "version": __version__, "extensions": ["binary_tensor_data"]}, "v2")

        @speaks(protocol)
        async def model(request: Request) -> Response:
            route = plane.route(request.path_params["model"])
            m = version_of(route, request.path_params.get("version")) or route.models[0]
            return plane.respond(model_metadata(route, m), request.headers.get("x-request-id") or "v2")

        @speaks(protocol)
        async def model_ready(request: Request) -> Response:
            version_of(plane.route(request.path_params["model"]), request.path_params.get("version"))
            return Response(status_code=503 if plane.draining else 200)

        return [
            StarletteRoute("/v2/models/{model}/infer", infer, methods=["POST"]),
            StarletteRoute("/v2/models/{model}/versions/{version}/infer", infer, methods=["POST"]),
            StarletteRoute("/v2/health/live", live, methods=["GET"]),
            StarletteRoute("/v2/health/ready", ready, methods=["GET"]),
            StarletteRoute("/v2", server, methods=["GET"]),
            StarletteRoute("/v2/", server, methods=["GET"]),
            StarletteRoute("/v2/models/{model}", model, methods=["GET"]),
            StarletteRoute("/v2/models/{model}/versions/{version}", model, methods=["GET"]),
            StarletteRoute("/v2/models/{model}/ready", model_ready, methods=["GET"]),
            StarletteRoute("/v2/models/{model}/versions/{version}/ready", model_ready, methods=["GET"]),
        ]



def parameters(obj: dict[str, Any], field: str) -> dict[str, Any]:
    """An object's ``parameters`` (the protocol's free-form settings): an object, or none."""
    params = obj.get("parameters")
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise InvalidRequest(f"'{field}' must be an object", field=field)
    return params


def version_of(route: Route, version: str | None) -> ServedModel | None:
    """The model a path's ``/versions/{v}`` names (None when the path names no version)."""
    if version is None:
        return None
    for m in route.models:
        if str(m.version) == version:
            return m
    raise NotFound(f"{route.name} has no version {version} here",
                   hint="versions: " + ", ".join(str(m.version) for m in route.models))


def model_metadata(route: Route, m: ServedModel) -> dict[str, Any]:
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


def tensors(inputs: list[Any], binary: bytes) -> dict[str, np.ndarray]:
    """The request's input tensors by name, each checked against its datatype and shape."""
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
        if not isinstance(dtype_name, str) or dtype_name not in DTYPES:
            raise InvalidRequest(f"{field}: unknown datatype {dtype_name!r}", field=f"{field}.datatype")
        if not isinstance(shape, list) or not all(isinstance(d, int) and d >= 0 for d in shape):
            raise InvalidRequest(f"{field}: 'shape' must be a list of sizes", field=f"{field}.shape")
        size = parameters(spec, f"{field}.parameters").get("binary_data_size")
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
                arr = np.frombuffer(chunk, dtype=DTYPES[dtype_name])
        else:
            if "data" not in spec:
                raise InvalidRequest(f"{field} has no 'data'", field=f"{field}.data")
            try:
                arr = np.asarray(spec["data"], dtype=DTYPES[dtype_name] if dtype_name != "BYTES" else object)
            except (ValueError, TypeError, OverflowError) as exc:
                raise InvalidRequest(f"{field}: data does not match datatype {dtype_name}: {exc}", field=f"{field}.data") from None
        if arr.size != count:
            raise InvalidRequest(f"{field}: {arr.size} values do not fill shape {shape}", field=f"{field}.shape")
        out[name] = arr.reshape(shape)
    return out


def _unpack_bytes(buf: bytes) -> list[str]:
    items, i = [], 0
    while i < len(buf):
        (n,) = struct.unpack_from("<I", buf, i)
        i += 4
        items.append(buf[i : i + n].decode("utf-8", "replace"))
        i += n
    return items
