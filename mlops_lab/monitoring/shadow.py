"""The readout of a shadow: the serving version and its shadow on the same requests.

A shadow (``update(deployment, ref, shadow=True)``) answers a copy of the requests its route
serves; its answers are collected apart (``<deployment>/shadow/``) with the request ids of the
originals. ``compare(deployment)`` joins the two by request id and row and reports, on the rows
both answered: the agreement rate (classification) or the distribution of the shadow's
differences (regression), the shift between the two prediction distributions (the drift
statistics: Kolmogorov-Smirnov and PSI, or chi-square and Jensen-Shannon), and each version's
latency percentiles. The shadow's latency runs from the copy to its answer, in its own thread
of the same server: calls that queue while it scores are answered together, so under load it
includes that wait.
"""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ..errors import InvalidInput, NotFound
from . import data as D

__all__ = ["ShadowComparison", "compare_shadow"]

_COLUMNS = ["request_time", "request_id", "row", "model_version", "status_code", "latency_ms", "prediction"]
PERCENTILES = (50, 90, 99)
MAX_BARS = 12
SERVING_COLOURS = ("#4c78a8", "#54a24b")  # Tableau blue, green
SHADOW_COLOUR = "#f58518"  # Tableau orange


@dataclass
class ShadowComparison:
    """What :func:`compare` found for a shadow: ``versions`` (a DataFrame, one row per version:
    role, requests, errors, latency percentiles, and the prediction mean or top class),
    ``pairs`` (rows both answered), ``agreement`` (classification: the share of those rows
    where the shadow's answer equals the served one) or ``differences`` (regression: the
    shadow's minus the served, summarised), ``shift`` (the drift statistics of the shadow's
    predictions against the served ones), and the ``verdict`` in one sentence. ``rows`` holds
    the joined rows (request id, row, served and shadow prediction) for a closer look."""

    deployment: str
    serving: list[str]
    shadow: str
    kind: str  # "classification" or "regression"
    versions: Any
    pairs: int
    agreement: float | None
    differences: dict[str, float] | None
    shift: dict[str, Any]
    verdict: str
    rows: Any = field(default=None, repr=False)

    def to_dict(self) -> dict[str, Any]:
        import json

        return {"deployment": self.deployment, "serving": self.serving, "shadow": self.shadow, "kind": self.kind,
                "versions": json.loads(self.versions.to_json(orient="records")), "pairs": self.pairs,
                "agreement": self.agreement, "differences": self.differences, "shift": self.shift,
                "verdict": self.verdict}

    def __str__(self) -> str:
        return f"{self.verdict}\n{self.versions.to_string(index=False)}"

    def _repr_html_(self) -> str:
        return (f"<div><p><b>{html.escape(self.deployment)}</b>: {html.escape(self.verdict)}</p>"
                f"{self.versions.to_html(index=False, float_format=lambda x: f'{x:.4g}', na_rep='')}</div>")

    def chart(self, width: int = 320):
        """The two prediction distributions side by side (the differences' too, for a
        regression) and the latency percentiles of each version, drawn offline."""
        import altair as alt
        import pandas as pd

        from .charts import MonitorChart

        pairs = self.rows
        order = [*self.serving, self.shadow]
        # the serving versions in blue (and green), the shadow in orange, in every panel
        colours = alt.Scale(domain=order, range=[*SERVING_COLOURS[:len(self.serving)], SHADOW_COLOUR])
        served_label = " + ".join(self.serving)
        pair_colours = alt.Scale(domain=[served_label, self.shadow], range=[SERVING_COLOURS[0], SHADOW_COLOUR])
        if self.kind == "classification":
            served = pairs["served"].astype(str).value_counts(normalize=True)
            shadow = pairs["shadow"].astype(str).value_counts(normalize=True)
            classes = list((served.add(shadow, fill_value=0)).sort_values(ascending=False).index[:MAX_BARS])
            dist = pd.DataFrame([{"prediction": c, "version": v, "share": float(s.get(c, 0.0))}
                                 for c in classes for v, s in ((served_label, served), (self.shadow, shadow))])
            preds = alt.Chart(dist).mark_bar().encode(
                x=alt.X("prediction:N", sort=classes, title="prediction", axis=alt.Axis(labelAngle=0)),
                xOffset=alt.XOffset("version:N", sort=[served_label, self.shadow]),
                y=alt.Y("share:Q", axis=alt.Axis(format="%"), title="share of rows"),
                color=alt.Color("version:N", scale=pair_colours, title="version"),
                tooltip=["version", "prediction", alt.Tooltip("share:Q", format=".1%")],
            ).properties(width=width, height=200, title=alt.TitleParams(
                "Predictions on the same requests", subtitle=f"agreement {self.agreement:.1%} on {self.pairs:,} rows"))
            panels = [preds]
        else:
            both = np.concatenate([pairs["served"].to_numpy(float), pairs["shadow"].to_numpy(float)])
            lo, hi = np.quantile(both, [0.005, 0.995]) if len(both) else (0.0, 1.0)
            hi = hi if hi > lo else lo + 1
            edges = np.linspace(lo, hi, 21)
            dist = pd.DataFrame([
                {"version": v, "bin_start": float(a), "bin_end": float(b), "share": float(c)}
                for v, col in ((served_label, "served"), (self.shadow, "shadow"))
                for a, b, c in zip(edges[:-1], edges[1:], _shares(pairs[col].to_numpy(float), edges))])
            preds = alt.Chart(dist).mark_bar(opacity=0.55, binSpacing=0).encode(
                x=alt.X("bin_start:Q", bin="binned", title="prediction"), x2="bin_end:Q",
                y=alt.Y("share:Q", stack=None, axis=alt.Axis(format="%"), title="share of rows"),
                color=alt.Color("version:N", scale=pair_colours, title="version"),
                tooltip=["version", alt.Tooltip("bin_start:Q", format=".4g"), alt.Tooltip("share:Q", format=".1%")],
            ).properties(width=width, height=200, title=alt.TitleParams(
                "Predictions on the same requests", subtitle=f"{self.pairs:,} rows answered by both"))
            diff = pairs["shadow"].to_numpy(float) - pairs["served"].to_numpy(float)
            dlo, dhi = np.quantile(diff, [0.005, 0.995]) if len(diff) else (0.0, 1.0)
            dhi = dhi if dhi > dlo else dlo + 1
            dedges = np.linspace(dlo, dhi, 21)
            dframe = pd.DataFrame({"bin_start": dedges[:-1], "bin_end": dedges[1:], "share": _shares(diff, dedges)})
            diffs = alt.Chart(dframe).mark_bar(color=SHADOW_COLOUR, binSpacing=0).encode(
                x=alt.X("bin_start:Q", bin="binned", title=f"{self.shadow} minus served"), x2="bin_end:Q",
                y=alt.Y("share:Q", axis=alt.Axis(format="%"), title="share of rows"),
                tooltip=[alt.Tooltip("bin_start:Q", format=".4g"), alt.Tooltip("share:Q", format=".1%")],
            ).properties(width=width, height=200, title=alt.TitleParams(
                "Shadow minus served", subtitle=f"mean {self.differences['mean']:+.4g}, "
                                                 f"mean |difference| {self.differences['mean_abs']:.4g}"))
            panels = [preds, diffs]
        lat = pd.DataFrame([{"version": r["version"], "percentile": f"p{p}", "ms": r[f"latency_p{p}_ms"]}
                            for r in self.versions.to_dict("records") for p in PERCENTILES
                            if not _nan(r[f"latency_p{p}_ms"])])
        latency = alt.Chart(lat).mark_line(point=alt.OverlayMarkDef(size=60)).encode(
            x=alt.X("percentile:N", sort=[f"p{p}" for p in PERCENTILES], title=None, axis=alt.Axis(labelAngle=0)),
            y=alt.Y("ms:Q", title="latency (ms)"),
            color=alt.Color("version:N", scale=colours, sort=order, title="version"),
            tooltip=["version", "percentile", alt.Tooltip("ms:Q", format=".3g")],
        ).properties(width=max(160, width // 2), height=200, title=alt.TitleParams(
            "Latency", subtitle="the shadow's: from the copy to its answer"))
        chart = alt.hconcat(*panels, latency).resolve_scale(color="independent").properties(
            title=alt.TitleParams(f"{self.deployment}: {self.shadow} in the shadow of {served_label}", anchor="start"))
        return MonitorChart(chart)


