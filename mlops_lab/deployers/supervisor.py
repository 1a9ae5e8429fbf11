"""The supervisor of one local deployment: ``python -m mlops_lab.deployers.supervisor``.

A daemon (its own session, detached from the kernel or CLI that started it) that

* owns the deployment's listening socket for its whole life, so the port never changes and
  no connection is refused while servers come and go;
* runs ``workers`` scoring server processes on that socket (a *generation*), restarts any that
  exits with exponential backoff, and probes each one's health on its private port. A new
  deployment is ready when its first server is: the others start after it, one at a time
  (on two cores, servers importing their libraries side by side made the first one ready a
  fifth later, and its start varied by half a second);
* answers a control channel (a Unix socket) with ``status``, ``switch`` (update, rollback,
  promote: a new generation starts beside the old one, must pass readiness, then the old one
  drains and stops) and ``stop``;
* keeps the deployment's record in the registry store up to date (status, reason, PIDs, port);
* evaluates the deployment's alert rules (:mod:`mlops_lab.monitoring.alerts`) and sends what
  starts firing to their webhook.

It writes what happens to the deployment's log file.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

log = logging.getLogger("mlops_lab.supervisor")

BACKOFF_START_S = 0.5
BACKOFF_MAX_S = 30.0
HEALTH_EVERY_S = 2.0


def control_address(home: Path, name: str) -> str:
    """Where a deployment's supervisor listens for commands.

    On Linux an abstract Unix socket (no file, no path-length limit), elsewhere a socket file
    under the temporary folder; both derived from the home folder and the deployment name.
    """
    import hashlib

    digest = hashlib.sha256(f"{home.resolve()}\0{name}".encode()).hexdigest()[:24]
    if sys.platform.startswith("linux"):
        return "\0mlops-lab-" + digest
    import tempfile

    return str(Path(tempfile.gettempdir()) / f"mlops-lab-{digest}.sock")


@dataclass
class Server:
    proc: asyncio.subprocess.Process
    port: int = 0
    started: float = field(default_factory=time.time)
    healthy: bool = True


@dataclass
class Generation:
    spec: str
    revision: int
    servers: list[Server] = field(default_factory=list)
    stopping: bool = False
    failures: int = 0  # consecutive failed restarts, for the backoff


class StartFailed(Exception):
    pass


class Supervisor:
    def __init__(self, args: argparse.Namespace) -> None:
        self.name: str = args.name
        self.home = Path(args.home)
        self.folder = self.home / "deployments" / self.name
        self.log_path = self.folder / "deployment.log"
        self.workers: int = args.workers
        self.startup_timeout: float = args.startup_timeout
        self.drain_s: float = args.drain
        self.active: Generation | None = None
        self.stopping = asyncio.Event()
        self.switch_lock = asyncio.Lock()
        self.restarts = 0
        self.last_exit = ""
        self.status = "starting"
        self.reason = ""
        self.stop_reason = "stopped on request"
        self._registry = None
        self._tasks: set[asyncio.Task] = set()  # the loop keeps only weak references to tasks
        self.sock = socket.create_server((args.host, args.port), backlog=2048)
        self.port = self.sock.getsockname()[1]
        self.host = args.host

    # -- registry record -------------------------------------------------------------------

    @property
    def registry(self):
        if self._registry is None:
            from ..workspace import current_registry

            self._registry = current_registry()
        return self._registry

    def state(self) -> dict[str, Any]:
        gen = self.active
        return {
            "supervisor_pid": os.getpid(),
            "port": self.port,
            "host": self.host,
            "log": str(self.log_path),
            "spec": gen.spec if gen else None,
            "servers": [{"pid": s.proc.pid, "port": s.port, "healthy": s.healthy} for s in (gen.servers if gen else [])],
            "restarts": self.restarts,
            "last_exit": self.last_exit,
        }

    async def _record(self, status: str | None = None, reason: str = "", **extra: Any) -> None:
        if status is not None:
            self.status, self.reason = status, reason
        values = dict(status=status, status_reason=reason if status else None, state=self.state(), **extra)
        try:
            await asyncio.to_thread(self.registry.update_deployment, self.name, **values)
        except Exception as exc:  # noqa: BLE001 - the record is best effort; serving goes on
            log.warning("could not update the deployment record: %s", exc)

    # -- servers ---------------------------------------------------------------------------

    async def spawn(self, spec: str) -> Server:
        fd = self.sock.fileno()
        logf = open(self.log_path, "ab")  # noqa: SIM115 - handed to the child
        try:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "mlops_lab.serving.server", "--spec", spec, "--fd", str(fd),
                "--peers", str(self.workers - 1),
                stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE, stderr=logf,
                pass_fds=(fd,), cwd=str(self.folder),
            )
        finally:
            logf.close()
        try:
            line = await asyncio.wait_for(proc.stdout.readline(), timeout=self.startup_timeout)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            raise StartFailed(f"the server did not become ready within {self.startup_timeout:g} s") from None
        except asyncio.CancelledError:  # the deployment stops while this server starts
            proc.kill()
            await proc.wait()
            raise
        text = line.decode(errors="replace").strip()
        if text.startswith("READY"):
            return Server(proc, port=int(text.split()[1]))
        code = await proc.wait()
        if text.startswith("FAILED"):
            raise StartFailed(text[len("FAILED "):])
        raise StartFailed(f"the server exited with code {code} before it was ready: {self.log_tail()}")

    def log_tail(self, lines: int = 3) -> str:
        try:
            tail = self.log_path.read_bytes()[-4000:].decode(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(tail[-lines:])

    async def start_generation(self, spec: str, revision: int, count: int | None = None) -> Generation:
        """Start ``count`` servers (all ``workers`` by default) side by side; all must be ready."""
        gen = Generation(spec, revision)
        results = await asyncio.gather(*(self.spawn(spec) for _ in range(count or self.workers)), return_exceptions=True)
        errors = [r for r in results if isinstance(r, BaseException)]
        gen.servers = [r for r in results if isinstance(r, Server)]
        if errors:
            gen.stopping = True
            await self.stop_servers(gen.servers, drain=False)
            raise StartFailed(str(errors[0]))
        for s in gen.servers:
            self._spawn_task(self.watch(gen, s))
        return gen

    def _spawn_task(self, coro) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def watch(self, gen: Generation, server: Server) -> None:
        code = await server.proc.wait()
        if gen.stopping or self.stopping.is_set():
            return
        how = f"signal {-code}" if code < 0 else f"code {code}"
        self.restarts += 1
        self.last_exit = f"server pid {server.proc.pid} exited with {how}"
        log.warning("%s; restarting", self.last_exit)
        if server in gen.servers:
            gen.servers.remove(server)
        await self.start_more(gen, 1, restart=True)

    async def start_more(self, gen: Generation, count: int, restart: bool = False) -> None:
        """Add ``count`` servers to a generation, one at a time; a server that fails to start
        is tried again with exponential backoff (a restart waits before its first try too)."""
        for _ in range(count):
            while not gen.stopping and not self.stopping.is_set():
                if restart or gen.failures:
                    delay = min(BACKOFF_MAX_S, BACKOFF_START_S * (2 ** gen.failures))
                    await self._record("crashed", f"{self.last_exit}; restarting in {delay:g} s ({self.restarts} restarts)")
                    await asyncio.sleep(delay)
                    if gen.stopping or self.stopping.is_set():
                        return
                try:
                    new = await self.spawn(gen.spec)
                except StartFailed as exc:
                    gen.failures += 1
                    self.last_exit = f"{'restart' if restart else 'a further server'} failed: {exc}"
                    log.error(self.last_exit)
                    continue
                if gen.stopping or self.stopping.is_set():  # retired while this one started
                    await self.stop_servers([new], drain=False)
                    return
                gen.failures = 0
                gen.servers.append(new)
                self._spawn_task(self.watch(gen, new))
                if restart:
                    log.info("server restarted as pid %d", new.proc.pid)
                    await self._record("healthy", f"restarted after: {self.last_exit}")
                else:
                    log.info("server %d of %d started as pid %d", len(gen.servers), self.workers, new.proc.pid)
                    await self._record("healthy" if self.status == "crashed" else None)
                break

    async def stop_servers(self, servers: list[Server], drain: bool = True, grace_s: float = 20.0) -> None:
        alive = [s for s in servers if s.proc.returncode is None]
        if drain and alive:
            for s in alive:
                _signal(s.proc, signal.SIGUSR1)
            await asyncio.sleep(self.drain_s)
        for s in alive:
            _signal(s.proc, signal.SIGTERM)
        for s in alive:
            try:
                await asyncio.wait_for(s.proc.wait(), timeout=grace_s)
            except asyncio.TimeoutError:
                _signal(s.proc, signal.SIGKILL)
                await s.proc.wait()

    async def retire(self, gen: Generation) -> None:
        gen.stopping = True
        await self.stop_servers(list(gen.servers))

    # -- health ----------------------------------------------------------------------------

    async def probe(self, server: Server, timeout: float = 2.0) -> bool:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", server.port), timeout)
            writer.write(b"GET /health HTTP/1.1\r\nHost: supervisor\r\nConnection: close\r\n\r\n")
            await writer.drain()
            status = await asyncio.wait_for(reader.readline(), timeout)
            writer.close()
            return b" 200 " in status
        except (OSError, asyncio.TimeoutError):
            return False

    async def health_loop(self) -> None:
        while not self.stopping.is_set():
            await asyncio.sleep(HEALTH_EVERY_S)
            gen = self.active
            if gen is not None and not os.path.exists(gen.spec):
                # Its folder went, with the spec, keys and versions (a home folder removed; the
                # servers' metrics snapshots may make the folder again, never the spec): no face
                # can reach or restart this deployment any more, so it does not serve on unseen.
                self.stop_reason = f"its folder {self.folder} was removed"
                log.warning("stopping: %s", self.stop_reason)
                self.stopping.set()
                return
            if gen is None or self.switch_lock.locked():
                continue
            servers = list(gen.servers)
            if not servers:
                continue
            results = await asyncio.gather(*(self.probe(s) for s in servers))
            for s, ok in zip(servers, results):
                s.healthy = ok
            if self.status == "crashed" and len(servers) < self.workers:
                continue  # a restart is pending: watch() reports it
            if all(results):
                if self.status != "healthy":
                    await self._record("healthy", "")
            else:
                bad = [s.proc.pid for s, ok in zip(servers, results) if not ok]
                reason = f"server pid {', '.join(map(str, bad))} does not answer its health probe"
                if self.status != "unhealthy" or self.reason != reason:
                    await self._record("unhealthy", reason)

    # -- control channel -------------------------------------------------------------------

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            cmd = orjson.loads(line)
            reply = await self.command(cmd)
        except Exception as exc:  # noqa: BLE001 - every failure goes back to the caller
            log.exception("control command failed")
            reply = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
        writer.write(orjson.dumps(reply) + b"\n")
        try:
            await writer.drain()
        finally:
            writer.close()

    async def command(self, cmd: dict[str, Any]) -> dict[str, Any]:
        op = cmd.get("op")
        if op == "status":
            gen = self.active
            return {
                "ok": True, "status": self.status, "reason": self.reason, "state": self.state(),
                "revision": gen.revision if gen else None, "workers": self.workers,
            }
        if op == "switch":
            return await self.switch(cmd)
        if op == "stop":
            asyncio.get_running_loop().call_soon(self.stopping.set)
            return {"ok": True}
        return {"ok": False, "error": f"unknown command {op!r}"}

    async def switch(self, cmd: dict[str, Any]) -> dict[str, Any]:
        async with self.switch_lock:
            old = self.active
            log.info("switching to %s (%s)", cmd["spec"], cmd.get("note", ""))
            try:
                new = await self.start_generation(cmd["spec"], cmd.get("revision", 0))
            except StartFailed as exc:
                log.error("the new revision failed readiness; the current one keeps serving: %s", exc)
                return {"ok": False, "error": str(exc)}
            try:
                rec = await asyncio.to_thread(
                    self.registry.add_deployment_revision, self.name, cmd["models"],
                    config=cmd.get("config"), note=cmd.get("note", ""),
                )
            except Exception as exc:  # noqa: BLE001 - keep the old revision if it cannot be recorded
                new.stopping = True
                await self.stop_servers(new.servers, drain=False)
                return {"ok": False, "error": f"could not record the new revision: {exc}"}
            self.active = new
            new.revision = rec.revision
            if old is not None:
                await self.retire(old)
            await self._record("healthy", "")
            log.info("now serving revision %d", rec.revision)
            return {"ok": True, "revision": rec.revision}

    async def _start_the_others(self, gen: Generation) -> None:
        """The servers of a new deployment after its first; an update waits for them (it
        takes the switch lock), so that generations never start side by side."""
        async with self.switch_lock:
            await self.start_more(gen, self.workers - len(gen.servers))

    # -- life ------------------------------------------------------------------------------

    async def run(self, spec: str, ready_fd: int | None, revision: int = 1) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.stopping.set)
        try:
            control = await asyncio.start_unix_server(self.handle, path=control_address(self.home, self.name))
        except OSError as exc:
            holder = await _control_holder(self.home, self.name)
            msg = (
                f"another supervisor of deployment {self.name!r} for this home folder is running"
                + (f" (pid {holder})" if holder else "")
                + ": delete that deployment first, or stop that process"
            ) if exc.errno == 98 else f"cannot open the control channel: {exc}"
            log.error(msg)
            _tell(ready_fd, f"FAILED {msg}")
            return 2
        # Open the registry (SQLAlchemy's import is a fifth of a second) while the servers boot.
        opening = asyncio.ensure_future(asyncio.to_thread(lambda: self.registry))
        try:
            self.active = await self.start_generation(spec, revision, count=1)
        except StartFailed as exc:
            log.error("deployment failed to start: %s", exc)
            _tell(ready_fd, f"FAILED {exc}")
            control.close()
            return 2
        try:
            await opening
        except Exception as exc:  # noqa: BLE001 - reported by _record below as well
            log.warning("could not open the registry: %s", exc)
        shown = "127.0.0.1" if self.host in ("0.0.0.0", "", "::") else self.host
        await self._record("healthy", "", endpoint=f"http://{shown}:{self.port}")
        _tell(ready_fd, f"READY {self.port}")
        log.info("deployment %s ready on http://%s:%d (server 1 of %d)", self.name, self.host, self.port, self.workers)
        health = self._spawn_task(self.health_loop())
        more = self._spawn_task(self._start_the_others(self.active))
        from ..monitoring.watch import watch_alerts

        alerts = self._spawn_task(watch_alerts(lambda: self.registry, self.name, self.stopping))
        await self.stopping.wait()
        log.info("stopping")
        control.close()
        health.cancel()
        more.cancel()
        alerts.cancel()
        if self.active is not None:
            await self.retire(self.active)
        self.sock.close()
        await self._record("stopped", self.stop_reason)
        log.info("stopped")
        return 0


async def _control_holder(home: Path, name: str) -> int | None:
    """The PID of the supervisor already listening on this deployment's control channel."""
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_unix_connection(control_address(home, name)), 2)
        writer.write(orjson.dumps({"op": "status"}) + b"\n")
        await writer.drain()
        reply = orjson.loads(await asyncio.wait_for(reader.readline(), 2))
        writer.close()
        return reply.get("state", {}).get("supervisor_pid")
    except (OSError, asyncio.TimeoutError, orjson.JSONDecodeError):
        return None


