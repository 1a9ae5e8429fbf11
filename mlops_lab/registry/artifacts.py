"""Content-addressed artifact stores: a local folder, or any S3-compatible object store.

Every file of every model version is stored once, as ``sha256/ab/cdef...`` under the store's root,
named by the SHA-256 of its content: identical content is stored once whatever the number of
versions that hold it. A blob becomes visible whole or not at all (in a folder: written to a
temporary file, then renamed; on object storage: a single PUT or a completed multipart upload), and
only then does the registry's transaction publish the version that names it. The hash is checked
again on every read.

The store is chosen by its URI (:func:`open_store`): a folder path, or ``s3://bucket/prefix``.
Object storage is reached through ``pyarrow.fs.S3FileSystem`` (credentials from the usual AWS
variables and files; the endpoint from the settings for stores that are not AWS's).
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import tempfile
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from ..errors import ArtifactCorrupted, InvalidInput, StorageError, StorageFull
from ..object_storage import s3_error, s3_filesystem, split_s3_uri

CHUNK = 1 << 20
#: A blob re-stored within this many seconds of its last write is not written again. Older ones are,
#: so that a gc running meanwhile (which removes only blobs older than its grace period) keeps a blob
#: about to be referenced again; gc's default grace (1 h) is well above it.
REFRESH_AFTER_S = 600.0


def storage_error(exc: OSError, what: str) -> StorageError:
    """Turn an ``OSError`` into the matching mlops_lab error (one that is already is kept)."""
    if isinstance(exc, StorageError):
        return exc
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


class ArtifactStore(ABC):
    """Blobs named by their SHA-256. Subclasses say where they live; checking is done here."""

    #: Where the store is, as users name it (a folder, ``s3://bucket/prefix``).
    uri: str

    def __init__(self, tmp: Path) -> None:
        self.tmp = Path(tmp)  # local folder where models are serialized before they are stored

    @staticmethod
    def key(digest: str) -> str:
        return f"sha256/{digest[:2]}/{digest[2:]}"

    def where(self, digest: str) -> str:
        """The blob's full name, for messages."""
        return f"{self.uri.rstrip('/')}/{self.key(digest)}"

    # -- what a store provides -------------------------------------------------------------

    @abstractmethod
    def exists(self, digest: str) -> bool: ...

    @abstractmethod
    def _store(self, src: Path | None, data: bytes | None, digest: str) -> None:
        """Make the blob visible whole, from a file (which the caller removes) or bytes; a blob
        already there is kept (and refreshed for gc)."""

    @abstractmethod
    def _open(self, digest: str) -> IO[bytes]:
        """The blob's content; ``FileNotFoundError`` when it is not there."""

    @abstractmethod
    def _list(self) -> Iterator[tuple[str, float, int]]:
        """Every blob: digest, modification time, size."""

    @abstractmethod
    def _delete(self, digest: str) -> None: ...

    def _failed(self, exc: OSError, what: str) -> StorageError:
        return storage_error(exc, what)

    # -- writing ---------------------------------------------------------------------------

    def staging_dir(self) -> Path:
        """A fresh private local folder to serialize a model into before it is stored."""
        self.tmp.mkdir(parents=True, exist_ok=True)
        return Path(tempfile.mkdtemp(prefix="stage-", dir=self.tmp))

    def put_file(self, src: Path) -> tuple[str, int]:
        """Store the file ``src``; return its digest and size. ``src`` is consumed."""
        digest = sha256_file(src)
        size = src.stat().st_size
        self._store(src, None, digest)
        src.unlink(missing_ok=True)
        return digest, size

    def put_bytes(self, data: bytes) -> tuple[str, int]:
        digest = hashlib.sha256(data).hexdigest()
        self._store(None, data, digest)
        return digest, len(data)

    # -- reading, always checked -----------------------------------------------------------

    def _stream(self, digest: str, name: str, ref: str, write) -> None:
        """Read a blob in chunks, hand each to ``write``, and check the digest at the end."""
        h = hashlib.sha256()
        try:
            with self._open(digest) as f:
                while chunk := f.read(CHUNK):
                    h.update(chunk)
                    write(chunk)
        except FileNotFoundError:
            raise ArtifactCorrupted(self._label(digest, name), digest, None, ref=ref) from None
        except StorageError:
            raise
        except OSError as exc:
            raise self._failed(exc, f"read {self.where(digest)}" + (f" ({name})" if name else "")) from None
        if h.hexdigest() != digest:
            raise ArtifactCorrupted(self._label(digest, name), digest, h.hexdigest(), ref=ref)

    def _label(self, digest: str, name: str) -> str:
        return f"{self.where(digest)} ({name})" if name else self.where(digest)

    def read_bytes(self, digest: str, name: str = "", ref: str = "") -> bytes:
        """The content of a blob, checked against its digest."""
        parts: list[bytes] = []
        self._stream(digest, name, ref, parts.append)
        return b"".join(parts)

    def verify(self, digest: str, name: str = "", ref: str = "") -> None:
        """Check a blob's content against its digest."""
        self._stream(digest, name, ref, lambda _chunk: None)

    def copy_to(self, digest: str, dest: Path, name: str = "", ref: str = "") -> None:
        """Copy a blob to the local file ``dest``, checking its hash on the way."""
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(dest, "wb") as out:
                self._stream(digest, name, ref, out.write)
        except BaseException:
            dest.unlink(missing_ok=True)
            raise

    # -- housekeeping ----------------------------------------------------------------------

    def digests(self) -> set[str]:
        """Every blob's digest."""
        try:
            return {d for d, _, _ in self._list()}
        except StorageError:
            raise
        except OSError as exc:
            raise self._failed(exc, f"list {self.uri}") from None

    def remove_unreferenced(self, referenced: set[str], grace_seconds: float) -> tuple[int, int]:
        """Delete blobs not in ``referenced`` and older than the grace period.

        Returns the number of blobs and bytes removed. Leftover staging folders older than the
        grace period (from processes killed mid-registration) are removed too.
        """
        cutoff = time.time() - grace_seconds
        count = freed = 0
        try:
            for digest, mtime, size in list(self._list()):
                if digest in referenced or mtime > cutoff:
                    continue
                try:
                    self._delete(digest)
                except FileNotFoundError:
                    continue
                count += 1
                freed += size
        except StorageError:
            raise
        except OSError as exc:
            raise self._failed(exc, f"clean up {self.uri}") from None
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


