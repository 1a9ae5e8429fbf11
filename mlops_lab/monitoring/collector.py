"""Data collection inside the scoring server.

The request path only appends one small tuple per request to a bounded in-memory queue (rows are
counted, not copied); a background thread turns what has queued into Arrow columns and appends
a Parquet file every ``flush_seconds`` or ``flush_rows`` rows. When the queue is full, requests
are still answered and their records are dropped and counted; the counts are written too, so
status and charts show them.

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
        with self._qlock:
            if self.queued_rows + n > self.config.max_queue_rows:
                self.dropped += n
                self.dropped_total += n
                return
            self.queue.append(record)
            self.queued_rows += n
            full = self.queued_rows >= self.config.flush_rows
        if full:
            self._wake.set()

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
                self.queued_rows = 0
                dropped, self.dropped = self.dropped, 0
            feedback: list[dict[str, Any]] = []
            while self._feedback:
                feedback.append(self._feedback.popleft())
            if records:
                self._write_requests(records)
            if dropped:
                self._write("drops", time.time(), {"time": [time.time()], "pid": [os.getpid()], "dropped": [dropped]})
            if feedback:
                self._write_feedback(feedback)

    def _write(self, kind: str, ts: float, columns: dict[str, Any], table=None) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if table is None:
            table = pa.table(columns)
        folder = self.root / kind / f"date={_partition_date(ts)}"
        folder.mkdir(parents=True, exist_ok=True)
        self._seq += 1
        name = f"part-{int(ts * 1000)}-{os.getpid()}-{self._seq}.parquet"
        tmp = folder / f".{name}.tmp"
        # lz4, and dictionary encoding only where values repeat (ids, versions): on random
        # floats, Parquet's default dictionary attempt and zstd cost three times the CPU.
        strings = [f.name for f in table.schema if pa.types.is_string(f.type)]
        # min/max statistics only where readers filter (time, version, status)
        stats = [c for c in ("request_time", "model_version", "status_code") if c in table.column_names] or False
        pq.write_table(table, tmp, compression="lz4", use_dictionary=strings, write_statistics=stats)
        os.replace(tmp, folder / name)  # readers see whole files only
        self.files += 1

    def _write_requests(self, records: list[Record]) -> None:
        import pyarrow as pa

        # Files are partitioned by day: split a batch that spans midnight.
        by_day: dict[str, list[Record]] = {}
        for r in records:
            by_day.setdefault(_partition_date(r.time), []).append(r)
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

    def _table(self, records: list[Record], pa) -> Any:
        counts = np.fromiter((max(r.n, 1) for r in records), dtype=np.int64, count=len(records))
        total = int(counts.sum())
        # Per-request values repeat on every row of the request: convert each string once and
        # take it by index (Arrow's take), instead of converting it once per row.
        index = pa.array(np.repeat(np.arange(len(records)), counts))
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        meta = {
            "request_time": pa.array(np.repeat(np.array([r.time for r in records]) * 1e6, counts).astype("int64"), pa.int64()).cast(pa.timestamp("us", tz="UTC")),
            "request_id": pa.array([r.request_id for r in records], pa.string()).take(index),
            "row": pa.array((np.arange(total) - np.repeat(starts, counts)).astype(np.int32)),
            "model_version": pa.array([r.model_version for r in records], pa.string()).take(index),
            "status_code": pa.array(np.repeat(np.array([r.status for r in records], dtype=np.int16), counts)),
            "latency_ms": pa.array(np.repeat(np.array([r.latency_ms for r in records], dtype=np.float32), counts)),
            "error_id": pa.array([r.error_id for r in records], pa.string()).take(index),
        }
        columns = self._input_columns(records, counts, pa)
        for name in list(columns):
            if name in meta:
                columns[f"input.{name}"] = columns.pop(name)
        pred = self._prediction_column(records, counts, pa)
        out = {**meta, **{k: v for k, v in columns.items() if k not in self._exclude}}
        if pred is not None:
            out["prediction"] = pred
        table = pa.table(out)
        # Columns without nulls are written as required: Parquet then writes no definition
        # levels for them (40 % less encoding time for 20 float columns, measured alone).
        # Readers relax this again (data.py), so files with and without nulls read as one dataset.
        schema = pa.schema([f.with_nullable(f.name == "error_id" or table.column(i).null_count > 0) for i, f in enumerate(table.schema)])
        return pa.Table.from_arrays(table.columns, schema=schema)

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
