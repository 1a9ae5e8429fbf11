"""The loop that evaluates a deployment's alert rules where the deployment runs: in the local
supervisor, and in the forwarder of a Docker deployment (so no kernel needs to stay up); and one
watcher per registry (``mlops-lab watch``) for deployments nothing runs beside, a Kubernetes
deployment's.

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


#: The targets whose deployments evaluate their own rules (the local supervisor, the Docker
#: forwarder); the others' are evaluated by :func:`watch_home`.
SELF_WATCHED = frozenset({"local", "docker"})


async def watch_home(registry: Callable[[], Any], stopping: asyncio.Event, names: list[str] | None = None,
                     poll_s: float = POLL_S) -> None:
    """One watcher for a registry (``mlops-lab watch``): until ``stopping`` is set, evaluate the
    rules of every deployment that nothing runs beside (a Kubernetes deployment's pods do not),
    or of the deployments ``names``, each as :func:`watch_alerts` does. Deployments are listed
    again every ``poll_s``: one made later is watched, one deleted is dropped."""
    tasks: dict[str, tuple[asyncio.Task, asyncio.Event]] = {}
    try:
        while not stopping.is_set():
            try:
                records = await asyncio.to_thread(registry().list_deployments)
                if names is not None:
                    wanted = set(names) & {r.name for r in records}
                else:
                    wanted = {r.name for r in records if r.target not in SELF_WATCHED}
            except Exception as exc:  # noqa: BLE001 - an unreachable registry: try again
                log.warning("deployments not listed: %s", exc)
                wanted = set(tasks)
            for name in wanted - set(tasks):
                log.info("watching the alert rules of %s", name)
                stop = asyncio.Event()
                tasks[name] = (asyncio.create_task(watch_alerts(registry, name, stop, poll_s)), stop)
            for name in set(tasks) - wanted:
                log.info("%s is gone: no longer watched", name)
                tasks.pop(name)[1].set()
            try:
                await asyncio.wait_for(stopping.wait(), timeout=poll_s)
            except asyncio.TimeoutError:
                pass
    finally:
        for _, stop in tasks.values():
            stop.set()
        if tasks:
            await asyncio.gather(*(t for t, _ in tasks.values()), return_exceptions=True)
