"""The JupyterLab sidebar in a real JupyterLab and a real headless Chromium (Debian's, driven by
Playwright): it shows a model and a healthy deployment that the test created, and its actions work.
Screenshots go to ``test-output/``."""

from __future__ import annotations

import os
import threading
import time

import numpy as np
import pytest

playwright = pytest.importorskip("playwright.sync_api")

import mlops_lab as ml  # noqa: E402
from mlops_lab.deployers.base import wait_until  # noqa: E402

from .conftest import OUT, TOKEN  # noqa: E402


def test_sidebar_shows_models_and_a_healthy_deployment_and_its_actions_work(lab, browser, iris, trained):
    # Given a registered model with two versions and a deployment serving a canary
    X, _ = iris
    ml.register_model(trained, "iris", tags={"team": "growth"}, sample_input=X.iloc[:3])
    ml.register_model(trained, "iris", sample_input=X.iloc[:3])
    ml.set_alias("iris", "production", 1)
    ml.deploy("iris:1", name="svc", collect={"flush_seconds": 0.5})
    ml.update("svc", "iris:2", traffic=20)
    ml.deploy("iris:1", name="shadowed", collect=False)
    ml.update("shadowed", "iris:2", shadow=0.5)
    try:
        OUT.mkdir(exist_ok=True)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(f"{lab}/lab?token={TOKEN}")
        # When the user opens the sidebar from its icon in the left area
        page.locator("li[data-id='mlops-lab-sidebar']").click(timeout=60_000)
        sidebar = page.locator("#mlops-lab-sidebar")
        svc = sidebar.locator("[data-test-id='mlops-deployment-svc']")
        # Then the deployment shows as healthy, with its versions and traffic split
        playwright.expect(svc.locator("[data-test-id='mlops-status']")).to_have_text("healthy", timeout=30_000)
        playwright.expect(svc.locator("[data-test-id='mlops-served']")).to_contain_text("iris:1 (80%), iris:2 (20%)")
        shadowed = sidebar.locator("[data-test-id='mlops-deployment-shadowed'] [data-test-id='mlops-served']")
        playwright.expect(shadowed).to_contain_text("iris:1, iris:2 (shadow of 50%)")
        # and the model expands to its versions, tags and aliases
        model = sidebar.locator("[data-test-id='mlops-model-iris']")
        playwright.expect(model).to_contain_text("@production→1")
        model.locator("summary").click()
        playwright.expect(model.locator("[data-test-id='mlops-version-iris:1']")).to_contain_text("team=growth")
        playwright.expect(model.locator("[data-test-id='mlops-version-iris:1']")).to_contain_text("deployed in shadowed, svc")

        # Copy URL gives the proxied endpoint, and that address scores from the browser
        svc.locator("[data-test-id='mlops-copy-url']").click()
        copied = sidebar.get_attribute("data-copied")
        assert copied == f"{lab}/mlops-lab/proxy/svc/score"
        answer = page.evaluate(
            """async ([url, rows]) => {
                 const xsrf = document.cookie.split('; ').find(c => c.startsWith('_xsrf=')).split('=')[1];
                 const r = await fetch(url, {method: 'POST', body: JSON.stringify({data: rows}),
                                             headers: {'Content-Type': 'application/json', 'X-XSRFToken': xsrf}});
                 return [r.status, await r.json()];
               }""",
            [copied, X.iloc[:2].to_dict(orient="records")],
        )
        assert answer == [200, [0, 0]]
        # collected data is flushed every 0.5 s: once the two rows are in, the rate appears on refresh
        assert wait_until(lambda: len(ml.collected_data("svc")) >= 2, timeout=30)
        sidebar.locator("[data-test-id='mlops-refresh']").click()
        playwright.expect(svc.locator("[data-test-id='mlops-rate']")).to_contain_text("p50")
        page.screenshot(path=str(OUT / "sidebar.png"))
        ml.delete_deployment("shadowed")

        # Docs opens the endpoint's API page through the Jupyter server
        with page.expect_popup() as popup:
            svc.locator("[data-test-id='mlops-open-docs']").click()
        docs = popup.value
        docs.wait_for_load_state()
        assert docs.url == f"{lab}/mlops-lab/proxy/svc/docs"
        playwright.expect(docs.locator("body")).to_contain_text("openapi.json")
        docs.close()

        # Roll back: the canary goes, version 1 alone serves again
        svc.locator("[data-test-id='mlops-rollback']").click()
        playwright.expect(svc.locator("[data-test-id='mlops-served']")).to_contain_text("iris:1 · revision 3", timeout=30_000)
        assert [m["version"] for m in ml.get_deployment("svc").models] == [1]

        # kill -9 of the supervisor: the badge says crashed, and Restart (offered only then)
        # brings the same revision back at the same address
        import signal

        playwright.expect(svc.locator("[data-test-id='mlops-restart']")).to_have_count(0)
        url = ml.get_deployment("svc").url
        os.kill(ml.get_deployment("svc").status().details["supervisor_pid"], signal.SIGKILL)
        sidebar.locator("[data-test-id='mlops-refresh']").click()
        playwright.expect(svc.locator("[data-test-id='mlops-status']")).to_have_text("crashed", timeout=30_000)
        svc.locator("[data-test-id='mlops-restart']").click()
        playwright.expect(svc.locator("[data-test-id='mlops-status']")).to_have_text("healthy", timeout=30_000)
        playwright.expect(svc.locator("[data-test-id='mlops-served']")).to_contain_text("iris:1 · revision 3")
        restarted = ml.get_deployment("svc")
        assert restarted.url == url and restarted.status().healthy

        # Insert a %monitor cell into the active notebook
        page.locator(".jp-LauncherCard[title*='Python 3']").first.click(timeout=30_000)
        playwright.expect(page.locator(".jp-NotebookPanel")).to_be_visible(timeout=30_000)
        svc.locator("[data-test-id='mlops-insert-monitor']").click()
        playwright.expect(page.locator(".jp-NotebookPanel .jp-Cell").last).to_contain_text("%monitor svc --since 1h")
        page.screenshot(path=str(OUT / "sidebar-monitor-cell.png"))

        # Delete asks for confirmation; Cancel keeps the deployment, Delete removes it
        svc.locator("[data-test-id='mlops-delete']").click()
        page.locator(".jp-Dialog").get_by_role("button", name="Cancel").click()
        assert ml.get_deployment("svc").status().healthy
        svc.locator("[data-test-id='mlops-delete']").click()
        page.locator(".jp-Dialog").get_by_role("button", name="Delete").click()
        playwright.expect(sidebar.locator("[data-test-id='mlops-deployments-empty']")).to_contain_text("No deployments yet")
        assert ml.list_deployments() == []
    finally:
        for d in ml.list_deployments():
            d.delete()


