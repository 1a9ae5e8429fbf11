"""The rows collected and how they are stored: one request record as the request path hands it
over, the table files hold (one row per input row), and the Parquet writer. Shared by the
collector's direct writes and the compaction of staged files, so both give the same schema."""

from __future__ import annotations

import datetime as _dt
import os
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

CHUNK_RECORDS = 4096


#: ... and at most this many rows: a slice of 100-row requests then holds the GIL for about a
#: millisecond, not the 20 ms that 4096 of them would (seen in the servers' p99 latency).
CHUNK_ROWS = 16_384

#: ... or this many, for rows that are not arrays of numbers (strings, booleans, objects): they
#: are Python values, transposed and converted at some 0.5 us a row (more when a column needs
#: converting value by value), so a slice of them holds the GIL for a millisecond or two (the
#: servers' p99 halved against 16,384-row slices; bench/README.md).
CHUNK_ROWS_MIXED = 2048


#: Where a deployment's shadows' answers are collected: ``<store>/<deployment>/shadow/``, a part
#: of its own, so no reader of the served rows (metrics, alerts, drift) ever counts them.
SHADOW_PART = "shadow"

META_COLUMNS = ("request_time", "request_id", "row", "model_version", "status_code", "latency_ms", "error_id")


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


class Split(NamedTuple):
    """A request's validated rows of number and other columns (a string column beside numbers),
    as its record keeps them: the numbers as one float64 array, the others as an array of their
    objects.

    Kept as the rows came (an array of every value), a 100-row request of 20 columns held 2,000
    Python floats until the writer's flush freed them in bulk, up to a flush of 50,000 rows at
    once; that alone took the servers' p99 from 2-3 ms to 8-10 ms (100-row requests at one
    connection, bench/README.md). As NumPy numbers the floats go with the request.
    """

    numbers: np.ndarray  # (n, k) float64: the columns at ``split_positions(types)[0]``
    missing: np.ndarray | None  # (n, k) bool, True where a number was None (NaN there); None: none was
    others: np.ndarray  # (n, m) objects: the columns at ``split_positions(types)[1]``

    def objects(self, types: list[str]) -> np.ndarray:
        """The rows as one array of objects again (None where a number was missing)."""
        at_numbers, at_others = split_positions(types)
        out = np.empty((len(self.numbers), len(types)), dtype=object)
        numbers = self.numbers.astype(object)
        if self.missing is not None:
            numbers[self.missing] = None
        out[:, at_numbers] = numbers
        out[:, at_others] = self.others
        return out


def split_positions(types: list[str]) -> tuple[list[int], list[int]]:
    """The positions of the number columns (``"float"``) and of the others."""
    return [i for i, t in enumerate(types) if t == "float"], [i for i, t in enumerate(types) if t != "float"]


def split_rows(rows: Any, numbers: list[int], others: list[int]) -> Any:
    """Validated rows (an array of objects) as a :class:`Split`, or as they are when they are not
    such an array or a number column holds a value NumPy cannot take as a number (validation
    lets none through; the collector converts such rows value by value)."""
    if type(rows) is not np.ndarray or rows.dtype != object or rows.ndim != 2:
        return rows
    part = rows[:, numbers]
    try:
        block = part.astype(np.float64)  # None becomes NaN
    except (TypeError, ValueError, OverflowError):
        return rows
    missing = None
    if np.isnan(block).any():  # NaN or None: told apart only then
        missing = np.equal(part, None)
        if not missing.any():
            missing = None
    return Split(block, missing, rows[:, others])


def _partition_date(ts: float) -> str:
    return _dt.datetime.fromtimestamp(ts, _dt.timezone.utc).strftime("%Y-%m-%d")


def stored_inputs(names: list[str], exclude: set[str]) -> list[tuple[str, str]]:
    """``(name, stored name)`` of the input columns that are stored.

    A name that is also a metadata column (``row``, ``prediction``, ...) is stored as
    ``input.<name>``; excluded columns (by either name) are never stored.
    """
    out = []
    for name in names:
        stored = f"input.{name}" if name in META_COLUMNS or name == "prediction" else name
        if name not in exclude and stored not in exclude:
            out.append((name, stored))
    return out


