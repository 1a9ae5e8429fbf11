"""The OpenAPI document of a scoring server, with each model's signature as the request schema,
and a self-contained docs page (no CDN: it works offline and behind the Jupyter proxy)."""

from __future__ import annotations

import html
import re
from typing import Any

import orjson

_JSON_TYPE = {"integer": "integer", "float": "number", "boolean": "boolean", "string": "string", "datetime": "string"}


def _row_schemas(sig: dict[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """(schema of one positional row, schema of one record)."""
    if not sig:
        return {"type": "array"}, {"type": "object"}
    if sig["kind"] == "tensor":
        width = sig["shape"][1] if len(sig["shape"]) > 1 else None
        # JSON true and false read as 1 and 0 in numbers, as NumPy and pandas read them
        item = {"type": ["integer" if sig["dtype"].startswith(("int", "uint")) else "number", "boolean"]}
        row: dict[str, Any] = {"type": "array", "items": item}
        if isinstance(width, int) and width > 0:
            row.update(minItems=width, maxItems=width)
        return row, row
    props = {}
    for c in sig["columns"]:
        t = _JSON_TYPE.get(c["type"])
        props[c["name"]] = {"type": t} if t else {}
        types = [t, "boolean"] if t in ("number", "integer") else [t]  # true/false read as 1/0
        if t and c.get("missing", c["type"] == "float"):
            types.append("null")  # only where the signature lets the column lack a value
        if t:
            props[c["name"]] = {"type": types if len(types) > 1 else t}
    names = [c["name"] for c in sig["columns"]]
    record = {"type": "object", "properties": props, "required": names, "additionalProperties": False}
    row = {
        "type": "array",
        "prefixItems": [props[n] for n in names],
        "minItems": len(names),
        "maxItems": len(names),
        "description": "values in this order: " + ", ".join(names),
    }
    return row, record


_CSV_NUMBER = r"-?[0-9]{1,15}(\.[0-9]{1,15})?"


def _csv_schema(sig: dict[str, Any] | None) -> dict[str, Any]:
    """A CSV body as pandas reads it: a header line, then rows of the signature's width."""
    schema: dict[str, Any] = {"type": "string", "description": "a header line with the column names, then one line per row"}
    if not sig:
        return schema
    if sig["kind"] == "tensor":
        if len(sig["shape"]) != 2 or not isinstance(sig["shape"][1], int) or sig["shape"][1] < 1:
            return schema
        header, cells = ",".join(f"c{i}" for i in range(sig["shape"][1])), [_CSV_NUMBER] * sig["shape"][1]
    else:
        names = [c["name"] for c in sig["columns"]]
        if any(ch in n for n in names for ch in ',"\n\r') or any(c["type"] not in ("integer", "float") for c in sig["columns"]):
            return schema
        header = ",".join(re.escape(n) for n in names)
        cells = [(f"({_CSV_NUMBER})?" if c.get("missing", c["type"] == "float") else _CSV_NUMBER)
                 if c["type"] == "float" else "-?[0-9]{1,15}" for c in sig["columns"]]
    schema["pattern"] = "^" + header + "\n(" + ",".join(cells) + "\n){1,20}$"
    return schema


_TENSOR_DATA = {"type": "array", "minItems": 1, "items": {"anyOf": [{"type": "number"}, {"type": "string"}, {"type": "boolean"}, {"type": "array"}]}}
#: The Open Inference Protocol's inference_request (open_inference_rest.yaml), with the
#: datatypes it names; each input's data must fill its shape, which no JSON schema can say.
V2_REQUEST: dict[str, Any] = {
    "type": "object",
    "required": ["inputs"],
    "properties": {
        "id": {"type": "string"},
        "parameters": {"type": "object"},
        "inputs": {"type": "array", "minItems": 1, "items": {
            "type": "object",
            "required": ["name", "shape", "datatype", "data"],
            "properties": {
                "name": {"type": "string"},
                "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                "datatype": {"enum": ["BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
                                      "FP16", "FP32", "FP64", "BYTES"]},
                "parameters": {"type": "object"},
                "data": _TENSOR_DATA,
            },
        }},
        "outputs": {"type": "array", "items": {"type": "object", "required": ["name"], "properties": {"name": {"type": "string"}}}},
    },
}


