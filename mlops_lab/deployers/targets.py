"""The deploy targets, in one table: where each one's :class:`~.base.Deployer` lives and the
options it accepts beyond the common ones (``deploy(..., target="docker", base_image=...)``).

A target's module is imported only when a deployment uses it (Docker's and Kubernetes' clients
are heavy), by name from this table, as MLflow finds its stores by URI scheme.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from ..errors import InvalidInput


@dataclass(frozen=True)
class Target:
    module: str
    cls: str
    options: frozenset[str] = frozenset()


TARGETS: dict[str, Target] = {
    "local": Target("mlops_lab.deployers.local", "LocalDeployer"),
    "docker": Target("mlops_lab.deployers.docker", "DockerDeployer", frozenset({"base_image", "image"})),
    "kubernetes": Target("mlops_lab.deployers.kubernetes", "KubernetesDeployer", frozenset({
        "image", "namespace", "context", "replicas", "cpu", "memory", "cpu_limit", "memory_limit", "autoscale",
        "service_type", "collect_claim", "collect_storage", "image_pull_policy", "s3_secret"})),
}


def target(name: str) -> Target:
    found = TARGETS.get(name)
    if found is None:
        raise InvalidInput(f"unknown target {name!r}", hint="use one of " + ", ".join(TARGETS))
    return found


def check_options(name: str, options: dict[str, Any]) -> None:
    """Refuse an option the target does not take, naming the ones it does."""
    allowed = target(name).options
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise InvalidInput(f"target {name!r} takes no option {unknown[0]!r}",
                           hint=("its options: " + ", ".join(sorted(allowed))) if allowed else "it takes none")


def deployer_for(name: str, registry):
    """The deployer of target ``name``, on ``registry``."""
    t = target(name)
    return getattr(importlib.import_module(t.module), t.cls)(registry)
