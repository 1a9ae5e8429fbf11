"""A/B of mlops_lab's scoring server: two versions of the source, the same model, the same load.

Each side is a git revision (unpacked into a temporary folder) or a source folder; both are
deployed at once, each in its own home, on the same pickled model (one of ``serving.py``'s shapes,
registered with that shape's sample, sent its ``/invocations`` body), with key auth
and collection on, and driven in turn by ``wrk`` on ``/invocations``; rounds alternate which side
runs first. Prints every run, then per cell the medians and B/A.

Run: ``python bench/ab.py --a 2adb68a [--b .] [--rounds 5] [--cells lr:1:1,lr:1:8,pipe:1:1]`` (a cell's model is
one of ``serving.py``'s shapes, or ``lr``/``rf`` for the array-fitted ones)
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
from monitoring import _cpu_seconds  # noqa: E402
from registry import machine  # noqa: E402
from serving import SHAPES, Shape, wrk  # noqa: E402

# The helper each side runs: deploy, print the address and key, wait for stdin to close, delete.
SIDE = """
import json, pickle, sys
import mlops_lab as ml
model, sample = pickle.load(open(sys.argv[1], "rb"))
ml.register_model(model, "m", sample_input=sample)
dep = ml.deploy("m", name="ab", workers=int(sys.argv[2]), progress=False)
from mlops_lab.deployers.base import wait_until
wait_until(lambda: len(dep.status().details["servers"]) == int(sys.argv[2]), timeout=60)
print(json.dumps({"url": dep.url, "key": dep.keys["primary"], "source": ml.__file__,
                  "pids": [s["pid"] for s in dep.status().details["servers"]]}), flush=True)
sys.stdin.read()
dep.delete()
"""


def source(spec: str, tmp: Path, label: str) -> Path:
    """A folder holding ``mlops_lab/`` for a revision or a folder."""
    path = Path(spec)
    if path.is_dir() and (path / "mlops_lab").is_dir():
        return path.resolve()
    dest = tmp / f"src-{label}"
    dest.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT), "archive", spec, "mlops_lab"], capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def start(src: Path, model_file: Path, home: Path, workers: int) -> tuple[subprocess.Popen, dict]:
    env = {**os.environ, "PYTHONPATH": str(src), "MLOPS_LAB_HOME": str(home)}
    env.pop("MLOPS_LAB_DB", None)
    proc = subprocess.Popen([sys.executable, "-c", SIDE, str(model_file), str(workers)], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, env=env, cwd=str(home.parent))
    info = json.loads(proc.stdout.readline())
    if not info["source"].startswith(str(src)):
        raise RuntimeError(f"the side meant to run {src} imported {info['source']}")
    return proc, info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--a", required=True, help="git revision or source folder of side A")
    ap.add_argument("--b", default=str(ROOT), help="git revision or source folder of side B (default: this tree)")
    ap.add_argument("--cells", default="lr:1:1,lr:1:8,lr:100:1,lr:100:8", help="model:rows:connections, comma-separated")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--duration", type=float, default=5.0, help="seconds per wrk run")
    ap.add_argument("--workers", type=int, default=2)
    args = ap.parse_args(argv)
    if shutil.which("wrk") is None:
        sys.exit("wrk is not installed: apt-get install wrk")
    cells = [(m, int(r), int(c)) for m, r, c in (cell.split(":") for cell in args.cells.split(","))]
    print(f"machine: {machine()}; A = {args.a}, B = {args.b}; {args.rounds} rounds of {args.duration:g} s")
    tmp = Path(tempfile.mkdtemp(prefix="bench-ab-"))
    medians = []
    try:
        srcs = {"A": source(args.a, tmp, "A"), "B": source(args.b, tmp, "B")}
        for kind in dict.fromkeys(m for m, _, _ in cells):
            shape = Shape(kind if kind in SHAPES else f"{kind}-arr")  # "lr" is the array-fitted lr
            model_file = tmp / f"{kind}.pkl"
            model_file.write_bytes(pickle.dumps((shape.model, shape.sample())))
            sides = {s: start(src, model_file, tmp / f"home-{kind}-{s}", args.workers) for s, src in srcs.items()}
            try:
                for _, rows, conns in (c for c in cells if c[0] == kind):
                    body = json.dumps(shape.body("mlops_lab", rows))
                    runs: dict[str, list[float]] = {"A": [], "B": []}
                    p50s: dict[str, list[float]] = {"A": [], "B": []}
                    p99s: dict[str, list[float]] = {"A": [], "B": []}
                    cpus: dict[str, list[float]] = {"A": [], "B": []}  # the servers' CPU us a request
                    for k in range(args.rounds):
                        for s in ("A", "B") if k % 2 == 0 else ("B", "A"):
                            info = sides[s][1]
                            headers = {"Authorization": f"Bearer {info['key']}"}
                            if k == 0:
                                wrk(f"{info['url']}/invocations", body, conns, 1.0, headers)  # warm-up
                            before = _cpu_seconds(info["pids"])
                            r = wrk(f"{info['url']}/invocations", body, conns, args.duration, headers)
                            if r["non2xx"] or r["errors"]:
                                raise RuntimeError(f"side {s} answered errors: {r}")
                            runs[s].append(r["rps"])
                            p50s[s].append(r["p50"])
                            p99s[s].append(r["p99"])
                            cpus[s].append((_cpu_seconds(info["pids"]) - before) / (r["rps"] * args.duration) * 1e6)
                            print(f"  {kind} rows={rows:<3} conns={conns:<3} {s} {r['rps']:>9.1f} req/s  p50 {r['p50']:.2f} ms  "
                                  f"p99 {r['p99']:.2f} ms  CPU {cpus[s][-1]:.0f} us/request", flush=True)
                    a, b = statistics.median(runs["A"]), statistics.median(runs["B"])
                    medians.append((kind, rows, conns, a, b, runs, statistics.median(p50s["A"]), statistics.median(p50s["B"]),
                                    statistics.median(p99s["A"]), statistics.median(p99s["B"]),
                                    statistics.median(cpus["A"]), statistics.median(cpus["B"])))
            finally:
                for proc, _ in sides.values():
                    proc.stdin.close()
                for proc, _ in sides.values():
                    proc.wait(timeout=120)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print()
    print("| model | rows | conns | A median req/s | B median req/s | B/A | A range | B range | p50 ms A / B | p99 ms A / B | CPU us/request A / B |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: | ---: | ---: |")
    for kind, rows, conns, a, b, runs, pa, pb, qa, qb, ca, cb in medians:
        print(f"| {kind} | {rows} | {conns} | {a:.0f} | {b:.0f} | {b / a:.3f} | "
              f"{min(runs['A']):.0f}-{max(runs['A']):.0f} | {min(runs['B']):.0f}-{max(runs['B']):.0f} | {pa:.2f} / {pb:.2f} | "
              f"{qa:.2f} / {qb:.2f} | {ca:.0f} / {cb:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
