"""Collected data written with the server's own Collector, without a server: for the drift and
chart tests, which need hours of traffic in a second."""

from __future__ import annotations

import numpy as np
import pytest

from mlops_lab.monitoring.collector import CollectConfig, Collector, Record


def write_traffic(store, deployment: str, frame, times, version: str, predictions, *, status=None, per_request: int = 1) -> list[str]:
    """Write ``frame`` (a DataFrame of inputs) to the collection store ``store`` (a
    ``CollectionStore``, or a home folder for its ``collected/``) as requests of ``per_request``
    rows at ``times`` (epoch seconds, one per request) answered by ``version`` with ``predictions``."""
    from mlops_lab.monitoring.store import CollectionStore

    if not isinstance(store, CollectionStore):
        store = CollectionStore(str(store / "collected"))
    # Parquet directly (no staging, no compactor): the files a deployment has once compacted.
    col = Collector(deployment, CollectConfig(folder=store.uri, endpoint_url=store.endpoint_url, flush_seconds=3600,
                                              max_queue_rows=10**9, flush_rows=10**9, stage_budget_mb=0))
    col._stop.set()  # no background thread needed: flush by hand
    columns = list(frame.columns)
    types = ["float" if frame[c].dtype.kind in "biuf" else "string" for c in columns]
    values = frame.to_numpy(dtype=object) if "string" in types else frame.to_numpy(dtype=float)
    preds = np.asarray(predictions)
    ids = []
    for i, start in enumerate(range(0, len(frame), per_request)):
        rid = f"{deployment}-{version}-{i}"
        ids.append(rid)
        rows = values[start : start + per_request]
        code = 200 if status is None else status[i]
        col.add(Record(
            float(times[i]), rid, version, code, 2.0 + (i % 7), None,
            rows if code == 200 else None, columns, types,
            preds[start : start + per_request] if code == 200 else None, len(rows) if code == 200 else 0,
        ))
    col.flush()
    return ids


@pytest.fixture
def rng():
    return np.random.default_rng(20261125)
