"""Serving benchmark: mlops_lab against MLflow, BentoML, MLServer and KServe, in one run, driven by wrk.

Model shapes (the same fitted objects for every server), 20 features:

* ``lr-df``, ``rf-df``: LogisticRegression and a 100-tree RandomForest fitted on a pandas
  DataFrame with feature names, registered with a DataFrame sample (as most users fit them);
* ``lr-arr``, ``rf-arr``: the same fitted on a NumPy array, registered with an array sample;
* ``pipe``: StandardScaler + OneHotEncoder (one categorical column of three levels) +
  LogisticRegression in a ColumnTransformer pipeline, fitted on a DataFrame.

Servers, each with 2 workers where the peer allows, all on loopback, each sent what its own users
send (``bench/peers/``):

* ``mlops_lab``: ``mlops_lab.deploy(..., workers=2)``, key auth, signature validation and data
  collection on; ``/invocations`` with ``{"inputs": rows}``;
* ``mlflow``: ``mlflow models serve --env-manager local --workers 2`` from a plain
  ``pip install mlflow`` (``bench/.venv-mlflow``); ``dataframe_split`` for DataFrame models;
* ``bentoml``: a ``@bentoml.service(workers=2)`` with one ``@bentoml.api`` taking rows;
* ``mlserver``: MLServer with mlserver-sklearn's ``SKLearnModel``, ``parallel_workers: 2``; the v2
  protocol, one [N, F] tensor, or one input per column with the pandas codec for DataFrames;
* ``kserve``: ``kserve.ModelServer(workers=2)`` with a small ``kserve.Model``; v1
  ``{"instances": rows}``;
* ``bare``: uvicorn + Starlette + orjson calling the model on an array (a DataFrame for the
  pipeline), nothing else: the ceiling of the stack (``bench/_bare_server.py``);
* ``noop``: the same stack answering a constant (``bench/peers/noop_server.py``);
* ``shadow``: ``mlops_lab`` with the same model registered again and run as its shadow on every
  request (``update(..., shadow=True)``): what a shadow costs the serving version.

Every server's answer is checked against the model's own ``predict`` before it is measured. The
peers' environments are made on first run (``bench/.venv-<peer>``). Load: ``wrk`` at 1, 8 and 64
connections, 1-row and 100-row requests; each cell runs ``--rounds`` times with the servers taking
turns, and the table keeps the medians. Start-up (spawn to ready) is timed on every start.

Run: ``make bench-serving`` or ``python bench/serving.py [--shapes lr-df,pipe] [--servers ...]
[--duration 5] [--rounds 2]``.
"""

from __future__ import annotations

import argparse
import compileall
import json
import os
import pickle
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from registry import machine  # noqa: E402


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 120.0) -> float:
    t0 = time.perf_counter()
    while time.perf_counter() - t0 < timeout:
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if r.status == 200:
                    return time.perf_counter() - t0
        except OSError:
            time.sleep(0.02)
    raise RuntimeError(f"{url} not ready after {timeout} s")


