"""Where a scoring server's tail latency is: the client's percentiles (wrk) beside the servers' own
latency of the same requests (the ``latency_ms`` each request's collected record holds: from the
handler's start to its answer built).

When the client's p99 is far above the servers' own, the requests waited outside the handler: to
be woken, read or written, not to be worked on. ``--idle-burner`` runs a busy loop at idle
scheduling priority (``SCHED_IDLE``, as the compactors run) beside the servers, to see what work
in the machine's spare CPU costs the tail.

Run: ``python bench/tail.py [--shape lr-arr] [--rows 100] [--conns 1] [--rounds 4] [--idle-burner]``
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from registry import machine  # noqa: E402
from serving import Shape, wrk  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="lr-arr")
    ap.add_argument("--rows", type=int, default=100)
    ap.add_argument("--conns", type=int, default=1)
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--duration", type=float, default=8.0, help="seconds per wrk run")
    ap.add_argument("--idle-burner", action="store_true", help="a busy loop at SCHED_IDLE beside the servers")
    args = ap.parse_args(argv)
    home = tempfile.mkdtemp(prefix="bench-tail-")
    os.environ["MLOPS_LAB_HOME"] = home
    os.environ.pop("MLOPS_LAB_DB", None)
    import numpy as np

    import mlops_lab as ml
    from mlops_lab.deployers.base import wait_until

    print(f"machine: {machine()}; {args.shape}, {args.rows} rows, {args.conns} connections, "
          f"{args.rounds} rounds of {args.duration:g} s{', idle-priority busy loop beside' if args.idle_burner else ''}")
    shape = Shape(args.shape)
    ml.register_model(shape.model, "m", sample_input=shape.sample())
    dep = ml.deploy("m", name="tail", workers=2, progress=False)
    burner = None
    try:
        wait_until(lambda: len(dep.status().details["servers"]) == 2, timeout=60)
        url, body = f"{dep.url}/invocations", json.dumps(shape.body("mlops_lab", args.rows))
        headers = {"Authorization": f"Bearer {dep.keys['primary']}"}
        wrk(url, body, args.conns, 2.0, headers)  # warm-up
        if args.idle_burner:
            burner = subprocess.Popen(["chrt", "-i", "0", sys.executable, "-c", "while True: pass"])
        for k in range(args.rounds):
            since = dt.datetime.now(dt.timezone.utc)
            r = wrk(url, body, args.conns, args.duration, headers)
            time.sleep(6)  # past the collector's timed flush
            lat = ml.collected_data("tail", since=since).drop_duplicates("request_id")["latency_ms"].to_numpy()
            p50, p99, p999 = np.percentile(lat, [50, 99, 99.9])
            print(f"round {k}: client {r['rps']:.0f} req/s, p50 {r['p50']:.2f} ms, p99 {r['p99']:.2f} ms | "
                  f"servers' own ({len(lat)} requests): p50 {p50:.2f} ms, p99 {p99:.2f} ms, p99.9 {p999:.2f} ms, "
                  f"max {lat.max():.1f} ms", flush=True)
    finally:
        if burner is not None:
            burner.kill()
            burner.wait()
        dep.delete()
        shutil.rmtree(home, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
