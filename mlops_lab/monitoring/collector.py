"""Data collection inside the scoring server.

The request path hands one small tuple per request, with references to its arrays, to the
collector; every 16 requests they are taken together (:meth:`Collector.add`). Numeric requests
are copied into the staging lane (:mod:`.staging`: staged files, compacted to Parquet at idle
time); the rest wait by reference in a bounded queue (rows are counted, not copied) and are
turned into Arrow columns and written to Parquet directly. A background thread writes every
``flush_seconds``, ``flush_rows`` rows, or full segment. When the queue is full, requests are still
answered and their records are dropped and counted; the counts are written too, so status and
charts show them.

Files: ``<store>/<deployment>/requests/date=YYYY-MM-DD/part-<time>-<pid>-<seq>.parquet`` in the
collection store (:mod:`.store`: a folder, or ``s3://bucket/prefix``), written whole (in a folder
under a temporary name and renamed; on object storage in one PUT), so a reader never sees half a
file and a SIGKILL loses at most what was queued since the last flush. Staging needs a local
disk: on object storage every record takes the direct lane. A write the store refuses (a full
disk, an unreachable store) keeps the records queued for the next flush, as far as the queue has
room, and counts the rest as dropped. SIGTERM (a graceful stop, update or delete) flushes
everything. Feedback (true labels) goes to ``<deployment>/feedback/`` the same way, drop counts to
``<deployment>/drops/``.

Columns of a request record (one record per input row; a request that failed before it had rows
gets one record with no inputs): ``request_time`` (UTC), ``request_id``, ``row``,
``model_version`` (``name:version``), ``status_code``, ``latency_ms``, ``error_id``, the input
columns (the signature's names, or ``f0..fN`` for an array), and ``prediction``.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .records import (
    Record,
    Split,
    _partition_date,
    _slices,
    assemble,
    split_positions,
    stored_inputs,
)

if TYPE_CHECKING:
    from .store import CollectionStore

log = logging.getLogger("mlops_lab.collector")


@dataclass
class CollectConfig:
    enabled: bool = True
    #: The collection store: a folder, or ``s3://bucket/prefix`` (with ``endpoint_url`` for a
    #: store other than AWS's).
    folder: str = ""
    endpoint_url: str | None = None
    rate: float = 1.0
    exclude: list[str] = field(default_factory=list)
    flush_seconds: float = 5.0
    flush_rows: int = 50_000
    max_queue_rows: int = 500_000
    #: Staged (not yet compacted) data beyond which each staged file is compacted to Parquet at
    #: once; 0: never stage; None: a quarter of the free space of the collection folder's disk,
    #: at most 16 GiB. Staging does not cost disk space of its own: staged numeric rows take
    #: what their Parquet file takes (random float64 columns: Parquet with lz4 is 1.0-1.26 times
    #: the raw bytes; only columns of few distinct values shrink, 2-decimal values tenfold), so
    #: the budget bounds how far compaction may lag behind, not how much the disk holds.
    stage_budget_mb: int | None = None

    @classmethod
    def from_spec(cls, spec: dict[str, Any] | None) -> CollectConfig:
        if not spec:
            return cls(enabled=False)
        known = {k: v for k, v in spec.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class Collector:
    """The per-process collector of one deployment."""

    def __init__(self, deployment: str, config: CollectConfig) -> None:
        try:  # fail at start-up, not silently at the first flush
            import pyarrow.parquet  # noqa: F401
        except ImportError as exc:
            raise RuntimeError(f"collecting data needs pyarrow ({exc}): install it, or deploy with collect=False") from None
        from .store import CollectionStore

        self.deployment = deployment
        self.config = config
        self.store = CollectionStore(config.folder, config.endpoint_url).deployment(deployment)
        #: The deployment's local folder (None on object storage, which has no staging lane).
        self.root = self.store.folder if self.store.local else None
        self.queue: deque[Record] = deque()
        self.queued_rows = 0
        self.dropped = 0  # records dropped since the last flush
        self.dropped_total = 0
        self.written_rows = 0
        self.files = 0
        self.staged_files = 0
        self._compactor: Any = None
        local = config.enabled and self.root is not None
        self._budget = _stage_budget(config.stage_budget_mb, self.root.parent) if local else 0
        self._stage = self._budget > 0
        self._lane: Any = None  # the staging lane, made with the first record that has columns
        if self._stage:
            from .staging import remove_stale

            remove_stale(self.root)  # left by a server of this deployment killed with a file open
        self._staged_estimate = 0
        self._staged_checked = -1e9
        self._last_flush = time.monotonic()
        self._feedback: deque[dict[str, Any]] = deque()
        self._pending: deque[Record] = deque()
        #: Records taken together (see :meth:`add`).
        self.batch = 16
        self._seq = 0
        self._token = f"{random.getrandbits(32):08x}"
        self._lock = threading.Lock()  # serializes flushes (writer thread vs. close)
        self._qlock = threading.Lock()  # the queue and its counters (request path vs. writer)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._exclude = set(config.exclude)
        self._rate = float(config.rate)
        self._thread: threading.Thread | None = None
        if config.enabled:
            self._thread = threading.Thread(target=self._run, name=f"collector-{deployment}", daemon=True)
            self._thread.start()

    @property
    def enabled(self) -> bool:
        return self.config.enabled

    # -- the request path ------------------------------------------------------------------

    def sampled(self) -> bool:
        return self._rate >= 1.0 or random.random() < self._rate

    def add(self, record: Record) -> None:
        """Hand over a request's record; never blocks.

        Records gather in a short list (``batch`` of them, 16 by default) and are then taken
        together: numeric records copied into the staging lane's segments (:mod:`.staging`),
        the rest queued by reference; when the queue is full they are dropped and counted.
        Taken one at a time, right after the request's own work has filled the CPU's caches,
        each cost 12-15 us of cache misses at saturation (measured here, 100-row requests);
        taken 16 at a time, the code and the lane stay in the cache and the 16 requests'
        arrays (256 KiB of 100-row requests) have not left it.
        """
        pending = self._pending
        pending.append(record)  # thread-safe; the writer takes what is here at each flush
        if len(pending) >= self.batch:
            self._take_pending()

    def _take_pending(self) -> None:
        pending = self._pending
        wake = False
        dropped = 0
        with self._qlock:
            limit = self.config.max_queue_rows
            lane = self._lane
            queued = self.queued_rows
            while pending:
                record = pending.popleft()
                n = record.n or 1
                if queued + n > limit:
                    dropped += n
                    continue
                if lane is None and self._stage and record.columns:
                    lane = self._lane = self._new_lane(record.columns)
                taken = -1 if lane is None else lane.take(record)
                if taken < 0:
                    self.queue.append(record)
                    wake = wake or queued + n >= self.config.flush_rows
                elif not taken:  # every segment full and waiting for the writer
                    dropped += n
                    continue
                queued += n
            self.queued_rows = queued
            if lane is not None and lane.work:
                wake = True  # a segment to write
            self.dropped += dropped
            self.dropped_total += dropped
            # Wake the writer once: the flag stays set until it takes the work (under this lock).
            if wake and not self._wake.is_set():
                self._wake.set()

    def stats(self) -> dict[str, int]:
        """The collection counters (for ``/metrics``), with every record handed over counted."""
        self._take_pending()
        return {"queued_rows": self.queued_rows, "written_rows": self.written_rows, "files": self.files,
                "staged_files": self.staged_files, "dropped_rows": self.dropped_total}

    def _new_lane(self, columns: list[str]) -> Any:
        from .staging import Lane

        return Lane(columns, self._exclude, self.config.max_queue_rows, self.config.flush_rows)

    def add_feedback(self, items: list[dict[str, Any]]) -> None:
        self._feedback.extend(items)
        self._wake.set()

    # -- the writer ------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.config.flush_seconds)
            try:
                # Full blocks at once; the open block and the queue every flush_seconds.
                self.flush(everything=time.monotonic() - self._last_flush >= self.config.flush_seconds)
            except Exception:  # noqa: BLE001 - a failed flush must not kill the writer
                log.exception("collection flush failed")

    def close(self) -> None:
        """Flush everything (on SIGTERM, update or delete) and stop the writer."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.flush()

    def flush(self, everything: bool = True) -> None:
        with self._lock:
            if everything:
                self._last_flush = time.monotonic()
            self._take_pending()
            with self._qlock:
                self._wake.clear()  # what woke the writer is taken now
                records: list[Record] = []
                if everything or self.queued_rows >= self.config.flush_rows:
                    records = list(self.queue)
                    self.queue.clear()
                work, handed = self._lane.pending(everything) if self._lane is not None else ([], 0)
                self.queued_rows -= sum(max(r.n, 1) for r in records) + handed
                dropped, self.dropped = self.dropped, 0
            feedback: list[dict[str, Any]] = []
            while self._feedback:
                feedback.append(self._feedback.popleft())
            for item in work:
                self._write_staged(item)
            if records:
                self._write_requests(records)
            if dropped:
                try:
                    self._write("drops", time.time(), {"time": [time.time()], "pid": [os.getpid()], "dropped": [dropped]})
                except OSError as exc:
                    log.error("cannot write the count of dropped rows (%s): kept for the next flush", exc)
                    with self._qlock:
                        self.dropped += dropped
            if feedback:
                try:
                    self._write_feedback(feedback)
                except OSError as exc:
                    log.error("cannot write %d feedback labels (%s): kept for the next flush", len(feedback), exc)
                    self._feedback.extendleft(reversed(feedback))

    def _write_staged(self, item: Any) -> None:
        """The staging lane's work, in order: append a segment to its staged file, or finish a
        file (renamed into place, then compacted at idle priority; at once, to Parquet, when
        the staged backlog is over its budget). A write that fails (a full disk) loses the
        file's rows, counted as dropped, and nothing else."""
        from . import staging

        if isinstance(item, staging.Segment):
            f, lost = item.file, item.counted
            try:
                if not f.failed:
                    if f.fd < 0:
                        folder = self.root / staging.STAGING / f"date={_partition_date(f.meta[0][0])}"
                        folder.mkdir(parents=True, exist_ok=True)
                        staging.open_file(f, folder / f".{self._name(f.meta[0][0])}{staging.SUFFIX}.tmp")
                    staging.append_segment(f, item)
                    f.written += item.counted
                    lost = 0
            except OSError as exc:
                log.error("cannot write %d collected rows (%s): counted as dropped", f.written + lost, exc)
                lost += f.written
                staging.abort_file(f)
            finally:
                with self._qlock:
                    self._lane.release(item)
                self._count_lost(lost)
            return
        f = item
        if f.failed:
            return  # counted already
        try:
            staging.finish_file(f, self._lane.stored)
            final = f.path.with_name(f.path.name[1:-len(".tmp")])
            stage = self._under_budget()
            os.replace(f.path, final)  # readers and compactors see whole files only
        except OSError as exc:
            log.error("cannot write %d collected rows (%s): counted as dropped", f.written, exc)
            staging.abort_file(f)
            self._count_lost(f.written)
            return
        self.written_rows += f.counted
        if stage:
            self._staged_estimate += f.offset
            self.staged_files += 1
            self._start_compactor()
        else:
            staging.compact_file(final, self.root)  # saturation beyond the budget: Parquet now
            self.files += 1

    def _count_lost(self, rows: int) -> None:
        """Rows that could not be written: counted as dropped (and the count written later)."""
        if rows:
            with self._qlock:
                self.dropped += rows
                self.dropped_total += rows

    def _under_budget(self) -> bool:
        """Whether the staged backlog is under its budget: the folder is measured at most once a
        second, and what this process staged since is added."""
        from . import staging

        now = time.monotonic()
        if now - self._staged_checked >= 1.0:
            self._staged_checked = now
            self._staged_estimate = staging.staged_bytes(self.root)
        return self._staged_estimate < self._budget

    def _write(self, kind: str, ts: float, columns: dict[str, Any], table=None) -> None:
        import pyarrow as pa

        if table is None:
            table = pa.table(columns)
        self.store.write_parquet(table, kind, f"date={_partition_date(ts)}", f"{self._name(ts)}.parquet")
        self.files += 1

    def _name(self, ts: float) -> str:
        self._seq += 1
        # the token: two collectors of one deployment in one process (two SQL functions of one
        # name, a test's writers) never pick the same name in the same millisecond
        return f"part-{int(ts * 1000)}-{os.getpid()}-{self._token}-{self._seq}"

    def _write_requests(self, records: list[Record]) -> None:
        """Write records as Parquet files; if the store refuses (a full disk, an unreachable
        object store), they go back to the queue for the next flush, as far as it has room;
        the rest are counted as dropped."""
        try:
            self._write_records(records)
        except OSError as exc:
            with self._qlock:
                room = self.config.max_queue_rows - self.queued_rows
                kept: list[Record] = []
                for r in records:
                    n = max(r.n, 1)
                    if n > room:
                        break
                    kept.append(r)
                    room -= n
                lost = sum(max(r.n, 1) for r in records[len(kept):])
                self.queue.extendleft(reversed(kept))
                self.queued_rows += sum(max(r.n, 1) for r in kept)
                self.dropped += lost
                self.dropped_total += lost
            log.error("cannot write %d collected requests to %s (%s): %d kept for the next flush, %d dropped",
                      len(records), self.store.uri, str(exc).splitlines()[0], len(kept), len(records) - len(kept))

    def _write_records(self, records: list[Record]) -> None:
        import pyarrow as pa

        # Files are partitioned by day: split a batch that spans midnight; and one file per
        # input layout (the models of one deployment may have different columns).
        by_day: dict[tuple, list[Record]] = {}
        for r in records:
            by_day.setdefault((_partition_date(r.time), tuple(r.columns or ())), []).append(r)
        for day_records in by_day.values():
            # In slices: each NumPy/Arrow call then holds the GIL for a few milliseconds at
            # most, so the event loop answering requests is never held up for longer.
            tables = []
            for piece in _slices(day_records):
                tables.append(self._table(piece, pa))
                time.sleep(0)  # hand the GIL over between slices
            table = pa.concat_tables(tables, promote_options="permissive") if len(tables) > 1 else tables[0]
            self._write("requests", day_records[0].time, {}, table)
            self.written_rows += table.num_rows

    def _start_compactor(self) -> None:
        """One compactor process per server process, at idle priority; started again if it died."""
        import subprocess
        import sys

        proc = self._compactor
        if proc is not None and proc.poll() is None:
            return
        self._compactor = subprocess.Popen(
            [sys.executable, "-m", "mlops_lab.monitoring.staging", str(self.root), "--parent", str(os.getpid())],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, close_fds=True,
        )

    def _table(self, records: list[Record], pa) -> Any:
        counts = np.fromiter((max(r.n, 1) for r in records), dtype=np.int64, count=len(records))
        columns = self._input_columns(records, counts, pa)
        keep = dict(stored_inputs(list(columns), self._exclude))
        return assemble(
            pa, counts,
            times=np.array([r.time for r in records]),
            request_ids=pa.array([r.request_id for r in records], pa.string()),
            versions=pa.array([r.model_version for r in records], pa.string()),
            statuses=np.array([r.status for r in records], dtype=np.int16),
            latencies=np.array([r.latency_ms for r in records], dtype=np.float32),
            error_ids=pa.array([r.error_id for r in records], pa.string()),
            inputs={stored: columns[name] for name, stored in keep.items()},
            prediction=self._prediction_column(records, counts, pa),
        )

    def _input_columns(self, records: list[Record], counts: np.ndarray, pa) -> dict[str, Any]:
        """Input columns for all records, null where a request had no rows (an error).

        Column types come from the signature (``Record.types``) so that every file of a
        deployment has the same schema: numbers as float64, booleans as bool, the rest as
        strings.
        """
        names = types = None
        for r in records:
            if r.columns is not None:
                names, types = r.columns, r.types
                break
        if names is None:
            return {}
        width = len(names)
        types = types or ["float"] * width
        if all(t == "float" for t in types) and all(
            isinstance(r.inputs, np.ndarray) and r.inputs.ndim == 2 and r.inputs.shape[1] == width and r.inputs.dtype.kind in "biuf"
            for r in records
        ):
            # The common case, every request answered: one concatenation straight into
            # column-major order (each column then a contiguous block Arrow takes as it is).
            columns = np.empty((width, int(counts.sum())), dtype=np.float64)  # C order: rows of it are columns
            np.concatenate([r.inputs.T for r in records], axis=1, out=columns, casting="same_kind")
            return {name: pa.array(columns[i]) for i, name in enumerate(names)}
        if all(t == "float" for t in types) and all(
            r.inputs is None or (isinstance(r.inputs, np.ndarray) and r.inputs.dtype.kind in "biuf") for r in records
        ):
            pieces, masks = [], []
            for r, c in zip(records, counts):
                if r.inputs is None or r.inputs.reshape(len(r.inputs), -1).shape[1] != width:
                    pieces.append(np.zeros((c, width)))
                    masks.append(np.ones(c, dtype=bool))
                else:
                    pieces.append(r.inputs.reshape(len(r.inputs), -1).astype(np.float64, copy=False))
                    masks.append(np.zeros(c, dtype=bool))
            # Column-major once: each column is then a contiguous block Arrow takes as it is.
            columns = np.ascontiguousarray(np.concatenate(pieces).T)
            mask = np.concatenate(masks)
            has_null = bool(mask.any())
            return {name: pa.array(columns[i], mask=mask if has_null else None) for i, name in enumerate(names)}
        splits = [type(r.inputs) is Split for r in records]
        if any(splits) and all(s or r.inputs is None for s, r in zip(splits, records)):
            return self._split_columns(records, counts, names, types, pa)
        if any(splits):  # (rows of a request a number column of which NumPy could not take, beside others)
            records = [r._replace(inputs=r.inputs.objects(types)) if s else r for s, r in zip(splits, records)]
        if all(r.inputs is None or isinstance(r.inputs, np.ndarray) and r.inputs.dtype == object and r.inputs.ndim == 2
               and r.inputs.shape[1] == width for r in records):
            # Rows of Python values as the request path hands them over (an array of the
            # objects): each column a view Arrow converts in C; a request without rows, nulls.
            parts = [np.full((c, width), None, dtype=object) if r.inputs is None else r.inputs for r, c in zip(records, counts)]
            objects = np.concatenate(parts) if len(parts) > 1 else parts[0]
            return {name: _arrow_column(pa, objects[:, i], kind) for i, (name, kind) in enumerate(zip(names, types))}
        cols: list[list[Any]] = [[] for _ in range(width)]
        for r, c in zip(records, counts):
            rows = r.inputs
            if rows is None:
                for col in cols:
                    col.extend([None] * c)
                continue
            if isinstance(rows, np.ndarray):
                rows = rows.reshape(len(rows), -1).tolist()
            if rows and set(map(len, rows)) == {width}:  # the common case: transposed in C
                for col, values in zip(cols, zip(*rows)):
                    col.extend(values)
                continue
            for row in rows:
                for i in range(width):
                    cols[i].append(row[i] if i < len(row) else None)
        return {name: _arrow_column(pa, values, kind) for name, kind, values in zip(names, types, cols)}

    @staticmethod
    def _split_columns(records: list[Record], counts: np.ndarray, names: list[str], types: list[str], pa) -> dict[str, Any]:
        """The input columns of records holding :class:`Split` rows (or none: an error): the
        numbers concatenated into column-major order, each column then taken by Arrow as it is
        (None, and a request without rows, as nulls); the other columns converted by Arrow."""
        at_numbers, at_others = split_positions(types)
        k, m = len(at_numbers), len(at_others)
        numbers = np.ascontiguousarray(np.concatenate(
            [np.zeros((c, k)) if r.inputs is None else r.inputs.numbers for r, c in zip(records, counts)]).T)
        missing = None
        if any(r.inputs is None or r.inputs.missing is not None for r in records):
            missing = np.ascontiguousarray(np.concatenate([
                np.ones((c, k), dtype=bool) if r.inputs is None
                else r.inputs.missing if r.inputs.missing is not None else np.zeros((c, k), dtype=bool)
                for r, c in zip(records, counts)]).T)
        others = np.concatenate([np.full((c, m), None, dtype=object) if r.inputs is None else r.inputs.others
                                 for r, c in zip(records, counts)])
        out: dict[str, Any] = {}
        for j, i in enumerate(at_numbers):
            mask = missing[j] if missing is not None and missing[j].any() else None
            out[names[i]] = pa.array(numbers[j], mask=mask)
        for j, i in enumerate(at_others):
            out[names[i]] = _arrow_column(pa, others[:, j], types[i])
        return {name: out[name] for name in names}

    def _prediction_column(self, records: list[Record], counts: np.ndarray, pa) -> Any:
        outs = [r.output for r in records]
        if all(isinstance(o, np.ndarray) and o.ndim == 1 and o.dtype.kind in "biuf" for o in outs):
            full = np.concatenate(outs)  # the common case: one call
            return pa.array(full.astype(np.int64) if full.dtype.kind in "biu" else full.astype(np.float64, copy=False))
        parts = []
        for r in records:
            out = r.output
            if out is None:
                parts.append(None)
                continue
            if hasattr(out, "to_numpy"):
                out = out.to_numpy()
            parts.append(np.asarray(out))
        present = [p for p in parts if p is not None]
        if not present:
            return None
        shapes = {p.shape[1:] for p in present}
        kinds = {p.dtype.kind for p in present}
        mask = np.concatenate([np.full(c, p is None) for p, c in zip(parts, counts)])
        has_null = bool(mask.any())
        if shapes == {()} and kinds <= set("biu"):
            full = np.concatenate([p.astype(np.int64) if p is not None else np.zeros(c, np.int64) for p, c in zip(parts, counts)])
            return pa.array(full, mask=mask if has_null else None)
        if shapes == {()} and kinds <= set("biuf"):
            full = np.concatenate([p.astype(np.float64) if p is not None else np.zeros(c) for p, c in zip(parts, counts)])
            return pa.array(full, mask=mask if has_null else None)
        if shapes == {()}:
            values = []
            for p, c in zip(parts, counts):
                values.extend([None] * c if p is None else [None if v is None else str(v) for v in p.tolist()])
            return pa.array(values, pa.string())
        values = []
        for p, c in zip(parts, counts):
            values.extend([None] * c if p is None else [list(map(float, np.ravel(v))) for v in p])
        return pa.array(values, pa.list_(pa.float64()))

    def _write_feedback(self, items: list[dict[str, Any]]) -> None:
        write_feedback(self.store, items, writer=self)


