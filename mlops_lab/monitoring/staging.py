"""Staged request files: written cheaply while a server is busy, compacted to Parquet when the
machine is idle.

Why: turning collected rows into Parquet (columns, encoding, lz4) and writing them through the
page cache cost 45-77 us of CPU per 100-row request at saturation (a fifth of a server's CPU;
measured in ``bench/monitoring.py``). Here, instead, the request path hands each request's
arrays (rows as parsed, row-major float64) to a block by reference; the writer thread copies a
full block (8 MiB of rows or 4,096 requests), or the open one every ``flush_seconds``, into
page-aligned memory it reuses and writes it in one ``O_DIRECT`` write, straight to the disk (measured here: 0.5-0.8 us of kernel time per 16 KiB, against 25-40
us through new page-cache pages). A compactor process per server, at idle scheduling priority
(``SCHED_IDLE``: it runs only on CPU time nothing else wants), turns each staged file into the
Parquet file the collector would have written directly. The staged backlog has a budget
(``stage_budget_mb``): beyond it, flushes write Parquet directly again, so saturation that
outlasts the budget costs what direct writing costs.

Only records of the common shape go through blocks: numeric rows of the signature's width (or
none, for a failed request) and one numeric prediction per row (or none). Other records (string
columns, records of dicts, another model's columns) keep the queue of references and are
written to Parquet directly.

A staged file (``part-X.stage``) is three page-aligned regions and a footer::

    values       rows x width float64, row-major (the requests' rows, in order)
    predictions  rows float64 (cast back to int64 when every prediction was an integer)
    meta         an Arrow IPC file, one row per request: time (epoch s), request_id,
                 model_version, status_code, latency_ms, error_id, n (rows; 0 for a request
                 that failed before it had rows), has_prediction; the stored column names
                 are in its schema metadata
    footer       the last 72 bytes: magic, format version, width, rows, and the offset and
                 length of each region

Files and their life (``<deployment>`` is the collector's folder for one deployment)::

    <deployment>/staging/date=D/.part-X.stage.tmp   written by the server's collector
    <deployment>/staging/date=D/part-X.stage        renamed when whole
    <deployment>/requests/date=D/part-X.parquet     written by a compactor (temp + rename),
                                                    which then deletes part-X.stage

A compactor holds an exclusive ``flock`` on the staged file while it works, so two compactors
never convert one file. Readers (:func:`read_staged`) read the staged files that have no Parquet
file of the same name yet, so collected data is visible at once and never counted twice; a
crash between the rename and the delete leaves both, and the next compactor only deletes.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import struct
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from .collector import CHUNK_RECORDS, Record, assemble, stored_inputs, write_parquet

log = logging.getLogger("mlops_lab.compactor")

STAGING = "staging"
SUFFIX = ".stage"


def staged_files(root: Path) -> list[Path]:
    """Whole staged files of one deployment, oldest first (temporary files left out)."""
    folder = root / STAGING
    if not folder.is_dir():
        return []
    out = []
    for day in sorted(folder.iterdir()):
        if day.name.startswith("date=") and day.is_dir():
            out.extend(sorted(p for p in day.iterdir() if p.name.startswith("part-") and p.name.endswith(SUFFIX)))
    return out


def staged_bytes(root: Path) -> int:
    total = 0
    for p in staged_files(root):
        try:
            total += p.stat().st_size
        except FileNotFoundError:  # compacted meanwhile
            pass
    return total


def parquet_for(staged: Path, root: Path) -> Path:
    """The Parquet file a staged file becomes: same day, same name."""
    return root / "requests" / staged.parent.name / (staged.name[: -len(SUFFIX)] + ".parquet")


# -- blocks (filled on the request path, written by the collector's writer thread) ----------

_PAGE = 4096
_MAGIC = b"MLSTAGE1"
#: magic, format version, width, rows, then offset and length of the values, predictions and meta
_FOOTER = struct.Struct("<8sIIqqqqqqq")
#: Bytes of input values per block: a block is written when full (or every flush_seconds).
BLOCK_BYTES = 8 << 20
# A block also holds at most CHUNK_RECORDS requests: the writer builds its per-request values
# while holding the GIL, and 4,096 of them take a few milliseconds (50,000 1-row requests would
# hold up the event loop for tens of milliseconds).


def _round_up(n: int) -> int:
    return -(-n // _PAGE) * _PAGE


class Block:
    """Requests of one input layout, taken as they are answered; one staged file when written.

    The values and predictions live in one anonymous mapping (page-aligned, as ``O_DIRECT``
    needs), reused for the next rows once written, so its pages stay in memory and warm.
    """

    def __init__(self, width: int, capacity: int) -> None:
        import mmap

        self.width = width
        self.capacity = capacity
        self.values_len = _round_up(capacity * width * 8)
        self.mem = mmap.mmap(-1, self.values_len + _round_up(capacity * 8))
        self.values = np.frombuffer(self.mem, dtype=np.float64, count=capacity * width).reshape(capacity, width)
        self.preds = np.frombuffer(self.mem, dtype=np.float64, count=capacity, offset=self.values_len)
        self.reset()

    def reset(self) -> None:
        self.rows = 0
        self.meta: list[tuple] = []
        self.inputs: list[np.ndarray] = []
        self.outputs: list[np.ndarray] = []
        self.pred_int = True
        self.prows = 0
        self.day_end = 0.0
        self.counted = 0  # rows as the queue bound counts them (a request with no rows: one)

    def add(self, r: Record) -> None:
        """Take one record (the caller checked it fits): its arrays by reference, copied into
        the block by the writer (:meth:`fill`), not on the request path."""
        n = r.n
        if n:
            self.inputs.append(r.inputs)
            if r.output is not None:
                self.outputs.append(r.output)
            self.rows += n
        self.counted += max(n, 1)
        self.meta.append((r.time, r.request_id, r.model_version, r.status, r.latency_ms, r.error_id, n, r.output is not None))

    def fill(self, keep: Any) -> None:
        """Copy the records' rows and predictions into the block's memory (the writer thread)."""
        if self.inputs:
            values = self.values[:self.rows]
            if keep is None:
                np.concatenate(self.inputs, axis=0, out=values, casting="same_kind")
            else:
                np.concatenate([x[:, keep] for x in self.inputs], axis=0, out=values, casting="same_kind")
        self.prows = sum(len(o) for o in self.outputs)
        if self.outputs:
            # Only the rows that have a prediction, in order (the meta says which requests).
            np.concatenate(self.outputs, out=self.preds[:self.prows], casting="same_kind")
            self.pred_int = all(o.dtype.kind in "biu" for o in self.outputs)
        self.inputs, self.outputs = [], []  # the requests' arrays can go


class Lane:
    """The block lane of one collector: which records fit it, and its blocks.

    ``max_blocks`` bounds the memory (the queue bound of the collector): when every block is
    full and waiting for the writer, a record is dropped and counted, never waited for.
    """

    def __init__(self, columns: list[str], exclude: set[str], max_rows: int, flush_rows: int) -> None:
        self.columns = columns
        self.width = len(columns)
        keep = stored_inputs(columns, exclude)
        self.stored = [s for _, s in keep]
        idx = [columns.index(n) for n, _ in keep]
        self.keep = None if len(idx) == self.width else np.array(idx)
        per_row = max(len(idx), 1) * 8
        capacity = max(512, min(flush_rows, BLOCK_BYTES // per_row, max_rows // 2))
        self.capacity = -(-capacity // 512) * 512
        self.max_blocks = max(2, -(-max_rows // self.capacity))
        self.blocks = 0
        self.free: list[Block] = []
        self.open: Block | None = None
        self.full: list[Block] = []
        self._float_types: list[str] | None = None

    def fits(self, r: Record) -> bool:
        if r.columns is not self.columns and r.columns != self.columns:
            return False
        types = r.types
        if types is not None and types is not self._float_types:
            if any(t != "float" for t in types):
                return False
            self._float_types = types  # the same list comes with every request of a model
        x, o = r.inputs, r.output
        if x is None:
            if r.n:
                return False
        elif not (type(x) is np.ndarray and x.ndim == 2 and x.shape[1] == self.width and x.dtype.kind in "biuf"
                  and len(x) == r.n and r.n <= self.capacity):
            return False
        return o is None or (type(o) is np.ndarray and o.ndim == 1 and o.dtype.kind in "biuf" and len(o) == r.n)

    def take(self, r: Record) -> bool:
        """Add the record to the open block; False if no block has room (drop it)."""
        block = self.open
        if block is not None and (block.rows + r.n > block.capacity or len(block.meta) >= CHUNK_RECORDS
                                  or r.time >= block.day_end):
            self.full.append(block)
            block = self.open = None
        if block is None:
            if self.free:
                block = self.free.pop()
            elif self.blocks < self.max_blocks:
                block = Block(len(self.stored), self.capacity)
                self.blocks += 1
            else:
                return False
            block.day_end = _day_end(r.time)
            self.open = block
        block.add(r)
        return True

    def pending(self, everything: bool) -> list[Block]:
        """Blocks to write now (under the collector's queue lock): the full ones, and the open
        one too when ``everything`` (a timed flush or a stop)."""
        out, self.full = self.full, []
        if everything and self.open is not None and self.open.meta:
            out.append(self.open)
            self.open = None
        return out

    def release(self, block: Block) -> None:
        block.reset()
        self.free.append(block)


def _day_end(ts: float) -> float:
    return (ts // 86400 + 1) * 86400


def block_meta(block: Block, columns: list[str]) -> Any:
    """The block's per-request values as an Arrow record batch (the meta region)."""
    import pyarrow as pa

    times, ids, versions, statuses, latencies, errors, ns, has = zip(*block.meta)
    return pa.record_batch({
        "time": pa.array(np.array(times)),
        "request_id": pa.array(ids, pa.string()),
        "model_version": pa.array(versions, pa.string()),
        "status_code": pa.array(np.array(statuses, dtype=np.int16)),
        "latency_ms": pa.array(np.array(latencies, dtype=np.float32)),
        "error_id": pa.array(errors, pa.string()),
        "n": pa.array(np.array(ns, dtype=np.int32)),
        "has_prediction": pa.array(np.array(has, dtype=bool)),
    }).replace_schema_metadata({
        b"columns": json.dumps(columns).encode(),
        b"prediction_type": b"int64" if block.pred_int else b"float64",
    })


def block_table(block: Block, meta: Any) -> Any:
    """The block as the table of request records (for writing Parquet directly)."""
    return expand(meta, block.values[:block.rows], block.preds[:block.prows].copy())


def write_block(path: Path, block: Block, meta: Any, buffer: StageBuffer) -> None:
    """Write a block as a staged file at ``path`` (the caller renames it into place)."""
    import pyarrow as pa

    rows = block.rows
    values_len = _round_up(rows * block.width * 8)
    preds_len = _round_up(block.prows * 8)
    mem = buffer.aligned(pa.ipc.get_record_batch_size(meta) + (1 << 20))
    sink = pa.FixedSizeBufferWriter(pa.py_buffer(mem))
    with pa.ipc.new_file(sink, meta.schema) as w:
        w.write_batch(meta)
    meta_len = sink.tell()
    del sink
    tail = _round_up(meta_len + _FOOTER.size)
    mem[meta_len:tail - _FOOTER.size] = bytes(tail - _FOOTER.size - meta_len)
    mem[tail - _FOOTER.size:tail] = _FOOTER.pack(
        _MAGIC, 1, block.width, rows, 0, rows * block.width * 8, values_len, block.prows * 8, values_len + preds_len, meta_len)
    view, mview = memoryview(block.mem), memoryview(mem)
    parts = [view[:values_len], view[block.values_len:block.values_len + preds_len], mview[:tail]]
    try:
        _write_direct(path, parts)
    except OSError:
        with open(path, "wb") as f:  # no O_DIRECT here: through the page cache
            for part in parts:
                f.write(part)
    finally:
        for part in (*parts, view, mview):
            part.release()


class StageBuffer:
    """A reused page-aligned buffer for the meta region of staged files."""

    def __init__(self) -> None:
        self._mem: Any = None

    def aligned(self, size: int) -> Any:
        import mmap

        if self._mem is None or len(self._mem) < size:
            self._mem = mmap.mmap(-1, _round_up(max(size, 1 << 20)))  # anonymous mappings are page-aligned
        return self._mem


def _write_direct(path: Path, parts: list[memoryview]) -> None:
    """Write page-aligned parts with ``O_DIRECT`` (straight to the disk, no page cache)."""
    direct = getattr(os, "O_DIRECT", 0)
    if not direct:
        raise OSError("no O_DIRECT on this platform")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | direct, 0o644)
    try:
        for part in parts:
            done = 0
            while done < len(part):
                done += os.write(fd, part[done:])
    finally:
        os.close(fd)


