"""Deployment keys: a primary and a secondary, regenerated one at a time.

Only SHA-256 hashes reach the registry store and the servers. The keys themselves are kept for
their owner in ``$MLOPS_LAB_HOME/keys/<deployment>.json`` (mode 0600), the way Docker and kubectl
keep credentials in the user's home, so that ``get_deployment(name).predict(...)`` works from any
of the owner's kernels.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import tempfile
from pathlib import Path

import orjson

SLOTS = ("primary", "secondary")


def new_key() -> str:
    return secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def write_private(path: Path, data: dict) -> None:
    """Write JSON atomically, readable by the owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        os.fchmod(fd, 0o600)
        with os.fdopen(fd, "wb") as f:
            f.write(orjson.dumps(data))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def key_file(home: Path, deployment: str) -> Path:
    return home / "keys" / f"{deployment}.json"


def read_keys(home: Path, deployment: str) -> dict[str, str] | None:
    try:
        return orjson.loads(key_file(home, deployment).read_bytes())
    except FileNotFoundError:
        return None
