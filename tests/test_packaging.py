"""Packages and edge bundles: what goes in, and a bundle that runs offline in a fresh folder."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tarfile
import textwrap

import numpy as np
import pytest

import mlops_lab as ml
from mlops_lab.packaging import MANIFEST, export_bundle, package


@pytest.fixture
def registered(sqlite_registry, iris, trained):
    X, _ = iris
    ml.register_model(trained, "iris", sample_input=X.iloc[:3], baseline=X)
    return X


def test_package_layout(registered, tmp_path):
    pkg = package("iris:1", tmp_path / "ctx", wheels=False, progress=False)
    names = sorted(p.name for p in pkg.folder.iterdir())
    assert names == [".dockerignore", "Dockerfile", MANIFEST, "models", "requirements.txt", "run.sh", "spec.json", "src"]
    spec = json.loads((pkg.folder / "spec.json").read_text())
    assert spec["models"] == [{"name": "iris", "version": 1, "traffic": 100, "folder": "models/iris-1"}]
    assert spec["keys_file"] is None and spec["collect"]["folder"] == "collected"
    # the model's own requirements and the server's, pinned
    reqs = (pkg.folder / "requirements.txt").read_text().split()
    import sklearn
    import starlette

    assert f"scikit-learn=={sklearn.__version__}" in reqs and f"starlette=={starlette.__version__}" in reqs
    assert any(r.startswith("pyarrow==") for r in reqs)
    # the server's source, without the notebook and Jupyter faces
    assert (pkg.folder / "src/mlops_lab/serving/server.py").is_file()
    assert not (pkg.folder / "src/mlops_lab/server").exists() and not (pkg.folder / "src/mlops_lab/widgets.py").exists()
    dockerfile = (pkg.folder / "Dockerfile").read_text()
    assert "ARG BASE_IMAGE=python:3.11-slim" in dockerfile and "--no-index" in dockerfile
    assert json.loads((pkg.folder / MANIFEST).read_text())["refs"] == ["iris:1"]
    # no collection: no pyarrow; and a folder that is not empty is refused, untouched
    pkg2 = package("iris:1", tmp_path / "ctx2", wheels=False, collect=False, progress=False)
    assert not any(r.startswith("pyarrow") for r in pkg2.requirements)
    with pytest.raises(ml.InvalidInput, match="not empty"):
        package("iris:1", tmp_path / "ctx", wheels=False, progress=False)
    assert (tmp_path / "ctx" / "spec.json").is_file()


def test_a_package_for_a_missing_platform_fails_clearly_and_leaves_nothing(registered, tmp_path):
    with pytest.raises(ml.InvalidInput, match="cannot gather the wheels for no_such_platform"):
        package("iris:1", tmp_path / "ctx", platform="no_such_platform", progress=False)
    assert not (tmp_path / "ctx").exists()


CLIENT = textwrap.dedent("""
    import json, os, subprocess, sys, time, urllib.request
    port, key = sys.argv[1], sys.argv[2]
    env = dict(os.environ, PORT=port, HOST="127.0.0.1")
    server = subprocess.Popen(["./run.sh"], env=env, stdout=subprocess.DEVNULL, stderr=open("server.log", "wb"))
    url = f"http://127.0.0.1:{port}"
    for _ in range(600):
        try:
            urllib.request.urlopen(url + "/health", timeout=1)
            break
        except OSError:
            if server.poll() is not None:
                sys.exit("server exited: " + open("server.log").read()[-2000:])
            time.sleep(0.1)
    body = open("rows.json", "rb").read()
    out = {}
    for name, headers in (("with_key", {"Authorization": "Bearer " + key}), ("without_key", {})):
        req = urllib.request.Request(url + "/score", data=body, headers={"Content-Type": "application/json", **headers})
        try:
            out[name] = json.loads(urllib.request.urlopen(req, timeout=30).read())
        except urllib.error.HTTPError as exc:
            out[name] = exc.code
    server.terminate()
    server.wait(30)
    print(json.dumps(out))
""")


@pytest.mark.skipif(not shutil.which("unshare"), reason="needs unshare(1) to cut the network")
def test_edge_bundle_runs_offline_in_a_fresh_folder_and_answers_like_the_registry(registered, tmp_path):
    X = registered
    tarball, keys = export_bundle("iris:1", tmp_path / "iris-edge.tar.gz", progress=False)
    assert tarball.is_file() and set(keys) == {"primary", "secondary"}
    with tarfile.open(tarball) as tar:
        names = tar.getnames()
        assert "iris-edge/run.sh" in names and "iris-edge/keys/keys.json" in names
        assert any(n.startswith("iris-edge/wheels/scikit_learn-") for n in names)
        keys_json = json.loads(tar.extractfile("iris-edge/keys/keys.json").read())
        assert keys["primary"] not in json.dumps(keys_json)  # hashes only
        device = tmp_path / "device"
        tar.extractall(device, filter="data")
    bundle = device / "iris-edge"
    rows = X.iloc[:40]
    (bundle / "rows.json").write_text(json.dumps({"data": rows.to_dict(orient="records")}))
    (bundle / "client.py").write_text(CLIENT)
    # A network namespace with only a loopback: no index, no proxy, nothing but the bundle.
    proc = subprocess.run(
        ["unshare", "-n", "sh", "-c", f"ip link set lo up && {sys.executable} client.py 18080 {keys['primary']}"],
        cwd=bundle, capture_output=True, text=True, timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    expected = ml.load_model("iris:1").predict(rows)
    assert out["with_key"] == np.asarray(expected).tolist()
    assert out["without_key"] == 401
    assert (bundle / ".venv" / "bin" / "python").exists()  # a fresh virtual environment, made by run.sh
    # what it collected is readable like any deployment's data (staged or compacted already)
    from mlops_lab.monitoring.data import read_requests

    [folder] = [p for p in (bundle / "collected").iterdir() if p.is_dir()]
    collected = read_requests(folder).to_pandas()
    assert len(collected) == len(rows) and (collected["status_code"] == 200).all()


def test_onnx_export_answers_like_the_model(registered, tmp_path):
    pytest.importorskip("skl2onnx")
    ort = pytest.importorskip("onnxruntime")
    X = registered
    folder, keys = export_bundle("iris:1", tmp_path / "edge", onnx=True, auth=False, progress=False)
    assert keys == {} and not (folder / "keys").exists()
    session = ort.InferenceSession(str(folder / "model.onnx"))
    name = session.get_inputs()[0].name
    labels = session.run(None, {name: X.to_numpy(dtype=np.float32)})[0]
    np.testing.assert_array_equal(labels, ml.load_model("iris:1").predict(X))
    # a model without a converter: asked for, a clear error; by default, skipped
    ml.register_model(lambda rows: [0 for _ in rows], "fn", sample_input=[[1.0, 2.0]])
    with pytest.raises(ml.InvalidInput, match="fn:1 cannot be exported to ONNX"):
        export_bundle("fn:1", tmp_path / "fn-edge", onnx=True, progress=False)
    assert not (tmp_path / "fn-edge").exists()  # nothing half-made is left
    folder, _ = export_bundle("fn:1", tmp_path / "fn-edge2", progress=False)
    assert not (folder / "model.onnx").exists() and (folder / "run.sh").exists()
