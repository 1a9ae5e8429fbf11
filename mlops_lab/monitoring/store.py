"""Where collected data lives: a local folder or a prefix of an S3-compatible object store.

One :class:`CollectionStore` names the place (the settings' ``collection``, or a deployment's
part of it) and gives the readers a ``pyarrow.fs`` file system and paths in it, so
``pyarrow.dataset`` pushes the same filters down on either store. Both hold the same layout:
``<deployment>/{requests,feedback,drops}/date=YYYY-MM-DD/part-*.parquet``.

Writes are atomic on both: on a folder, a temporary name renamed into place; on object storage,
one PUT of the whole file, which the store publishes whole or not at all (there is no rename).
Only a folder has the staging lane (:mod:`.staging`: staged files compacted at idle time),
which needs a local disk; a server collecting to object storage writes Parquet files directly.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..errors import InvalidInput, StorageError


class CollectionStore:
    """A collection store, or one deployment's part of it (:meth:`deployment`)."""

    def __init__(self, uri: str, endpoint_url: str | None = None, _fs: Any = None) -> None:
        self.uri = str(uri).rstrip("/") or "/"
        self.endpoint_url = endpoint_url
        scheme = self.uri.split("://", 1)[0].lower() if "://" in self.uri else ""
        if scheme not in ("", "file", "s3"):
            raise InvalidInput(f"unknown collection store {uri!r}: scheme {scheme!r} is not one mlops_lab knows",
                               hint="use a folder or s3://bucket/prefix")
        self.local = scheme != "s3"
        if self.local:
            self._base = str(Path(self.uri.split("://", 1)[1] if scheme else self.uri).absolute())
        else:
            from ..object_storage import split_s3_uri

            bucket, prefix = split_s3_uri(self.uri)
            self.bucket = bucket
            self._base = f"{bucket}/{prefix}" if prefix else bucket
        self._fs = _fs

    @classmethod
    def of(cls, settings) -> CollectionStore:
        """The collection store the settings name."""
        return cls(settings.collection, settings.s3_endpoint_url)

    def deployment(self, name: str) -> CollectionStore:
        """The part of the store that holds deployment ``name``'s data (sharing the file system)."""
        return CollectionStore(f"{self.uri}/{name}", self.endpoint_url, _fs=self._fs if not self.local else None)

    def __repr__(self) -> str:
        return f"<CollectionStore {self.uri}>"

    @property
    def fs(self):
        if self._fs is None:
            if self.local:
                from pyarrow.fs import LocalFileSystem

                self._fs = LocalFileSystem()
            else:
                from ..object_storage import s3_filesystem

                self._fs = s3_filesystem(self.endpoint_url)
        return self._fs

    @property
    def folder(self) -> Path:
        """The local folder (a folder store only)."""
        assert self.local, "object storage has no local folder"
        return Path(self._base)

    def path(self, *parts: str) -> str:
        """A path in :attr:`fs`."""
        return "/".join((self._base, *parts))

    def failed(self, exc: OSError, what: str) -> StorageError:
        """``exc`` as one line naming this store."""
        if self.local:
            from ..registry.artifacts import storage_error

            return storage_error(exc, what)
        from ..object_storage import s3_error

        return s3_error(exc, what, self.uri, self.endpoint_url)

    def exists(self, *parts: str) -> bool:
        if self.local:
            return os.path.exists(self.path(*parts))
        from pyarrow.fs import FileType

        try:
            return self.fs.get_file_info(self.path(*parts)).type != FileType.NotFound
        except OSError as exc:
            raise self.failed(exc, f"read {self.uri}") from None

    def check(self) -> None:
        """Raise a one-line :class:`StorageError` if the store cannot be reached or written to
        (a missing bucket, refused credentials, a server that does not answer, a read-only folder)."""
        if self.local:
            probe = Path(self._base)
            while not probe.exists() and probe != probe.parent:
                probe = probe.parent
            if not os.access(probe, os.W_OK):
                raise StorageError(f"cannot write collected data to {self.uri}: {probe} is not writable",
                                   hint="set MLOPS_LAB_COLLECTION to a folder this user can write to")
            return
        from pyarrow.fs import FileType

        try:
            info = self.fs.get_file_info(self.bucket)
        except OSError as exc:
            raise self.failed(exc, f"reach the collection store {self.uri}") from None
        if info.type == FileType.NotFound:
            raise StorageError(f"could not reach the collection store {self.uri}: bucket {self.bucket!r} does not exist "
                               f"at {self.endpoint_url or 'AWS'}", hint="create the bucket, or point MLOPS_LAB_COLLECTION elsewhere")

    def write_parquet(self, table: Any, *parts: str) -> str:
        """Write ``table`` as the Parquet file ``parts`` (the last one its name), atomically."""
        from .records import encode_parquet, write_parquet

        if self.local:
            return str(write_parquet(table, Path(self.path(*parts[:-1])), parts[-1]))
        mem, size = encode_parquet(table)
        path = self.path(*parts)
        try:
            with self.fs.open_output_stream(path) as out:  # one PUT at close: whole or nothing
                out.write(memoryview(mem)[:size])
        except OSError as exc:
            raise self.failed(exc, f"write {self.uri}/{'/'.join(parts)}") from None
        return path

    def spec(self) -> dict[str, Any]:
        """What a server needs to write here (``CollectConfig``'s ``folder`` and ``endpoint_url``)."""
        return {"folder": self.uri if not self.local else self._base, "endpoint_url": self.endpoint_url}
