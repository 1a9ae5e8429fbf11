"""Monitoring: what deployments received and answered, as data and as one chart."""

from __future__ import annotations

import datetime as _dt
from typing import Any

from ..errors import DeploymentNotFound, InvalidInput, NotFound
from ..workspace import current_registry, in_workspace
from . import data as D

__all__ = ["collected_data", "metrics", "summary", "drift", "monitor", "record_feedback"]


def _root(deployment: str, registry=None, must_exist: bool = True):
    from ..refs import check_name

    check_name(deployment, "deployment name")
    reg = registry or current_registry()
    root = D.collection_root(reg.settings, deployment)
    if must_exist and not root.exists():
        try:
            reg.get_deployment(deployment)
        except DeploymentNotFound:
            raise
        # A deployment that has not collected anything yet: empty results, not an error.
    return reg, root


@in_workspace
def collected_data(deployment: str, since: Any = None, until: Any = None, version: str | None = None,
                   columns: list[str] | None = None, with_feedback: bool = False, shadow: bool = False):
    """Everything deployment ``deployment`` collected, one row per input row, as a DataFrame.
    ``shadow=True``: what its shadows answered instead (``update(ref, shadow=True)``), with
    the request ids of the requests they were copies of.

    ``since``/``until`` take a datetime, an ISO string or a duration before now (``"1h"``);
    ``version`` a ``"name:version"``; ``columns`` a subset. Filters are pushed down to the files.
    ``with_feedback=True`` adds the ``label`` (and ``feedback_time``) recorded for each row, the
    data set to retrain on.

    Examples
    --------
    >>> df = collected_data("churn-svc", since="1d")  # doctest: +SKIP
    >>> df[df.status_code == 200].drop(columns=["request_id"])  # doctest: +SKIP
    """
    _, root = _root(deployment)
    if with_feedback and columns is not None:
        columns = list(dict.fromkeys([*columns, "request_id", "row"]))
    table = D.read_requests(D.shadow_root(root) if shadow else root, D.to_utc(since), D.to_utc(until), version, columns)
    df = table.to_pandas()
    if with_feedback:
        fb = D.read_feedback(root)
        if fb.num_rows:
            df = D.join_feedback(df, fb.to_pandas())
        else:
            df = df.assign(label=None, feedback_time=None)
    return df


@in_workspace
def metrics(deployment: str, every: str = "1min", since: Any = None, until: Any = None):
    """Requests, errors, rows and latency p50/p95/p99 per time bucket and model version."""
    _, root = _root(deployment)
    return D.request_metrics(root, every, D.to_utc(since), D.to_utc(until))


@in_workspace
def summary(deployment: str, window: str = "5min") -> dict[str, Any]:
    """One line of numbers for a status view: requests, errors, requests per minute and latency
    p50/p99 (ms) over the last ``window``, from the collected data (all server processes)."""
    _, root = _root(deployment)
    seconds = D.parse_duration(window)
    table = D.read_requests(root, D.to_utc(window), None, columns=["row", "status_code", "latency_ms"])
    stats = D.request_stats(table)
    p50, p99 = stats["latency_p50_ms"], stats["latency_p99_ms"]
    return {"window": window, "requests": stats["requests"], "errors": stats["errors"],
            "requests_per_minute": round(stats["requests"] * 60.0 / seconds, 2),
            "latency_p50_ms": None if p50 is None else round(p50, 2),
            "latency_p99_ms": None if p99 is None else round(p99, 2)}


@in_workspace
def record_feedback(deployment: str, request_id: str | list[str], label: Any, row: int = 0) -> int:
    """Store the true label of a scored request (or of several: lists of ids and labels), so
    live accuracy can be computed when labels arrive later. Returns the number stored."""
    from .collector import write_feedback

    _, root = _root(deployment)
    if isinstance(request_id, (list, tuple)):
        if not isinstance(label, (list, tuple)) or len(label) != len(request_id):
            raise InvalidInput("give one label per request id")
        items = [{"request_id": r, "label": lab, "row": row} for r, lab in zip(request_id, label)]
    else:
        items = [{"request_id": request_id, "label": label, "row": row}]
    return write_feedback(root, items)


def _served_version(reg, deployment: str, requests) -> str | None:
    try:
        rec = reg.get_deployment(deployment)
        serving = [x for x in rec.models if not x.get("shadow")]
        if serving:
            m = next((x for x in serving if x.get("canary")), serving[0])
            return f"{m['name']}:{m['version']}"
    except NotFound:
        pass
    if len(requests):
        return str(requests["model_version"].mode().iloc[0])
    return None


def _feature_names(mv, live) -> list[str]:
    meta = {"request_time", "request_id", "row", "model_version", "status_code", "latency_ms", "error_id", "prediction"}
    sig = mv.signature if mv is not None else None
    if sig and sig.get("kind") == "columns":
        return [c["name"] for c in sig["columns"]]
    return [c for c in live.columns if c not in meta]


@in_workspace
def drift(deployment: str, window: str = "1h", *, until: Any = None, version: str | None = None,
          thresholds: dict[str, float] | None = None):
    """Per-feature drift of the last ``window`` of live data against the baseline registered
    with the model version (or, without one, against the first ``window`` of live data).

    Returns a DataFrame, one row per feature plus ``prediction``: ``kind``, ``psi``,
    ``ks_statistic``, ``ks_pvalue`` (numeric), ``chi2_pvalue``, ``js_distance`` (categorical),
    ``drifted``; ``attrs["reference"]`` says what the reference was.
    """
    result, _, _ = _drift(deployment, window, until=until, version=version, thresholds=thresholds)
    return result


