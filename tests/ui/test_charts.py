"""Charts as a user sees them, in a real JupyterLab and Debian's headless Chromium whose every
request to a host other than the Jupyter server is refused (an offline laptop, an air-gapped
cluster): tutorial 3 run from the menu, and the ``MonitorPanel`` widget. The Vega view must have
drawn its marks, and no error text may show. Screenshots go to ``test-output/``."""

from __future__ import annotations

import shutil

import nbformat
import pytest

playwright = pytest.importorskip("playwright.sync_api")

import mlops_lab as ml  # noqa: E402
from mlops_lab.deployers.base import wait_until  # noqa: E402

from .conftest import OUT, ROOT, TOKEN  # noqa: E402

# What a Vega view drew: coloured pixels (marks: lines, points, bars, areas; axes and text are
# grey or black) on its canvas, or mark elements in its SVG.
DRAWN = """(el) => {
  const canvas = el.querySelector('canvas');
  if (canvas) {
    const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    let coloured = 0;
    for (let i = 0; i < data.length; i += 4) {
      const [r, g, b, a] = [data[i], data[i + 1], data[i + 2], data[i + 3]];
      if (a > 0 && Math.max(r, g, b) - Math.min(r, g, b) > 60) coloured++;
    }
    return {renderer: 'canvas', width: canvas.width, height: canvas.height, marks: coloured};
  }
  const svg = el.querySelector('svg');
  return {renderer: svg ? 'svg' : 'none', marks: svg ? svg.querySelectorAll('[class*="mark-"] path').length : 0};
}"""


def _run_all(page) -> None:
    page.locator(".lm-MenuBar-itemLabel", has_text="Run").first.click()
    page.locator(".lm-Menu-itemLabel", has_text="Run All Cells").first.click()


