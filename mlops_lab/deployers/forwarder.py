"""The stable address of a container deployment: a small TCP forwarder.

``python -m mlops_lab.deployers.forwarder --listen HOST:PORT --state FILE --ready-fd N``

It owns the deployment's published address and forwards each connection to the container that
serves the current revision (a loopback port the engine published). An update starts a new
container, and when it is ready the deployer writes the new upstream into ``FILE`` (atomically);
the forwarder sends new connections there and acknowledges in ``FILE.active``. Connections
already open stay with the old container, which drains them (``Connection: close``) before it
stops: clients see no refused connection and no failed request. It runs detached, so the
deployment outlives the kernel that made it, and it evaluates the deployment's alert rules
(:mod:`mlops_lab.monitoring.watch`).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
import socket
import sys
from pathlib import Path

log = logging.getLogger("mlops_lab.forwarder")


class Forwarder:
    def __init__(self, state: Path) -> None:
        self.state = state
        self.upstream: tuple[str, int] | None = None
        self._mtime: int | None = None
        self.open = 0

    def reload(self) -> None:
        try:
            mtime = self.state.stat().st_mtime_ns
        except FileNotFoundError:
            return
        if mtime == self._mtime:
            return
        self._mtime = mtime
        data = json.loads(self.state.read_text())
        up = (data["host"], int(data["port"]))
        if up != self.upstream:
            log.info("upstream %s:%d (was %s)", up[0], up[1], self.upstream)
            self.upstream = up
        tmp = self.state.with_name(self.state.name + ".active.tmp")
        tmp.write_text(json.dumps({"host": up[0], "port": up[1], "pid": os.getpid()}))
        os.replace(tmp, self.state.with_name(self.state.name + ".active"))

    async def watch(self) -> None:
        while True:
            try:
                self.reload()
            except (OSError, ValueError, KeyError) as exc:
                log.warning("cannot read %s: %s", self.state, exc)
            await asyncio.sleep(0.05)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up = self.upstream
        if up is None:
            writer.close()
            return
        try:
            ur, uw = await asyncio.open_connection(*up)
        except OSError as exc:
            log.warning("upstream %s:%d refused: %s", up[0], up[1], exc)
            writer.close()
            return
        for w in (writer, uw):
            sock = w.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.open += 1
        try:
            await asyncio.gather(_pipe(reader, uw), _pipe(ur, writer))
        finally:
            self.open -= 1


async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        while True:
            data = await reader.read(65536)
            if not data:
                break
            writer.write(data)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        try:
            if writer.can_write_eof():
                writer.write_eof()
            else:
                writer.close()
        except (OSError, RuntimeError):
            writer.close()


async def run(host: str, port: int, state: Path, ready_fd: int | None, name: str | None = None) -> None:
    fwd = Forwarder(state)
    fwd.reload()
    server = await asyncio.start_server(fwd.handle, host, port, reuse_address=True, backlog=1024)
    bound = server.sockets[0].getsockname()[1]
    watcher = asyncio.get_running_loop().create_task(fwd.watch())
    log.info("forwarding %s:%d", host, bound)
    if ready_fd is not None:
        os.write(ready_fd, f"READY {bound}\n".encode())
        os.close(ready_fd)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    alerts = None
    if name is not None:
        # the deployment's alert rules, evaluated here while it runs (the registry is that of
        # the settings in this process's environment, which the deployer passed)
        from ..monitoring.watch import watch_alerts
        from ..workspace import current_registry

        alerts = loop.create_task(watch_alerts(current_registry, name, stop))
    await stop.wait()
    watcher.cancel()
    if alerts is not None:
        alerts.cancel()
    server.close()
    await server.wait_closed()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="mlops_lab.deployers.forwarder", description=__doc__.splitlines()[0])
    ap.add_argument("--name", required=True, help="the deployment (for ps and logs)")
    ap.add_argument("--listen", required=True, help="HOST:PORT (port 0: a free one)")
    ap.add_argument("--state", required=True, help="JSON file naming the upstream")
    ap.add_argument("--ready-fd", type=int)
    ap.add_argument("--daemonize", action="store_true")
    args = ap.parse_args(argv)
    if args.daemonize and os.fork() > 0:
        return 0
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s pid=%(process)d %(levelname)s %(name)s: %(message)s")
    host, _, port = args.listen.rpartition(":")
    try:
        import uvloop

        runner = uvloop.run
    except (ImportError, AttributeError):
        runner = asyncio.run
    try:
        runner(run(host, int(port), Path(args.state), args.ready_fd, args.name))
    except OSError as exc:
        if args.ready_fd is not None:
            os.write(args.ready_fd, f"FAILED cannot listen on {args.listen}: {exc.strerror or exc}\n".encode())
        return 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
