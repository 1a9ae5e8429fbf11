"""``/metrics`` as monitoring systems scrape it: the Prometheus text format, summed over every
server of a deployment. A real Prometheus server (Debian's package) scrapes a two-server
deployment on loopback, and a PromQL query over its HTTP API gives back the requests sent."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time

import httpx
import pytest

import mlops_lab as ml
from mlops_lab.serving.metrics import Counters, aggregate, render, wants_text

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sample(text: str, name: str, **labels: str) -> float:
    """The value of one sample of a text exposition (exact label match on the given labels)."""
    total = None
    for line in text.splitlines():
        if not line.startswith(name + "{"):
            continue
        head, value = line.rsplit(" ", 1)
        pairs = dict(p.split("=", 1) for p in head[len(name) + 1 : -1].split(","))
        if all(pairs.get(k) == f'"{v}"' for k, v in labels.items()):
            total = (total or 0) + float(value)
    assert total is not None, f"no {name} {labels} in\n{text}"
    return total


def test_counters_render_as_cumulative_histograms_and_sum_over_servers():
    a, b = Counters(), Counters()
    a.request("churn:3", "score", 200, 0.0007, rows=5)
    a.request("churn:3", "score", 200, 0.02, rows=1)
    b.request("churn:3", "score", 422, 0.0002)
    b.request("", "score", 401, 0.0001)
    b.batch("churn:3", 6)
    text = render('my"svc', aggregate([a.snapshot({"written_rows": 6, "dropped_rows": 0}), b.snapshot({"dropped_rows": 2})]))
    assert _sample(text, "mlops_lab_request_total", model_name="churn", model_version="3", http_response_code="200") == 2
    assert _sample(text, "mlops_lab_request_total", http_response_code="422") == 1
    assert _sample(text, "mlops_lab_request_total", model_name="", http_response_code="401") == 1
    # buckets are cumulative: 0.0007 s falls in le=0.001, 0.02 s in le=0.025
    assert _sample(text, "mlops_lab_request_duration_seconds_bucket", model_version="3", le="0.0005") == 1  # the 422
    assert _sample(text, "mlops_lab_request_duration_seconds_bucket", model_version="3", le="0.001") == 2
    assert _sample(text, "mlops_lab_request_duration_seconds_bucket", model_version="3", le="+Inf") == 3
    assert _sample(text, "mlops_lab_request_duration_seconds_count", model_version="3") == 3
    assert _sample(text, "mlops_lab_adaptive_batch_size_bucket", le="8") == 1
    assert _sample(text, "mlops_lab_rows_total", model_name="churn") == 6
    assert _sample(text, "mlops_lab_collection_dropped_rows_total") == 2
    assert _sample(text, "mlops_lab_servers") == 2
    assert 'deployment="my\\"svc"' in text  # label values escaped
    if PROMTOOL:  # Prometheus' own linter of the exposition format and its naming conventions
        out = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True)
        assert out.returncode == 0, out.stdout + out.stderr


def test_content_negotiation():
    scraper = "application/openmetrics-text;version=1.0.0,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
    assert wants_text(scraper, None) and wants_text("text/plain", None)
    assert not wants_text("application/json", None) and not wants_text("*/*", None) and not wants_text(None, None)
    assert wants_text("application/json", "prometheus") and not wants_text(scraper, "json")


@pytest.fixture
def two_servers(sqlite_registry, iris, trained):
    X, _ = iris
    ml.register_model(trained, "iris", sample_input=X.iloc[:3])
    d = ml.deploy("iris:1", name="svc", workers=2, progress=False)
    deadline = time.time() + 60
    while len(d.status().details.get("servers", [])) < 2 and time.time() < deadline:
        time.sleep(0.2)
    yield d, X
    d.delete()


def _spread_requests(d, X, n_ok: int, n_bad: int) -> set[int]:
    """Requests on fresh connections (each server takes some); the pids that answered."""
    headers = {"Authorization": f"Bearer {d.keys['primary']}"}
    pids = set()
    for i in range(n_ok + n_bad):
        with httpx.Client(timeout=10) as c:
            body = {"data": X.iloc[i % 50 : i % 50 + 2].to_dict("records")} if i < n_ok else {"data": [[1, 2]]}
            r = c.post(f"{d.url}/score", json=body, headers=headers)
            assert r.status_code == (200 if i < n_ok else 422)
            pids.add(c.get(f"{d.url}/metrics", headers=headers).json()["pid"])
    return pids


def test_a_two_server_deployment_answers_with_the_sum_of_its_servers(two_servers):
    d, X = two_servers
    headers = {"Authorization": f"Bearer {d.keys['primary']}"}
    pids = _spread_requests(d, X, 30, 4)
    assert len(pids) == 2, "both servers answered requests"
    time.sleep(1.5)  # one snapshot of each server's counters
    for _ in range(3):  # whichever server answers, the sums are the deployment's
        with httpx.Client(timeout=10) as c:
            r = c.get(f"{d.url}/metrics", headers={**headers, "Accept": "text/plain;version=0.0.4"})
        assert r.headers["content-type"].startswith("text/plain; version=0.0.4")
        text = r.text
        assert _sample(text, "mlops_lab_request_total", endpoint="score", http_response_code="200") == 30
        assert _sample(text, "mlops_lab_request_total", endpoint="score", http_response_code="422") == 4
        assert _sample(text, "mlops_lab_rows_total", model_name="iris") == 60
        assert _sample(text, "mlops_lab_servers") == 2
    # the JSON stays, per server, for existing clients
    assert "models" in httpx.get(f"{d.url}/metrics", headers=headers).json()
    assert httpx.get(f"{d.url}/metrics?format=xml", headers=headers).status_code == 422
    assert httpx.get(f"{d.url}/metrics?format=prometheus").status_code == 401


@pytest.mark.skipif(PROMETHEUS is None, reason="no prometheus: `apt-get install prometheus` (make test does)")
def test_a_real_prometheus_scrapes_the_deployment_and_promql_counts_the_requests(two_servers, tmp_path):
    d, X = two_servers
    # Given a Prometheus on loopback scraping the deployment every second with its key
    port = _free_port()
    target = d.url.removeprefix("http://")
    (tmp_path / "prometheus.yml").write_text(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n"
        "scrape_configs:\n"
        "  - job_name: mlops_lab\n"
        "    metrics_path: /metrics\n"
        f"    authorization:\n      credentials: {d.keys['primary']}\n"
        f"    static_configs:\n      - targets: ['{target}']\n"
    )
    log = open(tmp_path / "prometheus.log", "wb")
    prom = subprocess.Popen(
        [PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'data'}",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log, stderr=subprocess.STDOUT,
    )
    api = f"http://127.0.0.1:{port}/api/v1"
    try:
        # When requests are sent to both servers
        pids = _spread_requests(d, X, 40, 3)
        assert len(pids) == 2
        # Then, after the last scrape, PromQL counts exactly what was sent
        query = 'sum by (http_response_code) (mlops_lab_request_total{job="mlops_lab",deployment="svc",endpoint="score"})'
        deadline, got = time.time() + 30, {}
        while time.time() < deadline:
            try:
                doc = httpx.get(f"{api}/query", params={"query": query}, timeout=5).json()
                got = {s["metric"]["http_response_code"]: float(s["value"][1]) for s in doc["data"]["result"]}
            except httpx.HTTPError:
                got = {}
            if got == {"200": 40.0, "422": 3.0}:
                break
            time.sleep(0.5)
        assert got == {"200": 40.0, "422": 3.0}, (tmp_path / "prometheus.log").read_text()[-2000:]
        # the scrape itself was healthy, and a histogram quantile reads
        targets = httpx.get(f"{api}/targets", timeout=5).json()["data"]["activeTargets"]
        assert [t["health"] for t in targets] == ["up"]
        q = 'histogram_quantile(0.5, sum by (le) (mlops_lab_request_duration_seconds_bucket{deployment="svc"}))'
        p50 = float(httpx.get(f"{api}/query", params={"query": q}, timeout=5).json()["data"]["result"][0]["value"][1])
        assert 0 < p50 < 1
    finally:
        prom.terminate()
        prom.wait(10)
        log.close()