def assemble(pa, counts: np.ndarray, *, times: np.ndarray, request_ids, versions, statuses: np.ndarray,
             latencies: np.ndarray, error_ids, inputs: dict[str, Any], prediction) -> Any:
    """The table of request records as files hold it: one row per input row.

    Per-request values (``counts[i]`` rows each; a request with no rows still has one) are
    given once per request and repeated here: strings are converted once and taken by index.
    Both the collector's direct writes and the compaction of staged files build their tables
    here, so the two give the same schema.
    """
    total = int(counts.sum())
    index = pa.array(np.repeat(np.arange(len(counts)), counts))
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    out = {
        "request_time": pa.array(np.repeat(times * 1e6, counts).astype("int64"), pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "request_id": request_ids.take(index),
        "row": pa.array((np.arange(total) - np.repeat(starts, counts)).astype(np.int32)),
        "model_version": versions.take(index),
        "status_code": pa.array(np.repeat(statuses.astype(np.int16, copy=False), counts)),
        "latency_ms": pa.array(np.repeat(latencies.astype(np.float32, copy=False), counts)),
        "error_id": error_ids.take(index),
        **inputs,
    }
    if prediction is not None:
        out["prediction"] = prediction
    table = pa.table(out)
    # Columns without nulls are written as required: Parquet then writes no definition
    # levels for them (40 % less encoding time for 20 float columns, measured alone).
    # Readers relax this again (data.py), so files with and without nulls read as one dataset.
    schema = pa.schema([f.with_nullable(f.name == "error_id" or table.column(i).null_count > 0) for i, f in enumerate(table.schema)])
    return pa.Table.from_arrays(table.columns, schema=schema)


def _slices(records: list[Record]):
    start, rows = 0, 0
    first = next((r.inputs for r in records if r.inputs is not None), None)  # (a failed request has none)
    bound = CHUNK_ROWS if first is None or isinstance(first, np.ndarray) and first.dtype.kind in "biuf" else CHUNK_ROWS_MIXED
    for i, r in enumerate(records):
        rows += max(r.n, 1)
        if rows >= bound or i - start + 1 >= CHUNK_RECORDS:
            yield records[start : i + 1]
            start, rows = i + 1, 0
    if start < len(records):
        yield records[start:]


def encode_parquet(table: Any) -> tuple[Any, int]:
    """``table`` as Parquet in memory: the buffer and the size used. The buffer is this thread's
    reused page-aligned one (:mod:`.directio`), valid until its next call."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from . import directio

    # lz4, and dictionary encoding only where values repeat (ids, versions): on random
    # floats, Parquet's default dictionary attempt and zstd cost three times the CPU.
    strings = [f.name for f in table.schema if pa.types.is_string(f.type)]
    # min/max statistics only where readers filter (time, version, status)
    stats = [c for c in ("request_time", "model_version", "status_code") if c in table.column_names] or False
    size = _parquet_bound(table)
    while True:
        mem = directio.buffers.write.aligned(size)
        sink = pa.FixedSizeBufferWriter(pa.py_buffer(mem))
        try:
            pq.write_table(table, sink, compression="lz4", use_dictionary=strings, write_statistics=stats)
            return mem, sink.tell()
        except OSError:  # "Write out of bounds" (nothing else can fail in memory): a bigger buffer
            size = 2 * len(mem)
        finally:
            del sink


def write_parquet(table: Any, folder: Path, name: str) -> Path:
    """Write ``table`` as ``folder/name`` under a temporary name, then rename: readers see whole
    files only. Encoded into reused page-aligned memory and written with ``O_DIRECT``
    (:mod:`.directio`): through the page cache, writing cost more CPU than encoding."""
    from . import directio

    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / f".{name}.tmp"
    mem, written = encode_parquet(table)
    directio.write_file(tmp, mem, written)
    os.replace(tmp, folder / name)
    return folder / name


def _parquet_bound(table: Any) -> int:
    """Bytes that surely hold ``table`` as Parquet: its Arrow data (lz4 and dictionaries only
    shrink it), page headers and the footer."""
    return table.get_total_buffer_size() + 64 * table.num_columns * (1 + table.num_rows // 4096) + (1 << 20)