def wrk(url: str, body: str, conns: int, duration: float, headers: dict[str, str]) -> dict[str, float]:
    if shutil.which("wrk") is None:
        raise SystemExit("the benchmarks drive the servers with wrk, which is not installed: apt-get install wrk")
    lua = Path(tempfile.mkstemp(suffix=".lua")[1])
    hdrs = "".join(f'wrk.headers["{k}"] = "{v}"\n' for k, v in headers.items())
    lua.write_text(f'wrk.method = "POST"\nwrk.body = [==[{body}]==]\nwrk.headers["Content-Type"] = "application/json"\n{hdrs}')
    threads = 1 if conns == 1 else 2
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{conns}", f"-d{max(1, round(duration))}s", "--latency", "-s", str(lua), url],
        capture_output=True, text=True, check=True,
    ).stdout
    lua.unlink()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: (.*)", out)

    def pct(p: str) -> float:
        m = re.search(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$", out, re.M)
        value, unit = float(m.group(1)), m.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value

    return {
        "rps": rps, "p50": pct("50"), "p99": pct("99"),
        "non2xx": int(non2xx.group(1)) if non2xx else 0, "errors": errors.group(1) if errors else "",
    }


SHAPES = ("lr-df", "rf-df", "lr-arr", "rf-arr", "pipe")
PEERS = {  # the packages of each peer's environment (scikit-learn at this environment's version)
    "bentoml": ["bentoml==1.4.40", "pandas"],
    "mlserver": ["mlserver==1.7.1", "mlserver-sklearn==1.7.1", "uvloop==0.21.0"],  # 1.7.1's workers fail with uvloop 0.23
    "kserve": ["kserve==0.21.*", "pandas<3"],
}


class Shape:
    """One fitted model, its data, and what each server is sent for it."""

    def __init__(self, name: str) -> None:
        import pandas as pd
        from sklearn.compose import ColumnTransformer
        from sklearn.ensemble import RandomForestClassifier
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import OneHotEncoder, StandardScaler

        rng = np.random.RandomState(0)
        X = rng.rand(2000, 20)
        y = (X[:, 0] + X[:, 1] + 0.1 * rng.randn(2000) > 1).astype(int)
        self.name = name
        self.columns = [f"f{i}" for i in range(20)]
        self.frame = not name.endswith("-arr")
        self.needs_frame = name == "pipe"
        if name == "pipe":
            data = pd.DataFrame(X[:, :19], columns=self.columns[:19]).assign(colour=np.array(["red", "green", "blue"])[rng.randint(0, 3, 2000)])
            self.columns = list(data.columns)
            model = make_pipeline(
                ColumnTransformer([("num", StandardScaler(), self.columns[:19]), ("cat", OneHotEncoder(handle_unknown="ignore"), ["colour"])]),
                LogisticRegression(max_iter=500),
            )
        else:
            data = pd.DataFrame(X, columns=self.columns) if self.frame else X
            model = LogisticRegression() if name.startswith("lr") else RandomForestClassifier(n_estimators=100, random_state=0)
        self.model = model.fit(data, y)
        self.data = data

    def rows(self, n: int) -> list:
        head = self.data.head(n) if self.frame else self.data[:n]
        values = head.to_numpy().tolist() if self.frame else head.tolist()
        return [[round(v, 6) if isinstance(v, float) else v for v in r] for r in values]

    def sample(self):
        return self.data.head(5) if self.frame else self.data[:5]

    def expected(self, n: int) -> list:
        return self.model.predict(self.data.head(n) if self.frame else self.data[:n]).tolist()

    def body(self, server: str, n: int) -> dict:
        rows = self.rows(n)
        if server == "mlflow" and self.frame:
            return {"dataframe_split": {"columns": self.columns, "data": rows}}
        if server == "bentoml":
            return {"inputs": rows}
        if server == "kserve":
            return {"instances": rows}
        if server == "mlserver":
            if not self.frame:
                return {"inputs": [{"name": "input-0", "shape": [n, len(rows[0])], "datatype": "FP64",
                                    "data": [v for r in rows for v in r]}]}
            cols = list(zip(*rows))
            return {"parameters": {"content_type": "pd"}, "inputs": [
                {"name": c, "shape": [n], "datatype": "BYTES", "data": list(v), "parameters": {"content_type": "str"}}
                if isinstance(v[0], str) else {"name": c, "shape": [n], "datatype": "FP64", "data": list(v)}
                for c, v in zip(self.columns, cols)]}
        return {"inputs": rows}


def answer(server: str, doc) -> list:
    """The predictions in a server's answer."""
    if server == "bentoml":
        return doc
    if server == "mlserver":
        return doc["outputs"][0]["data"]
    return doc["predictions"]


def floor_us(predict, X, rows: int, n: int = 300) -> float:
    x = X[:rows]
    predict(x)
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        predict(x)
        times.append(time.perf_counter() - t0)
    return float(np.median(times) * 1e6)


def mlflow_venv() -> str:
    """A virtual environment with only what `pip install mlflow scikit-learn` brings (same
    versions as here): MLflow as its users run it. mlops_lab's own environment has uvloop and
    httptools, which MLflow's server would pick up and which a plain MLflow install lacks."""
    import mlflow
    import sklearn

    venv = ROOT / "bench" / ".venv-mlflow"
    python = venv / "bin" / "python"
    if not python.exists():
        print(f"creating {venv} (pip install mlflow=={mlflow.__version__} scikit-learn=={sklearn.__version__}) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", f"mlflow=={mlflow.__version__}",
                        f"scikit-learn=={sklearn.__version__}"], check=True)
    return str(python)


