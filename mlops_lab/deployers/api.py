"""Deploying registered models: the public functions, shared by every target."""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .._html import Listing
from .._progress import Progress
from ..errors import DeploymentFailed, InvalidInput, MlopsLabError, NotFound
from ..refs import ModelRef, check_name, parse_ref
from ..workspace import in_workspace
from .base import Deployer, Deployment
from .keys import SLOTS, key_file, key_hash, new_key, read_keys, write_private

__all__ = [
    "deploy",
    "get_deployment",
    "list_deployments",
    "update",
    "promote",
    "rollback",
    "delete_deployment",
    "regenerate_key",
]

TARGETS = ("local", "docker", "kubernetes")
_TARGET_OPTIONS = {
    "docker": {"base_image", "image"},
    "kubernetes": {"image", "namespace", "context", "replicas", "cpu", "memory", "cpu_limit", "memory_limit",
                   "autoscale", "service_type", "collect_claim", "collect_storage", "image_pull_policy"},
}


def _registry():
    from ..registry.store import default_registry

    return default_registry()


def _deployer(target: str, reg=None) -> Deployer:
    if target == "local":
        from .local import LocalDeployer

        return LocalDeployer(reg or _registry())
    if target == "kubernetes":
        from .kubernetes import KubernetesDeployer

        return KubernetesDeployer(reg or _registry())
    if target == "docker":
        from .docker import DockerDeployer

        return DockerDeployer(reg or _registry())
    raise InvalidInput(f"unknown target {target!r}", hint="use one of " + ", ".join(TARGETS))


def _write_key_hashes(home: Path, name: str, keys: dict[str, str]) -> dict[str, str]:
    hashes = {slot: key_hash(k) for slot, k in keys.items()}
    write_private(home / "deployments" / name / "keys.json", hashes)
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
    reg = _registry()
    register = {"sample_input": sample_input, "baseline": baseline, "tags": tags, "properties": properties,
                "description": description, "allow_missing": allow_missing}
    # The settings are checked before anything is registered: a mistake there registers nothing
    if workers < 1:
        raise InvalidInput(f"workers must be at least 1, got {workers}")
    if entry_script is not None and not Path(entry_script).is_file():
        raise InvalidInput(f"entry script {entry_script} is not a file")
    collect = _check_collect(collect)
    if target_options:
        allowed = _TARGET_OPTIONS.get(target, set())
        unknown = sorted(set(target_options) - allowed)
        if unknown:
            raise InvalidInput(f"target {target!r} takes no option {unknown[0]!r}",
                               hint=("its options: " + ", ".join(sorted(allowed))) if allowed else "it takes none")
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
    deployer = _deployer(target, reg)
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
        shutil.rmtree(reg.home / "deployments" / name, ignore_errors=True)
        if registered is not None:
            _after_registering(exc, registered, "deploying it")
        if progress:
            prog.done(f"failed: {exc}")
        raise
    prog.done(f"ready at {record.endpoint}")
    d = Deployment(record, keys, reg)
    d.registered = registered
    return d


def is_reference(obj: Any) -> bool:
    """A reference to a registered version (``"churn:3"``, a ``ModelRef``, a ``ModelVersion``),
    as opposed to a model to register (an object with ``predict``, a file or folder path)."""
    if isinstance(obj, (str, ModelRef)):
        return True
    return isinstance(getattr(obj, "name", None), str) and isinstance(getattr(obj, "version", None), int)


def _no_register_args(register: dict[str, Any], ref: Any) -> None:
    given = [k for k, v in register.items() if v is not None]
    if given:
        raise InvalidInput(f"{given[0]} describes a model to register, but {ref!r} names a registered version",
                           hint="pass the model object itself to register and deploy it in one call")


def _register_step(reg, model: Any, name: str, doing: str, register: dict[str, Any]):
    """Step 1 of a deploy or update given a model object: register it. Its errors say so."""
    try:
        return reg.register_model(model, name, **{k: v for k, v in register.items() if v is not None})
    except MlopsLabError as exc:
        exc.message = f"{doing} stopped at registering the model as {name!r}: {exc.message}"
        raise


