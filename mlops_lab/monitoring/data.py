"""Reading collected data back: the rows, request metrics, feedback and accuracy.

Everything reads the Parquet files with ``pyarrow.dataset``, with the day partition and the
time, version and column filters pushed down, so only the files and columns asked for are read.
"""

from __future__ import annotations

import datetime as _dt
import os
import re
from typing import Any

from ..errors import InvalidInput
from .staging import read_staged
from .store import CollectionStore

_UNITS = {"s": 1, "sec": 1, "min": 60, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str | float | int | _dt.timedelta) -> float:
    """``"90s"``, ``"5min"``, ``"1h"``, ``"7d"`` (or seconds, or a timedelta) -> seconds."""
    if isinstance(text, _dt.timedelta):
        return text.total_seconds()
    if isinstance(text, (int, float)):
        return float(text)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*(s|sec|min|m|h|d|w)\s*", str(text))
    if not m:
        raise InvalidInput(f"cannot read the duration {text!r}", hint="use e.g. '30s', '5min', '1h', '7d'")
    return float(m.group(1)) * _UNITS[m.group(2)]


def to_utc(value: Any, *, now: _dt.datetime | None = None) -> _dt.datetime | None:
    """A bound for ``since``/``until``: a datetime, an ISO string, or a duration before now."""
    if value is None:
        return None
    now = now or _dt.datetime.now(_dt.timezone.utc)
    if isinstance(value, _dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=_dt.timezone.utc)
    if isinstance(value, _dt.date):
        return _dt.datetime(value.year, value.month, value.day, tzinfo=_dt.timezone.utc)
    if isinstance(value, (int, float, _dt.timedelta)):
        return now - _dt.timedelta(seconds=parse_duration(value))
    text = str(value)
    try:
        return now - _dt.timedelta(seconds=parse_duration(text))
    except InvalidInput:
        pass
    try:
        dt = _dt.datetime.fromisoformat(text)
    except ValueError:
        raise InvalidInput(f"cannot read the time {value!r}", hint="give a datetime, an ISO date, or a duration such as '1h'") from None
    return dt if dt.tzinfo else dt.replace(tzinfo=_dt.timezone.utc)


def collection_root(settings, deployment: str) -> CollectionStore:
    """Deployment ``deployment``'s part of the collection store the settings name."""
    return CollectionStore.of(settings).deployment(deployment)


def shadow_root(root: CollectionStore) -> CollectionStore:
    """The part of a deployment's collected data its shadows' answers are in."""
    from .records import SHADOW_PART

    return _store(root).deployment(SHADOW_PART)


def _store(root: CollectionStore | str | os.PathLike) -> CollectionStore:
    """A deployment's part of a collection store, or its folder."""
    return root if isinstance(root, CollectionStore) else CollectionStore(os.fspath(root))


def _dataset(root: CollectionStore, kind: str):
    import pyarrow as pa
    import pyarrow.dataset as ds

    if not root.exists(kind):
        return None
    where = root.path(kind)
    options = {"format": "parquet", "partitioning": "hive", "ignore_prefixes": [".", "_"], "filesystem": root.fs}
    try:
        dataset = ds.dataset(where, **options)
        # Files need not share one schema: a version with another signature, or the models of a
        # multi-model deployment, have other input columns. Read every file's schema (footers
        # only) and take their union, so no column is left out because the first file lacks it.
        schemas = {f.physical_schema for f in dataset.get_fragments()}
        if len(schemas) > 1:
            unified = pa.unify_schemas([dataset.schema, *schemas], promote_options="permissive")
            dataset = ds.dataset(where, schema=unified, **options)
    except FileNotFoundError:
        raise
    except OSError as exc:
        if root.local:
            raise
        raise root.failed(exc, f"read {root.uri}/{kind}") from None
    if any(not f.nullable for f in dataset.schema):
        # The collector writes columns without nulls as required; other files may have nulls.
        dataset = dataset.replace_schema(pa.schema([f.with_nullable(True) for f in dataset.schema]))
    return dataset


