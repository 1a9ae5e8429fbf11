"""The scoring server process: ``python -m mlops_lab.serving.server --spec SPEC.json``.

It needs no registry: the spec names folders written by ``download_model`` (each file checked
against its SHA-256 before loading), so the same process runs locally, in a container, on a
cluster node or on an edge device.

Sockets: it serves a listening socket inherited from its supervisor (``--fd``), shared with the
other servers of the deployment so that an update hands traffic over with no refused
connection, or binds ``--host``/``--port`` itself; and a private loopback port of its own, for
its supervisor's health probes. Once the models are loaded and warmed up and the sockets are
served, it prints ``READY <private port>`` on stdout.

Signals: SIGUSR1 starts draining (every response carries ``Connection: close`` so keep-alive
clients move to the new servers); SIGTERM stops gracefully, finishing requests in flight.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import gc
import logging
import os
import signal
import socket
import sys
import time
from pathlib import Path
from typing import Any

import orjson

from . import shadow
from ._process import die_with_parent as _die_with_parent
from ._process import libc as _libc
from .app import DEFAULT_BODY_LIMIT, ScoringApp
from .runtime import BatchConfig, Route, ServedModel

log = logging.getLogger("mlops_lab.serving")

#: ref -> folder of the models a server holds, for ``mlops_lab.model_path`` in entry scripts.
MODEL_PATHS_ENV = "MLOPS_LAB_MODEL_PATHS"


def build_app(spec: dict[str, Any]) -> ScoringApp:
    """Load the models a spec names and build the app around them."""
    from ..registry.flavors import LoadedModel, ScoringScript, load_folder, verify_folder

    batching = BatchConfig(**spec.get("batching", {}))
    models: list[dict[str, Any]] = spec["models"]
    entry = spec.get("entry_script")
    routes: dict[str, list[ServedModel]] = {}
    workers: list[tuple[str, float, Any]] = []
    if entry:
        paths = {}
        for m in models:
            paths[f"{m['name']}:{m['version']}"] = m["folder"]
            paths.setdefault(m["name"], m["folder"])
        os.environ[MODEL_PATHS_ENV] = orjson.dumps(paths).decode()
        for m in models:  # check every file before the script reads any
            verify_folder(m["folder"])
        folder = Path(entry["folder"])
        script = ScoringScript(folder, entry["script"], spec.get("deployment", "entry-script"))
        meta = {"flavor": "script", "signature": None, "models": [f"{m['name']}:{m['version']}" for m in models]}
        name = spec.get("route") or "default"
        served = ServedModel(name, spec.get("revision", 0), LoadedModel(script, "run", name, folder), meta, 100.0, batching)
        routes[name] = [served]
    else:
        # A shadow's worker loads its version in a process of its own meanwhile (serving.shadow)
        workers = [(m.get("route") or m["name"], float(m["shadow"]),
                    shadow.spawn(m["folder"], spec.get("deployment", "default"), spec.get("collect"),
                                 spec.get("metrics_dir"), spec.get("batching", {})))
                   for m in models if m.get("shadow")]
        for m in models:
            if m.get("shadow"):
                continue
            loaded, meta = load_folder(m["folder"])
            meta = {**meta, "_folder": m["folder"]}
            served = ServedModel(meta["name"], meta["version"], loaded, meta, float(m.get("traffic", 100)), batching)
            routes.setdefault(m.get("route") or meta["name"], []).append(served)
    for served_models in routes.values():
        for s in served_models:
            s.warm_up()
    share_choices(spec.get("choices_file"), [s for ms in routes.values() for s in ms])
    from ..monitoring.collector import CollectConfig, Collector

    collect = CollectConfig.from_spec(spec.get("collect"))
    collector = Collector(spec.get("deployment", "default"), collect) if collect.enabled and collect.folder else None
    app = ScoringApp(
        [Route(name, ms) for name, ms in routes.items()],
        deployment=spec.get("deployment", ""),
        revision=spec.get("revision", 0),
        keys_file=spec.get("keys_file"),
        metrics_dir=spec.get("metrics_dir"),
        body_limit=int(spec.get("body_limit") or DEFAULT_BODY_LIMIT),
        collector=collector,
    )
    try:
        for route, share, proc in workers:
            app.routes[route].shadows.append(shadow.connect(proc, share, app.counters))
    except BaseException:
        for _, _, proc in workers:
            proc.kill()
        raise
    return app


def share_choices(path: str | None, models: list[ServedModel]) -> None:
    """Make the timing-based choices of warm-up (whether a model runs on the event loop or in a
    thread) once per revision: the first server to warm up publishes its choices at ``path``
    (written, then linked into place, so nobody reads half a file), every other server of the
    revision takes them. Without it, two servers timing a model near the threshold could serve
    it differently."""
    if not path:
        return
    mine = {m.ref: {"inline": m.inline, "lone_inline": m.lone_inline,
                    "call_ms": None if m.warm_call_s is None else round(m.warm_call_s * 1000, 4)} for m in models}
    target = Path(path)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(orjson.dumps(mine))
        os.link(tmp, target)
        log.info("warm-up choices for this revision made here: %s", mine)
        return
    except FileExistsError:
        pass
    except OSError as exc:  # a read-only folder: this server decides for itself
        log.warning("cannot share warm-up choices at %s (%s): decided here", path, exc)
        return
    finally:
        tmp.unlink(missing_ok=True)
    try:
        theirs = orjson.loads(target.read_bytes())
    except (OSError, orjson.JSONDecodeError) as exc:
        log.warning("cannot read the warm-up choices at %s (%s): decided here", path, exc)
        return
    for m in models:
        choice = theirs.get(m.ref)
        if choice is None or choice.get("inline") is None:
            continue
        chosen = (bool(choice["inline"]), bool(choice.get("lone_inline", choice["inline"])))
        if chosen != (m.inline, m.lone_inline):
            m.inline, m.lone_inline = chosen
            log.info("%s: %s, as the revision's first server chose (%.3f ms a call there, %.3f ms here)",
                     m.ref, m.mode, choice.get("call_ms") or 0, (m.warm_call_s or 0) * 1000)


def _keep_freed_memory() -> None:
    """glibc: keep freed memory in the process instead of returning it to the system at once.

    Data collection holds the arrays of requests that are not numeric (and so not staged) for up
    to a flush interval and then frees them in bulk; by default glibc then trims the heap and
    the next requests fault the pages back in (measured: 4.3 page faults and 10 us of system time
    per 100-row request). Freed memory is kept up to 512 MiB and arrays up to 4 MiB come from the
    heap, where they are reused.
    """
    libc = _libc()
    if libc is not None and hasattr(libc, "mallopt"):
        libc.mallopt(-1, 512 << 20)  # M_TRIM_THRESHOLD
        libc.mallopt(-2, 64 << 20)  # M_TOP_PAD
        libc.mallopt(-3, 4 << 20)  # M_MMAP_THRESHOLD


class Acceptor:
    """Takes connections from the listening socket the deployment's servers share: one per turn
    of the event loop, as nginx does by default (``multi_accept off``).

    Every server waiting on the socket is woken for a new connection, and the first to call
    ``accept`` gets it; a keep-alive connection then stays with that server. The event loop's
    own accept takes every pending connection at once, so the server that woke first took a
    whole burst: wrk's 8 connections, opened together, all went to one of two servers in 2 runs
    of 10 here (6.6-7.0k requests/s against 7.7-8.4k split 4/4). With ``peers`` (other servers on
    the socket), a server that took a connection looks again only after 30 us per connection
    it holds (at most 32 of them): the others, woken too, take the next ones, and in 20 runs
    of 8 and 64 connections no server was left out.
    """

    def __init__(self, sock: socket.socket, protocol_factory: Any, loop: asyncio.AbstractEventLoop,
                 connections: Any = (), peers: bool = False) -> None:
        self.connections = connections  # this server's open connections (uvicorn's set)
        self.pause = 30e-6 if peers else 0.0
        self.sock = sock
        self.factory = protocol_factory
        self.loop = loop
        self.accepting = False
        self.starting: set[asyncio.Task] = set()  # accepted connections not yet handed to uvicorn
        sock.setblocking(False)

    def start(self) -> None:
        if not self.accepting:
            self.accepting = True
            self.loop.add_reader(self.sock.fileno(), self._ready)

    def stop(self) -> None:
        if self.accepting:
            self.accepting = False
            self.loop.remove_reader(self.sock.fileno())

    def _ready(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except (BlockingIOError, InterruptedError, ConnectionAbortedError):
            return  # another server took it
        except OSError as exc:  # out of file descriptors: wait, as the event loop's own accept does
            log.error("cannot accept a connection: %s", exc)
            self.loop.remove_reader(self.sock.fileno())
            self.loop.call_later(1.0, self._resume)
            return
        conn.setblocking(False)
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        task = self.loop.create_task(self._serve(conn))
        self.starting.add(task)
        task.add_done_callback(self.starting.discard)
        if self.pause:  # alone on the socket, the reader stays: the loop calls again next turn
            self.loop.remove_reader(self.sock.fileno())
            self.loop.call_later(self.pause * min(len(self.connections), 32), self._resume)

    def _resume(self) -> None:
        if self.accepting:
            self.loop.add_reader(self.sock.fileno(), self._ready)

    async def settle(self) -> None:
        """Wait until every connection accepted is uvicorn's (before a shutdown closes them)."""
        if self.starting:
            await asyncio.gather(*self.starting, return_exceptions=True)

    async def _serve(self, conn: socket.socket) -> None:
        try:
            await self.loop.connect_accepted_socket(self.factory, conn)
        except OSError as exc:
            log.warning("cannot serve an accepted connection: %s", exc)
            conn.close()