class LocalArtifactStore(ArtifactStore):
    """Blobs as read-only files under a folder."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.uri = str(self.root)
        self.blobs = self.root / "sha256"
        super().__init__(self.root / "tmp")  # same file system as the blobs: the rename is atomic

    def path(self, digest: str) -> Path:
        return self.blobs / digest[:2] / digest[2:]

    def exists(self, digest: str) -> bool:
        return self.path(digest).exists()

    def _store(self, src: Path | None, data: bytes | None, digest: str) -> None:
        dest = self.path(digest)
        if dest.exists():
            os.utime(dest)  # refresh for a concurrent gc (see REFRESH_AFTER_S)
            return
        dest.parent.mkdir(parents=True, exist_ok=True)
        if src is None:
            self.tmp.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix="blob-", dir=self.tmp)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)  # type: ignore[arg-type]
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            src = Path(tmp)
        os.chmod(src, 0o444)
        os.replace(src, dest)

    def _open(self, digest: str) -> IO[bytes]:
        return open(self.path(digest), "rb")

    def _list(self) -> Iterator[tuple[str, float, int]]:
        if not self.blobs.exists():
            return
        for sub in self.blobs.iterdir():
            if not sub.is_dir():
                continue
            for blob in sub.iterdir():
                try:
                    st = blob.stat()
                except FileNotFoundError:
                    continue
                yield sub.name + blob.name, st.st_mtime, st.st_size

    def _delete(self, digest: str) -> None:
        self.path(digest).unlink()


class S3ArtifactStore(ArtifactStore):
    """Blobs as objects under ``s3://bucket/prefix`` of any S3-compatible store."""

    def __init__(self, uri: str, tmp: Path, *, endpoint_url: str | None = None) -> None:
        super().__init__(tmp)
        self.uri = uri.rstrip("/")
        self.bucket, self.prefix = split_s3_uri(uri)
        self.endpoint_url = endpoint_url
        self._fs = None

    @property
    def fs(self):
        if self._fs is None:
            self._fs = s3_filesystem(self.endpoint_url)
        return self._fs

    def _path(self, digest: str) -> str:
        return "/".join(p for p in (self.bucket, self.prefix, self.key(digest)) if p)

    def _failed(self, exc: OSError, what: str) -> StorageError:
        return s3_error(exc, what, self.uri, self.endpoint_url)

    def exists(self, digest: str) -> bool:
        from pyarrow.fs import FileType

        try:
            return self.fs.get_file_info(self._path(digest)).type == FileType.File
        except OSError as exc:
            raise self._failed(exc, f"look up {self.where(digest)}") from None

    def _store(self, src: Path | None, data: bytes | None, digest: str) -> None:
        from pyarrow.fs import FileType

        path = self._path(digest)
        try:
            info = self.fs.get_file_info(path)
            if info.type == FileType.File and info.mtime is not None and \
                    time.time() - info.mtime.timestamp() < REFRESH_AFTER_S:
                return
            # Written straight to its final name: an object appears whole (one PUT, or a multipart
            # upload completed at close) or not at all, and identical content has one name.
            with self.fs.open_output_stream(path, metadata={"Content-Type": "application/octet-stream"}) as out:
                if src is None:
                    out.write(data)
                else:
                    with open(src, "rb") as f:
                        while chunk := f.read(8 * CHUNK):
                            out.write(chunk)
        except OSError as exc:
            raise self._failed(exc, f"store {self.where(digest)}") from None

    def _open(self, digest: str) -> IO[bytes]:
        return self.fs.open_input_stream(self._path(digest))

    def _list(self) -> Iterator[tuple[str, float, int]]:
        from pyarrow.fs import FileSelector, FileType

        root = "/".join(p for p in (self.bucket, self.prefix, "sha256") if p)
        for info in self.fs.get_file_info(FileSelector(root, recursive=True, allow_not_found=True)):
            parts = info.path[len(root) + 1:].split("/")
            # Only sha256/ab/<62 hex>: some servers list an emptied folder as an object.
            if info.type != FileType.File or len(parts) != 2 or len(parts[0]) != 2 or len(parts[1]) != 62:
                continue
            if info.mtime is None or info.mtime.year <= 1970:
                # Some servers (rclone) list a just-written object without its time: ask for it.
                info = self.fs.get_file_info(info.path)
            # A time the server does not give at all counts as now: gc keeps what it cannot date.
            mtime = info.mtime.timestamp() if info.mtime is not None and info.mtime.year > 1970 else time.time()
            yield parts[0] + parts[1], mtime, info.size or 0

    def _delete(self, digest: str) -> None:
        from pyarrow.fs import FileType

        path = self._path(digest)
        try:
            self.fs.delete_file(path)
        except OSError:
            # pyarrow then writes a marker for the emptied parent folder, which some servers
            # (rclone) refuse; the blob itself is gone, and that is all gc needs.
            if self.fs.get_file_info(path).type != FileType.NotFound:
                raise