def _read(root: CollectionStore, dataset, **options):
    try:
        return dataset.to_table(**options)
    except OSError as exc:
        if root.local:
            raise
        raise root.failed(exc, f"read {root.uri}") from None


def read_requests(
    root: CollectionStore,
    since: _dt.datetime | None = None,
    until: _dt.datetime | None = None,
    version: str | None = None,
    columns: list[str] | None = None,
    first_rows_only: bool = False,
):
    """The collected records as a pyarrow Table (empty Table if there is none)."""
    root = _store(root)
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    cond = None

    def both(a, b):
        return b if a is None else a & b

    if since is not None:
        cond = both(cond, ds.field("date") >= since.strftime("%Y-%m-%d"))
        cond = both(cond, ds.field("request_time") >= pa.scalar(since, pa.timestamp("us", tz="UTC")))
    if until is not None:
        cond = both(cond, ds.field("date") <= until.strftime("%Y-%m-%d"))
        cond = both(cond, ds.field("request_time") < pa.scalar(until, pa.timestamp("us", tz="UTC")))
    if version is not None:
        cond = both(cond, ds.field("model_version") == version)
    if first_rows_only:
        cond = both(cond, ds.field("row") == 0)
    for _attempt in range(5):
        # Parquet files first, then the staged files not compacted yet: a staged file that is
        # compacted in between vanishes, and the whole listing is taken again.
        try:
            dataset = _dataset(root, "requests")
            staged = read_staged(root.folder) if root.local else []
        except FileNotFoundError:
            continue
        break
    else:
        dataset, staged = _dataset(root, "requests"), []
    if (dataset is None or not dataset.files) and not staged:
        return pa.table({})
    names = list(dataset.schema.names) if dataset is not None and dataset.files else []
    for _, t in staged:
        names.extend(n for n in t.column_names if n not in names)
    if columns is not None:
        missing = [c for c in columns if c not in names]
        if missing:
            raise InvalidInput(f"no collected column {missing[0]!r}", hint="columns: " + ", ".join(n for n in names if n != "date"))
        cols = columns
    else:
        cols = [n for n in names if n != "date"]
    tables = []
    if dataset is not None and dataset.files:
        tables.append(_read(root, dataset, columns=[c for c in cols if c in dataset.schema.names], filter=cond))
    for day, t in staged:
        t = t.append_column("date", pa.array([day] * t.num_rows, pa.string()))
        if cond is not None:
            t = t.filter(cond)
        tables.append(t.select([c for c in cols if c in t.column_names]))
    # Files with and without nulls read as one dataset (the collector writes columns without
    # nulls as required).
    relaxed = [t.cast(pa.schema([f.with_nullable(True) for f in t.schema])) for t in tables]
    table = relaxed[0] if len(relaxed) == 1 else pa.concat_tables(relaxed, promote_options="permissive").select(cols)
    if "request_time" in table.column_names and table.num_rows:
        table = table.take(pc.sort_indices(table, [("request_time", "ascending")]))
    return table


def read_feedback(root: CollectionStore):
    import pyarrow as pa

    root = _store(root)
    dataset = _dataset(root, "feedback")
    if dataset is None or not dataset.files:
        return pa.table({})
    return _read(root, dataset, columns=[n for n in dataset.schema.names if n != "date"])


def read_drops(root: CollectionStore):
    import pyarrow as pa

    root = _store(root)
    dataset = _dataset(root, "drops")
    if dataset is None or not dataset.files:
        return pa.table({"time": [], "dropped": []})
    return _read(root, dataset, columns=["time", "dropped"])


