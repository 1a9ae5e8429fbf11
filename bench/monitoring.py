"""Monitoring benchmark.

(a) What collection costs: the same LogisticRegression (20 features) deployed three times with
    ``workers=2``: collection off, collection on as deployed by default (staged, compacted to
    Parquet at idle time), and collection on writing Parquet directly (``stage_budget_mb=0``:
    what saturation that outlasts the staging budget costs). Driven by wrk at 8 and 64
    connections with 1-row and 100-row requests; runs take turns, in alternating order (off,
    staged, direct, then direct, staged, off, ...: a machine that slows down or speeds up during
    a round favours neither), 7 rounds by default. Each run starts after ``os.sync()``: writing
    Parquet directly goes through the page cache, which is written back up to 30 s later,
    during whichever run comes then (so the direct path's cost is understated). The throughput
    is the median of each; the cost is the median over rounds of each round's loss against
    collection off in the same round (this VM's throughput drifts by up to a quarter between
    minutes; runs side by side drift together). Target: collection costs under 10 % of
    throughput. Beside it, the servers' CPU time per request (user + system, all threads, from
    /proc): it says how many microseconds collection adds to each request, and, paired by round
    as the throughput is, the median of each round's ratio to collection off; and the staged
    compactors' CPU during the runs (compaction waits for idle CPU). After the runs, the CPU the
    compactors spend turning the staged files into Parquet (deferred to idle time) is measured
    too. With rclone available (``--no-s3`` leaves it out), a fourth deployment collects to
    object storage: ``rclone serve s3`` on loopback, Parquet files PUT whole by the writer thread
    (the lane every store has; staging needs a local disk), to report what that costs.
(b) Reading back 1,000,000 collected rows (one day, 10 features, 1 row per request, two
    versions): ``collected_data`` for the day, ``metrics``, ``drift`` and ``monitor``, each
    timed (best of 3). Target: under 2 s each.
(c) Collection's own CPU per request, in one process (``collection_cpu_in_process``), and its
    share of the servers' CPU per request with collection off from (a): the figure that does not
    swing with the machine (a second deployment without collection, ``--control``, differs from
    the first by up to a third here). It leaves out what collection costs the servers' requests
    indirectly (the cache), which (a) shows for 100-row requests.

Run: ``python bench/monitoring.py [--duration 5] [--rows 1000000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from registry import machine, start_s3  # noqa: E402
from serving import wrk  # noqa: E402


def _cpu_seconds(pids: list[int], gone_ok: bool = False) -> float:
    """User + system CPU time of these processes (all their threads), from /proc; with
    ``gone_ok``, a process that has ended counts nothing."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            if not gone_ok:
                raise
            continue
        total += int(fields[11]) + int(fields[12])
    return total / tick


