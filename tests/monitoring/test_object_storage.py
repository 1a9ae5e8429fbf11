"""The collector on object storage when the store goes away and comes back (a real rclone S3
server, stopped and started again on the same address)."""

from __future__ import annotations

import logging
import time

import numpy as np
import pytest

from mlops_lab.monitoring.collector import CollectConfig, Collector
from mlops_lab.monitoring.data import read_requests
from mlops_lab.monitoring.records import Record

pytestmark = pytest.mark.s3


def _add(col: Collector, start: int, count: int) -> None:
    for i in range(start, start + count):
        col.add(Record(time.time(), f"r{i}", "m:1", 200, 1.5, None, np.full((2, 3), float(i)), ["a", "b", "c"],
                       ["float"] * 3, np.array([i, i]), 2))


def test_a_store_that_stops_answering_keeps_the_records_for_the_next_flush(private_s3, caplog):
    """Given a collector writing to S3, when the server stops, a flush fails in one log line and
    keeps its records queued (none dropped); when the server is back, the next flush writes them:
    every request once, none twice."""
    col = Collector("d", CollectConfig(folder=f"s3://{private_s3.server.bucket}/collected",
                                       endpoint_url=private_s3.server.endpoint, flush_seconds=3600,
                                       flush_rows=10**9, max_queue_rows=10**6))
    try:
        _add(col, 0, 32)
        col.flush()
        assert col.stats()["files"] == 1
        private_s3.stop()
        _add(col, 32, 32)
        with caplog.at_level(logging.ERROR, logger="mlops_lab.collector"):
            col.flush()
        failed = [r.getMessage() for r in caplog.records if "cannot write" in r.getMessage()]
        assert len(failed) == 1 and "\n" not in failed[0]
        assert f"s3://{private_s3.server.bucket}/collected/d" in failed[0] and "32 kept for the next flush, 0 dropped" in failed[0]
        assert col.stats()["queued_rows"] == 64 and col.stats()["dropped_rows"] == 0
        private_s3.start()
        col.flush()
        stats = col.stats()
        assert stats["files"] == 2 and stats["queued_rows"] == 0 and stats["dropped_rows"] == 0
        table = read_requests(col.store)
        assert table.num_rows == 128
        assert sorted(set(table["request_id"].to_pylist()), key=lambda r: int(r[1:])) == [f"r{i}" for i in range(64)]
    finally:
        col._stop.set()


def test_a_queue_too_small_for_what_could_not_be_written_drops_and_counts_the_rest(private_s3):
    """What the queue cannot hold back after a failed write is counted as dropped, and the count
    is written once the store answers again."""
    col = Collector("d", CollectConfig(folder=f"s3://{private_s3.server.bucket}/collected",
                                       endpoint_url=private_s3.server.endpoint, flush_seconds=3600,
                                       flush_rows=10**9, max_queue_rows=40))
    try:
        private_s3.stop()
        _add(col, 0, 16)  # 32 rows queued
        col.flush()
        assert col.stats()["queued_rows"] == 32
        _add(col, 16, 16)  # 4 more fit (40 rows), 12 are dropped when taken; the failed write keeps what fits
        col.flush()
        stats = col.stats()
        assert stats["queued_rows"] + stats["dropped_rows"] == 64 and stats["queued_rows"] <= 40
        private_s3.start()
        col.flush()
        assert read_requests(col.store).num_rows == stats["queued_rows"]
        from mlops_lab.monitoring.data import read_drops

        assert sum(read_drops(col.store)["dropped"].to_pylist()) == stats["dropped_rows"]
    finally:
        col._stop.set()
