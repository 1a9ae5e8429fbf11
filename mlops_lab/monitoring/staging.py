"""Staged request files: written cheaply while a server is busy, compacted to Parquet when the
machine is idle.

Why: turning collected rows into Parquet (columns, encoding, lz4) and writing them through the
page cache cost 45-77 us of CPU per 100-row request at saturation (a fifth of a server's CPU;
measured in ``bench/monitoring.py``). Here, instead, the collector copies each request's rows
(row-major float64, as parsed) and predictions into a segment: page-aligned memory it reuses.
It does so for 16 requests at a time (:meth:`.Collector.add`), so the arrays are still in the
CPU's cache and freed at once. The writer thread appends a full segment (8 MiB of rows, or
``flush_rows`` rows) to its staged file with ``O_DIRECT``, straight to the disk, and finishes
the file at 32 MiB of rows, 4,096 requests, or every ``flush_seconds``: measured here,
0.5-4.6 us of kernel time per 16 KiB, against 25-46 us through new page-cache pages. A compactor process per server, at idle scheduling priority (``SCHED_IDLE``:
it runs only on CPU time nothing else wants), turns each staged file into the Parquet file the
collector would have written directly; it reads the staged file and writes the Parquet file
past the page cache too (:mod:`.directio`: 25 us of CPU per 100-row request against 44-47 us
through it). The staged backlog has a budget (``stage_budget_mb``):
beyond it, each staged file is compacted at once, so saturation that outlasts the budget costs
what direct writing costs.

Only records of the common shape go through segments: numeric rows of the signature's width (or
none, for a failed request) and one numeric prediction per row (or none). Other records (string
columns, records of dicts, another model's columns) keep the queue of references and are
written to Parquet directly.

A staged file (``part-X.stage``) is its segments, each two page-aligned regions, then a tail::

    values       rows x width float64, row-major (the requests' rows, in order)
    predictions  float64 for the rows that have one (cast back to int64 when every
                 prediction was an integer)
    ...          (the next segment's values and predictions)
    meta         an Arrow IPC file, one row per request: time (epoch s), request_id,
                 model_version, status_code, latency_ms, error_id, n (rows; 0 for a request
                 that failed before it had rows), has_prediction; the stored column names
                 are in its schema metadata
    segments     per segment: offset and rows of its values, offset and rows of its predictions
    footer       the last 72 bytes: magic, format version (2), width, rows, and the offset
                 and length of the segment table and of the meta region

Version 1 files (one segment; the footer gives the regions' offsets) are still read.

Files and their life (``<deployment>`` is the collector's folder for one deployment)::

    <deployment>/staging/date=D/.part-X.stage.tmp   written by the server's collector (removed
                                                    by the next server or compactor when the
                                                    process that wrote it was killed)
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
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from . import directio
from .directio import round_up as _round_up
from .records import CHUNK_RECORDS, Record, assemble, stored_inputs, write_parquet

log = logging.getLogger("mlops_lab.compactor")
FINAL_PASS_S = 1.0  # once its server is gone, how long a compactor goes on compacting

STAGING = "staging"
_F8 = np.dtype(np.float64)
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


# -- segments and staged files (filled on the request path, written by the writer thread) ---

_MAGIC = b"MLSTAGE1"
#: magic, format version, width, rows, then six offsets and lengths (see :func:`read_file`)
_FOOTER = struct.Struct("<8sIIqqqqqqq")
#: Bytes of input values in one staged file (or 4,096 requests, or what came in one
#: ``flush_seconds``). Each file costs its writer a file creation, a rename and its meta region:
#: with 8 MiB files, 2.9-3.2 us of the writer's CPU per 100-row request, with 32 MiB files
#: 1.7-2.2 us (measured here; this VM's ext4 has no journal, and creating a file looks past the
#: inodes deleted in the last minutes).
FILE_BYTES = 32 << 20
#: Bytes of input values in one segment (or ``flush_rows`` rows): the memory a staged file's rows
#: are copied into, and written from in one ``O_DIRECT`` write. Measured here (100-row requests
#: at saturation), smaller segments appended to one file cost more, not less: +79 us of server
#: CPU per request with 256 KiB, +48 us with 1 MiB, +37 us with 8 MiB in one run (the writer
#: wakes and writes more often, and its small direct writes cost more kernel time per byte).
SEGMENT_BYTES = 8 << 20
# A staged file also holds at most CHUNK_RECORDS requests: the writer builds its per-request
# values while holding the GIL, and 4,096 of them take a few milliseconds (50,000 1-row requests
# would hold up the event loop for tens of milliseconds).


class Segment:
    """Page-aligned memory (as ``O_DIRECT`` needs) for the rows and predictions of consecutive
    requests: filled on the request path, appended to its staged file by the writer, reused."""

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
        self.prows = 0  # rows with a prediction
        self.counted = 0  # rows as the queue bound counts them (a request with no rows: one)
        self.file: StagedFile | None = None


class StagedFile:
    """A staged file in the making: its requests' per-request values (written last, with the
    footer) and where its segments went."""

    def __init__(self, day_end: float) -> None:
        self.day_end = day_end
        self.meta: list[tuple] = []
        self.rows = 0
        self.counted = 0  # rows as the queue bound counts them, of all its segments
        self.pred_int = True  # every prediction so far an integer
        self.segments: list[tuple[int, int, int, int]] = []  # values offset, rows, predictions offset, rows
        self.path: Path | None = None
        self.fd = -1
        self.direct = False
        self.offset = 0
        self.written = 0  # counted rows of the segments written
        self.failed = False


class Lane:
    """The staging lane of one collector: which records fit it, the segment being filled and
    the work for the writer (segments to append, files to finish, in order).

    ``max_segments`` bounds the memory (the queue bound of the collector): when every segment
    is full and waiting for the writer, a record is dropped and counted, never waited for.
    """

    def __init__(self, columns: list[str], exclude: set[str], max_rows: int, flush_rows: int) -> None:
        self.columns = columns
        self.width = len(columns)
        keep = stored_inputs(columns, exclude)
        self.stored = [s for _, s in keep]
        idx = [columns.index(n) for n, _ in keep]
        self.keep = None if len(idx) == self.width else np.array(idx, dtype=np.intp)
        per_row = max(len(idx), 1) * 8
        self.file_rows = max(512, min(FILE_BYTES // per_row, max_rows // 2))
        # Rows per segment: a full segment is written at once, so at most flush_rows rows wait
        # in memory (a staged file becomes visible to readers when whole, at the latest every
        # flush_seconds).
        self.capacity = max(1, min(self.file_rows, SEGMENT_BYTES // per_row, flush_rows))
        self.max_segments = max(2, -(-max_rows // self.capacity) + 1)
        self.segments = 0
        self.free: list[Segment] = []
        self.open: StagedFile | None = None
        self.seg: Segment | None = None
        self.work: list[Segment | StagedFile] = []
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

    def take(self, r: Record) -> int:
        """Copy the record's rows and predictions into the segment being filled (they are in
        the cache, just parsed and answered, and the request's arrays can go at once): 1 when
        taken, 0 when no segment has room (drop it), -1 when the record is not for this lane.

        The common record is recognised with a few identity checks (the model's own column and
        type lists come with every request; rows as parsed are float64 in C order); any other
        goes through :meth:`fits` and the general copy.
        """
        x, o, n = r.inputs, r.output, r.n
        fast = (r.columns is self.columns and r.types is self._float_types and self.keep is None
                and type(x) is np.ndarray and x.dtype is _F8 and x.shape == (n, self.width) and n <= self.capacity
                and (o is None or (type(o) is np.ndarray and o.shape == (n,) and o.dtype.kind in "biuf")))
        if not fast and not self.fits(r):
            return -1
        f = self.open
        if f is not None and (f.rows + n > self.file_rows or len(f.meta) >= CHUNK_RECORDS or r.time >= f.day_end):
            self._finish_open()
            f = None
        seg = self.seg
        if seg is None or seg.rows + n > seg.capacity:
            if seg is not None:
                self.work.append(seg)
            seg = self.seg = self._segment()
            if seg is None:
                return 0
        if f is None:
            f = self.open = StagedFile(_day_end(r.time))
        seg.file = f  # an empty segment, or one of this file already
        if n:
            start = seg.rows
            if fast:
                # A plain memcpy that keeps the GIL: NumPy lets the GIL go for a copy this size,
                # and the writer thread, if it wants the GIL then, holds the event loop up.
                at = start * self.width * 8
                try:
                    seg.mem[at:at + x.nbytes] = x
                except ValueError:  # not in C order
                    seg.values[start:start + n] = x
            else:
                seg.values[start:start + n] = x if self.keep is None else x[:, self.keep]
            if o is not None:
                p = seg.prows
                seg.preds[p:p + n] = o
                seg.prows = p + n
                if o.dtype.kind not in "biu":
                    f.pred_int = False
            seg.rows = start + n
            f.rows += n
            seg.counted += n
            f.counted += n
        else:
            seg.counted += 1
            f.counted += 1
        f.meta.append((r.time, r.request_id, r.model_version, r.status, r.latency_ms, r.error_id, n, o is not None))
        return 1

    def _segment(self) -> Segment | None:
        if self.free:
            return self.free.pop()  # the one written last: still in the cache
        if self.segments < self.max_segments:
            self.segments += 1
            return Segment(len(self.stored), self.capacity)
        return None

    def _finish_open(self) -> None:
        seg = self.seg
        if seg is not None and seg.counted:
            self.work.append(seg)
            self.seg = None
        if self.open is not None and self.open.meta:
            self.work.append(self.open)
        self.open = None

    def pending(self, everything: bool) -> tuple[list[Segment | StagedFile], int]:
        """Work for the writer (under the collector's queue lock): the full segments and the
        files they finished, and with ``everything`` (a timed flush or a stop) the open file;
        and the rows (as the queue bound counts them) that leave the queue with it."""
        if everything:
            self._finish_open()
        out, self.work = self.work, []
        return out, sum(w.counted for w in out if isinstance(w, Segment))

    def release(self, seg: Segment) -> None:
        seg.reset()
        self.free.append(seg)


def _day_end(ts: float) -> float:
    return (ts // 86400 + 1) * 86400


def file_meta(f: StagedFile, columns: list[str]) -> Any:
    """The file's per-request values as an Arrow record batch (the meta region)."""
    import pyarrow as pa

    # One list per field, not zip(*meta): zip makes an iterator per request (4,096 objects the
    # cyclic garbage collector tracks). In a process on Python's default collector settings (a
    # shadow's worker; servers sweep only every 20,000 allocations, serving.server.serving_gc)
    # they set off collections in this thread, now and then a full one: 87 ms over 166,000
    # objects, holding the GIL (bench/README.md).
    meta = f.meta
    times, ids, versions, statuses, latencies, errors, ns, has = ([m[i] for m in meta] for i in range(8))
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
        b"prediction_type": b"int64" if f.pred_int else b"float64",
    })