def _signal(proc: asyncio.subprocess.Process, sig: int) -> None:
    try:
        proc.send_signal(sig)
    except ProcessLookupError:
        pass


def _tell(fd: int | None, text: str) -> None:
    if fd is None:
        return
    try:
        os.write(fd, (text + "\n").encode())
        os.close(fd)
    except OSError:
        pass


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="mlops_lab.deployers.supervisor")
    ap.add_argument("--name", required=True)
    ap.add_argument("--home", required=True)
    ap.add_argument("--spec", required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--startup-timeout", type=float, default=120.0)
    ap.add_argument("--drain", type=float, default=1.0)
    ap.add_argument("--revision", type=int, default=1, help="the revision the spec is (a restart serves the current one)")
    ap.add_argument("--ready-fd", type=int)
    ap.add_argument("--daemonize", action="store_true", help="fork, and let the parent exit at once")
    args = ap.parse_args(argv)
    if args.daemonize and os.fork() > 0:
        os._exit(0)  # the child, re-parented to init, is the supervisor
    logging.basicConfig(
        stream=sys.stderr, level=logging.INFO,
        format="%(asctime)s pid=%(process)d %(levelname)s %(name)s: %(message)s",
    )
    try:
        sup = Supervisor(args)
    except OSError as exc:
        msg = f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}"
        log.error(msg)
        _tell(args.ready_fd, f"FAILED {msg}")
        return 2
    try:
        import uvloop

        return uvloop.run(sup.run(args.spec, args.ready_fd, args.revision))
    except ImportError:
        return asyncio.run(sup.run(args.spec, args.ready_fd, args.revision))


if __name__ == "__main__":
    sys.exit(main())
