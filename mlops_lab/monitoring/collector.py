"""Data collection inside the scoring server.

The request path hands each request's record to a bounded in-memory queue and never blocks. A
record of several rows (numeric rows of the signature's width, one numeric prediction per row) is copied
straight into a preallocated column-major block (``_Block``): one strided copy while the rows
are still in the CPU cache, no per-request objects kept alive, and the block's columns later go
to Arrow without a copy. Blocks are reused, so a saturated server does not keep allocating and
freeing tens of megabytes a second. Any other record (strings, errors, odd shapes) is queued as
it is. A background thread writes what has queued as one Parquet file every ``flush_seconds``
or ``flush_rows`` rows. When the queue is full, requests are still answered and their records
are dropped and counted; the counts are written too, so status and charts show them.

Files: ``<folder>/<deployment>/requests/date=YYYY-MM-DD/part-<time>-<pid>-<seq>.parquet``, written
under a temporary name and renamed, so a reader never sees half a file and a SIGKILL loses at most
what was queued since the last flush. SIGTERM (a graceful stop, update or delete) flushes
everything. Feedback (true labels) goes to ``<deployment>/feedback/`` the same way, drop counts to
``<deployment>/drops/``.

Columns of a request record (one record per input row; a request that failed before it had rows
gets one record with no inputs): ``request_time`` (UTC), ``request_id``, ``row``,
``model_version`` (``name:version``), ``status_code``, ``latency_ms``, ``error_id``, the input
columns (the signature's names, or ``f0..fN`` for an array), and ``prediction``.
"""

from __future__ import annotations

import datetime as _dt
import logging
import os
import random
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

log = logging.getLogger("mlops_lab.collector")

CHUNK_RECORDS = 4096
#: ... and at most this many rows: a slice of 100-row requests then holds the GIL for about a
#: millisecond, not the 20 ms that 4096 of them would (seen in the servers' p99 latency).
CHUNK_ROWS = 16_384

#: Records of fewer rows stay in the queue as they are: for them, copying into a block costs the
#: request path more (about 2 us) than the writer saves.
BLOCK_MIN_ROWS = 8

META_COLUMNS = ("request_time", "request_id", "row", "model_version", "status_code", "latency_ms", "error_id")


@dataclass
class CollectConfig:
    enabled: bool = True
    folder: str = ""
    rate: float = 1.0
    exclude: list[str] = field(default_factory=list)
    flush_seconds: float = 5.0
    flush_rows: int = 50_000
    max_queue_rows: int = 500_000

    @classmethod
    def from_spec(cls, spec: dict[str, Any] | None) -> CollectConfig:
        if not spec:
            return cls(enabled=False)
        known = {k: v for k, v in spec.items() if k in cls.__dataclass_fields__}
        return cls(**known)


class Record(NamedTuple):
    """What the request path hands over: references, no copies (a tuple: cheap to make)."""

    time: float
    request_id: str
    model_version: str
    status: int
    latency_ms: float
    error_id: str | None
    inputs: Any  # ndarray of rows, list of row lists, or None
    columns: list[str] | None
    types: list[str] | None  # per column: "float", "bool" or "string"
    output: Any  # model output for these rows, or None
    n: int


class _Block:
    """Preallocated buffers for the common record: inputs column-major, one prediction per row,
    and per request (time, request id, version, status, latency, rows)."""

    __slots__ = ("key", "columns", "inputs", "pred", "n", "meta")

    def __init__(self, key: tuple, columns: list[str], cap: int) -> None:
        self.key = key
        self.columns = columns
        self.inputs = np.empty((len(columns), cap), dtype=np.float64)  # row i: column i
        self.pred = np.empty(cap, dtype=np.int64 if key[1] == "i" else np.float64)
        self.n = 0
        self.meta: list[tuple] = []

    @property
    def cap(self) -> int:
        return self.pred.shape[0]