def _compactors(root: Path) -> list[int]:
    """PIDs of the compactor processes working on one deployment's collection folder."""
    out = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmd = (entry / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if b"mlops_lab.monitoring.staging" in cmd and str(root).encode() in cmd:
                out.append(int(entry.name))
    return out


def compaction_cpu(root: Path) -> tuple[float, int]:
    """Compact what a deleted deployment left staged (its compactors go with its servers and
    leave the rest staged, for readers and the next compactor), in one compactor run: its CPU
    seconds and the rows compacted."""
    import subprocess

    from mlops_lab.monitoring import staging

    end = time.monotonic() + 30
    while _compactors(root) and time.monotonic() < end:  # the servers' compactors' last pass
        time.sleep(0.1)
    rows = sum(staging.read_file(p).num_rows for p in staging.staged_files(root))
    proc = subprocess.Popen([sys.executable, "-m", "mlops_lab.monitoring.staging", str(root)])
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    assert proc.returncode == 0 and not staging.staged_files(root), "the compactor left staged files"
    return usage.ru_utime + usage.ru_stime, rows


def collection_cost(duration: float, rounds: int, budget_mb: int | None = None, s3: bool = False,
                    control: bool = False, direct: bool = True) -> list[tuple]:
    """Throughput and server CPU per request with collection off, staged (the default) and
    written to Parquet directly (``stage_budget_mb=0``: what saturation beyond the staging
    budget costs), and with ``s3`` collecting to object storage (Parquet files PUT to an
    ``rclone serve s3`` on loopback), all taking turns; with ``control``, a second deployment
    without collection, whose "cost" against the first is the noise floor of each figure."""
    from sklearn.linear_model import LogisticRegression

    import mlops_lab as ml
    from mlops_lab.deployers.base import wait_until

    rng = np.random.RandomState(0)
    X = rng.rand(2000, 20)
    model = LogisticRegression().fit(X, (X[:, 0] + X[:, 1] > 1).astype(int))
    ml.register_model(model, "lr", sample_input=X[:5], baseline=X)
    deployments = {
        "off": ml.deploy("lr", name="collect-off", workers=2, collect=False, progress=False),
        "staged": ml.deploy("lr", name="collect-staged", workers=2,
                            collect=True if budget_mb is None else {"stage_budget_mb": budget_mb}, progress=False),
        "direct": ml.deploy("lr", name="collect-direct", workers=2, collect={"stage_budget_mb": 0}, progress=False),
    }
    if control:  # a second deployment without collection: its "cost" is what the machine's noise alone gives
        deployments["control"] = ml.deploy("lr", name="collect-off-again", workers=2, collect=False, progress=False)
    if not direct:
        deployments.pop("direct").delete()
    if s3:  # the same registry, collecting to the bucket
        deployments["s3"] = ml.Workspace(collection="s3://bench/collected").deploy(
            "lr", name="collect-s3", workers=2, collect=True, progress=False)
    lanes = [k for k in deployments if k != "off"]
    staged_root = Path(os.environ["MLOPS_LAB_HOME"]) / "collected" / "collect-staged"
    out = []
    try:
        for d in deployments.values():  # a deployment is ready with its first server; the other joins
            wait_until(lambda d=d: len(d.status().details["servers"]) == 2, timeout=60)
        for rows in (1, 100):
            body = json.dumps({"data": X[:rows].round(6).tolist()})
            for d in deployments.values():  # warm-up: first flushes and the imports they make are not measured
                wrk(f"{d.url}/score", body, 8, 2, {"Authorization": f"Bearer {d.keys['primary']}"})
            for conns in (8, 64):
                runs: dict[str, list[float]] = {k: [] for k in deployments}
                cpu: dict[str, list[float]] = {k: [] for k in deployments}  # server CPU us per request
                compacting: list[float] = []  # the staged deployment's compactors, us per request
                for i in range(rounds):
                    for label, d in list(deployments.items())[::1 if i % 2 == 0 else -1]:
                        pids = [s["pid"] for s in d.status().details["servers"]]
                        # Each run starts with the page cache's dirty data written (direct Parquet
                        # files are written back up to 30 s later, during whichever run comes then).
                        os.sync()
                        time.sleep(0.5)
                        compactors = _compactors(staged_root) if label == "staged" else []
                        before, c_before = _cpu_seconds(pids), _cpu_seconds(compactors, gone_ok=True)
                        r = wrk(f"{d.url}/score", body, conns, duration, {"Authorization": f"Bearer {d.keys['primary']}"})
                        assert r["non2xx"] == 0, r
                        runs[label].append(r["rps"])
                        cpu[label].append((_cpu_seconds(pids) - before) / (r["rps"] * duration) * 1e6)
                        if compactors:
                            compacting.append((_cpu_seconds(compactors, gone_ok=True) - c_before) / (r["rps"] * duration) * 1e6)
                rps = {k: statistics.median(v) for k, v in runs.items()}
                us = {k: statistics.median(v) for k, v in cpu.items()}
                # Cost: the median over rounds of each round's loss against collection off in the
                # same round (the three take turns, so a slow spell of the machine hits all three).
                cost = {k: statistics.median(100 * (1 - a / b) for a, b in zip(runs[k], runs["off"])) for k in lanes}
                # The same for the servers' CPU per request: each round's ratio to collection off in
                # that round (the machine's speed moves CPU per request by up to a third between
                # minutes; runs side by side move together).
                cpu_cost = {k: statistics.median(100 * (a / b - 1) for a, b in zip(cpu[k], cpu["off"])) for k in lanes}
                print(f"  rows={rows:<3} conns={conns:<3} off {rps['off']:>7.0f} req/s {us['off']:.0f} us"
                      + "".join(f" | {k} {rps[k]:>7.0f} req/s cost {cost[k]:5.1f}% {us[k]:.0f} us" for k in lanes), flush=True)
                print("    CPU per request against off, paired by round (median): "
                      + ", ".join(f"{k} {cpu_cost[k]:+.1f}%" for k in lanes), flush=True)
                print("    rounds (req/s): " + "; ".join(f"{k} {' '.join(str(round(x)) for x in v)}" for k, v in runs.items()), flush=True)
                # Compaction waits for idle CPU; if it ran during a run, it took CPU the servers did not.
                print(f"    staged compactors during the runs: {max(compacting, default=0.0):.1f} us per request at most", flush=True)
                out.append((rows, conns, rps, cost, us, cpu_cost))
        stats = deployments["staged"].call("metrics", method="GET")["collection"]
        print(f"  collected by one staged server process: {stats['written_rows']} rows in {stats['staged_files']} staged"
              f" and {stats['files']} Parquet files, {stats['dropped_rows']} dropped (Parquet files: written at once"
              f" because the staged backlog had reached its budget)")
        deployments["staged"].delete()
        secs, compacted = compaction_cpu(staged_root)
        if compacted:
            print(f"  deferred compaction (what was still staged after the runs): {compacted} rows, {secs:.1f} s of CPU,"
                  f" {secs / compacted * 1e8:.0f} us per 100 rows", flush=True)
        out.append(("compaction", secs, compacted))
    finally:
        for d in deployments.values():
            d.delete()
    return out


def collection_cpu_in_process(folder: Path) -> dict[tuple[int, str], float]:
    """Collection's own CPU per request, in one process: the records a server makes for the
    LogisticRegression's 1-row and 100-row requests handed to a ``Collector`` at a server's pace
    (15,000 and 5,000 requests a second), its writer thread included, against the same loop
    without collection. No network, no other process: a figure that moves by a few percent
    between runs where the servers' own figures move by a third (the control deployment)."""
    import uuid

    from mlops_lab.monitoring.collector import CollectConfig, Collector
    from mlops_lab.registry.inputs import Chunk
    from mlops_lab.serving.runtime import ServedModel, make_record

    model = ServedModel("m", 1, None, {"signature": {"kind": "tensor", "shape": [None, 20], "dtype": "float64"}})
    out = {}
    for rows, n, rate in ((1, 150_000, 15_000), (100, 40_000, 5_000)):
        chunks = [Chunk("array", np.random.rand(rows, 20), rows) for _ in range(64)]
        preds = [np.zeros(rows, dtype=np.int64) for _ in range(64)]
        ids = [uuid.uuid4().hex for _ in range(n)]
        t = time.process_time()
        for i in range(n):
            chunks[i & 63], preds[i & 63], ids[i]
        base = time.process_time() - t
        for lane, collect in (("staged", {}), ("direct", {"stage_budget_mb": 0})):
            target = folder / f"{lane}-{rows}"
            collector = Collector("m", CollectConfig(folder=str(target), **collect))
            t, start = time.process_time(), time.perf_counter()
            for i in range(n):
                collector.add(make_record(model, ids[i], time.time(), 1.0, 200, chunks[i & 63], preds[i & 63]))
                if i & 255 == 255:  # at a server's pace: the writer keeps up, as it does in one
                    ahead = (i + 1) / rate - (time.perf_counter() - start)
                    if ahead > 0:
                        time.sleep(ahead)
            collector.close()
            spent = time.process_time() - t
            assert collector.written_rows == n * rows and not collector.dropped_total, (collector.written_rows, collector.dropped_total)
            out[(rows, lane)] = (spent - base) / n * 1e6
            print(f"  {rows:>3} row(s) a request, {lane}: {out[(rows, lane)]:.1f} us of CPU a request", flush=True)
            shutil.rmtree(target, ignore_errors=True)
    return out


def reading(rows: int, s3: bool = False) -> dict[str, dict[str, float]]:
    import importlib.util

    import pandas as pd

    import mlops_lab as ml

    spec = importlib.util.spec_from_file_location("_traffic", ROOT / "tests" / "monitoring" / "conftest.py")
    traffic = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(traffic)
    write_traffic = traffic.write_traffic

    class Linear:
        def predict(self, X):
            return X.to_numpy() @ np.linspace(-1, 1, X.shape[1])

    rng = np.random.default_rng(0)
    cols = [f"x{i}" for i in range(10)]
    base = pd.DataFrame(rng.normal(0, 1, (20_000, 10)), columns=cols)
    ml.register_model(Linear(), "lin", sample_input=base.head(), baseline=base)
    ml.register_model(Linear(), "lin", sample_input=base.head(), baseline=base)
    from mlops_lab.monitoring.store import CollectionStore

    home = Path(os.environ["MLOPS_LAB_HOME"])
    now = time.time()
    day_start = now - (now % 86400)  # today, UTC: every row falls in one day partition
    places = {"local": (ml.Workspace(), home)}
    if s3:  # the same rows in the bucket, read through the same functions
        places["S3"] = (ml.Workspace(collection="s3://bench/collected"),
                        CollectionStore("s3://bench/collected", os.environ["MLOPS_LAB_S3_ENDPOINT_URL"]))
    t0 = time.perf_counter()
    chunk = 100_000
    for start in range(0, rows, chunk):
        n = min(chunk, rows - start)
        live = pd.DataFrame(rng.normal(0.3, 1, (n, 10)), columns=cols)
        times = np.sort(rng.uniform(day_start, now - 1, n))
        version = "lin:2" if start >= rows * 0.8 else "lin:1"
        for _, store in places.values():
            write_traffic(store, "big", live, times, version, Linear().predict(live))
    print(f"  wrote {rows} rows in {time.perf_counter() - t0:.1f} s ({' and '.join(places)})", flush=True)

    def best(fn, repeat=3):
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            result = fn()
            times.append(time.perf_counter() - t)
        return min(times), result

    today = time.strftime("%Y-%m-%d", time.gmtime(now))
    out: dict[str, dict[str, float]] = {}
    for where, (ws, _) in places.items():
        o = out[where] = {}
        o["collected_data (one day)"], df = best(lambda ws=ws: ws.collected_data("big", since=today))
        assert len(df) == rows, len(df)
        o["metrics (1min buckets)"], m = best(lambda ws=ws: ws.metrics("big", every="1min", since=today))
        assert m["requests"].sum() == rows
        o["drift (1h window)"], _ = best(lambda ws=ws: ws.drift("big", window="1h"))
        o["monitor (24h chart)"], chart = best(lambda ws=ws: ws.monitor("big", since="24h").to_dict())
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--stage-budget-mb", type=int, help="the staged deployment's staging budget (default: the deployment default)")
    ap.add_argument("--no-s3", action="store_true", help="leave out the deployment collecting to object storage")
    ap.add_argument("--no-direct", action="store_true", help="leave out the deployment writing Parquet directly")
    ap.add_argument("--control", action="store_true",
                    help="add a second deployment without collection: its cost against the first is the noise floor")
    args = ap.parse_args(argv)
    print(f"machine: {machine()}")
    tmp = Path(tempfile.mkdtemp(prefix="bench-monitoring-"))
    os.environ["MLOPS_LAB_HOME"] = str(tmp / "home")
    os.environ.pop("MLOPS_LAB_DB", None)
    s3 = None if args.no_s3 else start_s3(tmp)
    try:
        print("(a) collection on against off, LogisticRegression, 2 workers, wrk:")
        cost = collection_cost(args.duration, args.rounds, args.stage_budget_mb, s3=s3 is not None,
                               control=args.control, direct=not args.no_direct)
        print(f"(b) reading back {args.rows} collected rows:")
        times = reading(args.rows, s3=s3 is not None)
        print("(c) collection's own CPU per request, in process:")
        own = collection_cpu_in_process(tmp / "in-process")
    finally:
        if s3 is not None:
            s3.terminate()
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    lanes = [k for k in cost[0][2] if k != "off"]
    names = {"staged": "staged", "direct": "direct Parquet", "s3": "S3 (rclone)", "control": "off again (control)"}
    print("| rows/request | conns | off req/s | " + " | ".join(f"{names[k]} req/s | cost" for k in lanes)
          + f" | server CPU us/request off / {' / '.join(lanes)} | CPU per request against off, paired |")
    print("| ---: | ---: | ---: | " + " | ".join("---: | ---:" for _ in lanes) + " | ---: | ---: |")
    for item in cost:
        if item[0] == "compaction":
            continue
        rows, conns, rps, c, us, cc = item
        print(f"| {rows} | {conns} | {rps['off']:.0f} | " + " | ".join(f"{rps[k]:.0f} | {c[k]:.1f}%" for k in lanes)
              + " | " + " / ".join(f"{us[k]:.0f}" for k in ["off", *lanes])
              + " | " + " / ".join(f"{cc[k]:+.1f}%" for k in lanes) + " |")
    print()
    print("| rows/request | conns | server CPU us/request, off | collection's own, staged (in process) | share |")
    print("| ---: | ---: | ---: | ---: | ---: |")
    for item in cost:
        if item[0] != "compaction":
            rows, conns, _, _, us, _ = item
            print(f"| {rows} | {conns} | {us['off']:.0f} | {own[(rows, 'staged')]:.1f} | {100 * own[(rows, 'staged')] / us['off']:.1f}% |")
    print()
    places = list(times)
    print(f"| operation on {args.rows:,} collected rows | " + " | ".join(f"seconds, {p}" for p in places) + " |")
    print("| --- | " + " | ".join("---:" for _ in places) + " |")
    for name in times["local"]:
        print(f"| {name} | " + " | ".join(f"{times[p][name]:.2f}" for p in places) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
