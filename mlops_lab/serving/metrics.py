"""A deployment's serving metrics in Prometheus' text exposition format, summed over its servers.

Each server counts in plain integers on its request path (a dict increment and a bisect per
request), and writes a snapshot of its counters to ``<metrics folder>/<pid>-<start>.json`` once a
second and when it stops (temp file + rename). Whichever server answers ``/metrics`` adds its
own live counters to the snapshots of the others, so a scrape sees the whole deployment. The
snapshots of servers that have stopped stay, so the sums never go down when a server is
restarted or a new revision replaces the old one (Prometheus reads a sum that goes down as a
counter reset).

Names and labels follow BentoML's (``bentoml_service_request_total{endpoint,
http_response_code}``, ``..._request_duration_seconds``, ``..._adaptive_batch_size``), under the
``mlops_lab_`` namespace, with the deployment, model name and version as labels:

* ``mlops_lab_request_total`` (counter): requests by endpoint and HTTP status;
* ``mlops_lab_request_duration_seconds`` (histogram): time to answer, by endpoint;
* ``mlops_lab_adaptive_batch_size`` (histogram): rows per call of the model;
* ``mlops_lab_rows_total`` (counter): rows scored;
* ``mlops_lab_collection_written_rows_total``, ``mlops_lab_collection_dropped_rows_total``;
* ``mlops_lab_shadow_request_total`` (counter): copies of requests a shadow answered, by status,
  or ``dropped`` (no room); ``mlops_lab_shadow_request_duration_seconds`` (histogram): from
  the copy to the shadow's answer. A shadow is in no other series: they count what callers got;
* ``mlops_lab_servers`` (gauge): the servers whose counters are in the sums, live or stopped.
"""

from __future__ import annotations

import bisect
import os
import time
from pathlib import Path
from typing import Any