def serve(app: ScoringApp, shared: socket.socket, *, announce: bool = True, graceful_s: float = 30.0, peers: int = 0) -> None:
    import uvicorn

    private = socket.create_server(("127.0.0.1", 0))
    loop_name = "asyncio"
    try:
        import uvloop  # noqa: F401

        loop_name = "uvloop"
    except ImportError:
        pass
    config = uvicorn.Config(
        app.asgi, loop=loop_name, http="httptools", lifespan="off", access_log=False,
        log_level="warning", timeout_graceful_shutdown=graceful_s, timeout_keep_alive=30,
        server_header=False, date_header=False,
    )
    acceptor: Acceptor | None = None

    class Server(uvicorn.Server):
        async def shutdown(self, sockets=None) -> None:
            if acceptor is not None:
                acceptor.stop()
                await acceptor.settle()
            await super().shutdown(sockets)
            # After the last request has been answered, and the shadows' copies of them:
            # write out everything collected.
            app.close_shadows(graceful_s)
            if app.collector is not None:
                app.collector.close()
                log.info("collection flushed: %d rows written", app.collector.written_rows)
            app.write_metrics()  # the final counts, for the deployment's later scrapes

    server = Server(config)

    def drain() -> None:
        # Stop taking connections from the shared socket (the next generation takes them) and
        # tell keep-alive clients to reconnect; the private port stays up for health probes.
        app.draining = True
        if acceptor is not None:
            acceptor.stop()
        log.info("draining: no new connections, answering with Connection: close")

    async def run() -> None:
        nonlocal acceptor
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGUSR1, drain)
        # uvicorn serves the private port; the shared socket is taken from by the acceptor,
        # with uvicorn's protocol (its connections are then closed and waited for on shutdown).
        task = asyncio.create_task(server.serve(sockets=[private]))

        async def snapshots() -> None:
            while True:  # the counters the deployment's other servers add to their /metrics
                await asyncio.sleep(1.0)
                app.write_metrics()

        writer = asyncio.create_task(snapshots())
        while not server.started and not task.done():
            await asyncio.sleep(0.005)
        if server.started:
            factory = functools.partial(config.http_protocol_class, config=config,
                                        server_state=server.server_state, app_state=server.lifespan.state)
            acceptor = Acceptor(shared, factory, loop, server.server_state.connections, peers > 0)
            if not app.draining:
                acceptor.start()
            if announce:
                print(f"READY {private.getsockname()[1]}", flush=True)
        await task
        writer.cancel()

    if loop_name == "uvloop":
        import uvloop

        uvloop.run(run())
    else:
        asyncio.run(run())


