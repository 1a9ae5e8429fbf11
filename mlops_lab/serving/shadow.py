"""A shadow's worker: a process of its own at idle scheduling priority beside each server.

A server answers its caller from the serving version, then hands a copy of the request's decoded
rows to the shadow (:class:`ShadowLink`). Copies are gathered for a few milliseconds and written
in one message down a pipe; the worker (``python -m mlops_lab.serving.shadow``) loads the shadow
version, scores what it reads in batches, collects the answers (``<deployment>/shadow/``) and
writes its counters beside the servers' for ``/metrics``.

Why a process at ``SCHED_IDLE``: a shadow does as much work as the serving version. In the
server's own thread it took the GIL and the CPU from the requests: 30-45 % of the throughput of a
LogisticRegression deployment at 1 and 8 connections here (``bench/serving.py``). At idle priority
it runs on the CPU time the servers leave, so under load the serving version keeps the machine
and the shadow falls behind: the pipe (1 MiB) and a bounded buffer fill, and further copies are
dropped and counted (``mlops_lab_shadow_request_total{outcome="dropped"}``); when load eases it
catches up. Nothing a caller waits for ever waits for it.

Message: 4-byte length, then a pickle of ``[(request_id, wall time of the copy, form, data, n),
...]``. The worker's latency of a copy is from that wall time to its answer.
"""

from __future__ import annotations

import argparse
import asyncio
import fcntl
import logging
import os
import pickle
import struct
import subprocess
import sys
import time
from typing import Any

log = logging.getLogger("mlops_lab.serving.shadow")

#: Gather copies this long before writing them to the worker in one message.
GATHER_S = 0.005
#: Bytes of copies a server keeps for a worker whose pipe is full; beyond, copies are dropped.
BUFFER_BYTES = 4 << 20
PIPE_BYTES = 1 << 20
_F_SETPIPE_SZ = 1031
_HEADER = struct.Struct("<I")


class ShadowLink:
    """The server's end: copies gathered, then written to the worker's pipe without blocking."""

    def __init__(self, ref: str, share: float, proc: subprocess.Popen, counters: Any,
                 buffer_bytes: int = BUFFER_BYTES) -> None:
        self.ref = ref
        self.shadow = share
        self.proc = proc
        self.counters = counters
        self.buffer_bytes = buffer_bytes
        self.fd = proc.stdin.fileno()
        os.set_blocking(self.fd, False)
        self._gathered: list[tuple] = []
        self._out = bytearray()  # what the pipe has not taken yet
        self._timer: asyncio.TimerHandle | None = None
        self._writing = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self.broken = False

    def copy(self, request_id: str, chunk: Any) -> None:
        """Hand over one request's rows (on the event loop, after its caller was answered)."""
        if self.broken or len(self._out) > self.buffer_bytes:
            self.counters.shadow(self.ref, "dropped")
            return
        self._gathered.append((request_id, time.time(), chunk.form, chunk.data, chunk.n))
        if self._timer is None:
            self._loop = asyncio.get_running_loop()
            self._timer = self._loop.call_later(GATHER_S, self.send)

    def send(self) -> None:
        """Write what was gathered as one message (what the pipe does not take waits)."""
        self._timer = None
        gathered, self._gathered = self._gathered, []
        if not gathered:
            return
        payload = pickle.dumps(gathered, protocol=pickle.HIGHEST_PROTOCOL)
        if len(self._out) > self.buffer_bytes:
            for _ in gathered:
                self.counters.shadow(self.ref, "dropped")
            return
        self._out += _HEADER.pack(len(payload))
        self._out += payload
        self._flush()

    def _flush(self) -> None:
        while self._out:
            try:
                n = os.write(self.fd, self._out)
            except BlockingIOError:
                if not self._writing and self._loop is not None:
                    self._writing = True
                    self._loop.add_writer(self.fd, self._writable)
                return
            except OSError as exc:  # the worker is gone: its copies are dropped from now on
                if not self.broken:
                    log.error("the shadow %s's worker is gone (%s): its copies are dropped", self.ref, exc)
                self.broken = True
                self._out.clear()
                return
            del self._out[:n]
        if self._writing and self._loop is not None:
            self._writing = False
            self._loop.remove_writer(self.fd)

    def _writable(self) -> None:
        self._flush()

    def close(self, timeout: float) -> None:
        """Send what is left, close the pipe and wait (at most ``timeout`` s) for the worker to
        answer what it holds and write out its collected data."""
        if self._timer is not None:
            self._timer.cancel()
        self.send()
        if self._writing and self._loop is not None:
            self._loop.remove_writer(self.fd)
            self._writing = False
        if self._out and not self.broken:
            os.set_blocking(self.fd, True)
            try:
                os.write(self.fd, self._out)
            except OSError:
                pass
        try:
            self.proc.stdin.close()
        except OSError:
            pass
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("the shadow %s's worker did not finish within %.0f s: stopped", self.ref, timeout)
            self.proc.kill()


def spawn(folder: str, deployment: str, collect: dict[str, Any] | None, metrics_dir: str | None,
          batching: dict[str, Any]) -> subprocess.Popen:
    """Start the worker of the shadow version in ``folder`` (it loads while the server does)."""
    import orjson

    config = {"folder": folder, "deployment": deployment, "collect": collect, "metrics_dir": metrics_dir,
              "batching": batching}
    proc = subprocess.Popen([sys.executable, "-m", "mlops_lab.serving.shadow", orjson.dumps(config).decode()],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True)
    try:
        fcntl.fcntl(proc.stdin.fileno(), _F_SETPIPE_SZ, PIPE_BYTES)
    except OSError:
        pass  # the system's default size, 64 KiB
    return proc


