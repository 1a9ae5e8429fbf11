"""Content-addressed artifact storage.

Every file of every model version is stored once, under ``artifacts/sha256/ab/cdef...`` in the
home folder, named by the SHA-256 of its content. Identical content is stored once whatever the
number of versions that hold it. Blobs are written to a temporary file in the same folder and
renamed into place, so a reader never sees a half-written blob; the hash is checked again on
every read.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from ..errors import ArtifactCorrupted, StorageError, StorageFull

CHUNK = 1 << 20


def storage_error(exc: OSError, what: str) -> StorageError:
    """Turn an ``OSError`` into the matching mlops_lab error."""
    if exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EFBIG):
        return StorageFull(
            f"no space left while {what}: {exc.strerror}",
            hint="free some disk space or point MLOPS_LAB_HOME to a larger disk; nothing was recorded",
        )
    return StorageError(f"could not {what}: {exc}")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            h.update(chunk)
    return h.hexdigest()


class ArtifactStore:
    """Blobs named by their SHA-256 under ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.blobs = self.root / "sha256"
        self.tmp = self.root / "tmp"

    def path(self, digest: str) -> Path:
        return self.blobs / digest[:2] / digest[2:]

    def exists(self, digest: str) -> bool:
        return self.path(digest).exists()

    # -- writing ---------------------------------------------------------------------------

    def staging_dir(self) -> Path:
        """A fresh private folder to serialize a model into before it is stored."""
        self.tmp.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="stage-", dir=self.tmp))

    def put_file(self, src: Path) -> tuple[str, int]:
        """Store the file ``src``; return its digest and size. ``src`` is consumed (moved)."""
        digest = sha256_file(src)
        size = src.stat().st_size
        dest = self.path(digest)
        if dest.exists():
            # Refresh the time stamp so that a concurrent gc, which only removes blobs older than
            # its grace period, keeps a blob that is about to be referenced again.
            os.utime(dest)
            src.unlink()
            return digest, size
        dest.parent.mkdir(parents=True, exist_ok=True)
        # Same file system as the staging folder: the rename is atomic.
        os.chmod(src, 0o444)
        os.replace(src, dest)
        return digest, size

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        digest = hashlib.sha256(data).hexdigest()
        dest = self.path(digest)
        if dest.exists():
            os.utime(dest)
            return digest, len(data)
        dest.parent.mkdir(parents=True, exist_ok=True)
        self.tmp.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix="blob-", dir=self.tmp)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.chmod(tmp, 0o444)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return digest, len(data)

    # -- reading ---------------------------------------------------------------------------

    def read_bytes(self, digest: str, name: str = "", ref: str = "") -> bytes:
        """The content of a blob, checked against its digest."""
        path = self.path(digest)
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            raise ArtifactCorrupted(name or str(path), digest, None, ref=ref) from None
        actual = hashlib.sha256(data).hexdigest()
        if actual != digest:
            raise ArtifactCorrupted(f"{path} ({name})" if name else str(path), digest, actual, ref=ref)
        return data

    def verify(self, digest: str, name: str = "", ref: str = "") -> Path:
        """Check a blob's content against its digest and return its path."""
        path = self.path(digest)
        try:
            actual = sha256_file(path)
        except FileNotFoundError:
            raise ArtifactCorrupted(name or str(path), digest, None, ref=ref) from None
        if actual != digest:
            raise ArtifactCorrupted(f"{path} ({name})" if name else str(path), digest, actual, ref=ref)
        return path

    def copy_to(self, digest: str, dest: Path, name: str = "", ref: str = "") -> None:
        """Copy a blob to ``dest``, checking its hash on the way."""
        src = self.path(digest)
        h = hashlib.sha256()
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(src, "rb") as fin, open(dest, "wb") as fout:
                while chunk := fin.read(CHUNK):
                    h.update(chunk)
                    fout.write(chunk)
        except FileNotFoundError as exc:
            if exc.filename == str(src):
                raise ArtifactCorrupted(name or str(src), digest, None, ref=ref) from None
            raise
        if h.hexdigest() != digest:
            dest.unlink(missing_ok=True)
            raise ArtifactCorrupted(f"{src} ({name})" if name else str(src), digest, h.hexdigest(), ref=ref)

    # -- housekeeping ----------------------------------------------------------------------

    def iter_digests(self) -> Iterator[tuple[str, Path]]:
        if not self.blobs.exists():
            return
        for sub in self.blobs.iterdir():
            if not sub.is_dir():
                continue
            for blob in sub.iterdir():
                yield sub.name + blob.name, blob

    def remove_unreferenced(self, referenced: set[str], grace_seconds: float) -> tuple[int, int]:
        """Delete blobs not in ``referenced`` and older than the grace period.

        Returns the number of blobs and bytes removed. Leftover staging folders older than the
        grace period (from processes killed mid-registration) are removed too.
        """
        cutoff = time.time() - grace_seconds
        count = freed = 0
        for digest, path in list(self.iter_digests()):
            if digest in referenced:
                continue
            try:
                st = path.stat()
                if st.st_mtime > cutoff:
                    continue
                path.unlink()
            except FileNotFoundError:
                continue
            count += 1
            freed += st.st_size
        if self.tmp.exists():
            for entry in self.tmp.iterdir():
                try:
                    if entry.stat().st_mtime > cutoff:
                        continue
                    if entry.is_dir():
                        shutil.rmtree(entry, ignore_errors=True)
                    else:
                        entry.unlink()
                except FileNotFoundError:
                    continue
        return count, freed
