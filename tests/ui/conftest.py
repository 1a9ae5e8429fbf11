"""Fixtures of the browser tests: a real JupyterLab on loopback and Debian's headless Chromium,
driven by Playwright. Every request of the browser to a host other than the Jupyter server is
refused (``offline``), as on a machine without internet access."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

playwright = pytest.importorskip("playwright.sync_api")

ROOT = Path(__file__).resolve().parents[2]
OUT = ROOT / "test-output"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
TOKEN = "mlops-lab-ui-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def lab(request, tmp_path, _isolated_home):
    """A JupyterLab server on loopback, sharing the test's MLOPS_LAB_HOME (``server_extension=False``
    through indirect parametrization: with the mlops_lab server extension disabled)."""
    port = _free_port()
    root = tmp_path / "notebooks"
    root.mkdir(exist_ok=True)
    config = tmp_path / "jcfg"
    (config / "labconfig").mkdir(parents=True)
    # No "get Jupyter news?" toast over the screenshots.
    (config / "labconfig" / "page_config.json").write_text(
        json.dumps({"disabledExtensions": {"@jupyterlab/apputils-extension:announcements": True}}))
    if not getattr(request, "param", {}).get("server_extension", True):
        (config / "jupyter_server_config.json").write_text(
            json.dumps({"ServerApp": {"jpserver_extensions": {"mlops_lab.server": False}}}))
    log = open(tmp_path / "lab.log", "wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root", f"--port={port}", "--ip=127.0.0.1",
         f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={root}", "--LabApp.news_url=",
         "--ServerApp.disable_check_xsrf=False"],
        stdout=log, stderr=subprocess.STDOUT, env={**os.environ, "JUPYTER_CONFIG_DIR": str(config)},
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/api/status?token={TOKEN}", timeout=1)
            break
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                raise RuntimeError((tmp_path / "lab.log").read_text()[-3000:]) from None
            time.sleep(0.2)
    yield url
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()


@pytest.fixture
def browser():
    if CHROMIUM is None and not os.environ.get("CI"):
        pytest.skip("no chromium: `apt-get install chromium` (make test does)")
    with playwright.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"])
        yield b
        b.close()


@pytest.fixture
def offline(browser, lab, request):
    """A browser context that reaches only the Jupyter server: any other host is refused, and
    each refused address is listed in ``context.refused``."""
    host = urllib.parse.urlsplit(lab).netloc
    context = browser.new_context(viewport={"width": 1280, "height": 1600})
    refused: list[str] = []

    def only_the_lab(route):
        url = route.request.url
        if urllib.parse.urlsplit(url).netloc == host or url.startswith(("data:", "blob:")):
            route.continue_()
        else:
            refused.append(url)
            route.abort()

    context.route("**/*", only_the_lab)
    context.refused = refused
    yield context
    # The last state of every page, for a failure's diagnosis
    OUT.mkdir(exist_ok=True)
    for i, page in enumerate(context.pages):
        try:
            page.screenshot(path=str(OUT / f"last-{request.node.name}-{i}.png"))
        except Exception:  # noqa: BLE001 - a page that is gone has nothing to show
            pass
    context.close()
