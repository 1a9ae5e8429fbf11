"""What every deploy target shares: the :class:`Deployer` interface, the user-facing
:class:`Deployment`, and its :class:`DeploymentStatus`.

A deployer turns a list of model versions into a running service and keeps the deployment's
record in the registry store; the record is the one truth every process (kernel, CLI, Jupyter
server) reads. Rollback and promote are computed here from the record's revision history, the
same way for every target.
"""

from __future__ import annotations

import html
import time
import urllib.error
import urllib.request
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

import orjson

from .. import errors
from .._html import kv_table
from .._progress import Progress
from ..errors import DeploymentFailed, InvalidInput, MlopsLabError
from ..refs import ModelRef
from ..registry.entities import DeploymentRecord, DeploymentRevision

STATES = ("healthy", "starting", "unhealthy", "crashed", "stopped")


@dataclass(frozen=True)
class DeploymentStatus:
    """The reconciled state of a deployment: ``state`` is one of ``healthy``, ``starting``,
    ``unhealthy``, ``crashed``, ``stopped``; ``reason`` says why when it is not healthy."""

    state: str
    reason: str
    revision: int
    models: list[dict[str, Any]]
    url: str
    details: dict[str, Any] = field(default_factory=dict)

    @property
    def healthy(self) -> bool:
        return self.state == "healthy"

    def __str__(self) -> str:
        return self.state + (f": {self.reason}" if self.reason else "")

    def to_dict(self) -> dict[str, Any]:
        return {"state": self.state, "reason": self.reason, "revision": self.revision, "models": self.models,
                "url": self.url, "details": self.details}


class Deployer(ABC):
    """One deploy target (``local``, ``docker``, ``kubernetes``)."""

    target: str

    @abstractmethod
    def deploy(self, name: str, models: list[dict[str, Any]], config: dict[str, Any], progress) -> DeploymentRecord:
        """Start serving ``models`` as deployment ``name`` and record it."""

    @abstractmethod
    def update(self, record: DeploymentRecord, models: list[dict[str, Any]], note: str, progress) -> DeploymentRecord:
        """Serve ``models`` instead, with no downtime; on failure the current revision stays."""

    @abstractmethod
    def status(self, record: DeploymentRecord) -> DeploymentStatus:
        """Reconcile the record with what really runs."""

    @abstractmethod
    def logs(self, record: DeploymentRecord, tail: int) -> str:
        """The last ``tail`` lines of the deployment's logs."""

    @abstractmethod
    def delete(self, record: DeploymentRecord) -> None:
        """Stop everything and free the resources (idempotent); the caller forgets the record."""

    def restart(self, record: DeploymentRecord, progress) -> DeploymentRecord:
        """Stop what still runs of the current revision and start it again at the same address."""
        raise InvalidInput(f"restart is not available for {self.target!r} deployments", hint="update() or delete and deploy again")

    def rollback(self, record: DeploymentRecord, history: list[DeploymentRevision], progress) -> DeploymentRecord:
        """Serve the previous revision again (recorded as a new revision)."""
        earlier = [h for h in history if h.revision < record.revision]
        if not earlier:
            raise InvalidInput(f"deployment {record.name!r} has no earlier revision to roll back to")
        target = earlier[-1]
        return self.update(record, target.models, f"rollback to revision {target.revision}", progress)


