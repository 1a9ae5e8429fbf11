"""A model leaves the registry as a self-contained folder: the build context of a container image
and the edge bundle are the same thing.

Layout of a package (``package(ref, folder)``)::

    Dockerfile            two stages: install from wheels/, then copy the environment (no wheels in the image)
    run.sh                start it without Docker: a virtual environment from wheels/, offline
    requirements.txt      the scoring server's packages and the model's, pinned
    wheels/               the wheelhouse for the target platform (pip itself included)
    src/mlops_lab/        the scoring server (pure Python, this very version)
    models/NAME-VERSION/  each model's checked files (as ``download_model`` writes them)
    spec.json             what the server serves; paths relative to it
    MLOPS_LAB_PACKAGE.json  what this is: references, platform, Python, sizes

Nothing inside needs the registry or the network: ``pip install --no-index --find-links wheels``.
"""

from __future__ import annotations

import json
import os
import platform as _platform
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ._progress import Progress
from .errors import InvalidInput, StorageError
from .workspace import in_workspace

__all__ = ["package", "export_bundle", "Package", "DEFAULT_BASE_IMAGE", "SERVER_PORT", "APP_DIR"]

#: The base image of a build context unless told otherwise: a slim official Python image.
DEFAULT_BASE_IMAGE = "python:3.11-slim"
#: Where the package lives inside a container, and the port its server listens on.
APP_DIR = "/opt/mlops-lab"
SERVER_PORT = 8080
MANIFEST = "MLOPS_LAB_PACKAGE.json"
#: The key hashes, relative to spec.json: a folder, so that a Kubernetes Secret or a Docker bind
#: mount can provide it (and a regenerated key reaches a running server).
KEYS_FILE = "keys/keys.json"

# What the scoring server imports, pinned to the versions installed here (it is tested with them).
_SERVER_PACKAGES = ["numpy", "orjson", "pysimdjson", "starlette", "uvicorn", "httptools", "uvloop", "cloudpickle"]
_COLLECT_PACKAGES = ["pyarrow"]


@dataclass
class Package:
    """A package folder: a Docker build context and an edge bundle."""

    folder: Path
    refs: list[str]
    requirements: list[str]
    platform: str | None
    python: str
    base_image: str
    size: int = 0
    wheels: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        return f"<Package {', '.join(self.refs)} at {self.folder} ({self.size / 2**20:.1f} MiB, {len(self.wheels)} wheels)>"


def _pin(name: str) -> str:
    """``name==version`` as installed here (the server is tested with these), else the bare name."""
    from .registry.environment import _distribution_pin

    return _distribution_pin(name) or name


def _req_name(req: str) -> str:
    return re.split(r"[<>=!~;\[ ]", req, maxsplit=1)[0].strip().lower().replace("_", "-")


def requirements_for(versions: Sequence[Any], collect: bool = True, extra: Sequence[str] = ()) -> list[str]:
    """The server's packages and every model's, pinned; a model's own pin wins over the server's."""
    out: dict[str, str] = {}
    # a model with named columns is called with a pandas DataFrame
    tables = ["pandas"] if any((mv.signature or {}).get("kind") == "columns" for mv in versions) else []
    for name in _SERVER_PACKAGES + (_COLLECT_PACKAGES if collect else []) + tables:
        out[_req_name(name)] = _pin(name)
    for mv in versions:
        for req in mv.requirements:
            out[_req_name(req)] = req
    for req in extra:
        out[_req_name(req)] = req
    return sorted(out.values(), key=str.lower)