def open_file(f: StagedFile, path: Path) -> None:
    """Create the file's temporary file (the caller renames it once finished), with
    ``O_DIRECT`` where the file system takes it."""
    f.fd, f.direct = directio.open_direct(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
    f.path = path


def _write(f: StagedFile, part: memoryview) -> None:
    """Write page-aligned bytes at the end of the file."""
    f.direct = directio.pwrite_all(f.fd, part, f.offset, f.direct)
    f.offset += len(part)


def append_segment(f: StagedFile, seg: Segment) -> None:
    """Append a segment's rows and predictions to its file, each region page-aligned."""
    view = memoryview(seg.mem)
    values = view[:_round_up(seg.rows * seg.width * 8)]
    preds = view[seg.values_len:seg.values_len + _round_up(seg.prows * 8)]
    try:
        start = f.offset
        _write(f, values)
        f.segments.append((start, seg.rows, f.offset, seg.prows))
        _write(f, preds)
    finally:
        for v in (values, preds, view):
            v.release()


def finish_file(f: StagedFile, columns: list[str]) -> None:
    """Write the file's meta region, segment table and footer, and close it."""
    import pyarrow as pa

    meta = file_meta(f, columns)
    table = np.array(f.segments, dtype=np.int64).reshape(-1, 4).tobytes()
    mem = directio.buffers.write.aligned(pa.ipc.get_record_batch_size(meta) + len(table) + (1 << 20))
    sink = pa.FixedSizeBufferWriter(pa.py_buffer(mem))
    with pa.ipc.new_file(sink, meta.schema) as w:
        w.write_batch(meta)
    meta_len = sink.tell()
    del sink
    t_rel = -(-meta_len // 8) * 8
    tail = _round_up(t_rel + len(table) + _FOOTER.size)
    mem[meta_len:tail] = bytes(tail - meta_len)
    mem[t_rel:t_rel + len(table)] = table
    m_off = f.offset
    mem[tail - _FOOTER.size:tail] = _FOOTER.pack(
        _MAGIC, 2, len(columns), f.rows, m_off + t_rel, len(table), 0, 0, m_off, meta_len)
    view = memoryview(mem)
    try:
        _write(f, view[:tail])
    finally:
        view.release()
    os.close(f.fd)
    f.fd = -1


def abort_file(f: StagedFile) -> None:
    """Close and remove a file that cannot be finished (no half-written file stays behind)."""
    f.failed = True
    if f.fd >= 0:
        os.close(f.fd)
        f.fd = -1
    if f.path is not None:
        f.path.unlink(missing_ok=True)


def remove_stale(root: Path) -> None:
    """Remove temporary staged files of server processes that are gone (killed while a file
    was open: at most its last flush interval, as after any SIGKILL)."""
    folder = root / STAGING
    if not folder.is_dir():
        return
    for tmp in folder.glob(f"date=*/.part-*{SUFFIX}.tmp"):
        try:
            pid = int(tmp.name.split("-")[2])
            os.kill(pid, 0)
        except (IndexError, ValueError):
            continue
        except ProcessLookupError:
            tmp.unlink(missing_ok=True)
        except PermissionError:
            pass  # alive, someone else's


# -- reading ---------------------------------------------------------------------------------


def read_file(source: Path | Any) -> Any:
    """A staged file (a path, or its bytes as an Arrow buffer) as the table of request records
    the collector would have written to Parquet."""
    import pyarrow as pa

    buf = source if isinstance(source, pa.Buffer) else pa.memory_map(str(source)).read_buffer()
    if buf.size < _FOOTER.size:
        raise ValueError("not a staged file (too short)")
    magic, version, width, rows, a_off, a_len, b_off, b_len, m_off, m_len = _FOOTER.unpack(
        buf.slice(buf.size - _FOOTER.size).to_pybytes())
    if magic != _MAGIC or version not in (1, 2):
        raise ValueError("not a staged file (bad footer)")
    meta = pa.ipc.open_file(buf.slice(m_off, m_len)).read_all().combine_chunks()
    if version == 1:  # one region of values (a_*) and one of predictions (b_*)
        segments = [(a_off, rows, b_off, b_len // 8)]
    else:  # a table of segments (a_*): values offset, rows, predictions offset, rows
        segments = np.frombuffer(buf, dtype=np.int64, count=a_len // 8, offset=a_off).reshape(-1, 4).tolist()
    if sum(s[1] for s in segments) != rows:
        raise ValueError("not a staged file (segments do not add up)")
    values = [np.frombuffer(buf, dtype=np.float64, count=n * width, offset=off).reshape(n, width) for off, n, _, _ in segments]
    preds = [np.frombuffer(buf, dtype=np.float64, count=n, offset=off) for _, _, off, n in segments]
    values = values[0] if len(values) == 1 else np.concatenate(values) if values else np.empty((0, width))
    preds = preds[0] if len(preds) == 1 else np.concatenate(preds) if preds else np.empty(0)
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
            # Read past the page cache into reused memory (the file was written past it too),
            # and the table, which may point into that memory, is gone before the next read.
            table = read_file(directio.read_file(fd, directio.buffers.read))
            write_parquet(table, target.parent, target.name)
            rows = table.num_rows
            del table
        os.unlink(path)
        return rows
    finally:
        os.close(fd)


def compact(root: Path) -> int:
    """Compact every staged file of a deployment now; returns the rows written."""
    return sum(compact_file(p, root) for p in staged_files(root))


def idle_priority() -> None:
    """Run this process only on CPU time nothing else wants (SCHED_IDLE; nice 19 where that is
    refused)."""
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
    compactor running in those gaps, 8-12 % without it). Nor is half a CPU to spare: on this
    2-CPU VM, one client sending 100-row requests leaves about 0.8 of a CPU idle, and any work
    at idle priority in it (the compactor, or a bare ``while True: pass`` under ``chrt -i``)
    took that client's p99 from 0.9-1.1 ms to 2.2-3.5 ms, while the servers' own time per
    request stayed at a p99 of 0.45 ms: the requests waited to be woken, not to be worked on
    (bench/README.md). So it works only when a whole CPU (``idle_cpus``; at most three
    quarters of a one-CPU machine) stayed idle over the last ``interval`` seconds. What waits is
    still read (:func:`read_staged`), and the staging budget bounds how much can wait.
    """

    def __init__(self, interval: float = 1.0, idle_cpus: float = 1.0) -> None:
        self.interval = interval
        self.threshold = min(idle_cpus / (os.cpu_count() or 1), 0.75)
        self._last = _cpu_times()

    def idle(self) -> bool:
        now = _cpu_times()
        if now is None or self._last is None:
            return True
        (i0, t0), (i1, t1) = self._last, now
        self._last = now
        return t1 > t0 and (i1 - i0) / (t1 - t0) >= self.threshold

    def wait(self, stop=lambda: False) -> None:
        """Return once the machine was idle enough over one interval (or ``stop()``, asked
        every fifth of a second)."""
        self._last = _cpu_times()
        while not stop():
            if _sleep(self.interval, stop) and self.idle():
                return


def _sleep(seconds: float, stop) -> bool:
    """Sleep, waking every fifth of a second to ask ``stop()``; False when it said to stop."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        if stop():
            return False
        time.sleep(min(left, 0.2))
    return True


def _compact_or_skip(path: Path, root: Path, failed: set[Path]) -> None:
    """Compact one staged file; one that fails is logged and left (readers still read it). One
    removed while it was compacted (its deployment's data deleted) is not an error: there is
    nothing left to keep."""
    try:
        compact_file(path, root)
    except Exception as exc:  # noqa: BLE001 - try the rest
        if not path.exists():
            log.info("%s was removed while compacting it", path)
            return
        log.error("cannot compact %s: %s: %s", path, type(exc).__name__, exc)
        failed.add(path)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="mlops_lab.monitoring.staging", description="Compact a deployment's staged collected data to Parquet.")
    ap.add_argument("root", help="the deployment's collection folder")
    ap.add_argument("--parent", type=int, default=0,
                    help="keep compacting until this process is gone and nothing is staged (without it: compact once)")
    ap.add_argument("--poll", type=float, default=1.0)
    args = ap.parse_args(argv)
    logging.basicConfig(stream=sys.stderr, level=logging.INFO,
                        format="%(asctime)s pid=%(process)d %(levelname)s %(name)s: %(message)s")
    idle_priority()
    root = Path(args.root)
    if not args.parent:
        compact(root)
        return 0
    failed: set[Path] = set()
    gate = IdleGate(args.poll)

    def orphaned() -> bool:
        return os.getppid() != args.parent or not root.is_dir()

    while not orphaned():
        remove_stale(root)
        pending = [p for p in staged_files(root) if p not in failed]
        if not pending:
            _sleep(args.poll, orphaned)
            continue
        gate.wait(stop=orphaned)
        if orphaned():
            break
        for path in pending:
            _compact_or_skip(path, root, failed)
            if not gate.idle():
                break  # busy again: wait for the next idle spell
    # The server is gone (stopped, replaced by an update, deleted): compact what it left for
    # FINAL_PASS_S at normal priority, idle machine or not, then go, and leave the rest staged:
    # readers read staged files as they read Parquet, and the next compactor on this folder
    # takes them up. A compaction cut short leaves only its temporary file (remove_stale's), so
    # a deployment's processes outlive it by no more than this.
    try:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))  # inherited by the thread
    except (AttributeError, OSError):
        pass

    def final_pass() -> None:
        for path in staged_files(root) if root.is_dir() else ():
            if path not in failed:
                _compact_or_skip(path, root, failed)

    worker = threading.Thread(target=final_pass, daemon=True)
    worker.start()
    worker.join(FINAL_PASS_S)
    if worker.is_alive():
        log.info("server gone: left what is not compacted yet staged")
        sys.stderr.flush()
        os._exit(0)  # not a normal exit: that would wait for the compaction
    return 0


if __name__ == "__main__":
    sys.exit(main())
