"""What the deploy targets share: names (a deployment's folder, its Kubernetes-safe name and image
tag) and the processes a local or Docker deployment is watched through."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

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