def peer_venv(peer: str) -> str:
    """The interpreter of ``bench/.venv-<peer>``, made on first use."""
    import sklearn

    venv = ROOT / "bench" / f".venv-{peer}"
    python = venv / "bin" / "python"
    if not python.exists():
        pkgs = [*PEERS[peer], f"scikit-learn=={sklearn.__version__}"]
        print(f"creating {venv} (pip install {' '.join(pkgs)}) ...", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", *pkgs], check=True)
    return str(python)


def save_mlflow_model(root: Path, model, X, name: str) -> Path:
    import logging
    import warnings

    logging.getLogger("mlflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    import mlflow
    from mlflow.models import infer_signature

    path = root / f"mlflow-{name}"
    mlflow.sklearn.save_model(
        model, str(path), signature=infer_signature(X[:5], model.predict(X[:5])), input_example=X[:2],
        serialization_format="cloudpickle",  # MLflow 3 refuses trees with its default (skops)
    )
    return path


def start_mlflow(python: str, path: Path, workers: int) -> tuple[subprocess.Popen, str, float]:
    port = free_port()
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [python, "-m", "mlflow", "models", "serve", "-m", str(path), "-p", str(port), "-h", "127.0.0.1",
         "--env-manager", "local", "--workers", str(workers)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        # MLflow starts its server with `uvicorn` from PATH: that interpreter's.
        env={**os.environ, "PATH": str(Path(python).parent) + os.pathsep + os.environ.get("PATH", "")},
    )
    wait_http(f"http://127.0.0.1:{port}/ping")
    return proc, f"http://127.0.0.1:{port}", time.perf_counter() - t0


def _spawn(cmd: list[str], ready: str, port: int, *, cwd: Path, env: dict[str, str], log: Path | None = None
           ) -> tuple[subprocess.Popen, str, float]:
    t0 = time.perf_counter()
    out = open(log, "wb") if log else subprocess.DEVNULL
    proc = subprocess.Popen(cmd, cwd=str(cwd), env={**os.environ, **env}, stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        wait_http(f"http://127.0.0.1:{port}{ready}", timeout=180)
    except RuntimeError:
        stop(proc)
        raise RuntimeError(f"{cmd[:3]} did not get ready" + (f": {log.read_text()[-2000:]}" if log else "")) from None
    return proc, f"http://127.0.0.1:{port}", time.perf_counter() - t0


def start_bare(root: Path, shape: Shape, workers: int) -> tuple[subprocess.Popen, str, float]:
    pkl = root / f"bare-{shape.name}.pkl"
    pkl.write_bytes(pickle.dumps((shape.model, shape.columns if shape.frame else None)))
    port = free_port()
    return _spawn([sys.executable, "-m", "uvicorn", "_bare_server:app", "--host", "127.0.0.1", "--port", str(port),
                   "--workers", str(workers), "--loop", "uvloop", "--http", "httptools", "--no-access-log",
                   "--log-level", "warning"], "/ping", port, cwd=ROOT / "bench",
                  env={"MODEL_PICKLE": str(pkl), **({"BARE_FRAME": "1"} if shape.needs_frame else {})})


def start_noop(root: Path, shape: Shape, workers: int) -> tuple[subprocess.Popen, str, float]:
    port = free_port()
    return _spawn([sys.executable, "-m", "uvicorn", "noop_server:app", "--host", "127.0.0.1", "--port", str(port),
                   "--workers", str(workers), "--loop", "uvloop", "--http", "httptools", "--no-access-log",
                   "--log-level", "warning"], "/ping", port, cwd=ROOT / "bench" / "peers", env={})


def _peer_pickle(root: Path, shape: Shape) -> Path:
    pkl = root / f"peer-{shape.name}.pkl"
    pkl.write_bytes(pickle.dumps((shape.model, shape.columns if shape.frame else None)))
    return pkl


def start_bentoml(root: Path, shape: Shape, workers: int) -> tuple[subprocess.Popen, str, float]:
    python = peer_venv("bentoml")
    port = free_port()
    return _spawn([python, "-m", "bentoml", "serve", "bentoml_service:Model", "--host", "127.0.0.1", "--port", str(port)],
                  "/readyz", port, cwd=ROOT / "bench" / "peers",
                  env={"MODEL_PICKLE": str(_peer_pickle(root, shape)), "WORKERS": str(workers),
                       "BENTOML_HOME": str(root / "bentoml"), "BENTOML_DO_NOT_TRACK": "true"},
                  log=root / f"bentoml-{shape.name}.log")


def start_mlserver(root: Path, shape: Shape, workers: int) -> tuple[subprocess.Popen, str, float]:
    import joblib

    python = peer_venv("mlserver")
    folder = root / f"mlserver-{shape.name}"
    folder.mkdir(exist_ok=True)
    joblib.dump(shape.model, folder / "model.joblib")
    port = free_port()
    (folder / "settings.json").write_text(json.dumps({
        "host": "127.0.0.1", "http_port": port, "grpc_port": free_port(), "metrics_port": free_port(),
        "parallel_workers": workers, "debug": False,
    }))
    (folder / "model-settings.json").write_text(json.dumps({
        "name": "model", "implementation": "mlserver_sklearn.SKLearnModel", "parameters": {"uri": "./model.joblib"},
    }))
    return _spawn([str(Path(python).parent / "mlserver"), "start", str(folder)], "/v2/models/model/ready", port,
                  cwd=folder, env={}, log=root / f"mlserver-{shape.name}.log")


def start_kserve(root: Path, shape: Shape, workers: int) -> tuple[subprocess.Popen, str, float]:
    python = peer_venv("kserve")
    port = free_port()
    # KServe listens on 0.0.0.0 whatever it is told; the load goes to 127.0.0.1 only. It logs
    # three lines a request: to a file of the run's folder, deleted with it.
    return _spawn([python, "kserve_server.py", "--http_port", str(port), "--workers", str(workers)],
                  "/v1/models/model", port, cwd=ROOT / "bench" / "peers",
                  env={"MODEL_PICKLE": str(_peer_pickle(root, shape))}, log=root / f"kserve-{shape.name}.log")


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


SERVERS = ("mlops_lab", "mlflow", "bentoml", "mlserver", "kserve", "bare", "noop", "shadow")
PATHS = {"bentoml": "/predict", "mlserver": "/v2/models/model/infer", "kserve": "/v1/models/model:predict"}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    ap.add_argument("--conns", default="1,8,64")
    ap.add_argument("--rows", default="1,100")
    ap.add_argument("--shapes", default=",".join(SHAPES))
    ap.add_argument("--servers", default=",".join(SERVERS))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2,
                    help="runs per cell, the servers taking turns; the median of each figure is kept")
    ap.add_argument("--mlflow-python", help="interpreter of a plain MLflow install (default: bench/.venv-mlflow, made on first run)")
    args = ap.parse_args(argv)
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    conns = [int(c) for c in args.conns.split(",")]
    rows_list = [int(r) for r in args.rows.split(",")]
    names = args.servers.split(",")
    unknown = set(names) - set(SERVERS)
    if unknown:
        sys.exit(f"unknown servers: {', '.join(sorted(unknown))}")

    mf_python = args.mlflow_python or mlflow_venv() if "mlflow" in names else None
    for peer in PEERS:
        if peer in names:
            peer_venv(peer)
    print(f"machine: {machine()}")
    if "mlflow" in names:
        import mlflow

        print(f"MLflow {mlflow.__version__}")
    print(f"{args.workers} workers per server; wrk {args.duration:g} s per run, "
          f"{args.rounds} run(s) per cell with the servers taking turns (medians)")
    # As a wheel install leaves it: mlops_lab's modules byte-compiled (an editable install under
    # PYTHONDONTWRITEBYTECODE=1 would otherwise compile them in every server process it starts).
    compileall.compile_dir(str(ROOT / "mlops_lab"), quiet=1)
    tmp = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    os.environ["MLOPS_LAB_HOME"] = str(tmp / "home")
    os.environ.pop("MLOPS_LAB_DB", None)
    import mlops_lab as ml
    from mlops_lab.deployers.base import wait_until

    results: list[tuple] = []
    ready: dict[str, list[float]] = {n: [] for n in names}
    try:
        for shape_name in args.shapes.split(","):
            shape = Shape(shape_name)
            ml.register_model(shape.model, shape_name, sample_input=shape.sample())
            for rows in rows_list:
                print(f"{shape_name}: in-process predict on {rows} row(s): {floor_us(shape.model.predict, shape.data, rows):.0f} us (median)")
            procs, servers = [], []
            try:
                for sname in names:
                    if sname in ("mlops_lab", "shadow"):
                        t0 = time.perf_counter()
                        dep = ml.deploy(f"{shape_name}:1", name=f"{shape_name}-{sname}", workers=args.workers, progress=False)
                        ready[sname].append(time.perf_counter() - t0)
                        if sname == "shadow":  # the same model as version 2, in the shadow of version 1
                            ml.register_model(shape.model, shape_name, sample_input=shape.sample())
                            dep.update(f"{shape_name}:2", shadow=True, progress=False)
                        # deploy() returns with the first server; the others join within seconds
                        wait_until(lambda dep=dep: len(dep.status().details["servers"]) == args.workers, timeout=60)
                        servers.append((sname, dep.url + "/invocations", {"Authorization": f"Bearer {dep.keys['primary']}"}))
                        continue
                    if sname == "mlflow":
                        path = save_mlflow_model(tmp, shape.model, shape.data, shape_name)
                        proc, url, secs = start_mlflow(mf_python, path, args.workers)
                    else:
                        proc, url, secs = globals()[f"start_{sname}"](tmp, shape, args.workers)
                    procs.append(proc)
                    ready[sname].append(secs)
                    servers.append((sname, url + PATHS.get(sname, "/invocations"), {}))
                for rows in rows_list:
                    want = shape.expected(rows)
                    bodies = {sname: json.dumps(shape.body(sname, rows)) for sname, _, _ in servers}
                    for sname, url, headers in servers:  # every server must answer this body, and rightly
                        req = urllib.request.Request(url, data=bodies[sname].encode(), headers={**headers, "Content-Type": "application/json"})
                        with urllib.request.urlopen(req, timeout=60) as resp:
                            got = json.loads(resp.read())
                        if sname != "noop" and [int(v) for v in answer(sname, got)] != want:
                            raise RuntimeError(f"{sname} answered {answer(sname, got)[:5]} for {shape_name}, expected {want[:5]}")
                    for c in conns:
                        runs: dict[str, list[dict]] = {sname: [] for sname, _, _ in servers}
                        for k in range(args.rounds):
                            for sname, url, headers in servers:
                                if k == 0:
                                    wrk(url, bodies[sname], c, 1.0, headers)  # warm-up
                                r = wrk(url, bodies[sname], c, args.duration, headers)
                                runs[sname].append(r)
                                bad = f"  NON-2XX {r['non2xx']}" if r["non2xx"] else ""
                                print(f"  {shape_name:<6} rows={rows:<3} conns={c:<3} {sname:<9} {r['rps']:>9.1f} req/s  "
                                      f"p50 {r['p50']:>8.2f} ms  p99 {r['p99']:>8.2f} ms{bad}", flush=True)
                        for sname, rs in runs.items():
                            results.append((shape_name, rows, c, sname, {
                                key: statistics.median(r[key] for r in rs) for key in ("rps", "p50", "p99")
                            }))
                if "shadow" in names:  # how much of the copies the shadow's idle-priority worker kept up with
                    time.sleep(1.5)  # its counters are written once a second
                    sd = ml.get_deployment(f"{shape_name}-shadow")
                    req = urllib.request.Request(f"{sd.url}/metrics", headers={
                        "Authorization": f"Bearer {sd.keys['primary']}", "Accept": "text/plain"})
                    with urllib.request.urlopen(req, timeout=30) as resp:
                        text = resp.read().decode()
                    outcomes = {m.group(1): int(m.group(2)) for m in re.finditer(
                        r'^mlops_lab_shadow_request_total\{[^}]*outcome="([^"]+)"\} (\d+)$', text, re.M)}
                    total = sum(outcomes.values()) or 1
                    print(f"{shape_name}: the shadow answered {outcomes.get('200', 0):,} copies and dropped "
                          f"{outcomes.get('dropped', 0):,} ({outcomes.get('dropped', 0) / total:.0%}) over all its cells", flush=True)
            finally:
                for d in ml.list_deployments():
                    d.delete()
                for proc in procs:
                    stop(proc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    peers = [n for n in ("mlflow", "bentoml", "mlserver", "kserve") if n in names]
    print()
    print("| shape | rows | conns | " + " | ".join(f"{n} req/s" for n in names)
          + " | x best peer | x no-op | x MLflow | p50 ms: ours / best peer | p99 ms: ours / best peer |")
    print("| --- | ---: | ---: | " + " | ".join("---:" for _ in names) + " | ---: | ---: | ---: | ---: | ---: |")
    table: dict[tuple, dict] = {}
    for shape_name, rows, c, sname, r in results:
        table.setdefault((shape_name, rows, c), {})[sname] = r
    for (shape_name, rows, c), by in table.items():
        cells = [f"{by[n]['rps']:.0f}" for n in names]
        ours = by.get("mlops_lab")
        best = max((by[n] for n in peers), key=lambda r: r["rps"], default=None)
        best_name = max(peers, key=lambda n: by[n]["rps"]) if peers else ""

        def ratio(other, ours=ours):
            return f"{ours['rps'] / other['rps']:.2f}x" if ours and other else "-"

        print(f"| {shape_name} | {rows} | {c} | " + " | ".join(cells)
              + f" | {ratio(best)} ({best_name}) | {ratio(by.get('noop'))} | {ratio(by.get('mlflow'))} | "
              + (f"{ours['p50']:.2f} / {best['p50']:.2f} | {ours['p99']:.2f} / {best['p99']:.2f} |" if ours and best else "- | - |"))
    if "shadow" in names and "mlops_lab" in names:
        print()
        print("shadow cost: the same deployment with the same model in the shadow on every request, against none")
        print("| shape | rows | conns | req/s: none / shadow | p50 ms: none / shadow | p99 ms: none / shadow | p50 cost |")
        print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for (shape_name, rows, c), by in table.items():
            a, b = by["mlops_lab"], by["shadow"]
            print(f"| {shape_name} | {rows} | {c} | {a['rps']:.0f} / {b['rps']:.0f} | {a['p50']:.2f} / {b['p50']:.2f} | "
                  f"{a['p99']:.2f} / {b['p99']:.2f} | {b['p50'] / a['p50'] - 1:+.1%} |")
    print()
    print("start-up, spawn to ready (median over shapes): " + ", ".join(
        f"{n} {statistics.median(ts):.2f} s" for n, ts in ready.items() if ts))
    return 0


if __name__ == "__main__":
    sys.exit(main())
