"""What is recorded automatically with a model: its requirements and its lineage."""

from __future__ import annotations

import datetime as _dt
import getpass
import os
import platform
import socket
import subprocess
import sys
import types
from functools import cache, lru_cache
from importlib import metadata
from pathlib import Path
from typing import Any

# Modules whose presence says nothing about what a model needs to load.
_IGNORED_TOPLEVEL = {"__main__", "builtins", "mlops_lab", "cloudpickle", "pickle", "copyreg"}


@lru_cache(maxsize=1)
def _packages_distributions() -> dict[str, list[str]]:
    return metadata.packages_distributions()


@cache
def _distribution_pin(top_level: str) -> str | None:
    # Cached: reading a distribution's metadata costs about a millisecond, and the version of a
    # module a process has imported does not change while it runs.
    dists = _packages_distributions().get(top_level)
    if not dists:
        return None
    dist = dists[0]
    try:
        return f"{dist}=={metadata.version(dist)}"
    except metadata.PackageNotFoundError:
        return None


def _collect_modules(obj: Any, found: set[str], seen: set[int], depth: int) -> None:
    """Top-level modules of the classes reachable from ``obj`` (a few levels deep)."""
    if depth < 0 or id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, (str, bytes, int, float, bool, type(None))):
        return
    if isinstance(obj, types.FunctionType):
        found.add(obj.__module__.split(".")[0] if obj.__module__ else "")
        # A function from a notebook: the modules its code refers to by global name.
        for name in obj.__code__.co_names:
            g = obj.__globals__.get(name)
            if isinstance(g, types.ModuleType):
                found.add(g.__name__.split(".")[0])
            elif g is not None and not isinstance(g, (str, bytes, int, float, bool)):
                _collect_modules(g, found, seen, depth - 1)
        if obj.__closure__:
            for cell in obj.__closure__:
                try:
                    _collect_modules(cell.cell_contents, found, seen, depth - 1)
                except ValueError:
                    pass
        return
    if isinstance(obj, types.ModuleType):
        found.add(obj.__name__.split(".")[0])
        return
    cls = obj if isinstance(obj, type) else type(obj)
    for klass in cls.__mro__:
        mod = klass.__module__.split(".")[0]
        found.add(mod)
    if isinstance(obj, type):
        return
    if isinstance(obj, dict):
        items = list(obj.values())[:50]
    elif isinstance(obj, (list, tuple, set, frozenset)):
        items = list(obj)[:50]
    else:
        items = list(getattr(obj, "__dict__", {}).values())[:100]
    for item in items:
        _collect_modules(item, found, seen, depth - 1)


def capture_requirements(obj: Any) -> list[str]:
    """``name==version`` for the installed distributions the object's classes come from.

    Examples
    --------
    >>> from sklearn.linear_model import LogisticRegression  # doctest: +SKIP
    >>> capture_requirements(LogisticRegression())  # doctest: +SKIP
    ['numpy==2.1.0', 'scikit-learn==1.5.2', 'scipy==1.14.1']
    """
    found: set[str] = set()
    _collect_modules(obj, found, set(), depth=4)
    stdlib = getattr(sys, "stdlib_module_names", frozenset())
    pins = set()
    for mod in found:
        if not mod or mod in stdlib or mod in _IGNORED_TOPLEVEL or mod.startswith("_"):
            continue
        pin = _distribution_pin(mod)
        if pin:
            pins.add(pin)
    # Whatever is found, loading needs numpy if the model holds arrays: it is found through the
    # classes above when that is the case.
    return sorted(pins, key=str.lower)


def _find_git_dir(start: Path) -> Path | None:
    for folder in (start, *start.parents):
        candidate = folder / ".git"
        if candidate.exists():
            return candidate
    return None


def git_info(folder: Path | None = None) -> dict[str, Any]:
    """Commit, branch and dirty flag of the git working tree holding ``folder`` (cwd by default).

    Returns an empty dict outside a git repository or when git is not installed.
    """
    start = Path(folder or os.getcwd()).resolve()
    if _find_git_dir(start) is None:
        return {}
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=start, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return {}
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=start, capture_output=True, text=True, timeout=30,
        )
        branch = subprocess.run(
            ["git", "rev-parse", "--abbrev-ref", "HEAD"],
            cwd=start, capture_output=True, text=True, timeout=10,
        )
    except (OSError, subprocess.TimeoutExpired):
        return {}
    info: dict[str, Any] = {"git_commit": commit.stdout.strip()}
    if status.returncode == 0:
        info["git_dirty"] = bool(status.stdout.strip())
    if branch.returncode == 0 and branch.stdout.strip() != "HEAD":
        info["git_branch"] = branch.stdout.strip()
    return info


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:  # no user name in some containers
        return str(os.getuid()) if hasattr(os, "getuid") else "unknown"


def capture_lineage(extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Automatic lineage (git, Python, user, host, time) merged under the user's ``extra``."""
    auto: dict[str, Any] = {
        "python_version": platform.python_version(),
        "user": _user(),
        "host": socket.gethostname(),
        "time": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "cwd": os.getcwd(),
    }
    auto.update(git_info())
    if extra:
        auto.update(extra)
    return auto