def test_sidebar_empty_state_says_what_to_do(lab, browser, sqlite_registry):
    page = browser.new_page()
    page.goto(f"{lab}/lab?token={TOKEN}")
    page.locator("li[data-id='mlops-lab-sidebar']").click(timeout=60_000)
    sidebar = page.locator("#mlops-lab-sidebar")
    playwright.expect(sidebar.locator("[data-test-id='mlops-models-empty']")).to_contain_text("%register_model clf --name NAME")
    playwright.expect(sidebar.locator("[data-test-id='mlops-deployments-empty']")).to_contain_text("%deploy NAME:VERSION")
    page.screenshot(path=str(OUT / "sidebar-empty.png"))


@pytest.mark.parametrize("lab", [{"server_extension": False}], indirect=True)
def test_sidebar_error_state_says_how_to_fix_it(lab, browser, sqlite_registry):
    # Given a JupyterLab whose mlops_lab server extension is disabled, the sidebar says so and how to fix it
    page = browser.new_page()
    page.goto(f"{lab}/lab?token={TOKEN}")
    page.locator("li[data-id='mlops-lab-sidebar']").click(timeout=60_000)
    message = page.locator("#mlops-lab-sidebar [data-test-id='mlops-message']")
    playwright.expect(message).to_contain_text("jupyter server extension enable mlops_lab.server")
    assert message.get_attribute("data-kind") == "error"


