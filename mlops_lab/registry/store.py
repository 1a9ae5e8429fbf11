"""The registry store: metadata in SQL (SQLite by default, PostgreSQL for teams), artifacts as
content-addressed blobs in the artifact store its settings name (a folder, or S3-compatible object
storage; see :mod:`.artifacts`).

One :class:`Registry` per (home folder, database URL). Every operation runs in one database
transaction; writes on SQLite take the write lock when they begin (``BEGIN IMMEDIATE``) so that
concurrent processes queue instead of failing, and version numbers are allocated inside that
transaction, gap-free, on every backend.
"""

from __future__ import annotations

from pathlib import Path

from ..settings import Settings
from .alert_records import AlertRecords
from .artifacts import open_store, storage_error
from .cache import LocalCache
from .database import Database, _make_engine
from .deployment_records import DeploymentRecords
from .versions import Versions


class Registry(Database, Versions, LocalCache, DeploymentRecords, AlertRecords):
    """A model registry rooted at ``home``.

    Most users call the module-level functions (``mlops_lab.register_model`` ...) or a
    :class:`~mlops_lab.Workspace`'s methods, which use the registry of the workspace in force.
    """

    def __init__(self, home: Path | str | None = None, url: str | None = None, *, settings: Settings | None = None) -> None:
        if settings is None:
            if home is None:
                raise TypeError("Registry needs a home folder or settings")
            # Built on its own: exactly what the arguments say, nothing from the environment.
            settings = Settings.load(home=home, db=url, env={})
        elif home is not None or url is not None:
            raise TypeError("give either home and url or settings, not both")
        self.settings = settings
        self.workspace = None  # the Workspace that owns it (Workspace.of builds one on demand)
        self.home = settings.home
        try:
            self.home.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise storage_error(exc, f"create the home folder {self.home}") from None
        self.url = settings.db
        self.artifacts = open_store(settings.artifacts, settings.home, settings.s3_endpoint_url)
        self.cache = self.home / "cache"
        self.engine = _make_engine(self.url)
        self.is_sqlite = self.engine.dialect.name == "sqlite"
        self._init_schema()

    def __repr__(self) -> str:
        return f"<Registry home={str(self.home)!r} db={self.engine.url.render_as_string()!r}>"


