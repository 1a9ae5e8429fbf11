"""Steady concurrent load over keep-alive connections while something happens to a deployment."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import httpx


def score(d, client=None, rows: int = 1):
    c = client or httpx
    return c.post(f"{d.url}/score", json={"data": [[0.0, 0.0]] * rows},
                  headers={"Authorization": f"Bearer {d.keys['primary']}"}, timeout=30)


def under_load(d, action: Callable[[], object], clients: int = 8, before: float = 1.0, after: float = 1.0):
    """Run ``action`` while ``clients`` threads send requests; returns ``(results, errors)``:
    ``(status, x-model-version)`` per answered request, and the transport errors."""
    stop = threading.Event()
    results: list[tuple[int, str]] = []
    errors: list[str] = []

    def hammer():
        with httpx.Client(timeout=30) as client:
            while not stop.is_set():
                try:
                    r = score(d, client)
                    results.append((r.status_code, r.headers.get("x-model-version", "")))
                except httpx.HTTPError as exc:
                    errors.append(repr(exc))

    threads = [threading.Thread(target=hammer) for _ in range(clients)]
    for t in threads:
        t.start()
    try:
        time.sleep(before)
        action()
        time.sleep(after)
    finally:
        stop.set()
        for t in threads:
            t.join()
    return results, errors