def resolve_paths(spec: dict[str, Any], base: Path) -> dict[str, Any]:
    """Paths in a spec may be relative to the spec's folder (a package, an image, a bundle)."""

    def at(p: str | None) -> str | None:
        return None if p is None else str(base / p) if not os.path.isabs(p) else p

    for m in spec["models"]:
        m["folder"] = at(m["folder"])
    if spec.get("entry_script"):
        spec["entry_script"]["folder"] = at(spec["entry_script"]["folder"])
    spec["keys_file"] = at(spec.get("keys_file"))
    if spec.get("collect") and spec["collect"].get("folder") and "://" not in spec["collect"]["folder"]:
        spec["collect"]["folder"] = at(spec["collect"]["folder"])  # a folder; s3://... stays as it is
    return spec


def fetch_models(spec: dict[str, Any]) -> None:
    """Models a spec names by their artifacts rather than by a folder it ships (a Kubernetes
    pod's spec: ``"fetch": {"store", "endpoint_url", "metadata"}``) are unpacked into their
    ``folder`` from the artifact store first, each file checked against its hash."""
    for m in spec["models"]:
        f = m.get("fetch")
        if f:
            from ..registry.flavors import fetch_version

            started = time.perf_counter()
            fetch_version(f["store"], f.get("endpoint_url"), f["metadata"], Path(m["folder"]))
            log.info("fetched %s:%s from %s in %.2f s", m["name"], m["version"], f["store"],
                     time.perf_counter() - started)