def _partition_date(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%Y-%m-%d")


class Collector:
    """The per-process collector of one deployment."""

    def __init__(self, deployment: str, config: CollectConfig) -> None:
        try:  # fail at start-up, not silently at the first flush
            import pyarrow.parquet  # noqa: F401
        except ImportError as exc:
            raise RuntimeError(f"collecting data needs pyarrow ({exc}): install it, or deploy with collect=False") from None
        self.deployment = deployment
        self.config = config
        self.root = Path(config.folder) / deployment
        self.queue: deque[Record] = deque()
        self.queued_rows = 0
        self.dropped = 0  # records dropped since the last flush
        self.dropped_total = 0
        self.written_rows = 0
        self.files = 0
        self._feedback: deque[dict[str, Any]] = deque()
        self._seq = 0
        self._lock = threading.Lock()  # serializes flushes (writer thread vs. close)
        self._qlock = threading.Lock()  # the queue and its counters (request path vs. writer)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._exclude = set(config.exclude)
        self._rate = float(config.rate)
        self._block_rows = max(1, min(CHUNK_ROWS, int(config.max_queue_rows)))
        self._active: dict[tuple, _Block] = {}  # the block each layout is being copied into
        self._filled: list[_Block] = []  # blocks waiting for the writer
        self._spare: dict[tuple, list[_Block]] = {}  # written blocks, kept for reuse
        # enough spares for what queues while a flush is written, within the queue's bound
        self._max_spare = max(2, min(int(config.max_queue_rows), 2 * int(config.flush_rows)) // self._block_rows + 1)
        self._layouts: dict[int, tuple] = {}  # id(columns list) -> (the list, its block key or None)
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
        """Queue a request's record; never blocks. Returns at once when the queue is full."""
        n = max(record.n, 1)
        key = self._fast_key(record)
        with self._qlock:
            if self.queued_rows + n > self.config.max_queue_rows:
                self.dropped += n
                self.dropped_total += n
                return
            if key is None:
                self.queue.append(record)
            else:
                block = self._active.get(key)
                if block is None or block.n + n > block.cap:
                    if block is not None:
                        self._filled.append(block)
                    spare = self._spare.get(key)
                    block = spare.pop() if spare else _Block(key, record.columns, self._block_rows)
                    self._active[key] = block
                pos = block.n
                block.inputs[:, pos : pos + n] = record.inputs.T  # the rows are still in cache
                block.pred[pos : pos + n] = record.output
                block.meta.append((record.time, record.request_id, record.model_version, record.status, record.latency_ms, n))
                block.n = pos + n
            self.queued_rows += n
            full = self.queued_rows >= self.config.flush_rows
        if full:
            self._wake.set()

    def _fast_key(self, r: Record) -> tuple | None:
        """The block layout for a record that fits one, else None (it is queued as it is)."""
        inputs, out, columns = r.inputs, r.output, r.columns
        if not (
            type(inputs) is np.ndarray and type(out) is np.ndarray and inputs.ndim == 2 and out.ndim == 1
            and r.error_id is None and BLOCK_MIN_ROWS <= r.n == inputs.shape[0] == out.shape[0] <= self._block_rows
            and inputs.dtype.kind in "biuf" and out.dtype.kind in "biuf" and columns is not None
        ):
            return None
        seen = self._layouts.get(id(columns))
        if seen is None or seen[0] is not columns:  # a list seen before: its answer is kept
            numeric = r.types is None or all(t == "float" for t in r.types)
            seen = (columns, tuple(columns) if numeric else None)
            if len(self._layouts) > 1000:
                self._layouts.clear()
            self._layouts[id(columns)] = seen
        if seen[1] is None or inputs.shape[1] != len(columns):
            return None
        return (seen[1], "f" if out.dtype.kind == "f" else "i")

    def add_feedback(self, items: list[dict[str, Any]]) -> None:
        self._feedback.extend(items)
        self._wake.set()

    # -- the writer ------------------------------------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            self._wake.wait(self.config.flush_seconds)
            self._wake.clear()
            try:
                self.flush()
            except Exception:  # noqa: BLE001 - a failed flush must not kill the writer
                log.exception("collection flush failed; the records stay queued")

    def close(self) -> None:
        """Flush everything (on SIGTERM, update or delete) and stop the writer."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
        self.flush()

    def flush(self) -> None:
        with self._lock:
            with self._qlock:
                records = list(self.queue)
                self.queue.clear()
                blocks = self._filled + [b for b in self._active.values() if b.n]
                self._filled = []
                self._active = {k: b for k, b in self._active.items() if not b.n}
                self.queued_rows = 0
                dropped, self.dropped = self.dropped, 0
            feedback: list[dict[str, Any]] = []
            while self._feedback:
                feedback.append(self._feedback.popleft())
            if records or blocks:
                self._write_requests(records, blocks)
                with self._qlock:  # written: the blocks take rows again
                    for b in blocks:
                        b.n = 0
                        b.meta = []
                        spare = self._spare.setdefault(b.key, [])
                        if len(spare) < self._max_spare:
                            spare.append(b)
            if dropped:
                self._write("drops", time.time(), {"time": [time.time()], "pid": [os.getpid()], "dropped": [dropped]})
            if feedback:
                self._write_feedback(feedback)

    def _write(self, kind: str, ts: float, columns: dict[str, Any], table=None, more=(), day: str | None = None) -> None:
        """Write ``table`` (or ``columns``), and then each of ``more`` as further row groups of
        the same schema, as one file under a temporary name, renamed when complete."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        if table is None:
            table = pa.table(columns)
        folder = self.root / kind / f"date={day or _partition_date(ts)}"
        folder.mkdir(parents=True, exist_ok=True)
        self._seq += 1
        name = f"part-{int(ts * 1000)}-{os.getpid()}-{self._seq}.parquet"
        tmp = folder / f".{name}.tmp"
        # lz4, and dictionary encoding only where values repeat (ids, versions): on random
        # floats, Parquet's default dictionary attempt and zstd cost three times the CPU.
        strings = [f.name for f in table.schema if pa.types.is_string(f.type)]
        # min/max statistics only where readers filter (time, version, status)
        stats = [c for c in ("request_time", "model_version", "status_code") if c in table.column_names] or False
        try:
            with pq.ParquetWriter(tmp, table.schema, compression="lz4", use_dictionary=strings, write_statistics=stats) as writer:
                for t in (table, *more):
                    writer.write_table(t)
                    time.sleep(0)  # hand the GIL over between row groups
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, folder / name)  # readers see whole files only
        self.files += 1

    def _write_requests(self, records: list[Record], blocks: list[_Block] = ()) -> None:
        import pyarrow as pa

        # Files are partitioned by day: split what spans midnight. Tables of one day and one
        # schema become row groups of one file.
        by_day: dict[str, list[Any]] = {}
        for b in blocks:
            for day, table in self._block_tables(b, pa):
                by_day.setdefault(day, []).append(table)
        records_by_day: dict[str, list[Record]] = {}
        for r in records:
            records_by_day.setdefault(_partition_date(r.time), []).append(r)
        for day, day_records in records_by_day.items():
            # In slices: each NumPy/Arrow call then holds the GIL for a few milliseconds at
            # most, so the event loop answering requests is never held up for longer.
            for piece in _slices(day_records):
                by_day.setdefault(day, []).append(self._table(piece, pa))
                time.sleep(0)  # hand the GIL over between slices
        for day, tables in by_day.items():
            groups: dict[Any, list[Any]] = {}
            for t in tables:
                groups.setdefault(t.schema, []).append(t)
            if len(groups) > 1:  # e.g. an error's null columns beside typed ones: one schema if it unifies
                try:
                    schema = pa.unify_schemas(list(groups), promote_options="permissive")
                    groups = {schema: [_conform(t, schema, pa) for t in tables]}
                except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
                    pass
            for group in groups.values():
                self._write("requests", time.time(), {}, group[0], group[1:], day=day)
                self.written_rows += sum(t.num_rows for t in group)

    def _block_tables(self, b: _Block, pa) -> list[tuple[str, Any]]:
        times, ids, versions, statuses, latencies, counts = zip(*b.meta)
        counts = np.array(counts, dtype=np.int64)
        n = b.n
        meta = _meta_columns(pa, np.array(times), list(ids), list(versions), statuses, latencies, [None] * len(ids), counts)
        cols = {name: pa.array(b.inputs[i, :n]) for i, name in enumerate(b.columns)}  # no copies
        table = self._assemble(meta, cols, pa.array(b.pred[:n]), pa)
        first, last = _partition_date(min(times)), _partition_date(max(times))
        if first == last:
            return [(first, table)]
        days = np.array([_partition_date(t) for t in times])[np.repeat(np.arange(len(times)), counts)]
        return [(d, table.filter(pa.array(days == d))) for d in sorted(set(days.tolist()))]

    def _assemble(self, meta: dict[str, Any], columns: dict[str, Any], pred: Any, pa) -> Any:
        for name in list(columns):
            if name in meta:
                columns[f"input.{name}"] = columns.pop(name)
        out = {**meta, **{k: v for k, v in columns.items() if k not in self._exclude}}
        if pred is not None:
            out["prediction"] = pred
        table = pa.table(out)
        # Columns without nulls are written as required: Parquet then writes no definition
        # levels for them, which is 40 % of the encoding time of 20 float columns. Readers
        # relax this again (data.py), so files with and without nulls read as one dataset.
        schema = pa.schema([f.with_nullable(f.name == "error_id" or table.column(i).null_count > 0) for i, f in enumerate(table.schema)])
        return pa.Table.from_arrays(table.columns, schema=schema)

    def _table(self, records: list[Record], pa) -> Any:
        counts = np.fromiter((max(r.n, 1) for r in records), dtype=np.int64, count=len(records))
        meta = _meta_columns(
            pa, np.array([r.time for r in records]), [r.request_id for r in records], [r.model_version for r in records],
            [r.status for r in records], [r.latency_ms for r in records], [r.error_id for r in records], counts,
        )
        columns = self._input_columns(records, counts, pa)
        return self._assemble(meta, columns, self._prediction_column(records, counts, pa), pa)

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
        cols: list[list[Any]] = [[] for _ in range(width)]
        for r, c in zip(records, counts):
            rows = r.inputs
            if rows is None:
                for col in cols:
                    col.extend([None] * c)
                continue
            if isinstance(rows, np.ndarray):
                rows = rows.reshape(len(rows), -1).tolist()
            for row in rows:
                for i in range(width):
                    cols[i].append(row[i] if i < len(row) else None)
        out = {}
        for name, kind, values in zip(names, types, cols):
            if kind == "float":
                arr = [None if v is None or isinstance(v, str) else float(v) for v in values]
                out[name] = pa.array(arr, pa.float64())
            elif kind == "bool":
                out[name] = pa.array([None if v is None else bool(v) for v in values], pa.bool_())
            else:
                out[name] = pa.array([None if v is None else str(v) for v in values], pa.string())
        return out

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
        write_feedback(self.root, items, writer=self)


def _meta_columns(pa, times, ids, versions, statuses, latencies, errors, counts) -> dict[str, Any]:
    """The per-row metadata columns from per-request values (``counts`` rows each)."""
    total = int(counts.sum())
    # Per-request values repeat on every row of the request: convert each string once and
    # take it by index (Arrow's take), instead of converting it once per row.
    index = pa.array(np.repeat(np.arange(len(ids)), counts))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    return {
        "request_time": pa.array(np.repeat(times * 1e6, counts).astype("int64"), pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "request_id": pa.array(ids, pa.string()).take(index),
        "row": pa.array((np.arange(total) - np.repeat(starts, counts)).astype(np.int32)),
        "model_version": pa.array(versions, pa.string()).take(index),
        "status_code": pa.array(np.repeat(np.array(statuses, dtype=np.int16), counts)),
        "latency_ms": pa.array(np.repeat(np.array(latencies, dtype=np.float32), counts)),
        "error_id": pa.array(errors, pa.string()).take(index),
    }


def _conform(table, schema, pa):
    """``table`` with ``schema``'s columns, in its order: missing ones null, the rest cast."""
    cols = [
        table.column(f.name).cast(f.type) if f.name in table.column_names else pa.nulls(table.num_rows, f.type)
        for f in schema
    ]
    return pa.Table.from_arrays(cols, schema=schema)


def _slices(records: list[Record]):
    start, rows = 0, 0
    for i, r in enumerate(records):
        rows += max(r.n, 1)
        if rows >= CHUNK_ROWS or i - start + 1 >= CHUNK_RECORDS:
            yield records[start : i + 1]
            start, rows = i + 1, 0
    if start < len(records):
        yield records[start:]


def write_feedback(root: Path, items: list[dict[str, Any]], writer: Collector | None = None) -> int:
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
        import pyarrow.parquet as pq

        folder = root / "feedback" / f"date={_partition_date(now)}"
        folder.mkdir(parents=True, exist_ok=True)
        name = f"part-{int(now * 1000)}-{os.getpid()}-{random.getrandbits(32):08x}.parquet"
        tmp = folder / f".{name}.tmp"
        pq.write_table(table, tmp)
        os.replace(tmp, folder / name)
    return len(items)
