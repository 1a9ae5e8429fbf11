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
def canary_traffic(sqlite_registry, rng):
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
    home = sqlite_registry.home
    for version, mask in (("m:1", ~canary), ("m:2", canary)):
        frame = live[mask].reset_index(drop=True)
        write_traffic(home, "svc", frame, times[mask], version, frame.a + frame.b, status=status[mask])
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


def test_drops_show_in_the_chart(sqlite_registry, rng):
    from mlops_lab.monitoring.collector import CollectConfig, Collector

    ml.register_model(Summer(), "m", sample_input=_frame(rng, 5))
    frame = _frame(rng, 100)
    write_traffic(sqlite_registry.home, "svc", frame, np.full(100, time.time() - 60), "m:1", frame.a)
    col = Collector("svc", CollectConfig(folder=str(sqlite_registry.home / "collected"), flush_seconds=3600))
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