def serving_gc() -> None:
    """The cyclic garbage collector as a server runs it, once everything is loaded."""
    # Everything loaded so far (libraries, the model) lives as long as the process: keep it out
    # of the cyclic collector's sweeps, whose full passes otherwise add tens of milliseconds to
    # the slowest requests. (No full collection first: after imports and loading it finds nothing
    # to free and would cost some 60 ms of start-up.)
    gc.freeze()
    # A request allocates some 30 objects the cyclic collector tracks, and nearly all of them
    # are freed by reference counting when it is answered: at the default threshold (700) the
    # youngest generation was swept every 20-odd requests, each sweep going over the requests
    # then in flight (100-row requests, 64 connections: 100 us a sweep, 5.6 us a request).
    # Every 20,000 allocations it is a sweep per 600-odd requests. A/B, 2 x 8 rounds: 152.0 and
    # 149.1 us of CPU a request against 153.5 and 157.2.
    gc.set_threshold(20_000, 10, 10)
    gc.enable()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="mlops_lab.serving.server", description=__doc__.splitlines()[0])
    ap.add_argument("--spec", required=True, help="JSON file naming the models to serve")
    ap.add_argument("--fd", type=int, help="inherited listening socket")
    ap.add_argument("--peers", type=int, default=0, help="how many other servers take connections from that socket")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    args = ap.parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO,
        format="%(asctime)s pid=%(process)d %(levelname)s %(name)s: %(message)s",
    )
    if args.fd is not None:
        _die_with_parent()
    # No cyclic collection while starting: importing the model's libraries (scikit-learn alone
    # imports SciPy and pandas) allocates heavily and nothing of it is garbage; the collector's
    # passes then cost a tenth to a fifth of the start (measured here: 1.09-1.29 s against
    # 0.95-1.08 s to import sklearn.ensemble). Everything loaded is frozen below.
    gc.disable()
    spec = resolve_paths(orjson.loads(Path(args.spec).read_bytes()), Path(args.spec).resolve().parent)
    if spec.get("collect"):
        _keep_freed_memory()
    try:
        fetch_models(spec)
        app = build_app(spec)
    except Exception as exc:  # noqa: BLE001 - reported to the supervisor, which reports it to the user
        log.error("cannot start: %s: %s", type(exc).__name__, exc)
        print(f"FAILED {type(exc).__name__}: {exc}", flush=True)
        return 3
    from . import tracing

    if tracing.configured():  # OTEL_* set: spans around the stages (nothing otherwise)
        tracer = tracing.tracer_from_env(app.deployment)
        if tracer is not None:
            tracing.install(app, tracer)
            log.info("tracing requests with OpenTelemetry")
    if args.fd is not None:
        shared = socket.socket(fileno=args.fd)
    else:
        shared = socket.create_server((args.host, args.port), reuse_port=False)
        log.info("listening on http://%s:%d", args.host, shared.getsockname()[1])
    serving_gc()
    log.info("serving %s revision %s: %s", spec.get("deployment"), spec.get("revision"),
             ", ".join([f"{m.ref} ({m.traffic:g}%)" for r in app.routes.values() for m in r.models]
                       + [f"{s.ref} (shadow of {s.shadow:.0%})" for r in app.routes.values() for s in r.shadows]))
    serve(app, shared, peers=args.peers)
    return 0


if __name__ == "__main__":
    sys.exit(main())
