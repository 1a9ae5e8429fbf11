"""Deploying registered models: the public functions, shared by every target."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._html import Listing
from .._progress import Progress
from ..errors import InvalidInput, NotFound
from ..refs import check_name, parse_ref
from ..workspace import current_registry, in_workspace
from .base import Deployment, _after_registering, _no_register_args, _register_step, is_reference
from .common import deployment_dir
from .keys import SLOTS, key_file, key_hash, new_key, read_keys, write_private
from .targets import check_options, deployer_for

__all__ = [
    "deploy",
    "get_deployment",
    "list_deployments",
    "update",
    "promote",
    "delete_shadow",
    "rollback",
    "delete_deployment",
    "regenerate_key",
]

def _write_key_hashes(home: Path, name: str, keys: dict[str, str]) -> dict[str, str]:
    hashes = {slot: key_hash(k) for slot, k in keys.items()}
    write_private(deployment_dir(home, name) / "keys.json", hashes)
    return hashes


@in_workspace
def deploy(
    ref: Any | Sequence[Any],
    name: str | None = None,
    target: str = "local",
    *,
    host: str = "127.0.0.1",
    port: int | None = None,
    workers: int = 1,
    auth: bool = True,
    batching: bool = True,
    max_batch_rows: int = 4096,
    max_wait_ms: float = 0.0,
    body_limit: int = 16 * 1024 * 1024,
    entry_script: str | os.PathLike | None = None,
    startup_timeout: float = 120.0,
    drain_seconds: float = 1.0,
    collect: bool | dict[str, Any] = True,
    progress: bool = True,
    sample_input: Any = None,
    baseline: Any = None,
    tags: Any = None,
    properties: Any = None,
    description: str | None = None,
    allow_missing: Any = None,
    **target_options: Any,
) -> Deployment:
    """Serve one or several registered versions as a web service.

    ``ref`` may also be a model object (or a file or folder path): ``deploy(clf, name="churn",
    sample_input=X)`` registers it as the next version of ``churn`` (``sample_input``,
    ``baseline``, ``tags``, ``properties``, ``description`` and ``allow_missing`` go to
    :func:`~mlops_lab.register_model`) and deploys that version as ``churn``; the returned
    deployment's ``registered`` is the new version. An error names the step that failed, and a
    version registered before a failed deploy stays in the registry.

    Parameters
    ----------
    ref:
        ``"churn:3"``, ``"churn@production"``, a ``ModelVersion``, or a list of them: several
        models on one server, each under ``/models/<name>/...`` (the first also at ``/score``,
        ``/invocations``), or the models of an ensemble when ``entry_script`` is given.
    name:
        The deployment's name (default: the first model's name).
    target:
        ``"local"`` (the default: a supervised server process on this machine).
    host, port:
        Where to listen; loopback only unless you pass another host. A free port by default.
    workers:
        Server processes sharing the port.
    auth:
        Require ``Authorization: Bearer <key>`` (a primary and a secondary key are made).
    batching, max_batch_rows, max_wait_ms:
        Adaptive micro-batching of concurrent requests: the requests that queue while the model
        runs are scored in one call of up to ``max_batch_rows`` rows. Large calls pay a model's
        per-call cost once (a 100-tree forest: 5 ms per call, 9 us per row); for a model whose
        cost is all per row, a smaller bound answers the first requests of a batch sooner.
    entry_script:
        An Azure-ML-style ``score.py`` with ``init()`` and ``run(raw_body)``; ``init()`` finds each
        model with ``mlops_lab.model_path("name:version")``.
    drain_seconds:
        On update, how long the old revision keeps answering (with ``Connection: close``) so
        keep-alive clients move over before it stops.
    collect:
        Record every request's inputs, predictions, latency and status (on by default);
        ``False`` turns it off; a dict sets ``rate`` (sampling, 0-1), ``exclude`` (columns
        never stored), ``flush_seconds``, ``flush_rows``, ``max_queue_rows``,
        ``stage_budget_mb`` (staged data awaiting compaction, see ``monitoring.staging``).
    target_options:
        Settings of the ``docker`` target (``base_image``, ``image``) and of the ``kubernetes``
        one (``image``, ``namespace``, ``context``, ``replicas``, ``cpu``, ``memory``,
        ``cpu_limit``, ``memory_limit``, ``autoscale``, ``service_type``, ``collect_claim``,
        ``collect_storage``).

    Examples
    --------
    >>> d = deploy("churn:3", name="churn-svc")  # doctest: +SKIP
    >>> d.predict([{"age": 31, "plan": "pro"}])  # doctest: +SKIP
    """
    reg = current_registry()
    register = {"sample_input": sample_input, "baseline": baseline, "tags": tags, "properties": properties,
                "description": description, "allow_missing": allow_missing}
    # The settings are checked before anything is registered: a mistake there registers nothing
    if workers < 1:
        raise InvalidInput(f"workers must be at least 1, got {workers}")
    if entry_script is not None and not Path(entry_script).is_file():
        raise InvalidInput(f"entry script {entry_script} is not a file")
    collect = _check_collect(collect)
    check_options(target, target_options)
    registered = None
    if not isinstance(ref, (list, tuple)) and not is_reference(ref):
        # A model object (or a file or folder path): step 1 registers it as the next version
        if name is None:
            raise InvalidInput("deploying a model object needs name=: the model and the deployment are named after it")
        registered = _register_step(reg, ref, check_name(name, "deployment name"), "deploy", register)
        ref = registered.ref
    else:
        _no_register_args(register, ref)
    refs = list(ref) if isinstance(ref, (list, tuple)) else [ref]
    if not refs:
        raise InvalidInput("deploy needs at least one model reference")
    resolved = [parse_ref(reg.resolve(r)) for r in refs]
    name = check_name(name or resolved[0].name, "deployment name")
    models: list[dict[str, Any]] = []
    seen: set[str] = set()
    for r in resolved:
        route = r.name if r.name not in seen else f"{r.name}-v{r.version}"
        seen.add(route)
        models.append({"name": r.name, "version": r.version, "traffic": 100, "route": route})
    config: dict[str, Any] = {
        "host": host, "port": port or 0, "workers": workers, "auth": auth, "body_limit": body_limit,
        "batching": {"enabled": batching, "max_batch_rows": max_batch_rows, "max_wait_ms": max_wait_ms},
        "startup_timeout": startup_timeout,
        "drain_seconds": drain_seconds,
        "collect": collect,
        "entry_script": str(Path(entry_script).resolve()) if entry_script else None,
    }
    config.update(target_options)
    deployer = deployer_for(target, reg)
    prog = Progress(f"deploying {', '.join(str(r) for r in resolved)} as {name!r}", progress)
    keys = None
    reg.create_deployment(name, target, models, config=config, status="starting", note="deploy")
    try:
        if auth:
            keys = {slot: new_key() for slot in SLOTS}
            write_private(key_file(reg.home, name), keys)
            config["key_hashes"] = _write_key_hashes(reg.home, name, keys)
            reg.update_deployment(name, config=config)
        record = deployer.deploy(name, models, config, prog)
    except BaseException as exc:
        # Nothing half-made stays behind: no record, no files, no keys.
        try:
            rec = reg.get_deployment(name)
            deployer.delete(rec)
        except Exception:  # noqa: BLE001
            pass
        reg.delete_deployment(name)
        key_file(reg.home, name).unlink(missing_ok=True)
        shutil.rmtree(deployment_dir(reg.home, name), ignore_errors=True)
        if registered is not None:
            _after_registering(exc, registered, "deploying it")
        if progress:
            prog.done(f"failed: {exc}")
        raise
    prog.done(f"ready at {record.endpoint}")
    d = Deployment(record, keys, reg)
    d.registered = registered
    return d


def _check_collect(collect: Any) -> Any:
    if collect is True:
        return {}
    if collect is False:
        return False
    if not isinstance(collect, dict):
        raise InvalidInput(f"collect must be True, False or a dict of settings, not {type(collect).__name__}")
    allowed = {"rate", "exclude", "flush_seconds", "flush_rows", "max_queue_rows", "stage_budget_mb"}
    unknown = set(collect) - allowed
    if unknown:
        raise InvalidInput(f"unknown collect setting {sorted(unknown)[0]!r}", hint="settings: " + ", ".join(sorted(allowed)))
    budget = collect.get("stage_budget_mb")
    if budget is not None and (isinstance(budget, bool) or not isinstance(budget, int) or budget < 0):
        raise InvalidInput(f"collect stage_budget_mb must be a whole number of MiB, 0 or more, got {budget!r}")
    rate = collect.get("rate", 1.0)
    if not isinstance(rate, (int, float)) or not 0 < rate <= 1:
        raise InvalidInput(f"collect rate must be in (0, 1], got {rate!r}")
    return dict(collect)


@in_workspace
def get_deployment(name: str) -> Deployment:
    """A deployment by name, with its keys when this user created it."""
    reg = current_registry()
    record = reg.get_deployment(name)
    return Deployment(record, read_keys(reg.home, name), reg)


@in_workspace
def list_deployments() -> list[Deployment]:
    """Every recorded deployment, by name."""
    reg = current_registry()
    return Listing((Deployment(r, read_keys(reg.home, r.name), reg) for r in reg.list_deployments()),
                   empty="No deployments yet: deploy a version with %deploy NAME:VERSION or mlops_lab.deploy()")


@in_workspace
def update(name: str, ref: Any, *, traffic: float | None = None, shadow: bool | float = False, route: str | None = None,
           progress: bool = True, sample_input: Any = None, baseline: Any = None, tags: Any = None,
           properties: Any = None, description: str | None = None, allow_missing: Any = None) -> Deployment:
    """Serve ``ref`` in deployment ``name`` with no downtime; ``traffic=10`` makes it a canary
    taking 10 % of the requests of its route until :func:`promote`; ``shadow=True`` (or a share,
    ``shadow=0.25``) runs it beside the serving version on a copy of the requests, its answers
    collected and never returned, until :func:`promote` or :func:`delete_shadow`.

    ``ref`` may also be a model object (or a file or folder path): it is registered first, as the
    next version of the model the route serves (``sample_input``, ``baseline``, ``tags``, ...
    go to :func:`~mlops_lab.register_model`), and the returned deployment's ``registered`` says
    which version that is."""
    return get_deployment(name).update(ref, traffic, shadow=shadow, route=route, progress=progress, sample_input=sample_input,
                                       baseline=baseline, tags=tags, properties=properties,
                                       description=description, allow_missing=allow_missing)


@in_workspace
def promote(name: str, *, progress: bool = True) -> Deployment:
    """Finish a canary (or, with none, a shadow): its version takes all the traffic of its route."""
    return get_deployment(name).promote(progress=progress)


@in_workspace
def delete_shadow(name: str, *, progress: bool = True) -> Deployment:
    """Stop deployment ``name``'s shadows; what serves is unchanged, their collected answers stay."""
    return get_deployment(name).delete_shadow(progress=progress)


@in_workspace
def rollback(name: str, *, progress: bool = True) -> Deployment:
    """Serve the previous revision of deployment ``name`` again."""
    return get_deployment(name).rollback(progress=progress)


@in_workspace
def restart(name: str, *, progress: bool = True) -> Deployment:
    """Start deployment ``name``'s current revision again at the same address (see
    :meth:`Deployment.restart`)."""
    return get_deployment(name).restart(progress=progress)


@in_workspace
def delete_deployment(name: str) -> bool:
    """Stop and forget a deployment; returns whether there was one (deleting twice is fine)."""
    reg = current_registry()
    try:
        d = get_deployment(name)
    except NotFound:
        key_file(reg.home, name).unlink(missing_ok=True)
        return False
    d.delete()
    return True


@in_workspace
def regenerate_key(name: str, which: str = "primary") -> str:
    """Replace the ``primary`` or ``secondary`` key of a deployment; returns the new key.

    The servers take the new hash within a second; the other key keeps working throughout, so
    clients can move from one key to the other without an outage.
    """
    return get_deployment(name).regenerate_key(which)
