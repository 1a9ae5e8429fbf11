"""The registry's public functions, on the registry named by ``MLOPS_LAB_HOME``/``MLOPS_LAB_DB``.

Each is re-exported from :mod:`mlops_lab`; see :class:`~mlops_lab.registry.store.Registry` to
work with another registry explicitly.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from .._html import Listing
from ..workspace import current_registry, in_workspace
from .entities import ModelVersion, RegisteredModel

__all__ = [
    "register_model",
    "get_model",
    "list_models",
    "search_model_versions",
    "load_model",
    "load_model_from",
    "download_model",
    "model_path",
    "get_baseline",
    "set_tags",
    "delete_tag",
    "set_description",
    "set_alias",
    "delete_alias",
    "delete_model_version",
    "delete_model",
    "gc",
]


@in_workspace
def register_model(
    model: Any,
    name: str,
    *,
    tags: Mapping[str, Any] | None = None,
    properties: Mapping[str, Any] | None = None,
    description: str = "",
    sample_input: Any = None,
    baseline: Any = None,
    requirements: Iterable[str] | str | os.PathLike | None = None,
    lineage: Mapping[str, Any] | None = None,
    entry_script: str | os.PathLike | None = None,
    allow_missing: Iterable[str] | bool | None = None,
) -> ModelVersion:
    """Register a model as the next version of ``name``.

    Parameters
    ----------
    model:
        A Python object with ``predict``, ``predict_proba`` or ``__call__`` (scikit-learn,
        XGBoost-style, a plain function); or the path of a file (pickle, joblib, ONNX, anything)
        or of a folder, registered as-is.
    name:
        1 to 64 letters, digits, ``-``, ``_``, ``.``. Versions count from 1 per name.
    tags:
        Labels that can be changed later (:func:`set_tags`, :func:`delete_tag`).
    properties:
        Facts fixed at registration (a metric, a data set's id).
    sample_input:
        A DataFrame, array or list of dicts: its columns and dtypes (or shape and dtype) become
        the model's signature, used to validate requests; its first rows are kept as an example.
    baseline:
        A sample of the training data, stored as Parquet, the reference for drift.
    requirements:
        ``["scikit-learn==1.5.2", ...]`` or a requirements.txt path; by default, the installed
        versions of the packages the model's classes come from.
    lineage:
        Anything worth keeping about where the model comes from; git commit, Python version,
        user, host and time are added automatically.
    entry_script:
        With a file or folder: an Azure-ML-style scoring script defining ``init()`` and
        ``run(data)``, found by ``init()`` through ``AZUREML_MODEL_DIR``.
    allow_missing:
        Columns in which the model takes missing values (``null``, NaN), or ``True`` for all.
        Columns where ``sample_input`` or ``baseline`` lack a value are added; a request lacking
        a value in any other column gets 422 naming the column and the row.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression  # doctest: +SKIP
    >>> clf = LogisticRegression().fit(X, y)  # doctest: +SKIP
    >>> mv = register_model(clf, "churn", tags={"team": "growth"}, sample_input=X[:5])  # doctest: +SKIP
    >>> mv.ref  # doctest: +SKIP
    'churn:1'
    """
    return current_registry().register_model(
        model, name, tags=tags, properties=properties, description=description,
        sample_input=sample_input, baseline=baseline, requirements=requirements,
        lineage=lineage, entry_script=entry_script, allow_missing=allow_missing,
    )


@in_workspace
def get_model(ref: Any) -> ModelVersion:
    """The version a reference names: ``"churn"`` (latest), ``"churn:3"``, ``"churn@production"``."""
    return current_registry().get_version(ref)


@in_workspace
def list_models(name_contains: str | None = None) -> list[RegisteredModel]:
    """Every registered model (optionally those whose name contains a text), by name."""
    return Listing(current_registry().list_models(name_contains),
                   empty="No models yet: register one with %register_model VAR --name NAME or mlops_lab.register_model()")


@in_workspace
def search_model_versions(
    name: str | None = None,
    tags: Mapping[str, Any] | None = None,
    properties: Mapping[str, Any] | None = None,
    max_results: int | None = None,
) -> list[ModelVersion]:
    """Versions matching every condition given, newest first within each name.

    ``name`` may hold ``*`` and ``?`` wildcards; a tag or property value of ``None`` matches any
    value of that key.

    Examples
    --------
    >>> search_model_versions(tags={"team": "growth"})  # doctest: +SKIP
    [<ModelVersion churn:2 ...>, <ModelVersion churn:1 ...>]
    """
    return Listing(current_registry().search_model_versions(name, tags, properties, max_results), empty="No model versions match.")


@in_workspace
def load_model(ref: Any):
    """Load a version; its ``predict`` answers as the registered model's did.

    The artifact's SHA-256 is checked first: a changed file raises ``ArtifactCorrupted`` and
    nothing is loaded. Loading a pickle runs code: load only from a registry you trust.
    """
    return current_registry().load_model(ref)


def load_model_from(folder: str | os.PathLike):
    """Load a model from a folder written by :func:`download_model` (inside a scoring server,
    :func:`model_path` gives such folders),
    without a registry; every file is checked against its recorded SHA-256 first.

    Entry scripts use it in ``init()``: ``load_model_from(model_path("a:3"))``.
    """
    from .flavors import load_folder

    return load_folder(folder)[0]


@in_workspace
def download_model(ref: Any, folder: str | os.PathLike) -> Path:
    """Copy a version's files (checked) into ``folder``, with ``MLOPS_LAB_MODEL.json``."""
    return current_registry().download_model(ref, folder)


@in_workspace
def model_path(ref: Any) -> Path:
    """A local folder holding a version's files, checked against their hashes.

    Scoring scripts use it in ``init()`` to find each model of an ensemble; inside a scoring
    server it answers from the models the server holds, without a registry.
    """
    served = os.environ.get("MLOPS_LAB_MODEL_PATHS")
    if served:
        import orjson

        paths = orjson.loads(served)
        key = str(ref)
        if key in paths:
            return Path(paths[key])
    return current_registry().model_path(ref)


@in_workspace
def get_baseline(ref: Any):
    """The baseline registered with a version, as a pandas DataFrame."""
    return current_registry().get_baseline(ref)


@in_workspace
def set_tags(ref: Any, tags: Mapping[str, Any]) -> ModelVersion:
    """Set or change tags of a version."""
    return current_registry().set_tags(ref, tags)


@in_workspace
def delete_tag(ref: Any, key: str) -> ModelVersion:
    """Remove a tag from a version (nothing happens if it has none of that key)."""
    return current_registry().delete_tag(ref, key)


@in_workspace
def set_description(ref: Any, description: str) -> ModelVersion:
    """Change the description of a version."""
    return current_registry().set_description(ref, description)


@in_workspace
def set_alias(name: str, alias: str, version: int) -> ModelVersion:
    """Point ``name@alias`` to ``version`` (creating or moving the alias)."""
    return current_registry().set_alias(name, alias, version)


@in_workspace
def delete_alias(name: str, alias: str) -> None:
    """Remove an alias."""
    current_registry().delete_alias(name, alias)


@in_workspace
def delete_model_version(ref: Any) -> str:
    """Delete one version (``"name:VERSION"``); refused with ``VersionInUse`` while deployed."""
    return current_registry().delete_model_version(ref)


@in_workspace
def delete_model(name: str) -> list[str]:
    """Delete a model and all its versions; refused with ``VersionInUse`` while any is deployed."""
    return current_registry().delete_model(name)


@in_workspace
def gc(grace_seconds: float = 3600.0) -> dict[str, int]:
    """Free the disk space of artifacts no version references any more.

    Blobs younger than ``grace_seconds`` are kept: they may belong to a registration in flight.
    """
    return current_registry().gc(grace_seconds)
