"""Serving benchmark: mlops_lab against MLflow's scoring server, in one run, driven by wrk.

Models: scikit-learn LogisticRegression and a 100-tree RandomForest on 20 features.
Servers, each with 2 worker processes, all on loopback:

* ``mlops_lab``: ``mlops_lab.deploy(..., workers=2)`` with key auth and signature validation on
  (and data collection once it exists), the embedded local deployer;
* ``mlflow``: ``mlflow models serve --env-manager local --workers 2`` on the same model;
* ``bare``: uvicorn + Starlette + orjson, the model called on a NumPy array (as mlops_lab calls
  it: a forest tree by tree), nothing else: the physical ceiling of this stack on this machine
  (``bench/_bare_server.py``).

Load: ``wrk`` (Debian package) at 1, 8 and 64 connections, 1-row and 100-row requests, the same
body (``{"inputs": [[...20 floats], ...]}`` to ``/invocations``) for every server. Also: the
in-process ``predict`` time (the floor; for the forest also scored tree by tree, as mlops_lab's
server does), and deploy-to-ready time for mlops_lab and MLflow, measured first for every model
while the machine is quiet (three deploys each, the median).

Run: ``make bench-serving`` or ``python bench/serving.py [--duration 5] [--rounds 3]`` (each cell
runs ``--rounds`` times with the servers taking turns; the table keeps the medians).
"""

from __future__ import annotations

import argparse
import compileall
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


def train(kind: str):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    rng = np.random.RandomState(0)
    X = rng.rand(2000, 20)
    y = (X[:, 0] + X[:, 1] + 0.1 * rng.randn(2000) > 1).astype(int)
    if kind == "lr":
        return LogisticRegression().fit(X, y), X
    return RandomForestClassifier(n_estimators=100, random_state=0).fit(X, y), X


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


def start_bare(root: Path, model, name: str, workers: int) -> tuple[subprocess.Popen, str]:
    pkl = root / f"bare-{name}.pkl"
    pkl.write_bytes(pickle.dumps(model))
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "_bare_server:app", "--host", "127.0.0.1", "--port", str(port),
         "--workers", str(workers), "--loop", "uvloop", "--http", "httptools", "--no-access-log", "--log-level", "warning"],
        cwd=str(ROOT / "bench"), env={**os.environ, "MODEL_PICKLE": str(pkl)},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )
    wait_http(f"http://127.0.0.1:{port}/ping")
    return proc, f"http://127.0.0.1:{port}"


def stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    ap.add_argument("--conns", default="1,8,64")
    ap.add_argument("--rows", default="1,100")
    ap.add_argument("--models", default="lr,rf")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=3,
                    help="runs per cell, the servers taking turns; the median of each figure is kept")
    ap.add_argument("--mlflow-python", help="interpreter of a plain MLflow install (default: bench/.venv-mlflow, made on first run)")
    args = ap.parse_args(argv)
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    conns = [int(c) for c in args.conns.split(",")]
    rows_list = [int(r) for r in args.rows.split(",")]

    import mlflow

    mf_python = args.mlflow_python or mlflow_venv()
    print(f"machine: {machine()}")
    print(f"MLflow {mlflow.__version__}; {args.workers} workers per server; wrk {args.duration:g} s per run, "
          f"{args.rounds} run(s) per cell with the servers taking turns (medians)")
    # As a wheel install leaves it: mlops_lab's modules byte-compiled (an editable install under
    # PYTHONDONTWRITEBYTECODE=1 would otherwise compile them in every server process it starts).
    compileall.compile_dir(str(ROOT / "mlops_lab"), quiet=1)
    tmp = Path(tempfile.mkdtemp(prefix="bench-serving-"))
    os.environ["MLOPS_LAB_HOME"] = str(tmp / "home")
    os.environ.pop("MLOPS_LAB_DB", None)
    import mlops_lab as ml
    from mlops_lab.deployers.base import wait_until
    from mlops_lab.serving.accel import faster_call

    results: list[tuple] = []
    ready_times = {}
    trained = {kind: train(kind) for kind in args.models.split(",")}
    try:
        # Deploy-to-ready first, for every model, on a quiet machine: after the load runs, the
        # compactors of the first deployment's collected data still use the idle CPU.
        for kind, (model, X) in trained.items():
            ml.register_model(model, kind, sample_input=X[:5])
            # the median of three for each (one sample moves by a few tenths)
            ours = []
            for i in range(3):
                t0 = time.perf_counter()
                dep = ml.deploy(kind, name=f"{kind}-ready-{i}", workers=args.workers, progress=False)
                ours.append(time.perf_counter() - t0)
                dep.delete()
            ready_times[("mlops_lab", kind)] = statistics.median(ours)
            mf_path = save_mlflow_model(tmp, model, X, kind)
            theirs = []
            for _ in range(3):
                mf_proc, mf_url, mf_ready = start_mlflow(mf_python, mf_path, args.workers)
                theirs.append(mf_ready)
                stop(mf_proc)
            ready_times[("mlflow", kind)] = statistics.median(theirs)
            print(f"deploy-to-ready ({kind}): mlops_lab {' '.join(f'{t:.2f}' for t in ours)} s;"
                  f" MLflow {' '.join(f'{t:.2f}' for t in theirs)} s", flush=True)
        for kind, (model, X) in trained.items():
            faster = faster_call(model, "predict")
            for rows in rows_list:
                line = f"{kind}: in-process predict on {rows} row(s): {floor_us(model.predict, X, rows):.0f} us (median)"
                if faster is not None:  # what the server calls for this model (mlops_lab.serving.accel)
                    line += f"; scored tree by tree as the server does: {floor_us(faster, X, rows):.0f} us"
                print(line)
            dep = ml.deploy(kind, name=kind, workers=args.workers, progress=False)
            mf_path = tmp / f"mlflow-{kind}"  # saved above
            mf_proc, mf_url, _ = start_mlflow(mf_python, mf_path, args.workers)
            mfu_proc, mfu_url, _ = start_mlflow(sys.executable, mf_path, args.workers)
            bare_proc, bare_url = start_bare(tmp, model, kind, args.workers)
            # deploy() returns with the first server; the others have joined by now (MLflow
            # takes seconds to start), which this makes sure of.
            wait_until(lambda dep=dep: len(dep.status().details["servers"]) == args.workers, timeout=60)
            servers = [
                ("mlops_lab", dep.url, {"Authorization": f"Bearer {dep.keys['primary']}"}),
                ("mlflow", mf_url, {}),
                ("mlflow+uvloop", mfu_url, {}),
                ("bare", bare_url, {}),
            ]
            try:
                for rows in rows_list:
                    body = '{"inputs": ' + str(X[:rows].round(6).tolist()) + "}"
                    for sname, url, headers in servers:  # every server must answer this body
                        req = urllib.request.Request(f"{url}/invocations", data=body.encode(), headers={**headers, "Content-Type": "application/json"})
                        with urllib.request.urlopen(req, timeout=30) as resp:
                            assert resp.status == 200, (sname, resp.status)
                    for c in conns:
                        # Rounds with the servers taking turns: a slow spell of this shared
                        # machine then falls on all of them, and the median drops it.
                        runs: dict[str, list[dict]] = {sname: [] for sname, _, _ in servers}
                        for k in range(args.rounds):
                            for sname, url, headers in servers:
                                if k == 0:
                                    wrk(f"{url}/invocations", body, c, 1.0, headers)  # warm-up
                                r = wrk(f"{url}/invocations", body, c, args.duration, headers)
                                runs[sname].append(r)
                                bad = f"  NON-2XX {r['non2xx']}" if r["non2xx"] else ""
                                print(f"  {kind} rows={rows:<3} conns={c:<3} {sname:<14} {r['rps']:>9.1f} req/s  p50 {r['p50']:>8.2f} ms  p99 {r['p99']:>8.2f} ms{bad}", flush=True)
                        for sname, rs in runs.items():
                            results.append((kind, rows, c, sname, {
                                key: statistics.median(r[key] for r in rs) for key in ("rps", "p50", "p99")
                            }))
            finally:
                dep.delete()
                stop(mf_proc)
                stop(mfu_proc)
                stop(bare_proc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    print()
    print("| model | rows | conns | mlops_lab req/s | MLflow req/s | MLflow+uvloop req/s | bare req/s | x MLflow | x MLflow+uvloop | % of bare | p99 ms: ours / MLflow / MLflow+uvloop |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    table: dict[tuple, dict] = {}
    for kind, rows, c, sname, r in results:
        table.setdefault((kind, rows, c), {})[sname] = r
    for (kind, rows, c), by in table.items():
        o, m, u, b = by["mlops_lab"], by["mlflow"], by["mlflow+uvloop"], by["bare"]
        print(
            f"| {kind} | {rows} | {c} | {o['rps']:.0f} | {m['rps']:.0f} | {u['rps']:.0f} | {b['rps']:.0f} | "
            f"{o['rps'] / m['rps']:.1f}x | {o['rps'] / u['rps']:.1f}x | {100 * o['rps'] / b['rps']:.0f}% | "
            f"{o['p99']:.2f} / {m['p99']:.2f} / {u['p99']:.2f} |"
        )
    print()
    for kind in args.models.split(","):
        print(f"deploy-to-ready ({kind}): mlops_lab {ready_times[('mlops_lab', kind)]:.2f} s, MLflow {ready_times[('mlflow', kind)]:.2f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