def _arrow_column(pa, values: Any, kind: str) -> Any:
    """A column of Python values (a list, or an array of objects) as an Arrow array of the
    signature's type: numbers as float64, booleans as bool, the rest as strings; None is null."""
    arrow_type = pa.float64() if kind == "float" else pa.bool_() if kind == "bool" else pa.string()
    try:
        # Arrow converts the common column (numbers, booleans or strings, and None) in C: looped
        # over in Python, a flush of mixed rows held the GIL long enough to show in the servers'
        # p99 (tens of ms for 100-row requests with a string column).
        return pa.array(values, arrow_type)
    except (pa.ArrowInvalid, pa.ArrowTypeError, TypeError, OverflowError):
        # A value of another type: converted one by one, as the signature's type says.
        if kind == "float":
            return pa.array([None if v is None or isinstance(v, str) else float(v) for v in values], arrow_type)
        if kind == "bool":
            return pa.array([None if v is None else bool(v) for v in values], arrow_type)
        return pa.array([None if v is None else str(v) for v in values], arrow_type)


def _stage_budget(mb: int | None, folder: Path) -> int:
    """The staging budget in bytes (see ``CollectConfig.stage_budget_mb``)."""
    if mb is not None:
        return max(int(mb), 0) << 20
    import shutil

    probe = folder
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return 0
    return min(free // 4, 16 << 30)


def write_feedback(root: CollectionStore, items: list[dict[str, Any]], writer: Collector | None = None) -> int:
    """Write feedback records (``request_id``, ``label``, optional ``row``) as one Parquet file."""
    import pyarrow as pa

    now = time.time()
    labels = [it["label"] for it in items]
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in labels):
        label_arr = pa.array([float(v) for v in labels])
    else:
        label_arr = pa.array([None if v is None else str(v) for v in labels], pa.string())
    table = pa.table({
        "feedback_time": pa.array([int(now * 1e6)] * len(items), pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "request_id": pa.array([str(it["request_id"]) for it in items], pa.string()),
        "row": pa.array([int(it.get("row", 0)) for it in items], pa.int32()),
        "label": label_arr,
    })
    if writer is not None:
        writer._write("feedback", now, {}, table)
    else:
        name = f"part-{int(now * 1000)}-{os.getpid()}-{random.getrandbits(32):08x}.parquet"
        root.write_parquet(table, "feedback", f"date={_partition_date(now)}", name)
    return len(items)
