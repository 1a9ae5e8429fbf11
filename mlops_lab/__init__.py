"""mlops_lab: register, deploy, monitor and update models without leaving a Jupyter notebook.

The public API is re-exported here and loaded on first use, so that ``import mlops_lab`` (and
``%load_ext mlops_lab``) stays cheap: no pandas, SQLAlchemy, web server or chart library is
imported until a call needs it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from . import errors as _errors
from ._version import __version__
from .errors import (
    AliasNotFound,
    AlreadyExists,
    ArtifactCorrupted,
    Conflict,
    DeploymentFailed,
    DeploymentNotFound,
    InvalidInput,
    InvalidModel,
    InvalidName,
    InvalidReference,
    InvalidRequest,
    MalformedRequest,
    MlopsLabError,
    ModelError,
    ModelNotFound,
    NotFound,
    PayloadTooLarge,
    RegistrySchemaError,
    StorageError,
    StorageFull,
    Unauthorized,
    VersionInUse,
    VersionNotFound,
)
from .refs import ModelRef, parse_ref
from .workspace import OPERATIONS as _OPERATIONS

# name -> module that defines it; imported on first access. The operations (also a Workspace's
# methods) come from the workspace's table; the classes and helpers are listed here.
_LAZY = {
    **{name: module for module, names in _OPERATIONS.items() for name in names},
    "load_model_from": "mlops_lab.registry.api",
    "Registry": "mlops_lab.registry.store",
    "Workspace": "mlops_lab.workspace",
    "Settings": "mlops_lab.settings",
    "Deployment": "mlops_lab.deployers.base",
    "DeploymentStatus": "mlops_lab.deployers.base",
    "ModelVersion": "mlops_lab.registry.entities",
    "RegisteredModel": "mlops_lab.registry.entities",
    "RegistryPanel": "mlops_lab.widgets",
    "DeploymentPanel": "mlops_lab.widgets",
    "MonitorPanel": "mlops_lab.widgets",
}

__all__ = sorted([*_LAZY, "ModelRef", "parse_ref", *_errors.__all__, "__version__"])


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext mlops_lab``: registers the magics (``%register_model``, ``%deploy``, ...)."""
    from .magics import load

    load(ipython)


def _jupyter_labextension_paths() -> list[dict[str, str]]:
    """The prebuilt JupyterLab sidebar (also installed to share/jupyter/labextensions)."""
    return [{"src": "labextension", "dest": "mlops-lab-jupyterlab"}]


def _jupyter_server_extension_points() -> list[dict[str, Any]]:
    """The server extension lives in :mod:`mlops_lab.server` (imports Jupyter only when loaded)."""
    return [{"module": "mlops_lab.server"}]


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'mlops_lab' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    from .batch import score_batch  # noqa: F401
    from .cards import model_card  # noqa: F401
    from .deployers.api import (  # noqa: F401
        delete_deployment,
        delete_shadow,
        deploy,
        get_deployment,
        list_deployments,
        promote,
        regenerate_key,
        restart,
        rollback,
        update,
    )
    from .deployers.base import Deployment, DeploymentStatus  # noqa: F401
    from .deployers.kubernetes import render_manifests  # noqa: F401
    from .monitoring.alerts import check_alerts, get_alerts, set_alerts  # noqa: F401
    from .monitoring.api import collected_data, drift, metrics, monitor, record_feedback, summary  # noqa: F401
    from .monitoring.readout import compare  # noqa: F401
    from .packaging import export_bundle, package  # noqa: F401
    from .registry.api import (  # noqa: F401
        delete_alias,
        delete_model,
        delete_model_version,
        delete_tag,
        download_model,
        gc,
        get_baseline,
        get_model,
        list_models,
        load_model,
        load_model_from,
        model_path,
        register_model,
        search_model_versions,
        set_alias,
        set_description,
        set_tags,
    )
    from .registry.entities import ModelVersion, RegisteredModel  # noqa: F401
    from .registry.store import Registry  # noqa: F401
    from .settings import Settings  # noqa: F401
    from .sql import run_sql, sql_function  # noqa: F401
    from .widgets import DeploymentPanel, MonitorPanel, RegistryPanel  # noqa: F401
    from .workspace import Workspace  # noqa: F401