import orjson

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096)
TEXT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Counters:
    """One server's counters. Keys are tuples of label values; histograms are lists of bucket
    counts (the last one for +Inf) followed by the sum."""

    def __init__(self) -> None:
        self.requests: dict[tuple[str, str, str], int] = {}  # (ref, endpoint, status)
        self.latency: dict[tuple[str, str], list[float]] = {}  # (ref, endpoint)
        self.batches: dict[str, list[float]] = {}  # ref
        self.rows: dict[str, int] = {}
        self.shadows: dict[tuple[str, str], int] = {}  # (ref, status or "dropped")
        self.shadow_latency: dict[str, list[float]] = {}  # ref

    def request(self, ref: str, endpoint: str, status: int, seconds: float, rows: int = 0) -> None:
        key = (ref, endpoint, str(status))
        self.requests[key] = self.requests.get(key, 0) + 1
        hist = self.latency.get((ref, endpoint))
        if hist is None:
            hist = self.latency[(ref, endpoint)] = [0] * (len(LATENCY_BUCKETS) + 2)
        hist[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
        hist[-1] += seconds
        if rows:
            self.rows[ref] = self.rows.get(ref, 0) + rows

    def batch(self, ref: str, rows: int) -> None:
        hist = self.batches.get(ref)
        if hist is None:
            hist = self.batches[ref] = [0] * (len(BATCH_BUCKETS) + 2)
        hist[bisect.bisect_left(BATCH_BUCKETS, rows)] += 1
        hist[-1] += rows

    def shadow(self, ref: str, outcome: str, seconds: float | None = None) -> None:
        key = (ref, outcome)
        self.shadows[key] = self.shadows.get(key, 0) + 1
        if seconds is not None:
            hist = self.shadow_latency.get(ref)
            if hist is None:
                hist = self.shadow_latency[ref] = [0] * (len(LATENCY_BUCKETS) + 2)
            hist[bisect.bisect_left(LATENCY_BUCKETS, seconds)] += 1
            hist[-1] += seconds

    def snapshot(self, collection: dict[str, int] | None) -> dict[str, Any]:
        return {
            "requests": [[*k, v] for k, v in self.requests.items()],
            "latency": [[*k, v] for k, v in self.latency.items()],
            "batches": [[k, v] for k, v in self.batches.items()],
            "rows": [[k, v] for k, v in self.rows.items()],
            "shadows": [[*k, v] for k, v in self.shadows.items()],
            "shadow_latency": [[k, v] for k, v in self.shadow_latency.items()],
            "collection": dict(collection or {}),
        }


class Snapshots:
    """The snapshot files of a deployment's servers, in one folder (None: this server alone)."""

    def __init__(self, folder: str | os.PathLike | None) -> None:
        self.folder = Path(folder) if folder else None
        self.path = None
        if self.folder is not None:
            self.path = self.folder / f"{os.getpid()}-{time.time_ns()}.json"

    def write(self, snapshot: dict[str, Any]) -> None:
        if self.path is None:
            return
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_bytes(orjson.dumps(snapshot))
            os.replace(tmp, self.path)
        except OSError:  # a full disk loses a second of peers' counts in a scrape, not a request
            pass

    def others(self) -> list[dict[str, Any]]:
        if self.folder is None:
            return []
        out = []
        for p in self.folder.glob("*.json"):
            if p == self.path:
                continue
            try:
                out.append(orjson.loads(p.read_bytes()))
            except (OSError, orjson.JSONDecodeError):  # removed or replaced meanwhile
                continue
        return out


def aggregate(snapshots: list[dict[str, Any]]) -> dict[str, Any]:
    """The sums of several servers' snapshots."""
    req: dict[tuple, int] = {}
    lat: dict[tuple, list[float]] = {}
    bat: dict[str, list[float]] = {}
    rows: dict[str, int] = {}
    coll: dict[str, int] = {}
    shadows: dict[tuple, int] = {}
    shadow_lat: dict[str, list[float]] = {}
    for snap in snapshots:
        for *k, v in snap.get("shadows", []):
            shadows[tuple(k)] = shadows.get(tuple(k), 0) + v
        for k, hist in snap.get("shadow_latency", []):
            _add(shadow_lat, k, hist)
        for *k, v in snap.get("requests", []):
            req[tuple(k)] = req.get(tuple(k), 0) + v
        for *k, hist in snap.get("latency", []):
            _add(lat, tuple(k), hist)
        for k, hist in snap.get("batches", []):
            _add(bat, k, hist)
        for k, v in snap.get("rows", []):
            rows[k] = rows.get(k, 0) + v
        for k, v in (snap.get("collection") or {}).items():
            if isinstance(v, (int, float)):
                coll[k] = coll.get(k, 0) + v
    servers = sum(1 for snap in snapshots if snap.get("kind") != "shadow")  # a shadow's worker is no server
    return {"requests": req, "latency": lat, "batches": bat, "rows": rows, "collection": coll, "servers": servers,
            "shadows": shadows, "shadow_latency": shadow_lat}


def _add(into: dict, key: Any, hist: list[float]) -> None:
    have = into.get(key)
    if have is None or len(have) != len(hist):
        into[key] = list(hist)
    else:
        for i, v in enumerate(hist):
            have[i] += v


def _esc(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: str) -> str:
    return "{" + ",".join(f'{k}="{_esc(str(v))}"' for k, v in labels.items()) + "}"


def _model(ref: str) -> dict[str, str]:
    name, _, version = ref.rpartition(":")
    return {"model_name": name, "model_version": version} if name else {"model_name": ref, "model_version": ""}


def _fmt(v: float) -> str:
    return repr(float(v)) if isinstance(v, float) and not float(v).is_integer() else str(int(v))


def _histogram(lines: list[str], name: str, bounds: tuple, series: dict, labels_of) -> None:
    for key, hist in sorted(series.items()):
        base = labels_of(key)
        running = 0
        for bound, count in zip(bounds, hist):
            running += count
            lines.append(f"{name}_bucket{_labels(**base, le=_fmt(bound))} {_fmt(running)}")
        running += hist[len(bounds)]
        lines.append(f"{name}_bucket{_labels(**base, le='+Inf')} {_fmt(running)}")
        lines.append(f"{name}_sum{_labels(**base)} {_fmt(hist[-1])}")
        lines.append(f"{name}_count{_labels(**base)} {_fmt(running)}")


def render(deployment: str, totals: dict[str, Any]) -> str:
    """The Prometheus text exposition (version 0.0.4) of :func:`aggregate`'s sums."""
    dep = {"deployment": deployment}
    lines = [
        "# HELP mlops_lab_request_total Requests answered, by endpoint and HTTP status.",
        "# TYPE mlops_lab_request_total counter",
    ]
    for (ref, endpoint, status), v in sorted(totals["requests"].items()):
        lines.append(f"mlops_lab_request_total{_labels(**dep, **_model(ref), endpoint=endpoint, http_response_code=status)} {v}")
    lines += [
        "# HELP mlops_lab_request_duration_seconds Time to answer a request, by endpoint.",
        "# TYPE mlops_lab_request_duration_seconds histogram",
    ]
    _histogram(lines, "mlops_lab_request_duration_seconds", LATENCY_BUCKETS, totals["latency"],
               lambda k: {**dep, **_model(k[0]), "endpoint": k[1]})
    lines += [
        "# HELP mlops_lab_adaptive_batch_size Rows per call of the model (micro-batching).",
        "# TYPE mlops_lab_adaptive_batch_size histogram",
    ]
    _histogram(lines, "mlops_lab_adaptive_batch_size", BATCH_BUCKETS, totals["batches"], lambda k: {**dep, **_model(k)})
    lines += ["# HELP mlops_lab_rows_total Rows scored.", "# TYPE mlops_lab_rows_total counter"]
    for ref, v in sorted(totals["rows"].items()):
        lines.append(f"mlops_lab_rows_total{_labels(**dep, **_model(ref))} {v}")
    coll = totals["collection"]
    for key, help_ in (("written_rows", "Collected rows written to the collection store."),
                       ("dropped_rows", "Collected rows dropped (queue full or no room to write).")):
        name = f"mlops_lab_collection_{key}_total"
        lines += [f"# HELP {name} {help_}", f"# TYPE {name} counter", f"{name}{_labels(**dep)} {int(coll.get(key, 0))}"]
    if totals.get("shadows"):
        lines += ["# HELP mlops_lab_shadow_request_total Copies of requests a shadow answered, by status (or dropped).",
                  "# TYPE mlops_lab_shadow_request_total counter"]
        for (ref, outcome), v in sorted(totals["shadows"].items()):
            lines.append(f"mlops_lab_shadow_request_total{_labels(**dep, **_model(ref), outcome=outcome)} {v}")
        lines += ["# HELP mlops_lab_shadow_request_duration_seconds From a request's copy to its shadow's answer.",
                  "# TYPE mlops_lab_shadow_request_duration_seconds histogram"]
        _histogram(lines, "mlops_lab_shadow_request_duration_seconds", LATENCY_BUCKETS, totals.get("shadow_latency", {}),
                   lambda k: {**dep, **_model(k)})
    lines += [
        "# HELP mlops_lab_servers Server processes whose counters are in these sums (live or stopped).",
        "# TYPE mlops_lab_servers gauge",
        f"mlops_lab_servers{_labels(**dep)} {totals['servers']}",
    ]
    return "\n".join(lines) + "\n"


def wants_text(accept: str | None, fmt: str | None) -> bool:
    """Prometheus' scraper asks for text (``text/plain;version=0.0.4`` or OpenMetrics);
    ``?format=prometheus`` or ``?format=json`` decides explicitly."""
    if fmt:
        return fmt.lower() in ("prometheus", "text")
    accept = (accept or "").lower()
    return "text/plain" in accept or "openmetrics" in accept
