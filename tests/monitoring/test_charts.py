"""The monitoring chart: its data is aggregated and bounded, its encodings say what they show,
and it renders (vl-convert) to SVG and PNG."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest
import vl_convert as vlc

import mlops_lab as ml
from mlops_lab.monitoring.charts import MAX_POINTS

from .conftest import write_traffic


class Summer:
    def predict(self, X):
        return X["a"].to_numpy() + X["b"].to_numpy()


def _frame(rng, n, shift=0.0):
    return pd.DataFrame({"a": rng.normal(shift, 1, n), "b": rng.normal(0, 1, n)})


def _panels(spec):
    return spec["vconcat"]


def _title(panel):
    t = panel.get("title")
    return t.get("text") if isinstance(t, dict) else t


def _data(spec, panel):
    """The rows a panel (or its first layer) embeds."""
    name = (panel.get("data") or panel.get("layer", [{}])[0].get("data") or {}).get("name")
    return spec["datasets"][name] if name else []


@pytest.fixture
def canary_traffic(sqlite_registry, collection_store, rng):
    """Three hours of traffic, 60,000 requests: version 1, then a 20 % canary of version 2
    whose inputs have drifted on feature a; some errors, some feedback."""
    base = _frame(rng, 4000)
    ml.register_model(Summer(), "m", sample_input=base.head(), baseline=base)
    ml.register_model(Summer(), "m", sample_input=base.head(), baseline=base)
    now = time.time()
    n = 60_000
    live = _frame(rng, n, shift=0.8)
    times = np.sort(rng.uniform(now - 3 * 3600, now - 1, n))
    canary = (times > now - 3600) & (rng.uniform(size=n) < 0.2)
    status = np.where(rng.uniform(size=n) < 0.01, 500, 200)
    for version, mask in (("m:1", ~canary), ("m:2", canary)):
        frame = live[mask].reset_index(drop=True)
        write_traffic(collection_store, "svc", frame, times[mask], version, frame.a + frame.b, status=status[mask])
    ml.record_feedback("svc", ["svc-m:1-0", "svc-m:1-1"], [1.0, 2.0])
    return n


def test_chart_is_aggregated_and_encodes_what_it_shows(canary_traffic):
    chart = ml.monitor("svc", since="4h")
    spec = chart.to_dict()
    # never more than a few thousand rows embedded, whatever was collected
    sizes = {name: len(rows) for name, rows in spec["datasets"].items()}
    assert max(sizes.values()) <= MAX_POINTS, sizes
    assert sum(sizes.values()) < canary_traffic / 5
    panels = _panels(spec)
    titles = [_title(p) for p in panels]
    assert titles[:3] == ["Traffic and errors (red)", "Latency percentiles", "Predictions over time"]
    assert any(t and t.startswith("Most drifted features") for t in titles)
    assert "Live accuracy (from feedback)" in titles

    traffic = panels[0]["layer"][0]
    assert traffic["encoding"]["x"]["field"] == "time" and traffic["encoding"]["x"]["type"] == "temporal"
    assert traffic["encoding"]["y"]["field"] == "requests"
    assert traffic["encoding"]["color"]["field"] == "model_version"
    rows = _data(spec, panels[0])
    assert {r["model_version"] for r in rows} == {"m:1", "m:2"}  # the canary is coloured apart
    assert sum(r["requests"] for r in rows) == canary_traffic
    assert sum(r["errors"] for r in rows) > 0

    drift_panel = next(p for p in panels if (_title(p) or "").startswith("Most drifted"))
    first = drift_panel["hconcat"][0]
    assert first["title"]["text"] == "a" and "DRIFT" in first["title"]["subtitle"]
    hist = spec["datasets"][first["data"]["name"]]
    assert {r["source"] for r in hist} == {"baseline", "live"}
    assert sum(r["share"] for r in hist if r["source"] == "baseline") == pytest.approx(1.0)


def test_chart_renders_to_svg_and_png(canary_traffic):
    chart = ml.monitor("svc", since="4h")
    svg = vlc.vegalite_to_svg(chart.to_json())
    assert svg.startswith("<svg") and "Deployment svc" in svg and "Latency percentiles" in svg
    png = vlc.vegalite_to_png(chart.to_json(), scale=1)
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_drops_show_in_the_chart(sqlite_registry, collection_store, rng):
    from mlops_lab.monitoring.collector import CollectConfig, Collector

    ml.register_model(Summer(), "m", sample_input=_frame(rng, 5))
    frame = _frame(rng, 100)
    write_traffic(collection_store, "svc", frame, np.full(100, time.time() - 60), "m:1", frame.a)
    col = Collector("svc", CollectConfig(folder=collection_store.uri, endpoint_url=collection_store.endpoint_url, flush_seconds=3600))
    col.dropped = 42
    col.close()
    spec = ml.monitor("svc").to_dict()
    subtitle = spec["vconcat"][0]["title"]["subtitle"]
    assert subtitle == "100 requests; 42 records dropped (collection queue full)"


def test_empty_deployment_chart(sqlite_registry):
    ml.register_model(Summer(), "m")
    (sqlite_registry.home / "collected" / "quiet" / "requests").mkdir(parents=True)
    spec = ml.monitor("quiet").to_dict()
    assert "No requests collected yet for quiet" in str(spec)


def _x(panel):
    enc = (panel.get("layer") or [panel])[0]["encoding"]
    return enc["x"]


def test_twenty_seconds_of_traffic_get_a_bucket_per_second_on_a_utc_axis(sqlite_registry, rng):
    # Given a tutorial-like burst: 40 requests over 20 seconds, just before monitor is called
    ml.register_model(Summer(), "m", sample_input=_frame(rng, 5))
    frame = _frame(rng, 40)
    now = time.time()
    write_traffic(sqlite_registry.home, "svc", frame, np.linspace(now - 21, now - 1, 40), "m:1", frame.a + frame.b)
    # When the chart is drawn with the default window
    spec = ml.monitor("svc", since="1h").to_dict()
    traffic = _panels(spec)[0]
    rows = _data(spec, traffic)
    # Then every second is a bucket of its own (not one dot for the whole burst)
    assert len(rows) >= 19 and sum(r["requests"] for r in rows) == 40
    # and the time axis says its zone and uses the 24-hour clock with seconds
    x = _x(traffic)
    assert x["title"] == "time (UTC)" and x["scale"]["type"] == "utc" and x["axis"]["format"] == "%H:%M:%S"


def test_one_bucket_still_draws_its_values(sqlite_registry, rng):
    # Given traffic that fits in one bucket
    ml.register_model(Summer(), "m", sample_input=_frame(rng, 5))
    frame = _frame(rng, 3)
    write_traffic(sqlite_registry.home, "svc", frame, np.full(3, time.time() - 30), "m:1", frame.a + frame.b)
    spec = ml.monitor("svc", since="1h", show_drift=False).to_dict()
    latency = next(p for p in _panels(spec) if _title(p) == "Latency percentiles")
    # Then the latency line is also drawn as points: a line alone needs two
    assert latency["mark"]["type"] == "line" and latency["mark"]["point"] is True
    assert len(_data(spec, latency)) == 3  # p50, p95 and p99 of the one bucket
    # and vl-convert draws point marks for them (the scenegraph holds symbols)
    scene = vlc.vegalite_to_scenegraph(spec)
    assert '"marktype":"symbol"' in str(scene).replace("'", '"').replace(" ", "")


def test_bucket_sizes_follow_the_span():
    from mlops_lab.monitoring.charts import MAX_BUCKETS, bucket_for

    assert bucket_for(20) == "1s" and bucket_for(60) == "1s"
    assert bucket_for(3600) == "30s" and bucket_for(86400) == "600s"
    for span in (5, 600, 7200, 7 * 86400, 400 * 86400):
        every = bucket_for(span)
        seconds = int(every[:-1]) * (86400 if every.endswith("d") else 1)
        assert span / seconds <= MAX_BUCKETS


def test_display_bundle_renders_offline_and_leaves_altair_settings_alone(canary_traffic):
    import base64

    import altair as alt

    before = alt.renderers.active
    chart = ml.monitor("svc", since="4h")
    bundle = chart._repr_mimebundle_()
    # The mimetype JupyterLab and Notebook 7 render with the Vega they ship, a v5 spec under it
    spec = bundle["application/vnd.vegalite.v5+json"]
    assert spec["$schema"].endswith("/vega-lite/v5.json") and spec["vconcat"] == chart.to_dict()["vconcat"]
    # a PNG for front ends without a Vega renderer, and no HTML that would load Vega from a CDN
    png = base64.b64decode(bundle["image/png"])
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    assert set(bundle) == {"application/vnd.vegalite.v5+json", "image/png", "text/plain"}
    assert "http" not in str({k: v for k, v in spec.items() if k != "$schema"})  # nothing to fetch
    assert alt.renderers.active == before
    # the v5 spec compiles with Vega-Lite 5 (what JupyterLab 4.6 bundles)
    v5 = [v for v in vlc.get_vegalite_versions() if v.startswith("5")][-1]
    assert vlc.vegalite_to_vega(spec, vl_version=v5)["marks"]
    # a live panel can leave the PNG out
    assert "image/png" not in chart.mimebundle(static=False)


def test_saved_html_opens_with_no_network(canary_traffic, tmp_path):
    chart = ml.monitor("svc", since="4h")
    chart.save(str(tmp_path / "monitor.html"))
    page = (tmp_path / "monitor.html").read_text()
    assert "Deployment svc" in page and "<script" in page
    assert "cdn.jsdelivr" not in page and 'src="http' not in page


def _rect_items(node, out):
    if isinstance(node, dict):
        if node.get("marktype") == "rect" and node.get("role") == "mark":
            out.extend(node.get("items", []))
        for v in node.values():
            _rect_items(v, out)
    elif isinstance(node, list):
        for v in node:
            _rect_items(v, out)
    return out


def test_drift_histogram_bars_rise_from_zero(canary_traffic):
    # Given the chart of a drifted deployment, drawn by Vega-Lite 5 (JupyterLab's) and 6
    spec = ml.monitor("svc", since="4h").vegalite()
    drift_panel = next(p for p in _panels(spec) if (_title(p) or "").startswith("Most drifted"))
    for version in ("5.8", vlc.get_vegalite_versions()[-1]):
        scene = vlc.vegalite_to_scenegraph({**drift_panel, "datasets": spec["datasets"]}, vl_version=version)
        bars = [b for b in _rect_items(scene, []) if "bin_start" in b.get("description", "")]
        # Then every bar of a histogram stands on the same baseline, as tall as its share
        assert len(bars) >= 2 * 20
        first = [b for b in bars if b["x"] < bars[0]["x"] + 200]  # the first histogram's bars
        assert len({round(b["y"] + b["height"], 6) for b in first}) == 1, version
        assert max(b["height"] for b in first) > 40 and min(b["height"] for b in first) < max(b["height"] for b in first)