def _after_registering(exc: BaseException, registered, doing: str) -> None:
    """A failure after step 1: the error names the step, and the version registered stays."""
    if isinstance(exc, MlopsLabError):
        exc.message = (f"registered {registered.ref}, then {doing} failed: {exc.message} "
                       f"({registered.ref} stays in the registry, a version like any other)")


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
    reg = _registry()
    record = reg.get_deployment(name)
    return Deployment(record, read_keys(reg.home, name), reg)


@in_workspace
def list_deployments() -> list[Deployment]:
    """Every recorded deployment, by name."""
    reg = _registry()
    return Listing((Deployment(r, read_keys(reg.home, r.name), reg) for r in reg.list_deployments()),
                   empty="No deployments yet: deploy a version with %deploy NAME:VERSION or mlops_lab.deploy()")


@in_workspace
def update(name: str, ref: Any, *, traffic: float | None = None, route: str | None = None, progress: bool = True,
           sample_input: Any = None, baseline: Any = None, tags: Any = None, properties: Any = None,
           description: str | None = None, allow_missing: Any = None) -> Deployment:
    """Serve ``ref`` in deployment ``name`` with no downtime; ``traffic=10`` makes it a canary
    taking 10 % of the requests of its route until :func:`promote`.

    ``ref`` may also be a model object (or a file or folder path): it is registered first, as the
    next version of the model the route serves (``sample_input``, ``baseline``, ``tags``, ...
    go to :func:`~mlops_lab.register_model`), and the returned deployment's ``registered`` says
    which version that is."""
    reg = _registry()
    record = reg.get_deployment(name)
    register = {"sample_input": sample_input, "baseline": baseline, "tags": tags, "properties": properties,
                "description": description, "allow_missing": allow_missing}
    registered = None
    if not is_reference(ref):
        wanted = route or (record.models[0].get("route") or record.models[0]["name"])
        served = [m for m in record.models if (m.get("route") or m["name"]) == wanted]
        if not served:
            raise NotFound(f"deployment {name!r} has no route {wanted!r}")
        registered = _register_step(reg, ref, served[0]["name"], "update", register)
        ref = registered.ref
    else:
        _no_register_args(register, ref)
    new = parse_ref(reg.resolve(ref))
    if traffic is not None and not (0 < traffic < 100):
        raise InvalidInput(f"traffic must be between 0 and 100 (exclusive), got {traffic}",
                           hint="leave it out to send all the traffic to the new version")
    routes = [m.get("route") or m["name"] for m in record.models]
    if route is None:
        matches = [m.get("route") or m["name"] for m in record.models if m["name"] == new.name]
        route = matches[0] if matches else routes[0]
    elif route not in routes:
        raise NotFound(f"deployment {name!r} has no route {route!r}", hint="routes: " + ", ".join(dict.fromkeys(routes)))
    others = [m for m in record.models if (m.get("route") or m["name"]) != route]
    current = [m for m in record.models if (m.get("route") or m["name"]) == route]
    if traffic is None:
        mine = [{"name": new.name, "version": new.version, "traffic": 100, "route": route}]
        note = f"update to {new}"
    else:
        stable = next((m for m in current if not m.get("canary")), current[0])
        mine = [
            {"name": stable["name"], "version": stable["version"], "traffic": 100 - traffic, "route": route},
            {"name": new.name, "version": new.version, "traffic": traffic, "route": route, "canary": True},
        ]
        note = f"canary {new} at {traffic:g}%"
    models = others + mine
    prog = Progress(f"updating {name!r} to {new}" + (f" ({traffic:g}% canary)" if traffic else ""), progress)
    try:
        record = _deployer(record.target, reg).update(record, models, note, prog)
    except DeploymentFailed as exc:
        if registered is not None:
            _after_registering(exc, registered, "updating the deployment")
        prog.done(f"failed, revision {record.revision} still serving: {exc.message}")
        raise
    prog.done(f"revision {record.revision} serving")
    d = Deployment(record, read_keys(reg.home, name), reg)
    d.registered = registered
    return d