def folder_intact(folder: Path, files: list[tuple[str, str]]) -> bool:
    """Whether ``folder`` holds each ``(path, sha256)`` with that content."""
    for path, digest in files:
        try:
            if sha256_file(folder / path) != digest:
                return False
        except OSError:
            return False
    return True


def unpack(store: ArtifactStore, files: list[tuple[str, str]], dest: Path, ref: str,
           extra: dict[str, bytes] | None = None) -> Path:
    """The blobs ``files`` (``(path, sha256)``) of version ``ref``, each checked, as the folder
    ``dest``, which appears whole or not at all (a temporary sibling, then renamed), with the small
    ``extra`` files beside them. A folder already there and intact is kept (another process
    unpacked it first)."""
    if dest.is_dir():
        if folder_intact(dest, files):
            return dest
        shutil.rmtree(dest, ignore_errors=True)
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=dest.parent))
        try:
            for path, digest in files:
                store.copy_to(digest, tmp / path, name=path, ref=ref)
            for path, data in (extra or {}).items():
                (tmp / path).write_bytes(data)
            try:
                os.replace(tmp, dest)
            except OSError:
                if not folder_intact(dest, files):
                    raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    except OSError as exc:
        raise storage_error(exc, f"unpack {ref} into {dest}") from None
    return dest


def open_store(uri: str, home: Path, endpoint_url: str | None = None) -> ArtifactStore:
    """The artifact store a URI names: a folder or ``s3://bucket/prefix``."""
    scheme = uri.split("://", 1)[0].lower() if "://" in uri else ""
    builder = _STORES.get(scheme)
    if builder is None:
        raise InvalidInput(f"unknown artifact store {uri!r}: scheme {scheme!r} is not one mlops_lab knows",
                           hint="use a folder or s3://bucket/prefix")
    return builder(uri, home, endpoint_url)


#: scheme -> builder; a folder has no scheme.
_STORES = {
    "": lambda uri, home, endpoint: LocalArtifactStore(Path(uri)),
    "s3": lambda uri, home, endpoint: S3ArtifactStore(uri, home / "tmp" / "artifacts", endpoint_url=endpoint),
}
