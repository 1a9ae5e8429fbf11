"""What the deploy targets share: names (a deployment's folder, its Kubernetes-safe name and image
tag), the spec a container's server serves, and the processes a local or Docker deployment is
watched through."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import InvalidInput

_DNS = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")


def deployment_dir(home: Path, name: str) -> Path:
    return home / "deployments" / name


def k8s_name(name: str) -> str:
    """A deployment name as a Kubernetes object name (DNS-1123 label: lower case, digits, '-')."""
    out = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")[:53].strip("-")
    if not out or not _DNS.match(out):
        raise InvalidInput(f"{name!r} cannot be a Kubernetes name", hint="use letters, digits and '-'")
    return out


def default_image(name: str, version: int) -> str:
    return f"mlops-lab/{k8s_name(name)}:{version}"


def runtime_spec(name: str, models: list[dict[str, Any]], config: dict[str, Any], revision: int, *,
                 keys_file: str, collect_to: dict[str, Any] | None,
                 model_folder: Callable[[dict[str, Any]], dict[str, Any]]) -> dict[str, Any]:
    """What a container's scoring server serves for one revision (the ``--spec`` JSON): the
    ``models`` with their traffic and routes, each where ``model_folder(m)`` says it is (a
    ``folder``, and a ``fetch`` if the server unpacks it from the artifact store), the key file,
    and where collected data goes (``collect_to``: a ``folder`` and ``endpoint_url``; ``None``
    collects nothing) with the deployment's own collection settings."""
    collect = config.get("collect")
    return {
        "deployment": name, "revision": revision,
        "models": [{"name": m["name"], "version": m["version"], "traffic": m.get("traffic", 100), **model_folder(m),
                    **({"route": m["route"]} if m.get("route") else {}),
                    **({"shadow": m["shadow"]} if m.get("shadow") else {})} for m in models],
        "entry_script": None,
        "keys_file": keys_file if config.get("auth", True) else None,
        "body_limit": config.get("body_limit"), "batching": config.get("batching", {}),
        "collect": None if collect_to is None else {"enabled": True, **collect_to,
                                                    **(collect if isinstance(collect, dict) else {})},
    }


def pid_is(pid: int | None, marker: str) -> bool:
    """Whether ``pid`` runs and is ours (its command line holds ``marker``), so a recycled PID
    is never mistaken for the supervisor."""
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except FileNotFoundError:
        return False
    except OSError:
        try:
            os.kill(pid, 0)
            return True
        except OSError:
            return False
    return marker in cmdline


def read_line(fd: int, timeout: float) -> str:
    import select

    buf = b""
    end = time.monotonic() + timeout
    while not buf.endswith(b"\n"):
        left = end - time.monotonic()
        if left <= 0:
            return "FAILED no answer from the supervisor within the start-up timeout"
        ready, _, _ = select.select([fd], [], [], left)
        if not ready:
            continue
        chunk = os.read(fd, 4096)
        if not chunk:
            break
        buf += chunk
    return buf.decode(errors="replace").strip()