@in_workspace
def package(
    refs: Any,
    folder: str | os.PathLike,
    *,
    base_image: str = DEFAULT_BASE_IMAGE,
    platform: str | None = None,
    python_version: str | None = None,
    collect: bool | dict[str, Any] = True,
    auth: bool = False,
    extra_requirements: Sequence[str] = (),
    wheels: bool = True,
    progress: bool = True,
) -> Package:
    """Write a self-contained package of one or several versions into ``folder`` (created; it
    must not exist or be empty).

    Parameters
    ----------
    refs:
        A reference or a list of them (several models on one server).
    base_image:
        ``FROM`` of the Dockerfile (a Debian-like image with ``python3``).
    platform, python_version:
        Wheels for another machine (``"manylinux2014_aarch64"``, ``"3.11"``); default: this one.
    collect:
        Collect inputs and predictions under ``collected/`` next to ``spec.json`` (a dict: the
        collection settings of :func:`mlops_lab.deploy`); ``False`` leaves pyarrow out.
    auth:
        Require a key: the server reads the key hashes from ``keys/keys.json`` beside ``spec.json``
        (the Docker and Kubernetes deployers mount it; ``export_bundle`` writes it).
    wheels:
        Fill ``wheels/`` (``pip download``, through the pip configuration of this machine).

    Examples
    --------
    >>> package("churn@production", "build/churn")  # doctest: +SKIP
    <Package churn:3 at build/churn (96.2 MiB, 19 wheels)>
    """
    from .registry.api import get_model
    from .workspace import current_registry

    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise InvalidInput(f"{folder} is not empty: package into a new folder")
    ref_list = [refs] if not isinstance(refs, (list, tuple)) else list(refs)
    if not ref_list:
        raise InvalidInput("package needs at least one model reference")
    versions = [get_model(r) for r in ref_list]
    bar = Progress(f"packaging {', '.join(v.ref for v in versions)}", enabled=progress)
    reg = current_registry()
    folder.mkdir(parents=True, exist_ok=True)
    try:
        entries = []
        for mv in versions:
            bar.step(f"model files {mv.ref}")
            rel = f"models/{mv.name}-{mv.version}"
            reg.download_model(mv.ref, folder / rel)
            # several versions: each on its own route (/models/NAME/...), as deploy([a, b]) does
            entries.append({"name": mv.name, "version": mv.version, "traffic": 100, "folder": rel,
                            **({"route": mv.name} if len(versions) > 1 else {})})
        collect_spec = None
        if collect:
            collect_spec = {"enabled": True, "folder": "collected", **(collect if isinstance(collect, dict) else {})}
        spec = {
            "deployment": versions[0].name, "revision": 1, "models": entries, "entry_script": None,
            "keys_file": KEYS_FILE if auth else None, "body_limit": None, "batching": {}, "collect": collect_spec,
        }
        _write(folder / "spec.json", json.dumps(spec, indent=2))
        bar.step("scoring server source")
        _copy_source(folder / "src" / "mlops_lab")
        reqs = requirements_for(versions, collect=bool(collect), extra=extra_requirements)
        _write(folder / "requirements.txt", "\n".join(reqs) + "\n")
        python = python_version or f"{sys.version_info.major}.{sys.version_info.minor}"
        got: list[str] = []
        if wheels:
            bar.step(f"wheels for {platform or 'this platform'}, Python {python}")
            got = _wheelhouse(folder / "wheels", reqs, platform, python_version)
        _write(folder / "Dockerfile", _dockerfile(base_image))
        _write(folder / "run.sh", _RUN_SH, mode=0o755)
        _write(folder / ".dockerignore", "collected/\n.venv/\nkeys/\n")
        pkg = Package(folder, [v.ref for v in versions], reqs, platform, python, base_image, wheels=got)
        pkg.size = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
        manifest = {
            "refs": pkg.refs, "requirements": reqs, "platform": platform or _host_platform(), "python": python,
            "base_image": base_image, "port": SERVER_PORT, "wheels": got, "size": pkg.size,
            "created_at": time.time(), "mlops_lab": _version(),
        }
        _write(folder / MANIFEST, json.dumps(manifest, indent=2))
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    bar.done(f"{pkg.size / 2**20:.1f} MiB in {folder}")
    return pkg


@in_workspace
def export_bundle(
    ref: Any,
    path: str | os.PathLike,
    *,
    platform: str | None = None,
    python_version: str | None = None,
    auth: bool = True,
    collect: bool | dict[str, Any] = True,
    onnx: bool | None = None,
    progress: bool = True,
) -> tuple[Path, dict[str, str]]:
    """Export a version as an edge bundle: a folder, or a tarball when ``path`` ends in
    ``.tar.gz``, that runs the scoring server offline with ``./run.sh`` (or its Dockerfile).

    Returns the bundle's path and its keys (``{"primary": ..., "secondary": ...}``; only their
    hashes are in the bundle; empty with ``auth=False``). ``onnx=True`` also writes
    ``model.onnx`` (scikit-learn models, needs ``skl2onnx``); by default it is written when
    ``skl2onnx`` is installed.

    Examples
    --------
    >>> path, keys = export_bundle("churn:3", "churn-edge.tar.gz", platform="manylinux2014_aarch64")  # doctest: +SKIP
    """
    from .deployers.keys import key_hash, new_key

    path = Path(path)
    tarball = path.name.endswith((".tar.gz", ".tgz"))
    folder = Path(tempfile.mkdtemp(prefix=".bundle-", dir=path.parent if path.parent.exists() else None)) / "bundle" \
        if tarball else path
    pkg = package(ref, folder, platform=platform, python_version=python_version, auth=auth, collect=collect, progress=progress)
    keys: dict[str, str] = {}
    try:
        if auth:
            keys = {"primary": new_key(), "secondary": new_key()}
            _write(folder / KEYS_FILE, json.dumps({k: key_hash(v) for k, v in keys.items()}), mode=0o600)
        if onnx or onnx is None:
            _export_onnx(pkg, folder, required=bool(onnx))
    except BaseException:
        shutil.rmtree(folder.parent if tarball else folder, ignore_errors=True)
        raise
    if not tarball:
        return folder, keys
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
            tar.add(folder, arcname=path.name.removesuffix(".tar.gz").removesuffix(".tgz"))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
        shutil.rmtree(folder.parent, ignore_errors=True)
    return path, keys