def _wait_idle_kernel(page) -> None:
    try:
        playwright.expect(page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle']")).to_have_count(1, timeout=60_000)
    except AssertionError:
        OUT.mkdir(exist_ok=True)
        page.screenshot(path=str(OUT / "kernel-not-idle.png"))
        (OUT / "kernel-not-idle.html").write_text(page.content())
        raise


def _open(page, lab: str, name: str) -> None:
    page.goto(f"{lab}/lab/tree/{name}?token={TOKEN}")
    playwright.expect(page.locator(".jp-NotebookPanel")).to_be_visible(timeout=60_000)
    # JupyterLab 4.6 asks which kernel to start unless "Always start the preferred kernel" is
    # set: the user takes the preferred one, as the notebook's metadata names it
    dialog = page.locator(".jp-Dialog")
    try:
        dialog.get_by_role("button", name="Select").click(timeout=10_000)
    except playwright.Error:
        pass
    _wait_idle_kernel(page)


def _assert_no_error_output(page) -> None:
    errors = page.locator(".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.stderr'], "
                          ".jp-OutputArea-output[data-mime-type='application/vnd.jupyter.error'], .vega-embed .error")
    texts = [t for t in errors.all_inner_texts() if "Error" in t or "error" in t]
    assert texts == []
    assert page.get_by_text("Error loading script").count() == 0


def _drawn_chart(page):
    """The first Vega view of the page, once it has drawn its marks."""
    chart = page.locator(".jp-RenderedVegaCommon5").first
    playwright.expect(chart).to_be_visible(timeout=240_000)
    chart.locator("canvas, svg").first.wait_for(timeout=30_000)
    page.wait_for_timeout(500)  # the view's first paint
    drawn = chart.evaluate(DRAWN)
    assert drawn["renderer"] in ("canvas", "svg") and drawn["marks"] > 2000, drawn
    return chart


def _ran_to_the_end(page) -> None:
    last = page.locator(".jp-Cell.jp-CodeCell").last
    playwright.expect(last.locator(".jp-InputPrompt")).to_contain_text("[", timeout=120_000)
    playwright.expect(last.locator(".jp-InputPrompt")).not_to_contain_text("*", timeout=120_000)


def _run_tutorial(page, lab: str, tmp_path, name: str):
    """Open tutorial ``name`` in JupyterLab, run every cell from the menu, and return its first
    chart once JupyterLab's own Vega renderer has drawn its marks, after the notebook ran to
    its end with no error."""
    shutil.copy(ROOT / "notebooks" / name, tmp_path / "notebooks" / name)
    _open(page, lab, name)
    _run_all(page)
    chart = _drawn_chart(page)
    _ran_to_the_end(page)
    _wait_idle_kernel(page)
    _assert_no_error_output(page)
    return chart


def test_tutorial_3_draws_its_chart_in_jupyterlab_with_no_network(lab, offline, tmp_path):
    # Given tutorial 3 in a JupyterLab whose browser reaches nothing but the Jupyter server
    page = offline.new_page()
    try:
        # When the user runs every cell from the menu, then the chart of %monitor is drawn
        chart = _run_tutorial(page, lab, tmp_path, "03_monitor.ipynb")
        # and nothing was fetched from elsewhere
        assert offline.refused == []
        OUT.mkdir(exist_ok=True)
        chart.scroll_into_view_if_needed()
        chart.screenshot(path=str(OUT / "monitor-chart-jupyterlab.png"))
        page.screenshot(path=str(OUT / "tutorial-3-jupyterlab.png"), full_page=False)
    finally:
        for d in ml.list_deployments():
            d.delete()


def test_tutorial_3_draws_its_chart_in_notebook_7_with_no_network(lab, offline, tmp_path):
    """The same in Jupyter Notebook 7 (the `notebook` package: its own page, the same server),
    whose users get the chart from the Vega renderer it ships."""
    pytest.importorskip("notebook", minversion="7")
    # Given tutorial 3 opened in Notebook 7, offline
    shutil.copy(ROOT / "notebooks" / "03_monitor.ipynb", tmp_path / "notebooks" / "03_monitor.ipynb")
    page = offline.new_page()
    try:
        page.goto(f"{lab}/notebooks/03_monitor.ipynb?token={TOKEN}")
        playwright.expect(page.locator(".jp-NotebookPanel")).to_be_visible(timeout=60_000)
        try:
            page.locator(".jp-Dialog").get_by_role("button", name="Select").click(timeout=10_000)
        except playwright.Error:
            pass
        playwright.expect(page.locator(".jp-Notebook-ExecutionIndicator[data-status='idle'], "
                                       "#jp-Notebook-kernelStatus:not(:has-text('Connecting'))").first).to_be_visible(timeout=60_000)
        # When the user runs every cell from the menu
        _run_all(page)
        # Then the chart is drawn by the notebook's own Vega renderer, marks and all
        chart = _drawn_chart(page)
        _ran_to_the_end(page)
        _assert_no_error_output(page)
        assert offline.refused == []
        OUT.mkdir(exist_ok=True)
        chart.scroll_into_view_if_needed()
        page.screenshot(path=str(OUT / "tutorial-3-notebook7.png"), full_page=False)
    finally:
        for d in ml.list_deployments():
            d.delete()


def test_monitor_panel_draws_its_chart_with_no_network(lab, offline, tmp_path, iris, trained):
    # Given a deployment that has collected some traffic
    X, _ = iris
    ml.register_model(trained, "iris", sample_input=X.iloc[:3], baseline=X)
    d = ml.deploy("iris:1", name="svc", collect={"flush_seconds": 0.2})
    try:
        for i in range(10):
            d.predict(X.sample(5, random_state=i))
        assert wait_until(lambda: len(ml.collected_data("svc")) == 50, timeout=30)  # flushed every 0.2 s
        nb = nbformat.v4.new_notebook()
        nb.cells = [nbformat.v4.new_code_cell(
            "from mlops_lab.widgets import MonitorPanel\n"
            "MonitorPanel('svc', since='1h', refresh=None)")]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
        nbformat.write(nb, tmp_path / "notebooks" / "panel.ipynb")
        page = offline.new_page()
        # When the panel is shown in a notebook
        _open(page, lab, "panel.ipynb")
        _run_all(page)
        # Then the widget's output holds the chart, drawn by JupyterLab's Vega renderer
        chart = page.locator(".jupyter-widgets .jp-RenderedVegaCommon5, .widget-output .jp-RenderedVegaCommon5").first
        playwright.expect(chart).to_be_visible(timeout=120_000)
        chart.locator("canvas, svg").first.wait_for(timeout=30_000)
        page.wait_for_timeout(500)
        drawn = chart.evaluate(DRAWN)
        assert drawn["marks"] > 2000, drawn
        # with the window buttons above it, and no image fallback in a live front end
        playwright.expect(page.locator(".widget-toggle-buttons button", has_text="1h")).to_be_visible()
        assert page.locator(".jupyter-widgets img").count() == 0
        _assert_no_error_output(page)
        assert offline.refused == []
        OUT.mkdir(exist_ok=True)
        page.screenshot(path=str(OUT / "monitor-panel-jupyterlab.png"))
    finally:
        d.delete()


def test_sidebar_monitor_panel_draws_chart_and_drift_with_no_kernel_and_no_network(lab, offline, iris, trained):
    # Given a deployment whose traffic drifted on one feature
    X, _ = iris
    ml.register_model(trained, "iris", sample_input=X.iloc[:3], baseline=X)
    d = ml.deploy("iris:1", name="svc", collect={"flush_seconds": 0.2}, progress=False)
    try:
        for i in range(20):
            batch = X.sample(5, random_state=i).copy()
            batch["petal length (cm)"] += 3.0
            d.predict(batch)
        page = offline.new_page()
        page.goto(f"{lab}/lab?token={TOKEN}")
        # When the user opens the sidebar and clicks Monitor on the deployment (no notebook open)
        page.locator("li[data-id='mlops-lab-sidebar']").click(timeout=60_000)
        svc = page.locator("#mlops-lab-sidebar [data-test-id='mlops-deployment-svc']")
        svc.locator("[data-test-id='mlops-open-monitor']").click(timeout=30_000)
        panel = page.locator("[data-test-id='mlops-monitor-panel']")
        # Then a main-area panel draws the chart with JupyterLab's own Vega renderer
        chart = panel.locator(".jp-RenderedVegaCommon5").first
        playwright.expect(chart).to_be_visible(timeout=60_000)
        chart.locator("canvas, svg").first.wait_for(timeout=30_000)
        page.wait_for_timeout(500)
        assert chart.evaluate(DRAWN)["marks"] > 2000
        # with the drift table flagging the shifted feature, and no kernel was started for it
        playwright.expect(panel.locator("[data-test-id='mlops-drift-petal length (cm)']")).to_have_attribute("data-drifted", "true")
        assert panel.locator("[data-test-id='mlops-monitor-status']").get_attribute("data-kind") == "ok"
        kernels = page.evaluate("""async () => (await (await fetch('/api/kernels')).json()).length""")
        assert kernels == 0
        # another window redraws
        panel.locator("[data-test-id='mlops-window-24h']").click()
        playwright.expect(panel.locator("[data-test-id='mlops-monitor-status']")).to_contain_text("24h", timeout=30_000)
        assert offline.refused == []
        OUT.mkdir(exist_ok=True)
        page.screenshot(path=str(OUT / "sidebar-monitor-panel.png"))
    finally:
        d.delete()


def test_tutorial_6_draws_the_shadow_readout_and_renders_every_step_with_no_network(lab, offline, tmp_path):
    # Given tutorial 6 in a JupyterLab whose browser reaches nothing but the Jupyter server
    page = offline.new_page()
    try:
        # When the user runs every cell from the menu, then the shadow's chart is drawn
        chart = _run_tutorial(page, lab, tmp_path, "06_decide.ipynb")
        # and each step's answer is on the page: the shadow's readout, the canary's verdict, the
        # alert firing, the model card
        outputs = page.locator(".jp-OutputArea-output")
        playwright.expect(outputs.filter(has_text="tumour:2 agrees with tumour:1 on")).to_have_count(1)
        playwright.expect(outputs.filter(has_text="tumour:2 is better than tumour:1 at level 0.05")).to_have_count(1)
        playwright.expect(outputs.filter(has_text="FIRING accuracy")).to_have_count(1)
        card = outputs.filter(has_text="Logistic regression on the 30 standardised features.")
        playwright.expect(card).to_have_count(1)
        assert offline.refused == []
        OUT.mkdir(exist_ok=True)
        chart.scroll_into_view_if_needed()
        chart.screenshot(path=str(OUT / "shadow-chart-jupyterlab.png"))
        card.scroll_into_view_if_needed()
        page.screenshot(path=str(OUT / "tutorial-6-card-jupyterlab.png"), full_page=False)
    finally:
        for d in ml.list_deployments():
            d.delete()
