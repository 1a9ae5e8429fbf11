"""The CLI as a CI pipeline uses it: real processes, JSON output, exit codes to branch on."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys

import pytest


def run(*args, check_code=0):
    proc = subprocess.run([sys.executable, "-m", "mlops_lab.cli", *args], capture_output=True, text=True, timeout=180)
    assert proc.returncode == check_code, (proc.returncode, proc.stdout, proc.stderr)
    return proc


def test_register_deploy_score_promote_undeploy(sqlite_registry, tmp_path, iris, trained):
    X, _ = iris
    (tmp_path / "clf.pkl").write_bytes(pickle.dumps(trained))
    out = json.loads(run("register", str(tmp_path / "clf.pkl"), "--name", "iris", "--tag", "stage=ci", "--json").stdout)
    assert out["ref"] == "iris:1" and out["tags"] == {"stage": "ci"}
    run("register", str(tmp_path / "clf.pkl"), "--name", "iris")
    models = json.loads(run("models", "--json").stdout)
    assert [{k: m[k] for k in ("name", "versions", "latest_version", "aliases", "description")} for m in models] == [
        {"name": "iris", "versions": 2, "latest_version": 2, "aliases": {}, "description": ""}]

    dep = json.loads(run("deploy", "iris:1", "--name", "staging", "--json").stdout)
    assert dep["url"].startswith("http://127.0.0.1:") and dep["keys"]["primary"]
    rows = X.iloc[:3].to_numpy().tolist()
    scored = json.loads(run("score", "staging", "--data", json.dumps({"data": rows})).stdout)
    assert scored == trained.predict(X.iloc[:3].to_numpy()).tolist()
    status = json.loads(run("status", "staging", "--json").stdout)
    assert status["state"] == "healthy" and status["revision"] == 1

    # promote by moving the production alias, then point the deployment at it
    run("alias", "iris", "production", "2")
    upd = json.loads(run("update", "staging", "iris@production", "--json").stdout)
    assert upd["revision"] == 2 and upd["models"][0]["version"] == 2
    assert json.loads(run("deployments", "--json").stdout)[0]["name"] == "staging"
    assert "ready on http://127.0.0.1" in run("logs", "staging").stdout
    restarted = json.loads(run("restart", "staging", "--json").stdout)
    assert restarted["url"] == upd["url"] and restarted["revision"] == 2
    assert json.loads(run("status", "staging", "--json").stdout)["state"] == "healthy"
    metrics = json.loads(run("monitor", "staging", "--json").stdout)
    assert isinstance(metrics, list)
    run("monitor", "staging", "--export", str(tmp_path / "chart.json"))
    assert json.loads((tmp_path / "chart.json").read_text())["$schema"].startswith("https://vega.github.io/schema/vega-lite/")
    assert json.loads(run("undeploy", "staging", "--json").stdout) == {"deleted": True}
    assert json.loads(run("undeploy", "staging", "--json").stdout) == {"deleted": False}


@pytest.mark.parametrize(
    "args, code, fragment",
    [
        (("models", "irsi"), 3, "did you mean 'iris'"),
        (("status", "nowhere"), 3, "no deployment named 'nowhere'"),
        (("register", "missing.pkl", "--name", "x"), 4, "no such file or folder"),
        (("register", "missing.pkl", "--name", "bad/name"), 4, "invalid model name"),
        (("deploy", "iris:7"), 3, "has no version 7"),
        (("score", "nowhere", "--data", "[[1"), 4, "--data is not JSON"),
    ],
)
def test_errors_are_one_line_with_distinct_exit_codes(sqlite_registry, tmp_path, trained, args, code, fragment):
    (tmp_path / "clf.pkl").write_bytes(pickle.dumps(trained))
    run("register", str(tmp_path / "clf.pkl"), "--name", "iris")
    proc = run(*args, check_code=code)
    assert fragment in proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    doc = json.loads(run(*args, "--json", check_code=code).stderr)
    assert fragment in doc["message"] or fragment in doc.get("hint", "") or fragment in str(doc)


def test_dry_run_prints_valid_kubernetes_manifests_and_export_makes_a_bundle(sqlite_registry, iris, trained, tmp_path):
    import yaml

    import mlops_lab as ml

    kv = pytest.importorskip("kubernetes_validate")
    X, _ = iris
    ml.register_model(trained, "iris", sample_input=X.iloc[:2])
    out = run("deploy", "iris:1", "--target", "kubernetes", "--dry-run", "-o", "image=reg.local/iris:1", "-o", "replicas=2",
              "-o", 'autoscale={"min": 2, "max": 4}')
    objs = list(yaml.safe_load_all(out.stdout))
    assert [o["kind"] for o in objs] == ["Secret", "ConfigMap", "Deployment", "Service", "HorizontalPodAutoscaler"]
    for o in objs:
        kv.validate(o, "1.37.0", strict=True)
    assert objs[2]["spec"]["replicas"] == 2
    assert ml.list_deployments() == []  # a dry run deploys nothing
    bad = run("deploy", "iris:1", "--dry-run", check_code=4)
    assert "--target kubernetes" in bad.stderr
    bad = run("deploy", "iris:1", "-o", "replicas=2", check_code=4)
    assert "takes no option 'replicas'" in bad.stderr
    out = run("export", "iris:1", str(tmp_path / "edge"), "--json")
    doc = json.loads(out.stdout)
    assert (tmp_path / "edge" / "run.sh").is_file() and set(doc["keys"]) == {"primary", "secondary"}


def test_a_shadow_from_the_cli_update_compare_delete_shadow(sqlite_registry, tmp_path, iris, trained):
    import time

    from sklearn.linear_model import LogisticRegression

    import mlops_lab as ml

    X, y = iris
    other = LogisticRegression(C=0.01, max_iter=500).fit(X, y)  # agrees with `trained` on most rows, not all
    for i, model in enumerate((trained, other)):
        (tmp_path / f"clf{i}.pkl").write_bytes(pickle.dumps(model))
        run("register", str(tmp_path / f"clf{i}.pkl"), "--name", "iris")
    run("deploy", "iris:1", "--name", "svc")
    proc = run("update", "svc", "iris:2", "--shadow", "2", check_code=4)
    assert "shadow must be True or the share of requests to copy" in proc.stderr
    upd = json.loads(run("update", "svc", "iris:2", "--shadow", "--json").stdout)
    assert [(m["version"], m.get("shadow")) for m in upd["models"]] == [(1, None), (2, 1.0)]
    rows = X.to_numpy().tolist()
    scored = json.loads(run("score", "svc", "--data", json.dumps({"data": rows})).stdout)
    assert scored == trained.predict(X.to_numpy()).tolist()  # the serving version's answers only
    deadline = time.monotonic() + 30
    while min(len(ml.collected_data("svc")), len(ml.collected_data("svc", shadow=True))) < len(X) and time.monotonic() < deadline:
        time.sleep(0.3)  # the serving and the shadow's answers are written apart, each in its own time
    readout = json.loads(run("compare", "svc", "--json").stdout)
    want = float((trained.predict(X.to_numpy()) == other.predict(X.to_numpy())).mean())
    assert (readout["kind"], readout["pairs"], readout["shadow"]) == ("classification", len(X), "iris:2")
    assert readout["agreement"] == pytest.approx(want) and want < 1
    assert run("compare", "svc").stdout.startswith(f"iris:2 agrees with iris:1 on {want:.1%} of 150 rows")
    assert json.loads(run("delete-shadow", "svc", "--json").stdout)["models"] == [
        {"name": "iris", "version": 1, "traffic": 100, "route": "iris"}]
    assert "has no shadow" in run("delete-shadow", "svc", check_code=4).stderr
    run("undeploy", "svc")