def _export_onnx(pkg: Package, folder: Path, required: bool) -> None:
    """``model.onnx`` beside the bundle's model, for runtimes without Python (ONNX Runtime)."""
    try:
        from skl2onnx import to_onnx
    except ImportError:
        if required:
            raise InvalidInput("ONNX export needs skl2onnx: pip install 'mlops-lab[onnx]'") from None
        return
    import numpy as np

    from .registry.api import get_model

    mv = get_model(pkg.refs[0])
    sig = mv.signature or {}
    width = len(sig["columns"]) if sig.get("kind") == "columns" else (sig.get("shape") or [None, None])[1]
    try:
        if not width:
            raise ValueError("its signature gives no input width")
        onx = to_onnx(mv.load().model, np.zeros((1, int(width)), dtype=np.float32), target_opset=None)
    except Exception as exc:  # noqa: BLE001 - many models have no ONNX converter
        if required:
            raise InvalidInput(f"{mv.ref} cannot be exported to ONNX: {exc}") from None
        return
    _write(folder / "model.onnx", onx.SerializeToString())


# -- the pieces ----------------------------------------------------------------------------------


def _write(path: Path, data: str | bytes, mode: int | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        if isinstance(data, str):
            tmp.write_text(data, encoding="utf-8")
        else:
            tmp.write_bytes(data)
        if mode is not None:
            os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from None


def _copy_source(dest: Path) -> None:
    src = Path(__file__).resolve().parent
    shutil.copytree(src, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "labextension", "server", "widgets.py", "magics.py"))


def _wheelhouse(dest: Path, reqs: list[str], platform: str | None, python_version: str | None) -> list[str]:
    dest.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check", "--only-binary=:all:",
           "--dest", str(dest), _pin("pip"), *reqs]
    if platform or python_version:
        cmd += ["--implementation", "cp"]
        if platform:
            cmd += ["--platform", platform]
        if python_version:
            cmd += ["--python-version", python_version]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln for ln in proc.stderr.splitlines() if ln.startswith("ERROR")] or proc.stderr.strip().splitlines()[-3:]
        raise InvalidInput(f"cannot gather the wheels for {platform or 'this platform'}: {' '.join(lines)[:500]}",
                           hint="a package may have no wheel for that platform; see requirements.txt")
    return sorted(p.name for p in dest.glob("*.whl"))


def _host_platform() -> str:
    return f"{sys.platform}-{_platform.machine()}"


def _version() -> str:
    from ._version import __version__

    return __version__


def _dockerfile(base_image: str) -> str:
    return f"""# A scoring server image built from this folder alone: no network needed during the build.
ARG BASE_IMAGE={base_image}
FROM ${{BASE_IMAGE}} AS build
COPY wheels/ /tmp/wheels/
COPY requirements.txt /tmp/requirements.txt
RUN python3 -m venv --without-pip {APP_DIR}/venv \\
 && {APP_DIR}/venv/bin/python $(ls /tmp/wheels/pip-*.whl)/pip install --no-index --no-compile --quiet \\
      --find-links /tmp/wheels -r /tmp/requirements.txt \\
 && cd {APP_DIR}/venv/lib/python3*/site-packages \\
 && find {APP_DIR}/venv -depth \\( -name __pycache__ -o -name tests -o -name include \\) -type d -exec rm -rf {{}} + \\
 && rm -rf pyarrow/*flight* pyarrow/*.pxi pyarrow/*.pyx pyarrow/*.pxd pip

FROM ${{BASE_IMAGE}}
COPY --from=build {APP_DIR}/venv {APP_DIR}/venv
COPY src/ {APP_DIR}/src/
COPY models/ {APP_DIR}/models/
COPY spec.json {MANIFEST} {APP_DIR}/
WORKDIR {APP_DIR}
ENV PYTHONPATH={APP_DIR}/src PYTHONUNBUFFERED=1 PATH={APP_DIR}/venv/bin:$PATH
EXPOSE {SERVER_PORT}
CMD ["{APP_DIR}/venv/bin/python", "-m", "mlops_lab.serving.server", "--spec", "{APP_DIR}/spec.json", "--host", "0.0.0.0", "--port", "{SERVER_PORT}"]
"""


_RUN_SH = """#!/bin/sh
# Start this model's scoring server without Docker and without network: the first run makes a
# virtual environment from wheels/ (needs python3 of the version in MLOPS_LAB_PACKAGE.json).
# HOST (default 0.0.0.0) and PORT (default 8080) choose the address.
set -eu
cd "$(dirname "$0")"
if [ ! -x .venv/bin/python ]; then
  echo "[run.sh] installing from wheels/ (offline)" >&2
  python3 -m venv --without-pip .venv
  .venv/bin/python "$(ls wheels/pip-*.whl | head -n 1)/pip" install --quiet --no-index --find-links wheels -r requirements.txt
fi
export PYTHONPATH="$PWD/src"
exec .venv/bin/python -m mlops_lab.serving.server --spec "$PWD/spec.json" --host "${HOST:-0.0.0.0}" --port "${PORT:-8080}"
"""