def _shares(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    counts, _ = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)
    return counts / max(counts.sum(), 1)


def _nan(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def shadow_of(reg, deployment: str) -> str | None:
    """The version deployment ``deployment``'s record has in the shadow now, if any."""
    try:
        record = reg.get_deployment(deployment)
    except NotFound:
        return None
    shadows = [m for m in record.models if m.get("shadow")]
    return f"{shadows[0]['name']}:{shadows[0]['version']}" if shadows else None


def compare_shadow(reg, root, deployment: str, *, since: Any = None, shadow: str | None = None) -> ShadowComparison:
    """The readout of ``shadow`` (default: the deployment's shadow now, else the version its
    shadow part holds most rows of) against what served the same requests."""
    import pandas as pd

    from .drift import DEFAULT_THRESHOLDS, feature_drift

    start = D.to_utc(since)
    shadowed = D.read_requests(D.shadow_root(root), start, None, columns=_COLUMNS).to_pandas()
    if shadowed.empty:
        raise InvalidInput(f"deployment {deployment!r} has no shadow answers collected" + (" in that window" if since else ""),
                           hint="start a shadow with update(deployment, ref, shadow=True) and send it requests")
    if shadow is None:
        shadow = shadow_of(reg, deployment) or str(shadowed["model_version"].value_counts().index[0])
    shadowed = shadowed[shadowed["model_version"] == shadow]
    if shadowed.empty:
        raise InvalidInput(f"the shadow {shadow} of {deployment!r} has answered nothing" + (" in that window" if since else ""))
    served = D.read_requests(root, start, None, columns=_COLUMNS).to_pandas()
    if served.empty:  # (then without columns either)
        raise InvalidInput(f"no served answers of {deployment!r} are collected yet to pair the shadow's {len(shadowed)} rows with",
                           hint="a server writes what it collected every flush_seconds (5 s by default): try again then")
    served = served[served["request_id"].isin(shadowed["request_id"].unique())]
    ok = ["request_id", "row", "prediction"]
    pairs = served.loc[served["status_code"] == 200, ok].merge(
        shadowed.loc[shadowed["status_code"] == 200, ok], on=["request_id", "row"], suffixes=("_served", "_shadow"))
    pairs = pairs.rename(columns={"prediction_served": "served", "prediction_shadow": "shadow"})
    pairs = pairs.dropna(subset=["served", "shadow"]).reset_index(drop=True)
    serving = [str(v) for v in served["model_version"].value_counts().index]
    if pairs.empty:
        raise InvalidInput(f"the shadow {shadow} and the serving version of {deployment!r} answered no request in common",
                           hint="both answers of a request are needed; errors and rows without a prediction do not count")
    kind = _kind(pairs["served"], pairs["shadow"])
    agreement = differences = None
    if kind == "classification":
        agreement = float((pairs["served"].astype(str) == pairs["shadow"].astype(str)).mean())
    else:
        d = pairs["shadow"].to_numpy(float) - pairs["served"].to_numpy(float)
        a = np.abs(d)
        differences = {"mean": float(d.mean()), "std": float(d.std(ddof=1)) if len(d) > 1 else 0.0,
                       "mean_abs": float(a.mean()), "p50_abs": float(np.quantile(a, 0.5)),
                       "p95_abs": float(np.quantile(a, 0.95)), "max_abs": float(a.max())}
    ref = pairs["served"] if kind == "regression" else pairs["served"].astype(str)
    cur = pairs["shadow"] if kind == "regression" else pairs["shadow"].astype(str)
    fd = feature_drift("prediction", ref, cur, DEFAULT_THRESHOLDS)
    shift = {k: v for k, v in vars(fd).items() if k not in ("feature", "n_reference", "n_live") and v is not None}
    versions = pd.DataFrame([_version_row(served, v, "serving", kind) for v in serving]
                            + [_version_row(shadowed, shadow, "shadow", kind)])
    verdict = _verdict(kind, shadow, serving, len(pairs), agreement, differences, shift)
    return ShadowComparison(deployment, serving, shadow, kind, versions, len(pairs), agreement, differences, shift,
                            verdict, pairs)


def _kind(served, shadow) -> str:
    """Regression when both columns are numbers and some are not whole; else classification."""
    import pandas as pd

    if not (pd.api.types.is_numeric_dtype(served) and pd.api.types.is_numeric_dtype(shadow)):
        return "classification"
    if pd.api.types.is_bool_dtype(served) or pd.api.types.is_bool_dtype(shadow):
        return "classification"
    values = np.concatenate([served.to_numpy(float), shadow.to_numpy(float)])
    return "classification" if np.all(values == np.round(values)) else "regression"


def _version_row(rows, version: str, role: str, kind: str) -> dict[str, Any]:
    mine = rows[rows["model_version"] == version]
    requests = mine.drop_duplicates("request_id")
    ok = mine[mine["status_code"] == 200]["prediction"].dropna()
    entry: dict[str, Any] = {"version": version, "role": role, "requests": len(requests), "rows": len(mine),
                             "errors": int((requests["status_code"] >= 400).sum())}
    lat = requests["latency_ms"].dropna()
    for p in PERCENTILES:
        entry[f"latency_p{p}_ms"] = float(lat.quantile(p / 100)) if len(lat) else math.nan
    if kind == "regression":
        values = ok.to_numpy(float)
        entry["prediction_mean"] = float(values.mean()) if len(values) else math.nan
        entry["prediction_std"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
    else:
        counts = ok.astype(str).value_counts(normalize=True)
        entry["top_class"] = counts.index[0] if len(counts) else None
        entry["top_class_share"] = float(counts.iloc[0]) if len(counts) else math.nan
    return entry


def _verdict(kind, shadow, serving, pairs, agreement, differences, shift) -> str:
    served = " and ".join(serving)
    if kind == "classification":
        what = f"{shadow} agrees with {served} on {agreement:.1%} of {pairs:,} rows"
    else:
        what = (f"{shadow} differs from {served} by {differences['mean']:+.4g} on average "
                f"(mean |difference| {differences['mean_abs']:.4g}, 95% within {differences['p95_abs']:.4g}) "
                f"on {pairs:,} rows")
    moved = "its predictions are distributed differently" if shift.get("drifted") else \
        "its predictions are distributed alike"
    stats = (f"KS {shift['ks_statistic']:.3f}, PSI {shift['psi']:.3f}" if "ks_statistic" in shift
             else f"chi-square p = {shift.get('chi2_pvalue', math.nan):.2g}, JS {shift.get('js_distance', math.nan):.3f}")
    return f"{what}; {moved} ({stats})"
