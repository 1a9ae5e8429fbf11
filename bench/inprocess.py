"""One server's request path in process: the scoring app driven as uvicorn drives it, no network.

Registers one of ``serving.py``'s shapes in a temporary home, deploys it (to get the spec a server
reads), builds the app from that spec in this process (``serving.server.build_app``: the models
loaded and warmed up, collection on as deployed) and calls its ASGI entry point with the
benchmark's ``/invocations`` request, one request at a time; then the same for the no-op stack's
app (``peers/noop_server.py``). Prints us per request (wall and CPU) for each round: what the
request path costs without uvicorn, httptools, the kernel and wrk, and so where it goes
(``--profile`` adds cProfile's top functions; py-spy on this process gives the by-line split).

With ``--pair``, two apps built from the same spec, collection off and on, take turns in blocks of
requests, and the median of each round's CPU difference says what collection adds to a request
on the whole request path (its own code, and what its memory does to the request's caches).

Run: ``python bench/inprocess.py [--shape lr-arr] [--rows 1] [--requests 20000] [--rounds 3] [--no-collect] [--profile]``
or ``python bench/inprocess.py --pair [--shape lr-arr] [--rows 100] [--block 1000] [--rounds 30]``
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "bench" / "peers"))


def request(body: bytes, headers: list[tuple[bytes, bytes]]) -> tuple[dict, Any, Any, list[int]]:
    """The benchmark's ``/invocations`` request as uvicorn hands it to an ASGI app: the scope (copy
    it for each call), ``receive`` and ``send``, and the list the answers' statuses go to."""
    scope = {"type": "http", "asgi": {"version": "3.0", "spec_version": "2.3"}, "http_version": "1.1",
             "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 5555), "scheme": "http", "method": "POST",
             "root_path": "", "path": "/invocations", "raw_path": b"/invocations", "query_string": b"",
             "headers": headers, "state": {}}
    statuses: list[int] = []
    message = {"type": "http.request", "body": body, "more_body": False}

    async def receive():
        return message

    async def send(m):
        if m["type"] == "http.response.start":
            statuses.append(m["status"])

    return scope, receive, send, statuses


def drive(app, body: bytes, headers: list[tuple[bytes, bytes]], requests: int, rounds: int, label: str) -> None:
    scope0, receive, send, statuses = request(body, headers)

    async def run() -> None:
        for r in range(rounds):
            statuses.clear()
            t0, c0 = time.perf_counter(), time.process_time()
            for _ in range(requests):
                await app(dict(scope0), receive, send)
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            bad = len(statuses) - statuses.count(200)
            print(f"{label:10s} round {r}: {wall / requests * 1e6:7.1f} us/request wall, {cpu / requests * 1e6:7.1f} cpu"
                  + (f"  ({bad} answers not 200)" if bad else ""), flush=True)

    import uvloop

    uvloop.run(run())


def pair(apps: dict, body: bytes, headers: list[tuple[bytes, bytes]], block: int, rounds: int) -> None:
    """Two apps taking turns in blocks of ``block`` requests, ``rounds`` times (the order flips
    every round): the median of each round's CPU difference per request, which the machine's
    drift (a third between minutes here) moves much less than either figure alone."""
    import statistics

    import uvloop

    scope0, receive, send, statuses = request(body, headers)
    (a, app_a), (b, app_b) = apps.items()
    cpu: dict[str, list[float]] = {a: [], b: []}

    async def run() -> None:
        for _ in range(block):  # warm-up of both
            await app_a(dict(scope0), receive, send)
            await app_b(dict(scope0), receive, send)
        for r in range(rounds):
            for label, app in ((a, app_a), (b, app_b))[:: 1 if r % 2 == 0 else -1]:
                c0 = time.process_time()
                for _ in range(block):
                    await app(dict(scope0), receive, send)
                cpu[label].append((time.process_time() - c0) / block * 1e6)

    uvloop.run(run())
    diff = [y - x for x, y in zip(cpu[a], cpu[b])]
    ratio = [100 * (y / x - 1) for x, y in zip(cpu[a], cpu[b])]
    print(f"{a}: {statistics.median(cpu[a]):.1f} us CPU a request (median of {rounds} blocks of {block}), "
          f"{b}: {statistics.median(cpu[b]):.1f}; {b} against {a}, paired by round: "
          f"{statistics.median(diff):+.1f} us ({statistics.median(ratio):+.1f} %), quartiles "
          f"{statistics.quantiles(diff, n=4)[0]:+.1f} / {statistics.quantiles(diff, n=4)[2]:+.1f} us"
          + (f"  ({bad} answers not 200)" if (bad := len(statuses) - statuses.count(200)) else ""), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="lr-arr")
    ap.add_argument("--rows", type=int, default=1)
    ap.add_argument("--requests", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--no-collect", action="store_true", help="build the app with collection off")
    ap.add_argument("--profile", action="store_true", help="cProfile one round of ours: the top 25 functions")
    ap.add_argument("--pair", action="store_true",
                    help="ours with collection off and on, taking turns in blocks: what collection adds to a request")
    ap.add_argument("--block", type=int, default=1000, help="requests per block with --pair")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="mlops-inprocess-") as home:
        os.environ["MLOPS_LAB_HOME"] = home
        from serving import Shape

        import mlops_lab as ml
        from mlops_lab.serving.server import build_app, resolve_paths, serving_gc

        shape = Shape(args.shape)
        ml.register_model(shape.model, args.shape, sample_input=shape.sample())
        dep = ml.deploy(f"{args.shape}:1", name="inprocess", workers=1, progress=False)
        try:  # the deployment's files are read by build_app; its own server idles meanwhile
            spec_path = Path(dep.status().details["spec"])
            spec = resolve_paths(orjson.loads(spec_path.read_bytes()), spec_path.parent)
            body = orjson.dumps(shape.body("mlops_lab", args.rows))
            headers = [(b"host", b"127.0.0.1:8000"), (b"authorization", f"Bearer {dep.keys['primary']}".encode()),
                       (b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
            if args.pair:
                apps = {"collection off": build_app({**spec, "collect": None}).asgi, "collection on": build_app(spec).asgi}
                serving_gc()  # as a server runs: what is loaded frozen, young sweeps every 20,000
                print(f"{args.shape}, {args.rows} row(s), one request at a time")
                pair(apps, body, headers, args.block, args.rounds)
                return 0
            if args.no_collect:
                spec["collect"] = None
            ours = build_app(spec).asgi
            serving_gc()
            print(f"{args.shape}, {args.rows} row(s), collection {'off' if args.no_collect else 'on'}, "
                  f"{args.requests} requests a round, one at a time")
            from noop_server import app as noop

            drive(noop, body, headers, args.requests, args.rounds, "no-op")
            drive(ours, body, headers, args.requests, args.rounds, "mlops_lab")
            if args.profile:
                import cProfile
                import pstats

                prof = cProfile.Profile()
                prof.enable()
                drive(ours, body, headers, args.requests, 1, "profiled")
                prof.disable()
                pstats.Stats(prof).sort_stats("tottime").print_stats(25)
        finally:
            dep.delete()
    return 0


if __name__ == "__main__":
    sys.exit(main())