class Deployment:
    """A deployment, as the user holds it.

    Examples
    --------
    >>> d = mlops_lab.deploy("churn:3", name="churn-svc")  # doctest: +SKIP
    >>> d.predict([[0.1, 0.2, ...]])  # doctest: +SKIP
    >>> d.update("churn:4", traffic=10); d.promote()  # doctest: +SKIP
    """

    #: The version that deploy() or update() registered from a model object, else None.
    registered: Any = None

    def __init__(self, record: DeploymentRecord, keys: dict[str, str] | None = None, registry=None) -> None:
        from ..workspace import Workspace, current

        self._record = record
        self.keys = keys
        # The workspace it lives in, whatever the environment says later.
        self._workspace = current() if registry is None else Workspace.of(registry)
        self._registry = self._workspace.registry

    # -- what it is ------------------------------------------------------------------------

    @property
    def name(self) -> str:
        return self._record.name

    @property
    def target(self) -> str:
        return self._record.target

    @property
    def url(self) -> str:
        return self._record.endpoint

    @property
    def revision(self) -> int:
        return self._record.revision

    @property
    def models(self) -> list[dict[str, Any]]:
        return self._record.models

    @property
    def record(self) -> DeploymentRecord:
        return self._record

    def refresh(self) -> Deployment:
        self._record = self._registry.get_deployment(self.name)
        return self

    def __repr__(self) -> str:
        models = ", ".join(f"{m['name']}:{m['version']}" + _share(m, self.models) for m in self.models)
        return f"<Deployment {self.name} {self.target} {self.url} revision={self.revision} models=[{models}]>"

    def _models_html(self) -> str:
        e = html.escape
        return "<br>".join(e(f"{m['name']}:{m['version']}" + _share(m, self.models)) for m in self.models)

    def _repr_html_(self) -> str:
        e = html.escape
        rows = [
            ("deployment", f"<b>{e(self.name)}</b> ({e(self.target)})"),
            ("url", f"<code>{e(self.url)}</code>"),
            ("models", self._models_html()),
            ("revision", str(self.revision)),
            ("status", e(self._record.status) + (f": {e(self._record.status_reason)}" if self._record.status_reason else "")),
        ]
        return kv_table(rows, "mlops-lab-deployment")

    def to_dict(self) -> dict[str, Any]:
        """The recorded deployment as JSON-ready data (never its keys)."""
        r = self._record
        return {"name": self.name, "target": self.target, "url": self.url, "revision": self.revision,
                "models": self.models, "status": r.status, "status_reason": r.status_reason,
                "created_at": r.created_at, "updated_at": r.updated_at}

    _html_header = ("deployment", "target", "url", "models (traffic)", "revision", "recorded status")

    def _html_row(self) -> list[str]:
        e = html.escape
        return [f"<b>{e(self.name)}</b>", e(self.target), f"<code>{e(self.url)}</code>", self._models_html(),
                str(self.revision), e(self._record.status)]

    # -- operations ------------------------------------------------------------------------

    def _deployer(self) -> Deployer:
        from .targets import deployer_for

        return deployer_for(self.target, self._registry)

    def _done(self, record: DeploymentRecord) -> Deployment:
        from .keys import read_keys

        self._record = record
        self.keys = read_keys(self._registry.home, self.name)
        return self

    def status(self) -> DeploymentStatus:
        self.refresh()
        return self._deployer().status(self._record)

    def logs(self, tail: int = 100) -> str:
        return self._deployer().logs(self._record, tail)

    def update(self, ref: Any, traffic: float | None = None, *, shadow: bool | float = False, route: str | None = None,
               progress: bool = True, sample_input: Any = None, baseline: Any = None, tags: Any = None,
               properties: Any = None, description: str | None = None, allow_missing: Any = None) -> Deployment:
        """Serve ``ref`` instead of the current version, with no downtime; with ``traffic=10``,
        send it 10 % of the requests of its route (a canary) and keep the rest on the current
        version until :meth:`promote`. With ``shadow=True`` (or ``shadow=0.25``, a share of the
        requests), ``ref`` runs beside the serving version and gets a copy of its requests: its
        answers are collected (:func:`~mlops_lab.compare` reads them against the served ones),
        never returned, and callers never wait for it; :meth:`promote` makes it serve,
        :meth:`delete_shadow` stops it. ``ref`` may be a model object: it is registered first, as
        the next version of the model the route serves (``sample_input``, ``baseline``, ``tags``,
        ... go to :func:`~mlops_lab.register_model`), and ``registered`` then names it."""
        from ..refs import parse_ref

        reg = self._registry
        record = self.refresh()._record
        register = {"sample_input": sample_input, "baseline": baseline, "tags": tags, "properties": properties,
                    "description": description, "allow_missing": allow_missing}
        registered = None
        if not is_reference(ref):
            wanted = route or (record.models[0].get("route") or record.models[0]["name"])
            served = [m for m in record.models if (m.get("route") or m["name"]) == wanted]
            if not served:
                raise errors.NotFound(f"deployment {self.name!r} has no route {wanted!r}")
            registered = _register_step(reg, ref, served[0]["name"], "update", register)
            ref = registered.ref
        else:
            _no_register_args(register, ref)
        share = _shadow_share(shadow)
        if share and traffic is not None:
            raise InvalidInput("give traffic= (a canary, which answers callers) or shadow= (a copy of the requests, "
                               "which does not), not both")
        new = parse_ref(reg.resolve(ref))
        if traffic is not None and not (0 < traffic < 100):
            raise InvalidInput(f"traffic must be between 0 and 100 (exclusive), got {traffic}",
                               hint="leave it out to send all the traffic to the new version")
        routes = [m.get("route") or m["name"] for m in record.models]
        if route is None:
            matches = [m.get("route") or m["name"] for m in record.models if m["name"] == new.name]
            route = matches[0] if matches else routes[0]
        elif route not in routes:
            raise errors.NotFound(f"deployment {self.name!r} has no route {route!r}",
                                  hint="routes: " + ", ".join(dict.fromkeys(routes)))
        others = [m for m in record.models if (m.get("route") or m["name"]) != route]
        current = [m for m in record.models if (m.get("route") or m["name"]) == route]
        serving = [m for m in current if not m.get("shadow")]
        # the route's shadows stay through an update, but for the version it now serves or shadows
        shadows = [m for m in current if m.get("shadow") and (m["name"], m["version"]) != (new.name, new.version)]
        if share:
            if any((m["name"], m["version"]) == (new.name, new.version) for m in serving):
                raise InvalidInput(f"{new} serves route {route!r} of {self.name!r} already: a shadow is another version")
            mine = serving + [{"name": new.name, "version": new.version, "traffic": 0, "route": route, "shadow": share}]
            note = f"shadow {new} on {share:.0%} of the requests"
            doing = f" (a shadow on {share:.0%} of the requests)"
        elif traffic is None:
            mine = [{"name": new.name, "version": new.version, "traffic": 100, "route": route}, *shadows]
            note = f"update to {new}"
            doing = ""
        else:
            stable = next((m for m in serving if not m.get("canary")), serving[0])
            mine = [
                {"name": stable["name"], "version": stable["version"], "traffic": 100 - traffic, "route": route},
                {"name": new.name, "version": new.version, "traffic": traffic, "route": route, "canary": True},
                *shadows,
            ]
            note = f"canary {new} at {traffic:g}%"
            doing = f" ({traffic:g}% canary)"
        prog = Progress(f"updating {self.name!r} to {new}{doing}", progress)
        try:
            record = self._deployer().update(record, others + mine, note, prog)
        except DeploymentFailed as exc:
            if registered is not None:
                _after_registering(exc, registered, "updating the deployment")
            prog.done(f"failed, revision {record.revision} still serving: {exc.message}")
            raise
        prog.done(f"revision {record.revision} serving")
        self.registered = registered
        return self._done(record)

    def promote(self, *, progress: bool = True) -> Deployment:
        """Complete a canary (or, with none, a shadow): its version takes all the traffic of its
        route. The route's other shadows stay."""
        record = self.refresh()._record
        candidates = [m for m in record.models if m.get("canary")] or [m for m in record.models if m.get("shadow")]
        if not candidates:
            raise InvalidInput(f"deployment {self.name!r} has no canary or shadow to promote",
                               hint="start one with update(ref, traffic=10) or update(ref, shadow=True)")
        c = candidates[0]
        route = c.get("route") or c["name"]
        models = [m for m in record.models if (m.get("route") or m["name"]) != route or (m.get("shadow") and m is not c)]
        models.append({"name": c["name"], "version": c["version"], "traffic": 100, "route": route})
        prog = Progress(f"promoting {c['name']}:{c['version']} in {self.name!r}", progress)
        record = self._deployer().update(record, models, f"promote {c['name']}:{c['version']}", prog)
        prog.done(f"revision {record.revision} serving")
        return self._done(record)

    def delete_shadow(self, *, progress: bool = True) -> Deployment:
        """Stop the deployment's shadows (a new revision without them; what serves is unchanged).
        Their collected answers stay."""
        record = self.refresh()._record
        shadows = [m for m in record.models if m.get("shadow")]
        if not shadows:
            raise InvalidInput(f"deployment {self.name!r} has no shadow", hint="start one with update(ref, shadow=True)")
        refs = ", ".join(f"{m['name']}:{m['version']}" for m in shadows)
        prog = Progress(f"stopping the shadow {refs} of {self.name!r}", progress)
        record = self._deployer().update(record, [m for m in record.models if not m.get("shadow")],
                                         f"delete shadow {refs}", prog)
        prog.done(f"revision {record.revision} serving")
        return self._done(record)

    @property
    def shadows(self) -> list[dict[str, Any]]:
        """The versions that get a copy of the requests (``update(ref, shadow=...)``)."""
        return [m for m in self.models if m.get("shadow")]

    def rollback(self, *, progress: bool = True) -> Deployment:
        """Return to the previous revision (recorded as a new revision)."""
        record = self.refresh()._record
        prog = Progress(f"rolling back {self.name!r}", progress)
        try:
            record = self._deployer().rollback(record, self.revisions(), prog)
        except DeploymentFailed as exc:
            prog.done(f"failed, revision {record.revision} still serving: {exc.message}")
            raise
        prog.done(f"revision {record.revision} serving")
        return self._done(record)

    def restart(self, *, progress: bool = True) -> Deployment:
        """Start the current revision again at the same address: for a deployment whose
        supervisor is gone (``crashed``), or to bounce a running one (a short outage; ``update``
        is the way without one)."""
        record = self.refresh()._record
        prog = Progress(f"restarting {self.name!r}", progress)
        try:
            record = self._deployer().restart(record, prog)
        except (DeploymentFailed, InvalidInput) as exc:
            prog.done(f"failed: {exc.message}")
            raise
        prog.done(f"revision {record.revision} serving at {record.endpoint}")
        return self._done(record)

    def delete(self) -> None:
        """Stop the deployment and forget it (idempotent). If the target refuses (a missing
        permission, an unreachable cluster), the record stays: what still runs keeps its
        version protected, and ``delete()`` can be called again once the cause is fixed."""
        from .keys import key_file

        reg = self._registry
        try:
            record = reg.get_deployment(self.name)
        except errors.NotFound:
            key_file(reg.home, self.name).unlink(missing_ok=True)
            return
        self._deployer().delete(record)
        reg.delete_deployment(self.name)
        key_file(reg.home, self.name).unlink(missing_ok=True)

    def revisions(self) -> list[DeploymentRevision]:
        return self._registry.deployment_revisions(self.name)

    def regenerate_key(self, which: str = "primary") -> str:
        """Replace one key (``primary`` or ``secondary``); the other keeps working. The servers
        take the new hash within a second, so clients move from one key to the other with no
        outage."""
        from .common import deployment_dir
        from .keys import SLOTS, key_file, key_hash, new_key, read_keys, write_private

        if which not in SLOTS:
            raise InvalidInput(f"which must be 'primary' or 'secondary', not {which!r}")
        reg = self._registry
        record = self.refresh()._record
        if not record.config.get("auth", True):
            raise InvalidInput(f"deployment {self.name!r} was made with auth=False: it has no keys")
        keys = read_keys(reg.home, self.name) or {}
        key = new_key()
        keys[which] = key
        write_private(key_file(reg.home, self.name), keys)
        hashes = dict(record.config.get("key_hashes", {}))
        hashes[which] = key_hash(key)
        write_private(deployment_dir(reg.home, self.name) / "keys.json", hashes)
        reg.update_deployment(self.name, config={**record.config, "key_hashes": hashes})
        self.keys = {**(self.keys or {}), which: key}
        return key

    # -- calling it ------------------------------------------------------------------------

    def predict(self, data: Any, *, path: str = "score", timeout: float = 60.0, request_id: str | None = None) -> Any:
        """Send ``data`` (rows, records, a DataFrame or an array) to ``/score`` and return the
        predictions. ``request_id`` is sent as ``X-Request-Id``: the id the collected rows have,
        for :func:`~mlops_lab.record_feedback` once the true label is known. Errors come back as
        the matching :class:`~mlops_lab.MlopsLabError`."""
        from ..registry.signature import _is_dataframe, _is_ndarray

        if _is_dataframe(data):
            data = data.to_dict("records")
        elif _is_ndarray(data):
            data = data.tolist()
        return self.call(path, {"data": data}, timeout=timeout,
                         headers={"X-Request-Id": request_id} if request_id is not None else None)

    def call(self, path: str, body: Any = None, *, method: str = "POST", timeout: float = 60.0, raw: bytes | None = None,
             content_type: str = "application/json", headers: dict[str, str] | None = None) -> Any:
        """Call any route of the deployment with its key; returns the decoded JSON answer."""
        url = self.url.rstrip("/") + "/" + path.lstrip("/")
        data = raw if raw is not None else (orjson.dumps(body, option=orjson.OPT_SERIALIZE_NUMPY) if body is not None else None)
        req = urllib.request.Request(url, data=data, method=method, headers=headers or {})
        req.add_header("Content-Type", content_type)
        if self.keys:
            req.add_header("Authorization", f"Bearer {self.keys['primary']}")
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return orjson.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise _error_from_response(exc.code, exc.read()) from None
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            raise DeploymentFailed(f"deployment {self.name!r} does not answer at {url}: {getattr(exc, 'reason', exc)}",
                                   hint="see .status() and .logs()") from None


