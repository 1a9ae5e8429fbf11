"""Plain data objects returned by the registry."""

from __future__ import annotations

import html
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from .._html import kv_table


def _fmt_time(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))


def _fmt_size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


@dataclass(frozen=True)
class ArtifactFile:
    """One file of a model version: its path inside the version, SHA-256 and size."""

    path: str
    sha256: str
    size: int


@dataclass(frozen=True)
class ModelVersion:
    """One registered version of a model.

    ``ref`` (``"name:version"``) is what every other call accepts to name it.
    """

    name: str
    version: int
    created_at: float
    description: str
    flavor: str
    loader: dict[str, Any]
    tags: dict[str, str]
    properties: dict[str, str]
    aliases: list[str]
    signature: dict[str, Any] | None
    input_example: Any
    requirements: list[str]
    lineage: dict[str, Any]
    files: list[ArtifactFile]
    size: int
    baseline_sha256: str | None = None
    deployments: list[str] = field(default_factory=list)

    @property
    def ref(self) -> str:
        return f"{self.name}:{self.version}"

    @property
    def has_baseline(self) -> bool:
        return self.baseline_sha256 is not None

    def load(self):
        """Load this version from the registry it was read from (see :func:`mlops_lab.load_model`)."""
        registry = self.__dict__.get("_registry")
        if registry is None:
            from ..errors import InvalidInput

            raise InvalidInput(f"{self.ref} was not read from a registry", hint="load it with mlops_lab.load_model(ref)")
        return registry.load_model(self.ref)

    def __repr__(self) -> str:
        extras = []
        if self.aliases:
            extras.append("aliases=" + ",".join(self.aliases))
        if self.tags:
            extras.append(f"tags={self.tags}")
        more = (" " + " ".join(extras)) if extras else ""
        return f"<ModelVersion {self.ref} {self.flavor} {_fmt_size(self.size)}{more}>"

    def _repr_html_(self) -> str:
        e = html.escape
        rows = [
            ("version", f"<b>{e(self.ref)}</b>"),
            ("registered", e(_fmt_time(self.created_at)) + " by " + e(str(self.lineage.get("user", "?")))),
            ("flavor", e(self.flavor) + " &middot; " + e(_fmt_size(self.size))),
        ]
        if self.description:
            rows.append(("description", e(self.description)))
        if self.aliases:
            rows.append(("aliases", ", ".join(f"<code>@{e(a)}</code>" for a in self.aliases)))
        if self.tags:
            rows.append(("tags", ", ".join(f"{e(k)}={e(v)}" for k, v in self.tags.items())))
        if self.properties:
            rows.append(("properties", ", ".join(f"{e(k)}={e(v)}" for k, v in self.properties.items())))
        if self.signature:
            rows.append(("signature", e(describe_signature(self.signature))))
        if self.requirements:
            rows.append(("requirements", e(", ".join(self.requirements))))
        if self.deployments:
            rows.append(("deployed as", e(", ".join(self.deployments))))
        return kv_table(rows, "mlops-lab-model-version")

    def to_dict(self) -> dict[str, Any]:
        """The version as JSON-ready data (no input example, no file list)."""
        return {
            "ref": self.ref, "name": self.name, "version": self.version, "flavor": self.flavor, "tags": self.tags,
            "properties": self.properties, "aliases": self.aliases, "description": self.description,
            "deployments": self.deployments, "created_at": self.created_at, "size": self.size,
            "signature": self.signature, "requirements": self.requirements, "lineage": self.lineage,
        }

    _html_header = ("version", "aliases", "tags", "flavor", "deployed as", "registered")

    def _html_row(self) -> list[str]:
        e = html.escape
        return [f"<b>{e(self.ref)}</b>", e(", ".join("@" + a for a in self.aliases)),
                e(", ".join(f"{k}={v}" for k, v in self.tags.items())), e(self.flavor),
                e(", ".join(self.deployments)), e(_fmt_time(self.created_at))]


def describe_signature(sig: dict[str, Any]) -> str:
    """One line: ``"age: integer, city: string"`` or ``"tensor float64 [-1, 20]"``."""
    if sig.get("kind") == "columns":
        return ", ".join(f"{c['name']}: {c['type']}" for c in sig["columns"])
    if sig.get("kind") == "tensor":
        return f"tensor {sig['dtype']} {sig['shape']}"
    return str(sig)


@dataclass(frozen=True)
class RegisteredModel:
    """A model name with a summary of its versions."""

    name: str
    description: str
    created_at: float
    updated_at: float
    latest_version: int | None
    versions: int
    aliases: dict[str, int]

    def __repr__(self) -> str:
        return (
            f"<RegisteredModel {self.name} versions={self.versions} "
            f"latest={self.latest_version} aliases={self.aliases}>"
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    _html_header = ("model", "versions", "latest", "aliases", "description", "updated")

    def _html_row(self) -> list[str]:
        e = html.escape
        return [f"<b>{e(self.name)}</b>", str(self.versions), str(self.latest_version or ""),
                e(", ".join(f"@{a}={v}" for a, v in self.aliases.items())), e(self.description), e(_fmt_time(self.updated_at))]


@dataclass(frozen=True)
class DeploymentRecord:
    """What the registry store knows of a deployment; shared by every deployer."""

    name: str
    target: str
    status: str
    status_reason: str
    endpoint: str
    config: dict[str, Any]
    state: dict[str, Any]
    revision: int
    models: list[dict[str, Any]]
    created_at: float
    updated_at: float


@dataclass(frozen=True)
class DeploymentRevision:
    deployment: str
    revision: int
    models: list[dict[str, Any]]
    config: dict[str, Any]
    created_at: float
    note: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
