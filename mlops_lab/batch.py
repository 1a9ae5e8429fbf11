"""Batch scoring: a registered version over a whole data set, in chunks, with progress.

The analytics use of a model (Azure ML's batch endpoints, MLflow's ``spark_udf``), and what
``mlops-lab score --model REF --input FILE`` runs. Inputs are checked against the version's
signature with the same rules as the scoring server: a missing column is an error naming it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ._progress import Progress
from ._scoring import model_input, predictions_frame
from .errors import InvalidInput
from .workspace import in_workspace

__all__ = ["score_batch"]


@in_workspace
def score_batch(
    ref: Any,
    data: Any,
    *,
    output: str | os.PathLike | None = None,
    chunk_rows: int | None = None,
    keep_inputs: bool = False,
    progress: bool = True,
    engine: str = "local",
    address: str | None = None,
    client: Any = None,
):
    """Score ``data`` with version ``ref`` and return the predictions as a DataFrame (or, on
    Dask, write them as a Parquet dataset).

    Parameters
    ----------
    ref:
        A model reference (``"churn:3"``, ``"churn@production"``).
    data:
        A pandas DataFrame, a NumPy array (tensor models), or the path of a Parquet or CSV file
        (read in chunks: the file need not fit in memory twice).
    output:
        Also write the result to this Parquet file (written chunk by chunk, then renamed into
        place: a failed run leaves no partial file).
    chunk_rows:
        Rows per ``predict`` call. By default a file is read in chunks of 262,144 rows and
        in-memory data in chunks of 2,000,000 (one call for most data sets: no per-call overhead);
        a call longer than a second shows its elapsed time while it runs.
    keep_inputs:
        Put the input columns before the predictions in the result.
    progress:
        Print rows done and rows/s on stderr (for runs longer than a second).
    engine:
        ``"local"`` (this process) or ``"dask"``: ``data`` is then a Parquet dataset (a folder,
        a glob or a list of files, local or ``s3://``), scored one file per task on the Dask
        cluster at ``address`` (or through ``client``; neither: a local cluster), each worker
        loading the version once from this registry; ``output`` is the folder (or ``s3://``
        prefix) of the result, one file per input file, which appears whole or not at all
        (on object storage with ``_SUCCESS`` written last; :mod:`mlops_lab.dask_batch`).

    Returns
    -------
    pandas.DataFrame
        One row per input row, in input order: ``prediction`` (or ``prediction_0``...) columns,
        or the model's own columns when it returns a DataFrame. On Dask, a summary instead:
        ``{"output", "rows", "files", "seconds"}``.

    Examples
    --------
    >>> scored = score_batch("churn@production", "customers.parquet", output="scored.parquet")  # doctest: +SKIP
    """
    import pandas as pd

    from .registry.api import get_model
    from .registry.inputs import InputSpec

    if chunk_rows is not None and chunk_rows < 1:
        raise InvalidInput(f"chunk_rows must be at least 1, got {chunk_rows}")
    if engine not in ("local", "dask"):
        raise InvalidInput(f"unknown engine {engine!r}", hint="use 'local' or 'dask'")
    if engine == "local" and (address is not None or client is not None):
        raise InvalidInput("address and client are for engine='dask'")
    mv = get_model(ref)
    if engine == "dask":
        from .dask_batch import score_on_dask
        from .workspace import current_registry

        return score_on_dask(mv, current_registry().settings, data, output, address=address, client=client,
                             keep_inputs=keep_inputs, bar=Progress(f"scoring {mv.ref} on Dask", enabled=progress))
    model = mv.load()
    spec = InputSpec(mv.signature)
    chunks, total = _chunks(data, chunk_rows)
    bar = Progress(f"scoring {mv.ref}", enabled=progress)
    out_path = Path(output) if output is not None else None
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp") if out_path else None
    writer = None
    parts: list[Any] = []
    done, last = 0, 0.0
    try:
        for start, frame in chunks:
            x = model_input(spec, frame, start)
            with _Ticker(bar, done, len(frame), total):
                y = model.predict(x)
            result = predictions_frame(y, len(frame))
            if keep_inputs and isinstance(frame, pd.DataFrame):
                result = pd.concat([frame.reset_index(drop=True), result], axis=1)
            if tmp is not None:
                writer = _write(writer, tmp, result)
            parts.append(result)
            done += len(frame)
            now = time.perf_counter()
            if now - last > 0.5:
                last = now
                of = f"/{total:,}" if total else ""
                bar.step(f"{done:,}{of} rows ({done / max(bar.elapsed(), 1e-9):,.0f} rows/s)")
        if writer is not None:
            writer.close()
            writer = None
            os.replace(tmp, out_path)
    finally:
        if writer is not None:
            writer.close()
        if tmp is not None and tmp.exists():
            tmp.unlink()
    if bar.elapsed() > 1.0:
        bar.done(f"{done:,} rows ({done / max(bar.elapsed(), 1e-9):,.0f} rows/s)" + (f" -> {out_path}" if out_path else ""))
    if not parts:
        raise InvalidInput("the data holds no rows")
    result = parts[0] if len(parts) == 1 else pd.concat(parts, ignore_index=True)
    if isinstance(data, pd.DataFrame) and len(result) == len(data):
        result.index = data.index
    return result


class _Ticker:
    """While one ``predict`` call runs longer than a second, show the time it has taken."""

    def __init__(self, bar: Progress, done: int, rows: int, total: int | None) -> None:
        self.bar, self.done, self.rows, self.total = bar, done, rows, total
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> _Ticker:
        if self.bar.enabled:
            self._thread = threading.Thread(target=self._run, daemon=True)
            self._thread.start()
        return self

    def _run(self) -> None:
        t0 = time.perf_counter()
        of = f"/{self.total:,}" if self.total else ""
        if self._stop.wait(1.0):
            return
        while True:
            self.bar.step(f"{self.done:,}{of} rows done, scoring {self.rows:,} more ({time.perf_counter() - t0:.0f} s)")
            if self._stop.wait(0.5):
                return

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()


FILE_CHUNK, MEMORY_CHUNK = 262_144, 2_000_000


def _chunks(data: Any, size: int | None) -> tuple[Iterator[tuple[int, Any]], int | None]:
    """(start row, chunk) pairs and the row count when known."""
    import numpy as np
    import pandas as pd

    if isinstance(data, (str, os.PathLike)):
        path = Path(data)
        if not path.exists():
            raise InvalidInput(f"no such file: {path}")
        suffix = path.suffix.lower()
        if suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            pf = pq.ParquetFile(path)

            def parquet():
                start = 0
                for batch in pf.iter_batches(batch_size=size or FILE_CHUNK):
                    frame = batch.to_pandas()
                    yield start, frame
                    start += len(frame)

            return parquet(), pf.metadata.num_rows
        if suffix in (".csv", ".txt"):
            def csv():
                start = 0
                for frame in pd.read_csv(path, chunksize=size or FILE_CHUNK):
                    yield start, frame
                    start += len(frame)

            return csv(), None
        raise InvalidInput(f"{path.name}: score a .parquet or .csv file, or pass a DataFrame")
    if isinstance(data, (pd.DataFrame, np.ndarray)):
        take = data.iloc if isinstance(data, pd.DataFrame) else data
        step = size or MEMORY_CHUNK

        def memory():
            start = 0
            while start < len(data):
                end = min(len(data), start + step)
                yield start, data if (start, end) == (0, len(data)) else take[start:end]
                start = end

        return memory(), len(data)
    raise InvalidInput(f"score_batch takes a DataFrame, an ndarray or a file path, not {type(data).__name__}")


def _write(writer, tmp: Path, result):
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.Table.from_pandas(result, preserve_index=False)
    if writer is None:
        writer = pq.ParquetWriter(tmp, table.schema, compression="zstd")
    writer.write_table(table)
    return writer