def _share(m: dict[str, Any], models: list[dict[str, Any]]) -> str:
    """How a version of a deployment takes its requests, as its listing says it: a share when
    several versions serve, and a shadow's share of copies."""
    if m.get("shadow"):
        return f" (shadow of {m['shadow']:.0%})"
    serving = sum(not x.get("shadow") for x in models)
    return f" ({m['traffic']:g}%)" if "traffic" in m and serving > 1 else ""


def _shadow_share(shadow: Any) -> float:
    """``shadow=`` as the share of requests copied (0: no shadow)."""
    if shadow is False or shadow is None:
        return 0.0
    if shadow is True:
        return 1.0
    if isinstance(shadow, (int, float)) and not isinstance(shadow, bool) and 0 < shadow <= 1:
        return float(shadow)
    raise InvalidInput(f"shadow must be True or the share of requests to copy, in (0, 1], got {shadow!r}",
                       hint="shadow=0.25 copies a quarter of the requests")


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


def _error_from_response(status: int, body: bytes) -> MlopsLabError:
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = {"message": body.decode(errors="replace")[:500]}
    cls = getattr(errors, str(doc.get("error")), None)
    message = doc.get("message", f"HTTP {status}")
    if isinstance(cls, type) and issubclass(cls, errors.InvalidRequest):
        return cls(message, field=doc.get("field"), row=doc.get("row"))
    if cls is errors.ModelError:
        return errors.ModelError(message, doc.get("error_id", "?"))
    if cls is errors.Unauthorized:
        return errors.Unauthorized(message)
    err = MlopsLabError(message, hint=doc.get("hint"))
    err.http_status = status
    return err


def wait_until(predicate, timeout: float, every: float = 0.05) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(every)
    return predicate()