@in_workspace
def promote(name: str, *, progress: bool = True) -> Deployment:
    """Finish a canary: its version takes all the traffic of its route."""
    reg = _registry()
    record = reg.get_deployment(name)
    canaries = [m for m in record.models if m.get("canary")]
    if not canaries:
        raise InvalidInput(f"deployment {name!r} has no canary to promote", hint="start one with update(ref, traffic=10)")
    c = canaries[0]
    route = c.get("route") or c["name"]
    models = [m for m in record.models if (m.get("route") or m["name"]) != route]
    models.append({"name": c["name"], "version": c["version"], "traffic": 100, "route": route})
    prog = Progress(f"promoting {c['name']}:{c['version']} in {name!r}", progress)
    record = _deployer(record.target, reg).update(record, models, f"promote {c['name']}:{c['version']}", prog)
    prog.done(f"revision {record.revision} serving")
    return Deployment(record, read_keys(reg.home, name), reg)


@in_workspace
def rollback(name: str, *, progress: bool = True) -> Deployment:
    """Serve the previous revision of deployment ``name`` again."""
    reg = _registry()
    record = reg.get_deployment(name)
    history = reg.deployment_revisions(name)
    prog = Progress(f"rolling back {name!r}", progress)
    try:
        record = _deployer(record.target, reg).rollback(record, history, prog)
    except DeploymentFailed as exc:
        prog.done(f"failed, revision {record.revision} still serving: {exc.message}")
        raise
    prog.done(f"revision {record.revision} serving")
    return Deployment(record, read_keys(reg.home, name), reg)


@in_workspace
def restart(name: str, *, progress: bool = True) -> Deployment:
    """Start deployment ``name``'s current revision again at the same address (see
    :meth:`Deployment.restart`)."""
    reg = _registry()
    record = reg.get_deployment(name)
    prog = Progress(f"restarting {name!r}", progress)
    try:
        record = _deployer(record.target, reg).restart(record, prog)
    except (DeploymentFailed, InvalidInput) as exc:
        prog.done(f"failed: {exc.message}")
        raise
    prog.done(f"revision {record.revision} serving at {record.endpoint}")
    return Deployment(record, read_keys(reg.home, name), reg)


@in_workspace
def delete_deployment(name: str) -> bool:
    """Stop and forget a deployment; returns whether there was one (deleting twice is fine)."""
    reg = _registry()
    try:
        record = reg.get_deployment(name)
    except NotFound:
        key_file(reg.home, name).unlink(missing_ok=True)
        return False
    try:
        _deployer(record.target, reg).delete(record)
    finally:
        reg.delete_deployment(name)
        key_file(reg.home, name).unlink(missing_ok=True)
    return True


@in_workspace
def regenerate_key(name: str, which: str = "primary") -> str:
    """Replace the ``primary`` or ``secondary`` key of a deployment; returns the new key.

    The servers take the new hash within a second; the other key keeps working throughout, so
    clients can move from one key to the other without an outage.
    """
    if which not in SLOTS:
        raise InvalidInput(f"which must be 'primary' or 'secondary', not {which!r}")
    reg = _registry()
    record = reg.get_deployment(name)
    if not record.config.get("auth", True):
        raise InvalidInput(f"deployment {name!r} was made with auth=False: it has no keys")
    keys = read_keys(reg.home, name) or {}
    key = new_key()
    keys[which] = key
    write_private(key_file(reg.home, name), keys)
    hashes = dict(record.config.get("key_hashes", {}))
    hashes[which] = key_hash(key)
    write_private(reg.home / "deployments" / name / "keys.json", hashes)
    reg.update_deployment(name, config={**record.config, "key_hashes": hashes})
    return key