def request_metrics(root: CollectionStore, every: str = "1min", since=None, until=None):
    """Per time bucket and model version: requests, errors, rows, latency p50/p95/p99 (ms)."""
    import pandas as pd

    seconds = parse_duration(every)
    table = read_requests(root, since, until, columns=["request_time", "row", "model_version", "status_code", "latency_ms"])
    cols = ["time", "model_version", "requests", "errors", "rows", "latency_p50_ms", "latency_p95_ms", "latency_p99_ms"]
    if table.num_rows == 0:
        return pd.DataFrame(columns=cols)
    df = table.to_pandas()
    rows_per_bucket = df.assign(time=df["request_time"].dt.floor(f"{int(seconds)}s")).groupby(["time", "model_version"]).size()
    first = df[df["row"] == 0]
    first = first.assign(time=first["request_time"].dt.floor(f"{int(seconds)}s"), error=first["status_code"] >= 400)
    g = first.groupby(["time", "model_version"])
    out = g.agg(requests=("row", "size"), errors=("error", "sum"))
    lat = g["latency_ms"].quantile([0.5, 0.95, 0.99]).unstack()
    lat.columns = ["latency_p50_ms", "latency_p95_ms", "latency_p99_ms"]
    out = out.join(lat)
    out["rows"] = rows_per_bucket.reindex(out.index).fillna(0).astype(int)
    out = out.reset_index()
    out["errors"] = out["errors"].astype(int)
    return out[cols]


def accuracy(root: CollectionStore, every: str = "1h", since=None, until=None):
    """Live accuracy per time bucket and version, where feedback labels have arrived."""
    import pandas as pd

    fb = read_feedback(root)
    cols = ["time", "model_version", "labelled", "accuracy"]
    if fb.num_rows == 0:
        return pd.DataFrame(columns=cols)
    req = read_requests(root, since, until, columns=["request_time", "request_id", "row", "model_version", "prediction"])
    if req.num_rows == 0:
        return pd.DataFrame(columns=cols)
    joined = join_feedback(req.to_pandas(), fb.to_pandas())
    joined = joined.dropna(subset=["label"])
    if joined.empty:
        return pd.DataFrame(columns=cols)
    seconds = parse_duration(every)
    joined["correct"] = correct(joined)
    joined["time"] = joined["request_time"].dt.floor(f"{int(seconds)}s")
    out = joined.groupby(["time", "model_version"]).agg(labelled=("correct", "size"), accuracy=("correct", "mean")).reset_index()
    return out[cols]


def request_stats(table) -> dict[str, Any]:
    """Requests (first rows), errors (4xx/5xx) and latency p50/p99 (ms; None without requests)
    of a table of collected rows with ``row``, ``status_code`` and ``latency_ms``."""
    import numpy as np
    import pyarrow.compute as pc

    first = table.filter(pc.equal(table["row"], 0)) if table.num_rows else table
    status = first["status_code"].to_numpy() if first.num_rows else np.array([])
    out: dict[str, Any] = {"requests": int(len(status)), "errors": int((status >= 400).sum()),
                           "latency_p50_ms": None, "latency_p99_ms": None}
    if len(status):
        p50, p99 = np.percentile(first["latency_ms"].to_numpy(), [50, 99])
        out.update(latency_p50_ms=float(p50), latency_p99_ms=float(p99))
    return out


def labelled(root: CollectionStore, rows):
    """The rows (a DataFrame of collected rows with ``request_id``, ``row`` and ``status_code``)
    that were answered and have a feedback label, with it in ``label``."""
    fb = read_feedback(root)
    if fb.num_rows == 0:
        return rows.iloc[0:0].assign(label=None)
    joined = join_feedback(rows, fb.to_pandas())
    return joined[joined["label"].notna() & (joined["status_code"] == 200)]


def correct(joined):
    """Whether each labelled row's prediction equals its label: as numbers where both are
    numbers (``1`` and ``1.0`` alike), as text otherwise."""
    import pandas as pd

    out = joined["prediction"].astype(str) == joined["label"].astype(str)
    num = pd.to_numeric(joined["prediction"], errors="coerce")
    lab = pd.to_numeric(joined["label"], errors="coerce")
    both = num.notna() & lab.notna()
    out[both] = num[both] == lab[both]
    return out


def join_feedback(requests, feedback):
    """Requests with their label, matched on request id and row (the latest label wins)."""
    fb = feedback.sort_values("feedback_time").drop_duplicates(["request_id", "row"], keep="last")
    return requests.merge(fb[["request_id", "row", "label", "feedback_time"]], on=["request_id", "row"], how="left")
