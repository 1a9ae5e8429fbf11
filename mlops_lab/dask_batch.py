"""Batch scoring on a Dask distributed cluster: ``score_batch(..., engine="dask")``.

A Parquet dataset of many files (a folder, a glob, or a list; local or ``s3://``) is scored file
by file, one Dask task per file, each writing one output file. Dask schedules the tasks and moves
the work of a worker that dies to another one; nothing here schedules anything. Each worker
process loads the version once, from the registry the caller's settings name (artifacts on S3
and a database server let workers on other machines do so), and checks every file against the
signature with the same errors as in-process scoring.

The output is a folder of Parquet files, ``part-00000.parquet``... in input order, that appears
whole or not at all: the tasks write into a hidden staging folder beside it (a task run twice
writes the same file again), and only when every task has succeeded is that folder renamed to
the output's name; a failed run removes it. On object storage, where nothing renames a folder,
the tasks write under a hidden prefix beside it (``.NAME.staging-*/``), the parts are then copied
into place inside the store and ``OUTPUT/_SUCCESS`` is written last: write, then publish, as
Hadoop and Spark jobs do (readers skip ``_SUCCESS``). A failed run marks the staging prefix's
lease, lets its running tasks finish (Dask cannot stop one; the queued ones return at once on
the mark), then removes what they wrote; a task that outlives that wait (an interrupted run, a
lost cluster) removes what it writes when it sees the mark.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from .errors import InvalidInput, MlopsLabError

#: On object storage, the staging prefix's marker that the run still wants its parts.
LEASE = "_LEASE"
RUNNING = b"running"
#: Seconds a failed run on object storage waits for its running tasks before removing its parts.
STOP_WAIT = 120.0
#: Per worker process: loaded versions and S3 clients.
_models: dict[tuple[Any, Any], Any] = {}
_models_lock = threading.Lock()


def _input_files(data: Any, settings) -> tuple[Any, list[str], bool]:
    """The file system, the Parquet files of ``data`` sorted (that order is the output's), and
    whether they are on object storage."""
    from pyarrow import fs as pafs

    items = [str(d) for d in data] if isinstance(data, (list, tuple)) else [str(data)]
    s3 = bool(items) and items[0].startswith("s3://")
    filesystem = _filesystem(s3, settings)
    if s3:
        items = [i[len("s3://"):].rstrip("/") for i in items]
    else:
        items = [str(Path(i).absolute()) for i in items]
    files: list[str] = []
    for item in items:
        info = filesystem.get_file_info(item)
        if info.type == pafs.FileType.Directory:
            found = filesystem.get_file_info(pafs.FileSelector(item, recursive=True))
            files += sorted(f.path for f in found if f.type == pafs.FileType.File and f.path.endswith(".parquet")
                            and not any(part.startswith((".", "_")) for part in f.path[len(item):].split("/")))
        elif info.type == pafs.FileType.File:
            files.append(item)
        elif any(c in item for c in "*?["):
            import fnmatch

            folder = item.rsplit("/", 1)[0]
            found = filesystem.get_file_info(pafs.FileSelector(folder, allow_not_found=True))
            files += sorted(f.path for f in found if f.type == pafs.FileType.File and fnmatch.fnmatch(f.path, item))
        else:
            raise InvalidInput(f"no such file or folder: {item}")
    if not files:
        raise InvalidInput(f"no Parquet files in {data}")
    return filesystem, files, s3


def _filesystem(s3: bool, settings) -> Any:
    """The ``pyarrow.fs`` file system of the input: one S3 client per process and endpoint."""
    from pyarrow import fs as pafs

    if not s3:
        return pafs.LocalFileSystem()
    key = ("s3", settings.s3_endpoint_url)
    with _models_lock:
        if key not in _models:
            from .object_storage import s3_filesystem

            _models[key] = s3_filesystem(settings.s3_endpoint_url)
        return _models[key]


def _model(settings, ref: str) -> Any:
    """The version, loaded once per worker process."""
    key = (settings, ref)
    with _models_lock:
        if key not in _models:
            from .registry.inputs import InputSpec
            from .workspace import Workspace

            mv = Workspace(settings).get_model(ref)
            _models[key] = (mv.load(), InputSpec(mv.signature))
        return _models[key]


def score_file(settings, ref: str, source: str, index: int, staging: str, keep_inputs: bool) -> int:
    """Score one input file into ``staging/part-<index>.parquet`` (a Dask task); its row count.
    ``staging`` is a local folder or ``s3://bucket/prefix``."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    from ._scoring import model_input, predictions_frame

    if staging.startswith("s3://") and not _wanted(_filesystem(True, settings), staging[len("s3://"):]):
        return 0  # the run failed before this task started: it writes nothing
    model, spec = _model(settings, ref)
    s3 = source.startswith("s3://")
    frame = pq.read_table(source[len("s3://"):] if s3 else source, filesystem=_filesystem(s3, settings)).to_pandas()
    try:
        x = model_input(spec, frame, 0)
    except MlopsLabError as exc:  # one line naming the file; an InvalidInput crosses Dask's pickling whole
        raise InvalidInput(f"{source.rsplit('/', 1)[-1]}: {exc}") from None
    result = predictions_frame(model.predict(x), len(frame))
    if keep_inputs:
        result = pd.concat([frame.reset_index(drop=True), result], axis=1)
    table = pa.Table.from_pandas(result, preserve_index=False)
    name = f"part-{index:05d}.parquet"
    if staging.startswith("s3://"):
        # one object, whole once written; a task run twice (its worker died) writes it again
        fs, path = _filesystem(True, settings), staging[len("s3://"):]
        pq.write_table(table, f"{path}/{name}", filesystem=fs, compression="zstd")
        if not _wanted(fs, path):
            # the run was abandoned without waiting for this task (Dask cannot stop a running
            # one; see score_on_dask): what it wrote goes too
            _remove_prefix(fs, path)
        return len(frame)
    final = Path(staging) / name
    tmp = final.with_name(f".{final.name}.{uuid.uuid4().hex[:8]}.tmp")
    pq.write_table(table, tmp, compression="zstd")
    os.replace(tmp, final)  # a task run twice (its worker died) writes the same file again
    return len(frame)


def _wanted(fs, path: str) -> bool:
    """Whether the run that owns staging prefix ``path`` still wants its parts (its lease)."""
    try:
        with fs.open_input_stream(f"{path}/{LEASE}") as f:
            return f.read() == RUNNING
    except FileNotFoundError:
        return False


class _Output:
    """Where the parts go, and how they are published: a local folder (a staging folder beside
    it, renamed), or a prefix of an object store (a hidden staging prefix beside it, the parts
    copied into place, then ``_SUCCESS``)."""

    def __init__(self, output: Any, settings, parts: int) -> None:
        from pyarrow import fs as pafs

        text = str(output)
        self.s3 = text.startswith("s3://")
        self.parts = parts
        self.published = 0
        self.stopped = False
        token = uuid.uuid4().hex[:8]
        if self.s3:
            from .object_storage import split_s3_uri

            if not split_s3_uri(text)[1]:
                raise InvalidInput(f"give the output a prefix inside the bucket: s3://{split_s3_uri(text)[0]}/NAME")
            self.fs = _filesystem(True, settings)
            self.path = text[len("s3://"):].rstrip("/")
            self.uri = f"s3://{self.path}"
            try:
                taken = self.fs.get_file_info(pafs.FileSelector(self.path, allow_not_found=True))
            except OSError as exc:
                from .object_storage import s3_error

                raise s3_error(exc, f"look at {self.uri}", self.uri, settings.s3_endpoint_url) from None
            if taken:
                raise InvalidInput(f"{self.uri} holds objects already: remove them or give another output prefix")
            parent, _, name = self.path.rpartition("/")
            self.staging_path = f"{parent}/.{name}.staging-{token}"
            self.staging = f"s3://{self.staging_path}"
            with self.fs.open_output_stream(f"{self.staging_path}/{LEASE}") as f:
                f.write(RUNNING)
        else:
            self.out = Path(text).absolute()
            self.uri = str(self.out)
            if self.out.exists():
                raise InvalidInput(f"{self.out} exists: remove it or give another output folder")
            self.staging_dir = self.out.with_name(f".{self.out.name}.staging-{token}")
            self.staging_dir.mkdir(parents=True)  # beside the output: the final rename stays on one file system
            self.staging = str(self.staging_dir)

    def publish(self) -> None:
        if not self.s3:
            os.replace(self.staging_dir, self.out)  # the dataset appears whole
            return
        for i in range(self.parts):  # copies inside the store; nothing crosses this machine
            self.fs.copy_file(f"{self.staging_path}/part-{i:05d}.parquet", f"{self.path}/part-{i:05d}.parquet")
            self.published = i + 1
        with self.fs.open_output_stream(f"{self.path}/_SUCCESS") as f:
            f.write(b"")
        _remove_prefix(self.fs, self.staging_path)

    def stop(self) -> None:
        """Mark the lease: tasks not yet started write nothing, a task still running removes what
        it writes (see score_file)."""
        if not self.s3 or self.stopped:
            return
        self.stopped = True
        try:
            with self.fs.open_output_stream(f"{self.staging_path}/{LEASE}") as f:
                f.write(b"discarded")
        except OSError:
            pass  # the store does not answer: the removals in discard() will say so

    def discard(self) -> None:
        if not self.s3:
            shutil.rmtree(self.staging_dir, ignore_errors=True)
            return
        self.stop()
        # a part written just before the lease changed may be missing from a lagging listing:
        # the check waits longer than such a lag (rclone's folder cache); only a failed run waits
        _remove_prefix(self.fs, self.staging_path, settle=0.5)
        if self.published:
            _remove_prefix(self.fs, self.path)


def _remove_prefix(fs, prefix: str, attempts: int = 5, settle: float = 0.0) -> None:
    """Every object under ``prefix``, in batches (``delete_dir_contents``; one ``delete_file`` at a
    time makes pyarrow write a folder marker, which some servers, rclone's, refuse and then list
    the folder wrongly), then the folder's own marker if the store keeps one. Two removers may
    meet here (the driver discarding a run, a task that finished after it), and a store's listing
    may lag a write just made (rclone's folder cache), so the removal is repeated until a listing
    shows nothing, a few times; ``settle`` seconds pass before the first listing that checks. A
    failure is logged: what stays is a hidden prefix beside the output, never the output."""
    from pyarrow import fs as pafs

    error: OSError | None = None
    for attempt in range(attempts):
        if attempt:
            time.sleep(0.3 * attempt)
        try:
            fs.delete_dir_contents(prefix, missing_dir_ok=True)
        except OSError as exc:
            error = exc  # e.g. the folder marker refused while the other remover emptied the folder
        if settle and not attempt:
            time.sleep(settle)
        try:
            left = [f for f in fs.get_file_info(pafs.FileSelector(prefix, recursive=True, allow_not_found=True))
                    if f.type == pafs.FileType.File]
        except OSError as exc:
            error, left = exc, [None]
        if not left:
            try:
                fs.delete_dir(prefix)
            except OSError:
                pass  # no marker, or a server that lists an emptied folder by itself
            return
    import logging

    logging.getLogger(__name__).warning("could not remove %s: %s", prefix, error or "objects stay after removal")


def score_on_dask(mv, settings, data: Any, output: Any, *, address: str | None, client: Any,
                  keep_inputs: bool, bar) -> dict[str, Any]:
    """Score ``data`` with version ``mv`` on a Dask cluster into the folder or S3 prefix ``output``."""
    try:
        import distributed
    except ImportError:
        raise InvalidInput("engine='dask' needs Dask: pip install 'mlops-lab[dask]'") from None
    if output is None:
        raise InvalidInput("engine='dask' writes a Parquet dataset: give output='folder' or 's3://bucket/prefix'")
    filesystem, files, s3 = _input_files(data, settings)
    import pyarrow.parquet as pq

    total = 0
    for f in files:  # footers only
        with filesystem.open_input_file(f) as fh:
            total += pq.ParquetFile(fh).metadata.num_rows
    sources = [f"s3://{f}" for f in files] if s3 else files
    out = _Output(output, settings, len(sources))
    own = None
    try:
        if client is None:
            if address is None:
                own = client = distributed.Client(processes=True, dashboard_address=None)
            else:
                try:
                    own = client = distributed.Client(address, timeout=5)
                except OSError as exc:
                    raise InvalidInput(f"no Dask scheduler answers at {address}: {exc}") from None
        t0 = time.perf_counter()
        futures = client.map(score_file, [settings] * len(sources), [mv.ref] * len(sources), sources,
                             range(len(sources)), [out.staging] * len(sources), [keep_inputs] * len(sources),
                             pure=False)
        try:
            done = rows = 0
            for future in distributed.as_completed(futures):
                rows += future.result()  # a task's error (bad input) is raised here, as it was raised there
                done += 1
                bar.step(f"{done}/{len(sources)} files, {rows:,}/{total:,} rows "
                         f"({rows / max(time.perf_counter() - t0, 1e-9):,.0f} rows/s)")
        except BaseException as exc:
            if out.s3 and isinstance(exc, Exception):
                # A task failed. On object storage the others are let end before the prefix is
                # removed, so that no removal races a write: the tasks not yet started return at
                # once on the marked lease; each running one finishes its file. (Cancelled, a
                # running task ran on unseen and had to remove its part itself, after a listing
                # that could miss the part just written: CI once found one left.)
                out.stop()
                bar.step(f"a task failed: waiting for the {sum(not f.done() for f in futures)} running or "
                         f"queued tasks to stop")
                try:
                    distributed.wait(futures, timeout=STOP_WAIT)
                except Exception:  # noqa: BLE001 - a timeout or a lost cluster: cancel, the lease covers the rest
                    pass
            try:
                client.cancel(futures)
            except Exception:  # noqa: BLE001 - the cluster may be gone
                pass
            raise
        out.publish()
    except BaseException:
        out.discard()
        raise
    finally:
        if own is not None:
            own.close()
    seconds = time.perf_counter() - t0
    bar.done(f"{rows:,} rows in {len(sources)} files on Dask ({rows / max(seconds, 1e-9):,.0f} rows/s) -> {out.uri}")
    return {"output": out.uri, "rows": rows, "files": len(sources), "seconds": round(seconds, 3)}