def build_openapi(app) -> dict[str, Any]:
    from .._version import __version__

    paths: dict[str, Any] = {}
    security = [{"bearer": []}] if app.keys.enabled else []
    errors = {
        "400": {"description": "the body cannot be read (not JSON or CSV); `field` says where"},
        "401": {"description": "missing or wrong key"},
        "413": {"description": "the body is over the size limit"},
        "422": {"description": "the data does not match the signature; `field` and `row` say where"},
        "500": {"description": "the model raised; `error_id` appears in the deployment's logs"},
    }
    for route_name, route in app.routes.items():
        m = route.models[0]
        row, record = _row_schemas(m.meta.get("signature"))
        example = m.meta.get("input_example")
        sig = m.meta.get("signature")
        # all rows positional, or all records (the first row decides)
        rows = {"oneOf": [{"type": "array", "minItems": 1, "items": row}, {"type": "array", "minItems": 1, "items": record}]}
        if row == record:  # a tensor: rows only
            rows = {"type": "array", "minItems": 1, "items": row}
        score_schema = {"type": "object", "required": ["data"], "properties": {"data": rows}}
        split: dict[str, Any] = {"type": "object", "required": ["data"],
                                 "properties": {"data": {"type": "array", "minItems": 1, "items": row}}}
        inputs: dict[str, Any] = rows
        if sig and sig.get("kind") == "columns":
            names = [c["name"] for c in sig["columns"]]
            split["properties"]["columns"] = {"const": names}
            inputs = {"oneOf": [rows, {
                "type": "object", "required": names, "additionalProperties": False,
                "properties": {n: {"type": "array", "minItems": 1, "maxItems": 1, "items": record["properties"][n]} for n in names},
                "description": "one list of values per column (one value each here; equal lengths in general)",
            }]}
        mlflow_schema = {
            "type": "object",
            "properties": {
                "dataframe_split": split,
                "dataframe_records": {"type": "array", "minItems": 1, "items": record},
                "instances": rows,
                "inputs": inputs,
            },
            "minProperties": 1,
            "maxProperties": 1,
            "additionalProperties": False,
        }
        prefixes = [("", route_name)] if route is app.default else []
        prefixes.append((f"/models/{route_name}", route_name))
        for prefix, name in prefixes:
            body = {"content": {"application/json": {"schema": score_schema}}}
            if example is not None:
                body["content"]["application/json"]["example"] = {"data": example}
            paths[f"{prefix}/score"] = {
                "post": {
                    "summary": f"Score with {m.ref} (Azure ML contract)",
                    "operationId": f"score_{name}{'_default' if not prefix else ''}",
                    "security": security,
                    "requestBody": {"required": True, **body},
                    "responses": {"200": {"description": "one prediction per row", "content": {"application/json": {"schema": {"type": "array"}}}}, **errors},
                }
            }
            paths[f"{prefix}/invocations"] = {
                "post": {
                    "summary": f"Score with {m.ref} (MLflow scoring protocol)",
                    "operationId": f"invocations_{name}{'_default' if not prefix else ''}",
                    "security": security,
                    "requestBody": {"required": True, "content": {"application/json": {"schema": mlflow_schema}, "text/csv": {"schema": _csv_schema(m.meta.get("signature"))}}},
                    "responses": {"200": {"description": "predictions", "content": {"application/json": {"schema": {"type": "object", "properties": {"predictions": {"type": "array"}}}}}}, **errors},
                }
            }
        paths[f"/v2/models/{route_name}/infer"] = {
            "post": {
                "summary": f"Score with {m.ref} (Open Inference Protocol v2)",
                "operationId": f"v2_infer_{route_name}",
                "security": security,
                "requestBody": {"required": True, "content": {"application/json": {"schema": V2_REQUEST}}},
                "responses": {"200": {"description": "outputs"}, **errors},
            }
        }
    paths["/health"] = {"get": {"summary": "Liveness and the models served", "operationId": "health", "responses": {"200": {"description": "ok"}}}}
    paths["/metadata"] = {"get": {"summary": "Models, versions and signatures", "operationId": "metadata", "security": security, "responses": {"200": {"description": "metadata"}, "401": errors["401"]}}}
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": f"mlops_lab deployment {app.deployment or ''}".strip(),
            "version": f"revision {app.revision}",
            "description": "Served by mlops_lab " + __version__ + ": " + ", ".join(m.ref for r in app.routes.values() for m in r.models),
        },
        "paths": paths,
        "components": {"securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
    return doc


def docs_page(app) -> str:
    """A small page: every route, each model's signature and example, and a form to try
    ``/score`` from the browser (with the key, if the deployment has one)."""
    e = html.escape
    spec = build_openapi(app)
    sections = []
    for route_name, route in app.routes.items():
        m = route.models[0]
        sig = m.meta.get("signature")
        if sig and sig.get("kind") == "columns":
            sig_rows = "".join(f"<tr><td><code>{e(c['name'])}</code></td><td>{e(c['type'])}</td></tr>" for c in sig["columns"])
            sig_html = f"<table><tr><th>column</th><th>type</th></tr>{sig_rows}</table>"
        elif sig:
            sig_html = f"<p>tensor <code>{e(sig['dtype'])}</code> of shape <code>{e(str(sig['shape']))}</code></p>"
        else:
            sig_html = "<p>no signature: data is passed to the model as sent</p>"
        example = m.meta.get("input_example")
        body = orjson.dumps({"data": example}, option=orjson.OPT_INDENT_2).decode() if example is not None else '{"data": []}'
        path = "score" if route is app.default else f"models/{route_name}/score"
        sections.append(
            f"<section><h2>{e(route_name)} <small>{e(', '.join(f'{x.ref} ({x.traffic:g}%)' for x in route.models))}</small></h2>"
            f"{sig_html}<h3>Try it: POST <code>{e(path)}</code></h3>"
            f"<textarea data-path='{e(path)}' rows='8' cols='90'>{e(body)}</textarea><br>"
            f"<button onclick='send(this)'>Send</button><pre class='out'></pre></section>"
        )
    routes = "".join(
        f"<li><code>{e(method.upper())} {e(p)}</code>: {e(op.get('summary', ''))}</li>"
        for p, ops in spec["paths"].items() for method, op in ops.items()
    )
    key_box = "<p>Key: <input id='key' size='50' placeholder='primary or secondary key'></p>" if app.keys.enabled else ""
    return f"""<!doctype html><html><head><meta charset="utf-8"><title>{e(spec['info']['title'])}</title>
<style>body{{font-family:system-ui,sans-serif;margin:2em;max-width:60em}}td,th{{padding:2px 8px;text-align:left}}
textarea{{font-family:monospace}}pre{{background:#f4f4f4;padding:.5em}}small{{color:#666;font-weight:normal}}</style></head>
<body><h1>{e(spec['info']['title'])}</h1><p>{e(spec['info']['description'])}. OpenAPI: <a href="openapi.json">openapi.json</a></p>
{key_box}<ul>{routes}</ul>{''.join(sections)}
<script>
async function send(btn) {{
  const box = btn.previousElementSibling.previousElementSibling;
  const out = btn.nextElementSibling;
  const headers = {{'Content-Type': 'application/json'}};
  const key = document.getElementById('key');
  if (key && key.value) headers['Authorization'] = 'Bearer ' + key.value;
  const r = await fetch(box.dataset.path, {{method: 'POST', headers, body: box.value}});
  out.textContent = r.status + '\\n' + JSON.stringify(await r.json(), null, 2);
}}
</script></body></html>"""
