"""The loop that evaluates a deployment's alert rules where the deployment runs: in the local
supervisor, and in the forwarder of a Docker deployment (so no kernel needs to stay up).

Imports nothing heavy: the rules are read from the registry every few seconds, and only once a
deployment has some is :mod:`.alerts` (pandas, pyarrow) imported to evaluate them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

log = logging.getLogger(__name__)

#: How often the rules are read (they are evaluated as often as they ask, at most this often).
POLL_S = 2.0


async def watch_alerts(registry: Callable[[], Any], deployment: str, stopping: asyncio.Event,
                       poll_s: float = POLL_S) -> None:
    """Until ``stopping`` is set: evaluate ``deployment``'s rules every ``every`` seconds they
    ask for (:class:`.alerts.Watcher`), in a thread. ``registry`` gives the registry (opened
    lazily by the caller)."""
    watcher = None
    last = 0.0
    while not stopping.is_set():
        try:
            await asyncio.wait_for(stopping.wait(), timeout=poll_s)
            return
        except asyncio.TimeoutError:
            pass
        try:
            reg = registry()
            rules, _, every = await asyncio.to_thread(reg.alert_settings, deployment)
            if not rules or time.monotonic() - last < every:
                continue
            last = time.monotonic()
            if watcher is None:
                from .alerts import Watcher

                watcher = Watcher(reg, deployment)
            await asyncio.to_thread(watcher.tick)
        except Exception as exc:  # noqa: BLE001 - the deployment serves on whatever happens here
            log.warning("alert rules of %s not evaluated: %s", deployment, exc)
