"""Bearer keys for a scoring server, checked against the hashes its deployment keeps."""

from __future__ import annotations

import hashlib
import hmac
import time
from pathlib import Path

import orjson

from ..errors import Unauthorized


class KeyCheck:
    """Bearer keys, checked against the SHA-256 hashes in a file (re-read when it changes, at
    most once a second, so a regenerated key takes effect without a restart)."""

    def __init__(self, path: str | None) -> None:
        self.path = Path(path) if path else None
        self._hashes: list[bytes] = []
        self._mtime = None
        self._checked = 0.0
        self._reload(force=True)

    def _reload(self, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked < 1.0:
            return
        self._checked = now
        if self.path is None:
            return
        try:
            mtime = self.path.stat().st_mtime_ns
        except FileNotFoundError:
            self._hashes = []
            return
        if mtime != self._mtime:
            data = orjson.loads(self.path.read_bytes())
            self._hashes = [bytes.fromhex(h) for h in data.values() if h]
            self._mtime = mtime

    @property
    def enabled(self) -> bool:
        return self.path is not None

    def check(self, header: str | None) -> None:
        if self.path is None:
            return
        self._reload()
        if not header:
            raise Unauthorized(
                "this deployment needs a key: send 'Authorization: Bearer <key>'",
                hint="Deployment.keys gives the keys",
            )
        scheme, _, key = header.partition(" ")
        if scheme.lower() != "bearer" or not key:
            raise Unauthorized("the Authorization header must be 'Bearer <key>'")
        digest = hashlib.sha256(key.strip().encode()).digest()
        if not any(hmac.compare_digest(digest, h) for h in self._hashes):
            raise Unauthorized("the key is not valid for this deployment (it may have been regenerated)")