def connect(proc: subprocess.Popen, share: float, counters: Any, timeout: float = 120.0) -> ShadowLink:
    """Wait until the worker has loaded and warmed up its version: a version that cannot start
    fails the revision's start, as a serving one does."""
    from ..deployers.common import read_line

    line = read_line(proc.stdout.fileno(), timeout)
    if not line.startswith("READY "):
        proc.kill()
        reason = line.removeprefix("FAILED ") if line.startswith("FAILED ") and "no answer" not in line \
            else f"not ready within {timeout:g} s"
        raise RuntimeError(f"the shadow version did not start: {reason}")
    return ShadowLink(line.split(" ", 1)[1], share, proc, counters)


# -- the worker --------------------------------------------------------------------------------

class _Reader:
    """Messages from the server's pipe; calls ``idle()`` every second it waits."""

    def __init__(self, fd: int, idle) -> None:
        self.fd, self.idle, self.buf = fd, idle, bytearray()

    def read(self, n: int) -> bytes | None:
        import select

        while len(self.buf) < n:
            ready, _, _ = select.select([self.fd], [], [], 1.0)
            if not ready:
                self.idle()
                continue
            part = os.read(self.fd, max(n - len(self.buf), 1 << 16))
            if not part:
                return None
            self.buf += part
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out


def _answers(model, chunks: list) -> list[tuple[Any, int, str | None]]:
    """``(output, status, error id)`` per chunk: in one call, or one by one if that fails."""
    try:
        return [(out, 200, None) for out in model._run(chunks)]
    except Exception as exc:  # noqa: BLE001 - the request at fault is found below
        if len(chunks) == 1:
            err = model._fail(exc)
            return [(None, err.http_status, err.error_id)]
    out = []
    for chunk in chunks:
        try:
            out.append((model._run([chunk])[0], 200, None))
        except Exception as exc:  # noqa: BLE001
            err = model._fail(exc)
            out.append((None, err.http_status, err.error_id))
    return out


def work(config: dict[str, Any], stdin, stdout) -> int:
    from ..monitoring.collector import CollectConfig, Collector
    from ..monitoring.records import SHADOW_PART
    from ..registry.flavors import load_folder
    from ..registry.inputs import Chunk
    from .metrics import Counters, Snapshots
    from .runtime import BatchConfig, ServedModel, make_record

    try:
        loaded, meta = load_folder(config["folder"])
        model = ServedModel(meta["name"], meta["version"], loaded, meta, 0.0,
                            BatchConfig(**(config.get("batching") or {})), shadow=1.0)
        model.warm_up()
    except Exception as exc:  # noqa: BLE001 - reported to the server, which fails its start
        stdout.write(f"FAILED {type(exc).__name__}: {exc}\n".encode())
        stdout.flush()
        return 3
    collect = CollectConfig.from_spec(config.get("collect"))
    collector = None
    if collect.enabled and collect.folder:
        collect.rate = 1.0  # every answer of a shadow: the share of copies already samples
        collector = Collector(f"{config['deployment']}/{SHADOW_PART}", collect)
    counters = Counters()
    snapshots = Snapshots(config.get("metrics_dir"))

    def write_counters() -> None:  # beside the servers' snapshots, for /metrics
        snapshots.write({**counters.snapshot(None), "kind": "shadow"})

    stdout.write(f"READY {model.ref}\n".encode())
    stdout.flush()
    # Loaded at the server's priority (an update under load must not wait for idle time to start
    # its shadow); from here on, only on the CPU time the servers leave.
    from ..monitoring.staging import idle_priority

    idle_priority()
    reader = _Reader(stdin.fileno(), write_counters)
    written = time.monotonic()
    max_rows = model.batching.max_batch_rows
    while True:
        header = reader.read(_HEADER.size)
        if header is None:
            break  # the server closed the pipe: it is stopping
        body = reader.read(_HEADER.unpack(header)[0])
        if body is None:
            break
        copies = pickle.loads(body)
        i = 0
        while i < len(copies):  # in calls of at most max_batch_rows rows
            batch, rows = [copies[i]], copies[i][4]
            i += 1
            while i < len(copies) and rows + copies[i][4] <= max_rows:
                rows += copies[i][4]
                batch.append(copies[i])
                i += 1
            chunks = [Chunk(form, data, n) for _, _, form, data, n in batch]
            for (request_id, t_copy, *_), chunk, (out, status, error_id) in zip(batch, chunks, _answers(model, chunks)):
                latency_s = time.time() - t_copy
                counters.shadow(model.ref, str(status), latency_s)
                if collector is not None:
                    collector.add(make_record(model, request_id, t_copy, latency_s * 1000.0, status, chunk, out, error_id))
        if time.monotonic() - written >= 1.0:
            write_counters()
            written = time.monotonic()
    if collector is not None:
        collector.close()
    write_counters()
    return 0


def main(argv: list[str] | None = None) -> int:
    import orjson

    ap = argparse.ArgumentParser(prog="mlops_lab.serving.shadow", description=__doc__.splitlines()[0])
    ap.add_argument("config", help="JSON: folder, deployment, collect, metrics_dir, batching")
    args = ap.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s pid=%(process)d %(levelname)s %(name)s: %(message)s")
    from ._process import die_with_parent

    die_with_parent()
    return work(orjson.loads(args.config), sys.stdin.buffer, sys.stdout.buffer)


if __name__ == "__main__":
    sys.exit(main())