# -- reading ---------------------------------------------------------------------------------


def _open(path: Path | int) -> Any:
    import pyarrow as pa

    if isinstance(path, int):
        with os.fdopen(os.dup(path), "rb") as f:
            return pa.py_buffer(f.read())
    return pa.memory_map(str(path)).read_buffer()


def read_file(path: Path | int) -> Any:
    """A staged file (a path, or an open file descriptor) as the table of request records the
    collector would have written to Parquet."""
    import pyarrow as pa

    buf = _open(path)
    if buf.size < _FOOTER.size:
        raise ValueError("not a staged file (too short)")
    magic, version, width, rows, v_off, v_len, p_off, p_len, m_off, m_len = _FOOTER.unpack(
        buf.slice(buf.size - _FOOTER.size).to_pybytes())
    if magic != _MAGIC or version != 1:
        raise ValueError("not a staged file (bad footer)")
    meta = pa.ipc.open_file(buf.slice(m_off, m_len)).read_all().combine_chunks()
    values = np.frombuffer(buf, dtype=np.float64, count=rows * width, offset=v_off).reshape(rows, width)
    preds = np.frombuffer(buf, dtype=np.float64, count=p_len // 8, offset=p_off)
    return expand(meta, values, preds)


def expand(meta: Any, values: np.ndarray, preds: np.ndarray) -> Any:
    """One row per request -> one row per input row (:func:`assemble`)."""
    import pyarrow as pa

    if isinstance(meta, pa.RecordBatch):
        meta = pa.Table.from_batches([meta])

    md = meta.schema.metadata or {}
    names = json.loads(md.get(b"columns", b"[]"))
    n = meta.column("n").to_numpy().astype(np.int64)
    counts = np.maximum(n, 1)
    total = int(counts.sum())
    real = np.repeat(n > 0, counts)  # rows that hold a request's input (not a failed request's placeholder)
    all_real = bool(real.all())
    if not all_real:
        full = np.zeros((total, values.shape[1]))
        full[real] = values
        values = full
    by_column = np.ascontiguousarray(values.T)  # each column one contiguous block
    mask = None if all_real else ~real
    inputs = {name: pa.array(by_column[i], mask=mask) for i, name in enumerate(names)}

    prediction = None
    has = meta.column("has_prediction").to_numpy(zero_copy_only=False)
    if has.any():
        if md.get(b"prediction_type") == b"int64":
            preds = preds.astype(np.int64)
        where = np.repeat(has & (n > 0), counts)  # output rows that have a prediction
        if where.all():
            prediction = pa.array(preds)
        else:
            full = np.zeros(total, dtype=preds.dtype)
            full[where] = preds
            prediction = pa.array(full, mask=~where)
    return assemble(
        pa, counts,
        times=meta.column("time").to_numpy(),
        request_ids=meta.column("request_id").chunk(0),
        versions=meta.column("model_version").chunk(0),
        statuses=meta.column("status_code").to_numpy(),
        latencies=meta.column("latency_ms").to_numpy(),
        error_ids=meta.column("error_id").chunk(0),
        inputs=inputs,
        prediction=prediction,
    )


def read_staged(root: Path) -> list[tuple[str, Any]]:
    """``(day, table)`` for every staged file of a deployment with no Parquet file yet.

    The caller lists the Parquet files first, then calls this: a staged file compacted in
    between vanishes and raises ``FileNotFoundError``, for the caller to list again.
    """
    out = []
    for path in staged_files(root):
        if parquet_for(path, root).exists():
            continue  # compacted; its staged file is about to go
        try:
            table = read_file(path)
        except FileNotFoundError:
            raise
        except Exception as exc:  # noqa: BLE001 - one unreadable file must not hide the rest
            log.warning("skipping unreadable staged file %s: %s", path, exc)
            continue
        out.append((path.parent.name[len("date="):], table))
    return out


# -- compaction --------------------------------------------------------------------------------


def compact_file(path: Path, root: Path) -> int:
    """Turn one staged file into its Parquet file and delete it; returns the rows written
    (0 if another compactor holds it or it is gone)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return 0
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return 0
        if os.fstat(fd).st_nlink == 0:
            return 0  # compacted and deleted while we opened it
        target = parquet_for(path, root)
        rows = 0
        if not target.exists():
            table = read_file(fd)
            write_parquet(table, target.parent, target.name)
            rows = table.num_rows
        os.unlink(path)
        return rows
    finally:
        os.close(fd)


def compact(root: Path) -> int:
    """Compact every staged file of a deployment now; returns the rows written."""
    return sum(compact_file(p, root) for p in staged_files(root))


def _idle_priority() -> None:
    try:
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    except (AttributeError, OSError):
        try:
            os.nice(19)
        except OSError:
            pass


def _cpu_times() -> tuple[float, float] | None:
    """(idle, total) CPU seconds of the whole machine, this process's own time counted as
    idle (it is what the compactor takes, not what others need); None without /proc/stat."""
    try:
        with open("/proc/stat", "rb") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    own = os.times()
    idle = (fields[3] + (fields[4] if len(fields) > 4 else 0)) / tick + own.user + own.system
    return idle, sum(fields) / tick


class IdleGate:
    """Lets compaction run only while the machine has had CPU to spare.

    Idle scheduling priority alone is not enough: the compactor then runs in the gaps between
    requests and is preempted at the next one, and on a busy machine that costs the servers
    their caches and wake-ups (measured here: 12-17 % of throughput at saturation with the
    compactor running in those gaps, 8-12 % without it). So it works only when at least half
    a CPU stayed idle over the last ``interval`` seconds.
    """

    def __init__(self, interval: float = 1.0, idle_cpus: float = 0.5) -> None:
        self.interval = interval
        self.threshold = idle_cpus / (os.cpu_count() or 1)
        self._last = _cpu_times()

    def idle(self) -> bool:
        now = _cpu_times()
        if now is None or self._last is None:
            return True
        (i0, t0), (i1, t1) = self._last, now
        self._last = now
        return t1 > t0 and (i1 - i0) / (t1 - t0) >= self.threshold

    def wait(self, stop=lambda: False) -> None:
        """Return once the machine was idle enough over one interval (or ``stop()``)."""
        self._last = _cpu_times()
        while not stop():
            time.sleep(self.interval)
            if self.idle():
                return


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="mlops_lab.monitoring.staging", description="Compact a deployment's staged collected data to Parquet.")
    ap.add_argument("root", help="the deployment's collection folder")
    ap.add_argument("--parent", type=int, default=0,
                    help="keep compacting until this process is gone and nothing is staged (without it: compact once)")
    ap.add_argument("--poll", type=float, default=1.0)
    args = ap.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s pid=%(process)d %(levelname)s %(name)s: %(message)s")
    _idle_priority()
    root = Path(args.root)
    if not args.parent:
        compact(root)
        return 0
    failed: set[Path] = set()
    gate = IdleGate(args.poll)
    while root.is_dir():
        pending = [p for p in staged_files(root) if p not in failed]
        if not pending:
            if os.getppid() != args.parent:
                return 0  # the server is gone and nothing is left
            time.sleep(args.poll)
            continue
        gate.wait(stop=lambda: not root.is_dir())
        for path in pending:
            try:
                compact_file(path, root)
            except Exception as exc:  # noqa: BLE001 - readers still read it; try the rest
                log.error("cannot compact %s: %s: %s", path, type(exc).__name__, exc)
                failed.add(path)
            if not gate.idle():
                break  # busy again: wait for the next idle spell
    return 0


if __name__ == "__main__":
    sys.exit(main())
