"""The local copies of model files: every version's files unpacked once per machine under
``HOME/cache`` from the artifact store, checked against their hashes, and what reads them
(load, download, baseline); gc of unreferenced blobs and unpacked copies.

A part of :class:`~mlops_lab.registry.store.Registry`, which holds the engine, the settings and
the artifact store these methods use."""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path
from typing import Any

from sqlalchemy import select

from ..errors import InvalidInput, InvalidModel
from . import schema as S
from .artifacts import storage_error
from .entities import ArtifactFile, ModelVersion


class LocalCache:
    def _manifest_digest(self, files: list[ArtifactFile]) -> str:
        h = hashlib.sha256()
        for f in sorted(files, key=lambda f: f.path):
            h.update(f"{f.path}\0{f.sha256}\0{f.size}\n".encode())
        return h.hexdigest()

    def model_path(self, ref: Any) -> Path:
        """A folder holding the version's files, checked against their hashes."""
        return self.materialize(self.get_version(ref))

    def materialize(self, mv: ModelVersion) -> Path:
        from .artifacts import unpack

        self.cache.mkdir(parents=True, exist_ok=True)
        return unpack(self.artifacts, [(f.path, f.sha256) for f in mv.files],
                      self.cache / self._manifest_digest(mv.files), mv.ref)

    def read_file(self, mv: ModelVersion, path: str) -> bytes:
        for f in mv.files:
            if f.path == path:
                return self.artifacts.read_bytes(f.sha256, name=f.path, ref=mv.ref)
        raise InvalidModel(f"{mv.ref} has no file {path!r}")

    def download_model(self, ref: Any, folder: str | os.PathLike) -> Path:
        from .flavors import metadata_files

        mv = self.get_version(ref)
        dest = Path(folder)
        try:
            dest.mkdir(parents=True, exist_ok=True)
            for f in mv.files:
                self.artifacts.copy_to(f.sha256, dest / f.path, name=f.path, ref=mv.ref)
            for path, data in metadata_files(version_metadata(mv)).items():
                (dest / path).write_bytes(data)
        except OSError as exc:
            raise storage_error(exc, f"download {mv.ref} to {dest}") from None
        return dest

    def get_baseline(self, ref: Any):
        import io

        import pandas as pd

        mv = self.get_version(ref)
        if mv.baseline_sha256 is None:
            raise InvalidInput(f"{mv.ref} was registered without a baseline")
        data = self.artifacts.read_bytes(mv.baseline_sha256, name="baseline.parquet", ref=mv.ref)
        return pd.read_parquet(io.BytesIO(data))

    def load_model(self, ref: Any):
        from .flavors import load_packaged

        mv = self.get_version(ref)
        return load_packaged(
            mv.flavor, mv.loader, mv.ref, mv.requirements,
            read_file=lambda path: self.read_file(mv, path),
            folder=lambda: self.materialize(mv),
        )

    def gc(self, grace_seconds: float = 3600.0) -> dict[str, int]:
        """Remove artifact blobs and unpacked folders that no version references."""
        with self._read() as conn:
            referenced = set(conn.execute(select(S.version_files.c.sha256)).scalars())
            referenced |= set(
                conn.execute(
                    select(S.model_versions.c.baseline_sha256).where(
                        S.model_versions.c.baseline_sha256.is_not(None)
                    )
                ).scalars()
            )
            manifests: dict[tuple[str, int], list[ArtifactFile]] = {}
            for n, v, p, d, s in conn.execute(
                select(
                    S.version_files.c.name, S.version_files.c.version, S.version_files.c.path,
                    S.version_files.c.sha256, S.version_files.c.size,
                )
            ):
                manifests.setdefault((n, v), []).append(ArtifactFile(p, d, s))
        blobs, freed = self.artifacts.remove_unreferenced(referenced, grace_seconds)
        live = {self._manifest_digest(files) for files in manifests.values()}
        unpacked = 0
        if self.cache.exists():
            cutoff = time.time() - grace_seconds
            for entry in self.cache.iterdir():
                if entry.name in live:
                    continue
                try:
                    if entry.stat().st_mtime > cutoff:
                        continue
                except FileNotFoundError:
                    continue
                shutil.rmtree(entry, ignore_errors=True)
                unpacked += 1
        return {"blobs_removed": blobs, "bytes_freed": freed, "unpacked_removed": unpacked}

    def check(self) -> list[str]:
        """Problems found: versions whose files are missing or changed. Empty when sound."""
        problems = []
        with self._read() as conn:
            rows = conn.execute(
                select(S.version_files.c.name, S.version_files.c.version, S.version_files.c.path, S.version_files.c.sha256)
            ).all()
        for n, v, p, d in rows:
            try:
                self.artifacts.verify(d, name=p, ref=f"{n}:{v}")
            except Exception as exc:  # noqa: BLE001 - reported, not raised
                problems.append(str(exc))
        return problems


def version_metadata(mv: ModelVersion) -> dict[str, Any]:
    """What a folder of a version's files says about it (``MLOPS_LAB_MODEL.json``)."""
    return {
        "name": mv.name, "version": mv.version, "flavor": mv.flavor, "loader": mv.loader,
        "signature": mv.signature, "input_example": mv.input_example, "requirements": mv.requirements,
        "lineage": mv.lineage, "tags": mv.tags, "properties": mv.properties, "description": mv.description,
        "files": [{"path": f.path, "sha256": f.sha256, "size": f.size} for f in mv.files],
    }