def _drift(deployment: str, window: str, *, until=None, version=None, thresholds=None, registry=None):
    import pandas as pd

    from .drift import DEFAULT_THRESHOLDS, feature_drift

    reg, root = _root(deployment, registry)
    th = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    seconds = D.parse_duration(window)
    end = D.to_utc(until) or _dt.datetime.now(_dt.timezone.utc)
    start = end - _dt.timedelta(seconds=seconds)
    live_all = D.read_requests(root, start, end, version).to_pandas()
    ref_version = version or _served_version(reg, deployment, live_all)
    live = live_all[(live_all["status_code"] == 200) & (live_all["model_version"] == ref_version)] if len(live_all) else live_all
    mv = None
    if ref_version:
        try:
            mv = reg.get_version(ref_version)
        except NotFound:
            mv = None
    features = _feature_names(mv, live)
    reference_note = ""
    baseline = None
    ref_preds = None
    if mv is not None and mv.baseline_sha256:
        baseline = reg.get_baseline(mv.ref)
        if len(baseline) > 50_000:
            baseline = baseline.sample(50_000, random_state=0)
        reference_note = f"baseline registered with {mv.ref} ({len(baseline)} rows)"
        try:
            model = reg.load_model(mv.ref)
            from ..registry.inputs import InputSpec

            spec = InputSpec(mv.signature)
            chunk = spec.from_rows(baseline.to_dict("records") if spec.kind == "columns" else baseline.to_numpy().tolist())
            out = model.predict(spec.model_input([chunk]))
            out = out.to_numpy() if hasattr(out, "to_numpy") else out
            import numpy as np

            arr = np.asarray(out)
            ref_preds = pd.Series(arr if arr.ndim == 1 else [str(list(v)) for v in arr])
        except Exception:  # noqa: BLE001 - prediction drift is then against the first live window
            ref_preds = None
    else:
        first = D.read_requests(root, None, None, ref_version, columns=["request_time"]) if ref_version else None
        if first is not None and first.num_rows:
            t0 = first.column("request_time")[0].as_py()
            t1 = t0 + _dt.timedelta(seconds=seconds)
            baseline = D.read_requests(root, t0, t1, ref_version).to_pandas()
            baseline = baseline[baseline["status_code"] == 200]
            reference_note = f"first {window} of live data ({t0:%Y-%m-%d %H:%M} to {t1:%H:%M} UTC): no baseline registered"
            # the live window must not overlap the reference window
            live = live[live["request_time"] >= t1]
    rows = []
    if baseline is not None:
        for f in features:
            if f in baseline and f in live:
                rows.append(feature_drift(f, baseline[f], live[f], th).__dict__)
        if "prediction" in live:
            ref_p = ref_preds if ref_preds is not None else (baseline["prediction"] if "prediction" in baseline else None)
            if ref_p is not None:
                rows.append(feature_drift("prediction", ref_p, live["prediction"], th).__dict__)
    cols = ["feature", "kind", "n_reference", "n_live", "psi", "ks_statistic", "ks_pvalue", "chi2_pvalue", "js_distance", "drifted"]
    result = pd.DataFrame(rows, columns=cols)
    result.attrs["reference"] = reference_note or "none: no baseline and no live data yet"
    result.attrs["version"] = ref_version
    result.attrs["window"] = f"{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC"
    return result, baseline, live


@in_workspace
def monitor(deployment: str, since: Any = "24h", *, every: str | None = None, drift_window: str | None = None,
            show_drift: bool = True):
    """One chart of a deployment: traffic and errors, latency percentiles, predictions over
    time, the most drifted features (baseline against live), live accuracy when feedback exists;
    versions coloured apart (a canary shows as two lines). Time buckets follow the span of the
    data (from one second up); the time axis is UTC.

    Returns a :class:`~mlops_lab.monitoring.charts.MonitorChart`: it draws interactive in
    JupyterLab, Notebook 7 and VS Code with no network, and as a PNG elsewhere (nbconvert,
    GitHub); ``.chart`` is the Altair chart, ``.save("monitor.html")`` a page that opens offline.
    """
    from .charts import bucket_for, build_chart

    reg, root = _root(deployment)
    end = _dt.datetime.now(_dt.timezone.utc)
    start = D.to_utc(since) or end - _dt.timedelta(days=1)
    first = D.read_requests(root, start, end, columns=["request_time"])
    if first.num_rows:
        start = max(start, first.column("request_time")[0].as_py())
    span = max(60.0, (end - start).total_seconds())
    every = every or bucket_for(span)
    every_s = int(D.parse_duration(every))
    m = D.request_metrics(root, every, start, end)
    req = D.read_requests(root, start, end, columns=["request_time", "model_version", "prediction", "status_code"]).to_pandas() if first.num_rows else None
    if req is not None and "prediction" in req:
        req = req[req["status_code"] == 200]
    drift_table, baseline, live = (None, None, None)
    if show_drift and first.num_rows:
        window = drift_window or f"{int(min(span, 3600))}s"
        drift_table, baseline, live = _drift(deployment, window, registry=reg)
    acc = D.accuracy(root, every, start, end)
    drops = D.read_drops(root)
    dropped = int(sum(drops.column("dropped").to_pylist())) if drops.num_rows else 0
    import pandas as pd

    return build_chart(deployment, m, req if req is not None else pd.DataFrame(), drift_table, baseline, live, acc, dropped, every_s, span)
