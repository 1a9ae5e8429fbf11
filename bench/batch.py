"""Batch scoring against the floor: ``score_batch`` on 1,000,000 rows against plain
``model.predict`` on the same DataFrame, in the same run (best of N, alternating).

Target (issue 7): at least 80 % of plain predict's rows/s. Beside them (issue 20), the version as
a DuckDB SQL function (``ml.sql_function``) over the same Parquet file: ``SELECT name(f0, ...,
f19) FROM 'input.parquet'``, which DuckDB calls once per vector of 2,048 rows. Then (``--dask-rows``,
10,000,000 by default; 0 skips it) the LogisticRegression on a Parquet dataset of 20 files:
in-process ``score_batch`` file after file against ``score_batch(engine="dask")`` on a real Dask
cluster on loopback (a scheduler and 1, then 2, single-threaded worker processes). Prints a table;
``--json`` for machines.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time

import numpy as np
import pandas as pd


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--dask-rows", type=int, default=10_000_000)
    args = ap.parse_args()
    os.environ.setdefault("MLOPS_LAB_HOME", tempfile.mkdtemp(prefix="mlops-lab-bench-batch-"))
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    import mlops_lab as ml

    rng = np.random.default_rng(0)
    X = pd.DataFrame(rng.normal(size=(args.rows, 20)), columns=[f"f{i}" for i in range(20)])
    y = (X.f0 + X.f1 > 0).astype(int)
    models = {
        "LogisticRegression": LogisticRegression().fit(X[:10_000], y[:10_000]),
        "RandomForest (100 trees)": RandomForestClassifier(100, max_depth=8, random_state=0, n_jobs=1).fit(X[:10_000], y[:10_000]),
    }
    parquet = os.path.join(os.environ["MLOPS_LAB_HOME"], "input.parquet")
    X.to_parquet(parquet)
    results = []
    for label, model in models.items():
        name = label.split()[0].lower()
        ml.register_model(model, name, sample_input=X[:5])
        best = {"predict": 1e9, "score_batch": 1e9, "score_batch parquet": 1e9, "SQL function parquet": 1e9}
        con = None
        try:
            import duckdb

            con = duckdb.connect()
            ml.sql_function(con, name, name=name)
            query = f"SELECT {name}({', '.join(X.columns)}) AS p FROM '{parquet}'"
        except ImportError:
            best.pop("SQL function parquet")
        for _ in range(args.repeat):
            t = time.perf_counter()
            floor = model.predict(X)
            best["predict"] = min(best["predict"], time.perf_counter() - t)
            t = time.perf_counter()
            ours = ml.score_batch(name, X, progress=False)
            best["score_batch"] = min(best["score_batch"], time.perf_counter() - t)
            t = time.perf_counter()
            ml.score_batch(name, parquet, progress=False)
            best["score_batch parquet"] = min(best["score_batch parquet"], time.perf_counter() - t)
            if con is not None:
                t = time.perf_counter()
                sql = con.sql(query).fetchnumpy()["p"]
                best["SQL function parquet"] = min(best["SQL function parquet"], time.perf_counter() - t)
                assert np.array_equal(np.sort(sql), np.sort(floor)), "the SQL function differs from predict"
        assert (ours["prediction"].to_numpy() == floor).all(), "score_batch differs from predict"
        for way, seconds in best.items():
            results.append({"model": label, "way": way, "rows": args.rows, "seconds": round(seconds, 4),
                            "rows_per_s": round(args.rows / seconds), "of_predict": round(best["predict"] / seconds, 3)})
    if args.dask_rows:
        results += dask_runs(args.dask_rows, models["LogisticRegression"], min(args.repeat, 2))
    if args.json:
        print(json.dumps(results, indent=1))
        return
    print(f"# batch scoring, {args.rows:,} rows x 20 features, best of {args.repeat}; "
          f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"{'model':<26} {'way':<22} {'rows/s':>12} {'of predict':>10}")
    for r in results:
        share = f"{r['of_predict']:>9.0%}" if r["of_predict"] is not None else f"{'':>9}"
        print(f"{r['model']:<26} {r['way']:<22} {r['rows_per_s']:>12,} {share}" + (f"  ({r['rows']:,} rows)" if r["of_predict"] is None else ""))


def dask_runs(rows: int, model, repeat: int) -> list[dict]:
    """In-process score_batch over 20 files against the Dask engine with 1 and 2 workers."""
    import shutil
    import socket
    import subprocess
    import sys

    import mlops_lab as ml

    home = os.environ["MLOPS_LAB_HOME"]
    folder = os.path.join(home, "dataset")
    os.makedirs(folder)
    rng = np.random.default_rng(1)
    per = rows // 20
    for i in range(20):
        pd.DataFrame(rng.normal(size=(per, 20)), columns=[f"f{j}" for j in range(20)]).to_parquet(
            os.path.join(folder, f"in-{i:02d}.parquet"))
    files = sorted(os.path.join(folder, f) for f in os.listdir(folder))
    out = []
    best = 1e9
    for _ in range(repeat):
        t = time.perf_counter()
        n = sum(len(ml.score_batch("logisticregression", f, progress=False)) for f in files)
        best = min(best, time.perf_counter() - t)
    out.append({"model": "LogisticRegression", "way": "score_batch, 20 files", "rows": n, "seconds": round(best, 3),
                "rows_per_s": round(n / best), "of_predict": None})
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL}
    procs = [subprocess.Popen([sys.executable, "-m", "dask", "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], **quiet)]
    try:
        import distributed

        for workers in (1, 2):
            procs.append(subprocess.Popen([sys.executable, "-m", "dask", "worker", address, "--host", "127.0.0.1",
                                           "--nthreads", "1", "--no-dashboard", "--memory-limit", "6GB"], **quiet))
            time.sleep(1)
            with distributed.Client(address, timeout=30) as client:
                client.wait_for_workers(workers, timeout=60)
                best = 1e9
                for r in range(repeat + 1):  # the first run loads the model on each worker: not timed
                    target = os.path.join(home, f"out-{workers}-{r}")
                    t = time.perf_counter()
                    summary = ml.score_batch("logisticregression", folder, output=target, engine="dask", client=client,
                                             progress=False)
                    if r:
                        best = min(best, time.perf_counter() - t)
                    shutil.rmtree(target)
            out.append({"model": "LogisticRegression", "way": f"Dask, {workers} worker{'s' if workers > 1 else ''}",
                        "rows": summary["rows"], "seconds": round(best, 3), "rows_per_s": round(summary["rows"] / best),
                        "of_predict": None})
    finally:
        for p in reversed(procs):
            p.terminate()
            p.wait(30)
    return out


if __name__ == "__main__":
    main()
