"""The monitoring chart: one Altair chart a data scientist reads at a glance.

Everything is aggregated with pandas first; the chart embeds at most a few thousand rows
(``MAX_POINTS``) whatever the volume collected, so notebooks stay small and fast.
"""

from __future__ import annotations

import math
from typing import Any

MAX_BUCKETS = 200
MAX_POINTS = 5000
TOP_FEATURES = 3
HIST_BINS = 20


_STEPS = [1, 2, 5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 2 * 3600, 3 * 3600, 6 * 3600, 12 * 3600, 86400]


def bucket_for(span_seconds: float) -> str:
    """The finest round bucket size giving at most ``MAX_BUCKETS`` buckets over the span, from one
    second up: 20 seconds of traffic get 20 buckets, not one."""
    for s in _STEPS:
        if span_seconds / s <= MAX_BUCKETS:
            return f"{s}s"
    return f"{int(math.ceil(span_seconds / MAX_BUCKETS / 86400))}d"


def _time_x(every_s: int, span_s: float):
    """The time axis every panel shares: UTC, 24-hour clock, the zone named in the title; seconds
    shown when buckets are shorter than a minute, the date when the span is over a day."""
    import altair as alt

    fmt = "%H:%M:%S" if every_s < 60 else "%H:%M"
    if span_s > 86400:
        fmt = "%b %d " + fmt
    return alt.X("time:T", title="time (UTC)", scale=alt.Scale(type="utc"), axis=alt.Axis(format=fmt, labelOverlap=True))


def _time_tip():
    import altair as alt

    return alt.Tooltip("time:T", title="time (UTC)", format="%Y-%m-%d %H:%M:%S", formatType="utc")


def prediction_summary(requests, every_s: int):
    """Per bucket and version: prediction quantiles (numeric) or class counts (categorical)."""
    import pandas as pd

    df = requests.dropna(subset=["prediction"]) if "prediction" in requests else requests.iloc[0:0]
    if df.empty:
        return pd.DataFrame(), "none"
    t = df["request_time"].dt.floor(f"{every_s}s")
    pred = df["prediction"]
    numeric = pd.api.types.is_numeric_dtype(pred) and pred.nunique() > 10
    if numeric:
        g = pd.DataFrame({"time": t, "model_version": df["model_version"], "p": pred}).groupby(["time", "model_version"])["p"]
        out = g.quantile([0.1, 0.5, 0.9]).unstack().reset_index()
        out.columns = ["time", "model_version", "p10", "p50", "p90"]
        return out, "numeric"
    top = pred.astype(str).value_counts().index[:12]
    cls = pred.astype(str).where(pred.astype(str).isin(top), "other")
    out = pd.DataFrame({"time": t, "model_version": df["model_version"], "prediction": cls}).groupby(["time", "model_version", "prediction"]).size()
    return out.rename("count").reset_index(), "categorical"


def histograms(reference, live, feature: str):
    """Baseline against live distribution of one feature, as at most ``HIST_BINS`` bars each."""
    import numpy as np
    import pandas as pd

    ref = reference.dropna()
    cur = live.dropna()
    if pd.api.types.is_numeric_dtype(ref) and ref.nunique() > 10:
        both = np.concatenate([ref.to_numpy(float), pd.to_numeric(cur, errors="coerce").dropna().to_numpy(float)])
        lo, hi = np.quantile(both, [0.005, 0.995]) if len(both) else (0.0, 1.0)
        if hi <= lo:
            hi = lo + 1
        edges = np.linspace(lo, hi, HIST_BINS + 1)
        rows = []
        for label, values in (("baseline", ref.to_numpy(float)), ("live", pd.to_numeric(cur, errors="coerce").dropna().to_numpy(float))):
            counts, _ = np.histogram(np.clip(values, lo, hi), bins=edges)
            share = counts / max(counts.sum(), 1)
            rows += [{"feature": feature, "source": label, "bin_start": float(a), "bin_end": float(b), "share": float(s)}
                     for a, b, s in zip(edges[:-1], edges[1:], share)]
        return pd.DataFrame(rows), "numeric"
    rows = []
    for label, values in (("baseline", ref.astype(str)), ("live", cur.astype(str))):
        vc = values.value_counts(normalize=True).head(HIST_BINS)
        rows += [{"feature": feature, "source": label, "category": k, "share": float(v)} for k, v in vc.items()]
    return pd.DataFrame(rows), "categorical"


