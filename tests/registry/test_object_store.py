"""Artifacts on a real S3-compatible server (``rclone serve s3``): what goes wrong there gets one
line naming the store and the object, and nothing half-written stays visible. The team of two:
separate home folders, one PostgreSQL database, one bucket, no shared folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
import uuid

import pytest

import mlops_lab as ml
from mlops_lab.workspace import Workspace

pytestmark = pytest.mark.s3


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    for k, v in s3_server.env().items():
        monkeypatch.setenv(k, v)
    return s3_server


def _prefix(server) -> str:
    return f"s3://{server.bucket}/t-{uuid.uuid4().hex[:10]}"


def test_an_unknown_store_scheme_is_refused_by_name(tmp_path):
    ws = Workspace(home=tmp_path / "h", artifacts="gs://models/team")
    with pytest.raises(ml.InvalidInput, match=r"unknown artifact store 'gs://models/team': scheme 'gs'") as info:
        ws.list_models()
    assert "s3://bucket/prefix" in info.value.hint
    with pytest.raises(ml.InvalidInput, match="names no bucket"):
        Workspace(home=tmp_path / "h2", artifacts="s3:///x").list_models()


def test_a_missing_bucket_is_named_and_nothing_is_recorded(tmp_path, s3_env, trained):
    ws = Workspace(home=tmp_path / "h", artifacts="s3://no-such-bucket/models")
    with pytest.raises(ml.StorageError) as info:
        ws.register_model(trained, "iris")
    msg = str(info.value)
    assert "bucket 'no-such-bucket' does not exist at " + s3_env.endpoint in msg
    assert "s3://no-such-bucket/models/sha256/" in msg and "\n" not in msg
    assert ws.list_models() == [] and not any(ws.registry.artifacts.tmp.iterdir())


def test_wrong_credentials_are_named_and_nothing_is_recorded(tmp_path, s3_env, monkeypatch, trained):
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-the-secret")
    ws = Workspace(home=tmp_path / "h", artifacts=_prefix(s3_env))
    with pytest.raises(ml.StorageError, match=f"{s3_env.endpoint} refused the credentials") as info:
        ws.register_model(trained, "iris")
    assert "AWS_ACCESS_KEY_ID" in info.value.hint and ws.list_models() == []


def test_an_unreachable_store_is_named_quickly_and_nothing_is_recorded(tmp_path, s3_env, monkeypatch, trained):
    import socket

    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLOPS_LAB_S3_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    ws = Workspace(home=tmp_path / "h", artifacts=_prefix(s3_env))
    start = time.monotonic()
    with pytest.raises(ml.StorageError, match=f"the store at http://127.0.0.1:{port} does not answer"):
        ws.register_model(trained, "iris")
    assert time.monotonic() - start < 30
    assert ws.list_models() == []


def test_a_store_gone_after_registration_fails_loads_with_the_object_named(tmp_path, s3_env, monkeypatch, trained):
    db = f"sqlite:///{tmp_path / 'shared.db'}"
    uri = _prefix(s3_env)
    ws = Workspace(home=tmp_path / "a", db=db, artifacts=uri)
    mv = ws.register_model(trained, "iris")
    monkeypatch.setenv("MLOPS_LAB_S3_ENDPOINT_URL", "http://127.0.0.1:9")
    elsewhere = Workspace(home=tmp_path / "b", db=db, artifacts=uri)
    with pytest.raises(ml.StorageError) as info:
        elsewhere.load_model("iris:1")
    assert f"{uri}/sha256/{mv.files[0].sha256[:2]}/" in str(info.value) and "model.pkl" in str(info.value)
    # The CLI turns it into its storage exit code
    from mlops_lab.cli import main

    assert main(["models", "--home", str(tmp_path / "b"), "--db", db, "--artifacts", uri]) == 0
    assert main(["export", "iris:1", str(tmp_path / "out"), "--home", str(tmp_path / "b"), "--db", db,
                 "--artifacts", uri]) == 7


TEAMMATE = textwrap.dedent(
    """
    import json, sys, mlops_lab as ml
    step = sys.argv[1]
    if step == "register":
        from sklearn.linear_model import LogisticRegression
        from sklearn.datasets import load_iris
        X, y = load_iris(return_X_y=True, as_frame=True)
        mv = ml.register_model(LogisticRegression(max_iter=300).fit(X, y), "team-iris", sample_input=X.iloc[:5])
        print(json.dumps({"ref": mv.ref}))
    elif step == "deploy":
        models = [m.name for m in ml.list_models()]
        model = ml.load_model("team-iris:1")
        d = ml.deploy("team-iris:1", name="team-svc", collect={"flush_seconds": 0.3}, progress=False)
        pred = d.predict([[5.1, 3.5, 1.4, 0.2]])
        import httpx
        ids = [httpx.post(f"{d.url}/score", json={"data": [[6.0, 3.0, 4.8, 1.8], [5.0, 3.4, 1.5, 0.2]]},
                          headers={"Authorization": f"Bearer {d.keys['primary']}"}).headers["x-request-id"] for _ in range(5)]
        print(json.dumps({"models": models, "pred": pred, "url": d.url, "ids": ids}))
    elif step == "collected":
        import time
        deadline = time.monotonic() + 20
        while len(df := ml.collected_data("team-svc")) < 11 and time.monotonic() < deadline:
            time.sleep(0.2)
        subtitle = ml.monitor("team-svc").to_dict()["vconcat"][0]["title"]["subtitle"]
        print(json.dumps({"rows": len(df), "ids": sorted(set(df.request_id)), "subtitle": subtitle}))
    elif step == "delete-version":
        try:
            ml.delete_model_version("team-iris:1")
            print(json.dumps({"deleted": True}))
        except ml.VersionInUse as exc:
            print(json.dumps({"refused": str(exc)}))
    elif step == "undeploy":
        ml.get_deployment("team-svc").delete()
        print(json.dumps({"ok": True}))
    """
)


@pytest.mark.postgres
def test_a_team_of_two_shares_one_database_and_one_bucket_and_no_folder(tmp_path, s3_env, postgres_url):
    """Given A and B with their own home folders, one PostgreSQL database and one bucket, when
    A registers, B lists, loads and deploys it, A reads what B's deployment collected, and
    neither can delete the version it serves."""
    uri = _prefix(s3_env)
    base = {k: v for k, v in os.environ.items() if not k.startswith("MLOPS_LAB_")}
    env = {**base, **s3_env.env(), "MLOPS_LAB_DB": postgres_url, "MLOPS_LAB_ARTIFACTS": uri,
           "MLOPS_LAB_COLLECTION": uri + "-collected"}
    a = {**env, "MLOPS_LAB_HOME": str(tmp_path / "alice")}
    b = {**env, "MLOPS_LAB_HOME": str(tmp_path / "bob")}

    def run(who, step):
        proc = subprocess.run([sys.executable, "-c", TEAMMATE, step], env=who, capture_output=True, text=True,
                              timeout=180)
        assert proc.returncode == 0, proc.stderr[-3000:]
        return json.loads(proc.stdout.strip().splitlines()[-1])

    try:
        assert run(a, "register") == {"ref": "team-iris:1"}
        got = run(b, "deploy")
        assert got["models"] == ["team-iris"] and got["pred"] == [0]
        # What Bob's deployment collected, Alice reads from the bucket: rows and chart
        seen = run(a, "collected")
        assert seen["rows"] == 11 and set(got["ids"]) <= set(seen["ids"]) and len(seen["ids"]) == 6
        assert seen["subtitle"].startswith("6 requests")
        # Alice cannot delete the version Bob's deployment serves, nor can Bob
        assert "team-svc" in run(a, "delete-version")["refused"]
        assert "team-svc" in run(b, "delete-version")["refused"]
        # Nothing of the model lives in Alice's or Bob's home folder: it is all in the bucket
        for home in ("alice", "bob"):
            assert not (tmp_path / home / "artifacts").exists() and not (tmp_path / home / "collected").exists()
        assert (s3_env.root / uri.split("://", 1)[1] / "sha256").is_dir()
        assert list((s3_env.root / (uri.split("://", 1)[1] + "-collected") / "team-svc" / "requests").rglob("*.parquet"))
        assert run(b, "undeploy") == {"ok": True}
        assert run(a, "delete-version") == {"deleted": True}
    finally:
        subprocess.run([sys.executable, "-c", TEAMMATE, "undeploy"], env=b, capture_output=True, timeout=120)
