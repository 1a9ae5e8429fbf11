"""A :class:`Workspace`: one registry, its stores and its deployments, for one :class:`Settings`.

Every public function of :mod:`mlops_lab` is also a method of a workspace: ``ws.deploy(...)`` does
what ``mlops_lab.deploy(...)`` does, on that workspace's database and stores. The module-level
functions act on the default workspace, built from the environment when they are called; inside a
call, everything (the registry, the stores, the processes it starts) uses the workspace the call
began with, whatever the environment says later. Objects read from a workspace (a
:class:`~mlops_lab.ModelVersion`, a :class:`~mlops_lab.Deployment`) act on it.

The workspace in force is held in a :class:`contextvars.ContextVar`, so threads and tasks of
other workspaces (the Jupyter server serves several) never see each other's.
"""

from __future__ import annotations

import functools
import importlib
import inspect
import os
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from .settings import Settings, safe_url

if TYPE_CHECKING:  # pragma: no cover
    from .registry.store import Registry

#: module -> the public operations it defines (each is a module-level function and a method).
OPERATIONS: dict[str, tuple[str, ...]] = {
    "mlops_lab.registry.api": (
        "register_model", "get_model", "list_models", "search_model_versions", "load_model", "download_model",
        "model_path", "get_baseline", "set_tags", "delete_tag", "set_description", "set_alias", "delete_alias",
        "delete_model_version", "delete_model", "gc",
    ),
    "mlops_lab.deployers.api": (
        "deploy", "get_deployment", "list_deployments", "update", "promote", "delete_shadow", "rollback", "restart",
        "delete_deployment", "regenerate_key",
    ),
    "mlops_lab.monitoring.api": ("collected_data", "metrics", "summary", "drift", "monitor", "record_feedback"),
    "mlops_lab.monitoring.readout": ("compare",),
    "mlops_lab.monitoring.alerts": ("set_alerts", "get_alerts", "check_alerts"),
    "mlops_lab.cards": ("model_card",),
    "mlops_lab.batch": ("score_batch",),
    "mlops_lab.sql": ("sql_function", "run_sql"),
    "mlops_lab.packaging": ("package", "export_bundle"),
    "mlops_lab.deployers.kubernetes": ("render_manifests",),
}

_current: ContextVar[Workspace | None] = ContextVar("mlops_lab_workspace", default=None)
_defaults: dict[Settings, Workspace] = {}
_lock = threading.Lock()


class Workspace:
    """A registry, its artifact and collection stores and its deployments, for one set of settings.

    Parameters are those of :meth:`Settings.load` (each falls back to its ``MLOPS_LAB_*`` variable,
    then ``config.toml`` in the home folder); or pass ``settings`` built already.

    Examples
    --------
    >>> team = Workspace(db="postgresql+psycopg://ml@db/registry", artifacts="s3://models/team")  # doctest: +SKIP
    >>> mv = team.register_model(clf, "churn", sample_input=X[:5])  # doctest: +SKIP
    >>> team.deploy(mv.ref, name="churn-svc")  # doctest: +SKIP
    """

    def __init__(self, settings: Settings | None = None, **options: Any) -> None:
        if settings is not None and options:
            raise TypeError("give either settings or options, not both")
        self.settings = settings if settings is not None else Settings.load(**options)
        self._registry: Registry | None = None
        self._lock = threading.Lock()

    @classmethod
    def of(cls, registry: Registry) -> Workspace:
        """The workspace of a :class:`~mlops_lab.Registry` built on its own."""
        ws = registry.workspace
        if ws is None:
            ws = cls(registry.settings)
            ws._registry = registry
            registry.workspace = ws
        return ws

    def __repr__(self) -> str:
        s = self.settings
        return f"<Workspace home={str(s.home)!r} db={safe_url(s.db)!r} artifacts={s.artifacts!r}>"

    @property
    def home(self):
        return self.settings.home

    @property
    def registry(self) -> Registry:
        """The registry (metadata database and artifact store), opened on first use."""
        if self._registry is None:
            with self._lock:
                if self._registry is None:
                    from .registry.store import Registry

                    reg = Registry(settings=self.settings)
                    reg.workspace = self
                    self._registry = reg
        return self._registry

    @contextmanager
    def activate(self) -> Iterator[Workspace]:
        """Make this the workspace in force for the calls inside (the module-level functions too)."""
        token = _current.set(self)
        try:
            yield self
        finally:
            _current.reset(token)

    def close(self) -> None:
        if self._registry is not None:
            self._registry.close()

    def __dir__(self) -> list[str]:
        return sorted({*super().__dir__(), *(n for names in OPERATIONS.values() for n in names)})

    def __getattr__(self, name: str) -> Any:
        module = _MODULE_OF.get(name)
        if module is None:
            raise AttributeError(f"'Workspace' object has no attribute {name!r}")
        fn = getattr(importlib.import_module(module), name)
        method = _bound(fn, self)
        self.__dict__[name] = method
        return method


_MODULE_OF = {name: module for module, names in OPERATIONS.items() for name in names}


def _bound(fn: Callable[..., Any], ws: Workspace) -> Callable[..., Any]:
    @functools.wraps(fn)
    def method(*args: Any, **kwargs: Any) -> Any:
        with ws.activate():
            return fn(*args, **kwargs)

    method.__signature__ = inspect.signature(fn)  # type: ignore[attr-defined]
    return method


def in_workspace(fn: Callable[..., Any]) -> Callable[..., Any]:
    """For a public function: run it in the workspace in force, or the default one, chosen once at
    the start of the call."""

    @functools.wraps(fn)
    def call(*args: Any, **kwargs: Any) -> Any:
        if _current.get() is not None:
            return fn(*args, **kwargs)
        with default_workspace().activate():
            return fn(*args, **kwargs)

    return call


def current() -> Workspace:
    """The workspace in force: the one a call began with, else the default one."""
    ws = _current.get()
    return ws if ws is not None else default_workspace()


def current_registry() -> Registry:
    """The registry of the workspace in force."""
    return current().registry


def default_workspace() -> Workspace:
    """The workspace the environment names now (one per distinct settings, kept open)."""
    settings = Settings.load()
    ws = _defaults.get(settings)
    if ws is None:
        with _lock:
            ws = _defaults.get(settings)
            if ws is None:
                ws = _defaults[settings] = Workspace(settings)
    return ws


def close_defaults() -> None:
    """Close every default workspace (tests, and after a fork)."""
    for ws in list(_defaults.values()):
        ws.close()
    _defaults.clear()


def _forget_after_fork() -> None:
    # Database connections must not cross a fork: the child opens its own.
    _defaults.clear()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_after_fork)