def build_chart(
    deployment: str,
    metrics,
    requests,
    drift_table,
    baseline,
    live_features,
    accuracy,
    dropped: int,
    every_s: int,
    span_s: float | None = None,
) -> Any:
    """Assemble the Altair chart from data already aggregated by :mod:`mlops_lab.monitoring.api`."""
    import altair as alt
    import pandas as pd

    width = 560
    color = alt.Color("model_version:N", title="version")
    x = _time_x(every_s, span_s if span_s is not None else every_s * max(len(metrics), 1))
    tip = _time_tip()
    # Lines need two points: with few buckets every bucket is also drawn as a point, so a
    # single bucket still shows its values.
    buckets = metrics["time"].nunique() if len(metrics) else 0
    points = buckets < 60
    panels = []

    sub = f"{int(metrics['requests'].sum()) if len(metrics) else 0} requests"
    if dropped:
        sub += f"; {dropped} records dropped (collection queue full)"
    if len(metrics):
        base = alt.Chart(metrics).encode(x=x)
        traffic = base.mark_line(point=points).encode(
            y=alt.Y("requests:Q", title="requests"), color=color,
            tooltip=[tip, "model_version:N", "requests:Q", "errors:Q"],
        )
        errors = base.mark_bar(color="#d62728", opacity=0.7).encode(y="errors:Q")
        panels.append((traffic + errors).properties(width=width, height=120, title=alt.TitleParams("Traffic and errors (red)", subtitle=sub)))
        lat = metrics.melt(id_vars=["time", "model_version"], value_vars=["latency_p50_ms", "latency_p95_ms", "latency_p99_ms"],
                           var_name="percentile", value_name="ms")
        lat["percentile"] = lat["percentile"].str.extract(r"(p\d+)")[0]
        panels.append(
            alt.Chart(lat).mark_line(point=points).encode(
                x=x, y=alt.Y("ms:Q", title="latency (ms)"),
                color=alt.Color("percentile:N", scale=alt.Scale(domain=["p50", "p95", "p99"], range=["#9ecae1", "#3182bd", "#08519c"])),
                strokeDash=alt.StrokeDash("model_version:N", title="version"), tooltip=[tip, "model_version:N", "percentile:N", "ms:Q"],
            ).properties(width=width, height=120, title="Latency percentiles")
        )
    else:
        panels.append(alt.Chart(pd.DataFrame({"text": [f"No requests collected yet for {deployment}"]})).mark_text(size=14).encode(text="text:N").properties(width=width, height=40, title=alt.TitleParams("Traffic", subtitle=sub)))

    preds, kind = prediction_summary(requests, every_s)
    if kind == "numeric":
        band = alt.Chart(preds).encode(x=x)
        panels.append(
            (band.mark_area(opacity=0.25).encode(y=alt.Y("p10:Q", title="prediction (p10-p90, median)"), y2="p90:Q", color=color)
             + band.mark_line(point=points).encode(y="p50:Q", color=color, tooltip=[tip, "model_version:N", "p10:Q", "p50:Q", "p90:Q"]))
            .properties(width=width, height=120, title="Predictions over time")
        )
    elif kind == "categorical":
        panels.append(
            alt.Chart(preds).mark_bar().encode(
                x=x, y=alt.Y("count:Q", stack="normalize", title="share of predictions"),
                color=alt.Color("prediction:N"), tooltip=[tip, "model_version:N", "prediction:N", "count:Q"],
            ).properties(width=width, height=120, title="Predictions over time")
        )

    if drift_table is not None and len(drift_table):
        ref_note = drift_table.attrs.get("reference", "baseline")
        ranked = drift_table[drift_table["feature"] != "prediction"].copy()
        ranked["score"] = ranked["psi"].fillna(0) + ranked["js_distance"].fillna(0)
        top = ranked.sort_values("score", ascending=False).head(TOP_FEATURES)
        hist_panels = []
        for _, row in top.iterrows():
            feat = row["feature"]
            if baseline is None or feat not in baseline or feat not in live_features:
                continue
            hist, hkind = histograms(baseline[feat], live_features[feat], feat)
            flag = "DRIFT" if row["drifted"] else "ok"
            key, label = ("psi", "PSI") if row["kind"] == "numeric" else ("js_distance", "JS")
            value = row[key]
            stat = f"{label} {value:.2f}" if value is not None and value == value else f"{label} n/a"
            title = alt.TitleParams(f"{feat}", subtitle=f"{stat} · {flag}", color="#d62728" if row["drifted"] else "black")
            if hkind == "numeric":
                # Each bar spans its bin and rises from zero (a bar mark with x2 and no y2 is
                # drawn by Vega-Lite 5 and 6 as a thin tile at its value).
                chart = alt.Chart(hist).mark_rect(opacity=0.5).encode(
                    x=alt.X("bin_start:Q", title=None), x2="bin_end:Q", y=alt.Y("share:Q", stack=None, title="share"),
                    y2=alt.datum(0),
                    color=alt.Color("source:N", scale=alt.Scale(domain=["baseline", "live"], range=["#7f7f7f", "#ff7f0e"])),
                )
            else:
                chart = alt.Chart(hist).mark_bar(opacity=0.7).encode(
                    x=alt.X("category:N", title=None), xOffset="source:N", y=alt.Y("share:Q", title="share"),
                    color=alt.Color("source:N", scale=alt.Scale(domain=["baseline", "live"], range=["#7f7f7f", "#ff7f0e"])),
                )
            hist_panels.append(chart.properties(width=width // TOP_FEATURES - 30, height=110, title=title))
        if hist_panels:
            panels.append(alt.hconcat(*hist_panels).properties(title=alt.TitleParams(f"Most drifted features (reference: {ref_note})")))

    if accuracy is not None and len(accuracy):
        panels.append(
            alt.Chart(accuracy).mark_line(point=True).encode(
                x=x, y=alt.Y("accuracy:Q", scale=alt.Scale(domain=[0, 1])), color=color,
                tooltip=[tip, "model_version:N", "accuracy:Q", "labelled:Q"],
            ).properties(width=width, height=100, title="Live accuracy (from feedback)")
        )
    chart = alt.vconcat(*panels).properties(title=alt.TitleParams(f"Deployment {deployment}", fontSize=16)).resolve_scale(color="independent", strokeDash="independent")
    return MonitorChart(chart)


VEGALITE_V5 = "application/vnd.vegalite.v5+json"
V5_SCHEMA = "https://vega.github.io/schema/vega-lite/v5.json"


class MonitorChart:
    """A chart that draws wherever a notebook is opened, with no network.

    Its display bundle holds the Vega-Lite spec under the v5 mimetype, which JupyterLab,
    Notebook 7 and VS Code render themselves, interactive, with the Vega they ship; and a PNG
    drawn by vl-convert (bundled Vega, no browser) for every front end without a Vega renderer:
    nbconvert's HTML, nbviewer, GitHub. No HTML that loads Vega from a CDN is emitted, and the
    user's Altair renderer settings are left as they are.

    ``.chart`` is the Altair chart; its other attributes (``to_dict``, ``to_json``,
    ``properties``, ...) are reachable on this object too.
    """

    def __init__(self, chart: Any) -> None:
        self.chart = chart

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):
            raise AttributeError(name)
        return getattr(self.chart, name)

    def __repr__(self) -> str:
        title = self.chart.title
        text = getattr(title, "text", title)
        return f"<MonitorChart {text!r}>"

    def vegalite(self) -> dict[str, Any]:
        """The spec for the Vega-Lite v5 renderers of JupyterLab and Notebook 7 (Altair writes
        v6 specs; this chart uses nothing that v5 lacks, which the browser tests check)."""
        spec = self.chart.to_dict()
        spec["$schema"] = V5_SCHEMA
        return spec

    def to_png(self, scale: float = 1.0) -> bytes | None:
        """The chart as PNG, or None where vl-convert is not installed."""
        try:
            import vl_convert as vlc
        except ImportError:
            return None
        return vlc.vegalite_to_png(self.chart.to_dict(), scale=scale)

    def to_svg(self) -> str:
        import vl_convert as vlc

        return vlc.vegalite_to_svg(self.chart.to_dict())

    def to_html(self) -> str:
        """A page that draws the chart with no network: Vega's JavaScript is inlined."""
        import vl_convert as vlc

        return vlc.vegalite_to_html(self.chart.to_dict(), bundle=True)

    def save(self, path: str, **kwargs: Any) -> None:
        """Write ``.html`` (self-contained, opens offline), ``.png``, ``.svg`` or ``.json``."""
        from pathlib import Path

        suffix = Path(path).suffix.lower()
        if suffix == ".html":
            Path(path).write_text(self.to_html(), encoding="utf-8")
        elif suffix == ".png":
            Path(path).write_bytes(self.to_png(scale=kwargs.get("scale", 1.0)) or b"")
        elif suffix == ".svg":
            Path(path).write_text(self.to_svg(), encoding="utf-8")
        else:
            self.chart.save(path, **kwargs)

    def mimebundle(self, static: bool = True) -> dict[str, Any]:
        """The display bundle; ``static=False`` leaves the PNG out (a panel that redraws often
        in a live front end has no use for it)."""
        import base64

        bundle: dict[str, Any] = {VEGALITE_V5: self.vegalite(), "text/plain": repr(self)}
        png = self.to_png() if static else None
        if png:
            bundle["image/png"] = base64.b64encode(png).decode("ascii")
        return bundle

    def _repr_mimebundle_(self, include: Any = None, exclude: Any = None) -> dict[str, Any]:
        return self.mimebundle()