class _Const:
    def predict(self, X):
        return np.zeros(len(X))


def test_a_firing_alert_shows_as_a_badge_and_a_notification_and_the_badge_goes_when_it_resolves(lab, browser, sqlite_registry):
    """A deployment whose latency rule fires while it serves (evaluated and recorded by its
    supervisor, once: it keeps firing, and is not recorded again): the sidebar shows a badge
    beside its status, and JupyterLab a notification naming the rule; a deployment whose rules
    hold shows neither. Once the traffic stops, the rule's window empties, the supervisor records
    the rule as resolved, the badge goes and the notification says the rule resolved."""
    ml.register_model(_Const(), "m", sample_input=np.zeros((2, 2)))
    hot = ml.deploy("m:1", name="hot", collect={"flush_seconds": 0.3})
    cold = ml.deploy("m:1", name="cold", collect=False)
    serving = threading.Event()

    def traffic() -> None:
        while not serving.wait(0.3):
            hot.predict([[0, 0]])

    sender = threading.Thread(target=traffic, daemon=True)
    sender.start()
    try:
        deadline = time.monotonic() + 20
        while len(ml.collected_data("hot")) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        ml.set_alerts("hot", [{"kind": "latency_p99_ms", "threshold": 0, "window": "20s"}], every="1s")
        ml.set_alerts("cold", {"error_rate": 0.5})
        assert ml.check_alerts("cold").ok
        deadline = time.monotonic() + 20
        while not ml.get_alerts("hot")["events"] and time.monotonic() < deadline:
            time.sleep(0.2)
        page = browser.new_page(viewport={"width": 1280, "height": 800})
        page.goto(f"{lab}/lab?token={TOKEN}")
        page.locator("li[data-id='mlops-lab-sidebar']").click(timeout=60_000)
        sidebar = page.locator("#mlops-lab-sidebar")
        badge = sidebar.locator("[data-test-id='mlops-deployment-hot'] [data-test-id='mlops-alerts']")
        playwright.expect(badge).to_have_text("⚠ 1 alert", timeout=30_000)
        assert "latency_p99_ms fired on hot" in badge.get_attribute("title")
        playwright.expect(sidebar.locator("[data-test-id='mlops-deployment-cold'] [data-test-id='mlops-status']")).to_have_text("healthy")
        assert sidebar.locator("[data-test-id='mlops-deployment-cold'] [data-test-id='mlops-alerts']").count() == 0
        toast = page.locator(".Toastify__toast").filter(has_text="latency_p99_ms fired on hot")
        playwright.expect(toast).to_have_count(1, timeout=15_000)
        sidebar.locator("[data-test-id='mlops-refresh']").click()  # seen already: no second notification
        time.sleep(1.0)
        playwright.expect(toast).to_have_count(1)
        page.screenshot(path=str(OUT / "sidebar-alert.png"))
        assert [e["status"] for e in ml.get_alerts("hot")["events"]] == ["firing"]  # recorded once
        serving.set()  # no traffic: the rule's window empties and the supervisor resolves it
        deadline = time.monotonic() + 60
        while ml.get_alerts("hot")["events"][0]["status"] != "resolved" and time.monotonic() < deadline:
            time.sleep(0.5)
        assert [e["status"] for e in ml.get_alerts("hot")["events"]] == ["resolved", "firing"]
        sidebar.locator("[data-test-id='mlops-refresh']").click()
        playwright.expect(badge).to_have_count(0, timeout=15_000)
        # the firing's notification now says the rule resolved (and closes a few seconds later)
        playwright.expect(page.locator(".Toastify__toast").filter(has_text="latency_p99_ms on hot resolved")).to_have_count(1, timeout=5_000)
        playwright.expect(toast).to_have_count(0)
        playwright.expect(sidebar.locator("[data-test-id='mlops-deployment-hot'] [data-test-id='mlops-status']")).to_have_text("healthy")
        page.screenshot(path=str(OUT / "sidebar-alert-resolved.png"))
    finally:
        serving.set()
        sender.join(10)
        hot.delete()
        cold.delete()
