"""A model card's HTML opened in headless Chromium with every request refused: its sections are
there and its charts are drawn (inline SVG with marks of real size). The screenshot goes to
``test-output/model-card.png``."""

from __future__ import annotations

import time

import numpy as np
import pandas as pd
import pytest

playwright = pytest.importorskip("playwright.sync_api")

import mlops_lab as ml  # noqa: E402

from .conftest import OUT  # noqa: E402


class Summer:
    def predict(self, X):
        return X["a"].to_numpy() + X["b"].to_numpy()


def test_the_card_opens_offline_with_its_chart_drawn(browser, sqlite_registry, tmp_path):
    rng = np.random.default_rng(3)
    base = pd.DataFrame({"a": rng.normal(size=500), "b": rng.normal(size=500)})
    ml.register_model(Summer(), "m", sample_input=base.head(), baseline=base, description="Sums a and b.")
    d = ml.deploy("m:1", name="card-svc", progress=False, collect={"flush_seconds": 0.3})
    try:
        for _ in range(30):
            d.predict(pd.DataFrame({"a": rng.normal(1, 1, 3), "b": rng.normal(size=3)}))
        deadline = time.monotonic() + 20
        while len(ml.collected_data("card-svc")) < 90 and time.monotonic() < deadline:
            time.sleep(0.2)
        path = ml.model_card("m:1").save(tmp_path / "card.html")
    finally:
        d.delete()
    context = browser.new_context(viewport={"width": 1280, "height": 2400})
    refused: list[str] = []

    def only_the_file(route):
        if route.request.url.startswith(("file:", "data:", "blob:")):
            route.continue_()
        else:
            refused.append(route.request.url)
            route.abort()

    context.route("**/*", only_the_file)
    page = context.new_page()
    page.goto(path.as_uri())
    playwright.expect(page.locator("h1")).to_have_text("m:1")
    playwright.expect(page.locator("section[data-section='Description']")).to_contain_text("Sums a and b.")
    chart = page.locator("section[data-section='Monitoring (card-svc)'] svg").first
    box = chart.bounding_box()
    assert box is not None and box["width"] > 300 and box["height"] > 200
    # marks of the chart itself, drawn with a size, not an empty frame
    sizes = page.evaluate("""() => [...document.querySelectorAll("section[data-section^='Monitoring'] svg .mark-line path,"
                                     + " section[data-section^='Monitoring'] svg .mark-rect path")]
                                  .map(p => p.getBBox()).filter(b => b.width > 0 || b.height > 0).length""")
    assert sizes >= 3, sizes
    assert refused == []
    OUT.mkdir(exist_ok=True)
    page.screenshot(path=str(OUT / "model-card.png"), full_page=True)
    context.close()


def test_the_sidebar_opens_a_versions_card_in_a_new_tab(lab, browser, sqlite_registry):
    from .conftest import TOKEN

    base = pd.DataFrame({"a": [0.0, 1.0], "b": [1.0, 2.0]})
    ml.register_model(Summer(), "m", sample_input=base, description="Sums a and b.")
    page = browser.new_page(viewport={"width": 1280, "height": 800})
    page.goto(f"{lab}/lab?token={TOKEN}")
    page.locator("li[data-id='mlops-lab-sidebar']").click(timeout=60_000)
    model = page.locator("#mlops-lab-sidebar [data-test-id='mlops-model-m']")
    model.locator("summary").click()
    link = model.locator("[data-test-id='mlops-version-m:1'] [data-test-id='mlops-card']")
    with page.context.expect_page() as opened:
        link.click()
    card = opened.value
    playwright.expect(card.locator("h1")).to_have_text("m:1", timeout=30_000)
    playwright.expect(card.locator("section[data-section='Deployments']")).to_contain_text("Not deployed.")
    # its own styles apply (the page's security policy lets them, and nothing else, in)
    assert card.locator("table").first.evaluate("t => getComputedStyle(t).borderCollapse") == "collapse"
    card.screenshot(path=str(OUT / "model-card-from-sidebar.png"))
