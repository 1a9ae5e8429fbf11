"""The registry store: metadata in SQL (SQLite by default, PostgreSQL for teams), artifacts as
content-addressed blobs in the artifact store its settings name (a folder, or S3-compatible object
storage; see :mod:`.artifacts`).

One :class:`Registry` per (home folder, database URL). Every operation runs in one database
transaction; writes on SQLite take the write lock when they begin (``BEGIN IMMEDIATE``) so that
concurrent processes queue instead of failing, and version numbers are allocated inside that
transaction, gap-free, on every backend.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import shutil
import tempfile
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import (
    String,
    and_,
    bindparam,
    cast,
    create_engine,
    delete,
    event,
    func,
    insert,
    inspect,
    literal,
    null,
    or_,
    select,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, IntegrityError, OperationalError

from .._faults import crashpoint
from ..errors import (
    AliasNotFound,
    AlreadyExists,
    DeploymentNotFound,
    InvalidInput,
    InvalidModel,
    ModelNotFound,
    RegistrySchemaError,
    StorageError,
    VersionInUse,
    VersionNotFound,
)
from ..refs import ModelRef, check_alias, check_name, check_tag_key, parse_ref
from ..settings import Settings
from . import schema as S
from .artifacts import open_store, storage_error
from .entities import (
    ArtifactFile,
    DeploymentRecord,
    DeploymentRevision,
    ModelVersion,
    RegisteredModel,
)


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def _loads(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


def _str_map(values: Mapping[str, Any] | None, kind: str) -> dict[str, str]:
    if values is None:
        return {}
    if not isinstance(values, Mapping):
        raise InvalidInput(f"{kind}s must be a dict of key -> value, not {type(values).__name__}")
    out = {}
    for key, value in values.items():
        check_tag_key(key, f"{kind} key")
        if value is None:
            raise InvalidInput(f"{kind} {key!r} has no value", hint=f"give every {kind} a value")
        out[key] = value if isinstance(value, str) else str(value)
    return out


def _make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 60})

        @event.listens_for(engine, "connect")
        def _on_connect(dbapi_conn, _record):  # pragma: no cover - exercised by every test
            # Let SQLAlchemy's "begin" event issue BEGIN itself, so writes can BEGIN IMMEDIATE.
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.close()

        @event.listens_for(engine, "begin")
        def _on_begin(conn):  # pragma: no cover - exercised by every test
            write = conn.get_execution_options().get("mlops_write", False)
            conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")

        return engine
    return create_engine(url, pool_pre_ping=True)


class Registry:
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

    def close(self) -> None:
        self.engine.dispose()

    # -- transactions ----------------------------------------------------------------------

    @contextmanager
    def _tx(self, write: bool) -> Iterator[Connection]:
        try:
            with self.engine.connect() as conn:
                if write:
                    conn = conn.execution_options(mlops_write=True)
                with conn.begin():
                    yield conn
        except OperationalError as exc:
            raise self._db_error(exc) from None

    def _write(self):
        return self._tx(True)

    def _read(self):
        return self._tx(False)

    def _db_error(self, exc: DBAPIError) -> StorageError:
        text = str(exc.orig) if exc.orig is not None else str(exc)
        if "database or disk is full" in text or "No space left" in text:
            from ..errors import StorageFull

            return StorageFull(
                f"no space left for the registry database: {text}",
                hint="free some disk space; nothing was recorded",
            )
        if "file is not a database" in text:
            return RegistrySchemaError(f"{self.url} is not an mlops_lab registry: {text}")
        return StorageError(f"registry database error: {text}")

    def _init_schema(self) -> None:
        try:
            with self._write() as conn:
                if conn.dialect.name == "postgresql":
                    # Several processes may open a new registry at once: create it once.
                    conn.exec_driver_sql("SELECT pg_advisory_xact_lock(7275011)")
                insp = inspect(conn)
                if not insp.has_table(S.schema_info.name):
                    stray = set(insp.get_table_names()) & set(S.metadata.tables)
                    if stray:
                        raise RegistrySchemaError(
                            f"{self.url} has registry tables ({', '.join(sorted(stray))}) "
                            "but no schema version: it was not made by mlops_lab"
                        )
                    S.metadata.create_all(conn)
                    conn.execute(insert(S.schema_info).values(id=1, version=S.SCHEMA_VERSION))
                    return
                version = conn.execute(select(S.schema_info.c.version)).scalar_one()
                if version > S.SCHEMA_VERSION:
                    raise RegistrySchemaError(
                        f"the registry at {self.url} has schema version {version}, newer than "
                        f"this mlops_lab understands ({S.SCHEMA_VERSION})",
                        hint="upgrade mlops_lab",
                    )
                for target in range(version + 1, S.SCHEMA_VERSION + 1):
                    S.MIGRATIONS[target](conn)
                    conn.execute(update(S.schema_info).values(version=target))
        except DBAPIError as exc:
            raise self._db_error(exc) from None

    @property
    def schema_version(self) -> int:
        with self._read() as conn:
            return conn.execute(select(S.schema_info.c.version)).scalar_one()

    # -- registration ----------------------------------------------------------------------

    def register_model(
        self,
        model: Any,
        name: str,
        *,
        tags: Mapping[str, Any] | None = None,
        properties: Mapping[str, Any] | None = None,
        description: str = "",
        sample_input: Any = None,
        baseline: Any = None,
        requirements: Iterable[str] | str | os.PathLike | None = None,
        lineage: Mapping[str, Any] | None = None,
        entry_script: str | os.PathLike | None = None,
        allow_missing: Any = None,
    ) -> ModelVersion:
        from .environment import capture_lineage, capture_requirements
        from .flavors import package
        from .signature import infer_signature, input_example, mark_missing

        check_name(name)
        tag_map = _str_map(tags, "tag")
        prop_map = _str_map(properties, "property")
        if lineage is not None and not isinstance(lineage, Mapping):
            raise InvalidInput(f"lineage must be a dict, not {type(lineage).__name__}")
        signature = example = None
        if sample_input is not None:
            signature = mark_missing(infer_signature(sample_input), sample_input, baseline, allow_missing)
            example = input_example(sample_input)
        elif allow_missing not in (None, False):
            raise InvalidInput("allow_missing needs a sample_input: it describes the signature's columns")

        try:
            staging = self.artifacts.staging_dir()
        except OSError as exc:
            raise storage_error(exc, f"register {name!r}") from None
        try:
            packaged = package(model, staging, entry_script)
            crashpoint("packaged")
            files: list[ArtifactFile] = []
            for path in sorted(p for p in staging.rglob("*") if p.is_file()):
                rel = path.relative_to(staging).as_posix()
                digest, size = self.artifacts.put_file(path)
                files.append(ArtifactFile(rel, digest, size))
                crashpoint("blob_stored")
            if not files:
                raise InvalidModel(f"{model} holds no files to register")
            baseline_sha = None
            if baseline is not None:
                baseline_sha, _ = self.artifacts.put_bytes(_to_parquet(baseline))
            if requirements is None:
                reqs = capture_requirements(packaged.source) if packaged.source is not None else []
            else:
                reqs = _read_requirements(requirements)
            lin = capture_lineage(dict(lineage) if lineage else None)
            if packaged.flavor != "python" and isinstance(model, (str, os.PathLike)):
                lin.setdefault("source_path", str(Path(model).resolve()))
            size = sum(f.size for f in files)
            now = time.time()
            try:
                with self._write() as conn:
                    version = self._allocate_version(conn, name, now)
                    conn.execute(
                        insert(S.model_versions).values(
                            name=name,
                            version=version,
                            created_at=now,
                            description=description or "",
                            flavor=packaged.flavor,
                            loader=_dumps(packaged.loader),
                            signature=_dumps(signature) if signature is not None else None,
                            input_example=_dumps(example) if example is not None else None,
                            requirements=_dumps(reqs),
                            lineage=_dumps(lin),
                            baseline_sha256=baseline_sha,
                            size=size,
                        )
                    )
                    conn.execute(
                        insert(S.version_files),
                        [
                            {"name": name, "version": version, "path": f.path, "sha256": f.sha256, "size": f.size}
                            for f in files
                        ],
                    )
                    if tag_map:
                        conn.execute(
                            insert(S.version_tags),
                            [{"name": name, "version": version, "key": k, "value": v} for k, v in tag_map.items()],
                        )
                    if prop_map:
                        conn.execute(
                            insert(S.version_properties),
                            [{"name": name, "version": version, "key": k, "value": v} for k, v in prop_map.items()],
                        )
                    crashpoint("before_commit")
            except DBAPIError as exc:
                raise self._db_error(exc) from None
            crashpoint("after_commit")
        except OSError as exc:
            raise storage_error(exc, f"registering {name!r}") from None
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return self._own(ModelVersion(
            name=name,
            version=version,
            created_at=now,
            description=description or "",
            flavor=packaged.flavor,
            loader=packaged.loader,
            tags=tag_map,
            properties=prop_map,
            aliases=[],
            signature=signature,
            input_example=example,
            requirements=reqs,
            lineage=lin,
            files=files,
            size=size,
            baseline_sha256=baseline_sha,
        ))

    def _own(self, mv: ModelVersion) -> ModelVersion:
        # A version acts on the registry it was read from (see ModelVersion.load).
        object.__setattr__(mv, "_registry", self)
        return mv

    def _allocate_version(self, conn: Connection, name: str, now: float) -> int:
        """Next version of ``name``, inside the caller's write transaction.

        The UPDATE takes the row lock (PostgreSQL) or runs under the database write lock
        (SQLite ``BEGIN IMMEDIATE``), so concurrent registrations are serialized here, and a
        transaction that rolls back gives its number back.
        """
        dialect = conn.dialect.name
        values = {"name": name, "description": "", "created_at": now, "updated_at": now, "last_version": 0}
        if dialect in ("sqlite", "postgresql"):
            if dialect == "sqlite":
                from sqlalchemy.dialects.sqlite import insert as dialect_insert
            else:
                from sqlalchemy.dialects.postgresql import insert as dialect_insert
            conn.execute(dialect_insert(S.registered_models).values(**values).on_conflict_do_nothing())
        else:  # pragma: no cover - other SQL backends
            found = conn.execute(
                select(S.registered_models.c.name).where(S.registered_models.c.name == name)
            ).first()
            if found is None:
                try:
                    with conn.begin_nested():
                        conn.execute(insert(S.registered_models).values(**values))
                except IntegrityError:
                    pass
        rm = S.registered_models
        conn.execute(
            update(rm).where(rm.c.name == name).values(last_version=rm.c.last_version + 1, updated_at=now)
        )
        return conn.execute(select(rm.c.last_version).where(rm.c.name == name)).scalar_one()

    # -- resolving references --------------------------------------------------------------

    def _suggest(self, conn: Connection, name: str) -> list[str]:
        names = conn.execute(select(S.registered_models.c.name)).scalars().all()
        lower = {n.lower(): n for n in names}
        close = difflib.get_close_matches(name.lower(), list(lower), n=3, cutoff=0.6)
        return [lower[c] for c in close]

    def _resolve(self, conn: Connection, ref: Any) -> tuple[str, int]:
        r: ModelRef = parse_ref(ref)
        mv = S.model_versions
        if r.version is not None:
            found = conn.execute(
                select(mv.c.version).where(mv.c.name == r.name, mv.c.version == r.version)
            ).first()
            if found is not None:
                return r.name, r.version
            self._raise_missing_version(conn, r.name, r.version)
        if r.alias is not None:
            al = S.model_aliases
            version = conn.execute(
                select(al.c.version).where(al.c.name == r.name, al.c.alias == r.alias)
            ).scalar()
            if version is not None:
                return r.name, version
            self._require_model(conn, r.name)
            existing = conn.execute(select(al.c.alias).where(al.c.name == r.name)).scalars().all()
            raise AliasNotFound(r.name, r.alias, sorted(existing))
        version = conn.execute(select(func.max(mv.c.version)).where(mv.c.name == r.name)).scalar()
        if version is None:
            self._require_model(conn, r.name)
            raise VersionNotFound(r.name, 1, [])
        return r.name, version

    def _require_model(self, conn: Connection, name: str) -> None:
        found = conn.execute(
            select(S.registered_models.c.name).where(S.registered_models.c.name == name)
        ).first()
        if found is None:
            raise ModelNotFound(name, self._suggest(conn, name))

    def _raise_missing_version(self, conn: Connection, name: str, version: int) -> None:
        self._require_model(conn, name)
        existing = conn.execute(
            select(S.model_versions.c.version).where(S.model_versions.c.name == name)
        ).scalars().all()
        raise VersionNotFound(name, version, existing)

    def resolve(self, ref: Any) -> str:
        """The ``"name:version"`` a reference points to now."""
        with self._read() as conn:
            name, version = self._resolve(conn, ref)
        return f"{name}:{version}"

    # -- reading ---------------------------------------------------------------------------

    def _hydrate(self, conn: Connection, rows: list[Any]) -> list[ModelVersion]:
        if not rows:
            return []
        names = sorted({r.name for r in rows})
        keys = {(r.name, r.version) for r in rows}

        if len(keys) <= _EXACT_KEYS:
            params: dict[str, Any] = {}
            for i, (n, v) in enumerate(sorted(keys)):
                params[f"n{i}"] = n
                params[f"v{i}"] = v
            query = _attachments_query(len(keys))
        else:
            params = {"names": names} if len(names) <= 500 else {}
            query = _attachments_query(-1 if len(names) <= 500 else 0)
        tags: dict[tuple[str, int], list[Any]] = {}
        props: dict[tuple[str, int], list[Any]] = {}
        aliases: dict[tuple[str, int], list[Any]] = {}
        files: dict[tuple[str, int], list[Any]] = {}
        deps: dict[tuple[str, int], list[Any]] = {}
        sinks = {"t": tags, "p": props, "a": aliases, "f": files, "d": deps}
        for kind, n, v, a, b, c in conn.execute(query, params):
            k = (n, v)
            if k not in keys:
                continue
            if kind == "f":
                files.setdefault(k, []).append((a, b, int(c)))
            elif kind in ("t", "p"):
                sinks[kind].setdefault(k, []).append((a, b))
            else:
                sinks[kind].setdefault(k, []).append((a,))
        out = []
        for r in rows:
            k = (r.name, r.version)
            out.append(self._own(
                ModelVersion(
                    name=r.name,
                    version=r.version,
                    created_at=r.created_at,
                    description=r.description,
                    flavor=r.flavor,
                    loader=_loads(r.loader),
                    tags=dict(tags.get(k, [])),
                    properties=dict(props.get(k, [])),
                    aliases=sorted(a for (a,) in aliases.get(k, [])),
                    signature=_loads(r.signature),
                    input_example=_loads(r.input_example),
                    requirements=_loads(r.requirements),
                    lineage=_loads(r.lineage),
                    files=sorted((ArtifactFile(*f) for f in files.get(k, [])), key=lambda f: f.path),
                    size=r.size,
                    baseline_sha256=r.baseline_sha256,
                    deployments=sorted(d for (d,) in deps.get(k, [])),
                )
            ))
        return out

    def get_version(self, ref: Any) -> ModelVersion:
        with self._read() as conn:
            name, version = self._resolve(conn, ref)
            mv = S.model_versions
            row = conn.execute(select(mv).where(mv.c.name == name, mv.c.version == version)).one()
            return self._hydrate(conn, [row])[0]

    def list_models(self, name_contains: str | None = None) -> list[RegisteredModel]:
        rm, mv, al = S.registered_models, S.model_versions, S.model_aliases
        with self._read() as conn:
            q = (
                select(
                    rm.c.name, rm.c.description, rm.c.created_at, rm.c.updated_at,
                    func.max(mv.c.version), func.count(mv.c.version),
                )
                .select_from(rm.outerjoin(mv, mv.c.name == rm.c.name))
                .group_by(rm.c.name, rm.c.description, rm.c.created_at, rm.c.updated_at)
                .order_by(rm.c.name)
            )
            if name_contains:
                q = q.where(func.lower(rm.c.name).contains(name_contains.lower(), autoescape=True))
            rows = conn.execute(q).all()
            alias_rows = conn.execute(select(al.c.name, al.c.alias, al.c.version)).all()
        aliases: dict[str, dict[str, int]] = {}
        for n, a, v in alias_rows:
            aliases.setdefault(n, {})[a] = v
        return [
            RegisteredModel(
                name=r[0], description=r[1], created_at=r[2], updated_at=r[3],
                latest_version=r[4], versions=r[5], aliases=aliases.get(r[0], {}),
            )
            for r in rows
        ]

    def search_model_versions(
        self,
        name: str | None = None,
        tags: Mapping[str, Any] | None = None,
        properties: Mapping[str, Any] | None = None,
        max_results: int | None = None,
    ) -> list[ModelVersion]:
        mv = S.model_versions
        q = select(mv)
        if name is not None:
            if "*" in name or "?" in name:
                pattern = (
                    name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
                    .replace("*", "%").replace("?", "_")
                )
                q = q.where(mv.c.name.like(pattern, escape="\\"))
            else:
                q = q.where(mv.c.name == name)
        for table, values, kind in ((S.version_tags, tags, "tag"), (S.version_properties, properties, "property")):
            if not values:
                continue
            if not isinstance(values, Mapping):
                raise InvalidInput(f"{kind}s must be a dict of key -> value")
            for key, value in values.items():
                check_tag_key(key, f"{kind} key")
                # Driven by the (key, value) index: the matching versions come from the tag table.
                cond = [table.c.key == key]
                if value is not None:
                    cond.append(table.c.value == (value if isinstance(value, str) else str(value)))
                q = q.where(
                    tuple_(mv.c.name, mv.c.version).in_(select(table.c.name, table.c.version).where(*cond))
                )
        q = q.order_by(mv.c.name, mv.c.version.desc())
        if max_results is not None:
            q = q.limit(max_results)
        with self._read() as conn:
            rows = conn.execute(q).all()
            return self._hydrate(conn, rows)

    # -- changing --------------------------------------------------------------------------

    def set_tags(self, ref: Any, tags: Mapping[str, Any]) -> ModelVersion:
        tag_map = _str_map(tags, "tag")
        t = S.version_tags
        with self._write() as conn:
            name, version = self._resolve(conn, ref)
            for key, value in tag_map.items():
                changed = conn.execute(
                    update(t).where(t.c.name == name, t.c.version == version, t.c.key == key).values(value=value)
                ).rowcount
                if not changed:
                    conn.execute(insert(t).values(name=name, version=version, key=key, value=value))
        return self.get_version(f"{name}:{version}")

    def delete_tag(self, ref: Any, key: str) -> ModelVersion:
        check_tag_key(key)
        t = S.version_tags
        with self._write() as conn:
            name, version = self._resolve(conn, ref)
            conn.execute(delete(t).where(t.c.name == name, t.c.version == version, t.c.key == key))
        return self.get_version(f"{name}:{version}")

    def set_description(self, ref: Any, description: str) -> ModelVersion:
        mv = S.model_versions
        with self._write() as conn:
            name, version = self._resolve(conn, ref)
            conn.execute(
                update(mv).where(mv.c.name == name, mv.c.version == version).values(description=description or "")
            )
        return self.get_version(f"{name}:{version}")

    def set_alias(self, name: str, alias: str, version: int | str) -> ModelVersion:
        check_name(name)
        check_alias(alias)
        if isinstance(version, str) and version.isdigit():
            version = int(version)
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise InvalidInput(f"version must be a positive integer, not {version!r}")
        al = S.model_aliases
        with self._write() as conn:
            self._resolve(conn, ModelRef(name, version))
            changed = conn.execute(
                update(al).where(al.c.name == name, al.c.alias == alias).values(version=version)
            ).rowcount
            if not changed:
                conn.execute(insert(al).values(name=name, alias=alias, version=version))
        return self.get_version(ModelRef(name, version))

    def delete_alias(self, name: str, alias: str) -> None:
        check_name(name)
        al = S.model_aliases
        with self._write() as conn:
            gone = conn.execute(delete(al).where(al.c.name == name, al.c.alias == alias)).rowcount
            if not gone:
                self._require_model(conn, name)
                existing = conn.execute(select(al.c.alias).where(al.c.name == name)).scalars().all()
                raise AliasNotFound(name, alias, sorted(existing))

    def delete_model_version(self, ref: Any) -> str:
        r = parse_ref(ref)
        if r.version is None:
            raise InvalidInput(
                f"delete_model_version needs an explicit version, got {str(r)!r}",
                hint=f"use '{r.name}:VERSION'",
            )
        mv, dm = S.model_versions, S.deployment_models
        with self._write() as conn:
            name, version = self._resolve(conn, r)
            users = conn.execute(
                select(dm.c.deployment).where(dm.c.name == name, dm.c.version == version)
            ).scalars().all()
            if users:
                raise VersionInUse(f"{name}:{version}", sorted(set(users)))
            conn.execute(delete(mv).where(mv.c.name == name, mv.c.version == version))
        return f"{name}:{version}"

    def delete_model(self, name: str) -> list[str]:
        """Delete a model and all its versions; refused if any version is deployed."""
        check_name(name)
        rm, dm = S.registered_models, S.deployment_models
        with self._write() as conn:
            self._require_model(conn, name)
            users = conn.execute(
                select(dm.c.deployment, dm.c.version).where(dm.c.name == name)
            ).all()
            if users:
                d, v = users[0]
                raise VersionInUse(f"{name}:{v}", sorted({u[0] for u in users}))
            versions = conn.execute(
                select(S.model_versions.c.version).where(S.model_versions.c.name == name)
            ).scalars().all()
            conn.execute(delete(rm).where(rm.c.name == name))
        return [f"{name}:{v}" for v in sorted(versions)]

    # -- artifacts -------------------------------------------------------------------------

    def _manifest_digest(self, files: list[ArtifactFile]) -> str:
        h = hashlib.sha256()
        for f in sorted(files, key=lambda f: f.path):
            h.update(f"{f.path}\0{f.sha256}\0{f.size}\n".encode())
        return h.hexdigest()

    def model_path(self, ref: Any) -> Path:
        """A folder holding the version's files, checked against their hashes."""
        return self.materialize(self.get_version(ref))

    def materialize(self, mv: ModelVersion) -> Path:
        folder = self.cache / self._manifest_digest(mv.files)
        if folder.is_dir():
            if self._cache_intact(folder, mv.files):
                return folder
            shutil.rmtree(folder, ignore_errors=True)
        try:
            self.cache.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.cache))
            try:
                for f in mv.files:
                    self.artifacts.copy_to(f.sha256, tmp / f.path, name=f.path, ref=mv.ref)
                try:
                    os.replace(tmp, folder)
                except OSError:
                    # Another process materialized it first; use theirs if intact.
                    if not self._cache_intact(folder, mv.files):
                        raise
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError as exc:
            raise storage_error(exc, f"unpack {mv.ref}") from None
        return folder

    def _cache_intact(self, folder: Path, files: list[ArtifactFile]) -> bool:
        from .artifacts import sha256_file

        for f in files:
            try:
                if sha256_file(folder / f.path) != f.sha256:
                    return False
            except OSError:
                return False
        return True

    def read_file(self, mv: ModelVersion, path: str) -> bytes:
        for f in mv.files:
            if f.path == path:
                return self.artifacts.read_bytes(f.sha256, name=f.path, ref=mv.ref)
        raise InvalidModel(f"{mv.ref} has no file {path!r}")

    def download_model(self, ref: Any, folder: str | os.PathLike) -> Path:
        mv = self.get_version(ref)
        dest = Path(folder)
        try:
            dest.mkdir(parents=True, exist_ok=True)
            for f in mv.files:
                self.artifacts.copy_to(f.sha256, dest / f.path, name=f.path, ref=mv.ref)
            meta = {
                "name": mv.name,
                "version": mv.version,
                "flavor": mv.flavor,
                "loader": mv.loader,
                "signature": mv.signature,
                "input_example": mv.input_example,
                "requirements": mv.requirements,
                "lineage": mv.lineage,
                "tags": mv.tags,
                "properties": mv.properties,
                "description": mv.description,
                "files": [{"path": f.path, "sha256": f.sha256, "size": f.size} for f in mv.files],
            }
            from .flavors import METADATA_FILE

            (dest / METADATA_FILE).write_bytes(orjson.dumps(meta, option=orjson.OPT_INDENT_2))
            if mv.requirements:
                (dest / "requirements.txt").write_text("\n".join(mv.requirements) + "\n")
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

    # -- housekeeping ----------------------------------------------------------------------

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

    # -- deployments (the record every deployer shares) ------------------------------------

    def _deployment_models(self, conn: Connection, names: list[str]) -> dict[str, list[dict[str, Any]]]:
        rev = S.deployment_revisions
        dep = S.deployments
        q = select(rev.c.deployment, rev.c.models).select_from(
            rev.join(dep, and_(dep.c.name == rev.c.deployment, dep.c.revision == rev.c.revision))
        )
        if names:
            q = q.where(rev.c.deployment.in_(names))
        return {d: _loads(m) for d, m in conn.execute(q)}

    def _deployment_record(self, row: Any, models: list[dict[str, Any]]) -> DeploymentRecord:
        return DeploymentRecord(
            name=row.name, target=row.target, status=row.status, status_reason=row.status_reason,
            endpoint=row.endpoint, config=_loads(row.config), state=_loads(row.state),
            revision=row.revision, models=models, created_at=row.created_at, updated_at=row.updated_at,
        )

    def create_deployment(
        self, name: str, target: str, models: list[dict[str, Any]], *, config: Mapping[str, Any] | None = None,
        status: str = "creating", endpoint: str = "", state: Mapping[str, Any] | None = None, note: str = "",
    ) -> DeploymentRecord:
        """Record a new deployment and its first revision serving ``models``.

        ``models`` is a list of ``{"name", "version", "traffic"}``; each must exist.
        """
        check_name(name, "deployment name")
        now = time.time()
        dep = S.deployments
        with self._write() as conn:
            if conn.execute(select(dep.c.name).where(dep.c.name == name)).first() is not None:
                raise AlreadyExists(
                    f"a deployment named {name!r} exists already",
                    hint="pick another name, update it, or delete it first",
                )
            resolved = self._resolve_models(conn, models)
            conn.execute(
                insert(dep).values(
                    name=name, target=target, status=status, status_reason="", endpoint=endpoint,
                    config=_dumps(dict(config or {})), state=_dumps(dict(state or {})), revision=0,
                    created_at=now, updated_at=now,
                )
            )
            self._add_revision(conn, name, resolved, dict(config or {}), note, now)
        return self.get_deployment(name)

    def _resolve_models(self, conn: Connection, models: list[dict[str, Any]]) -> list[dict[str, Any]]:
        out = []
        for m in models:
            name, version = self._resolve(conn, m.get("ref") or ModelRef(m["name"], m.get("version")))
            out.append({**{k: v for k, v in m.items() if k != "ref"}, "name": name, "version": version})
        return out

    def _add_revision(
        self, conn: Connection, deployment: str, models: list[dict[str, Any]], config: dict[str, Any],
        note: str, now: float,
    ) -> int:
        rev, dep, dm = S.deployment_revisions, S.deployments, S.deployment_models
        last = conn.execute(select(func.max(rev.c.revision)).where(rev.c.deployment == deployment)).scalar() or 0
        number = last + 1
        conn.execute(
            insert(rev).values(
                deployment=deployment, revision=number, models=_dumps(models), config=_dumps(config),
                created_at=now, note=note,
            )
        )
        conn.execute(update(dep).where(dep.c.name == deployment).values(revision=number, updated_at=now))
        conn.execute(delete(dm).where(dm.c.deployment == deployment))
        pairs = sorted({(m["name"], m["version"]) for m in models})
        if pairs:
            conn.execute(insert(dm), [{"deployment": deployment, "name": n, "version": v} for n, v in pairs])
        return number

    def add_deployment_revision(
        self, name: str, models: list[dict[str, Any]], *, config: Mapping[str, Any] | None = None,
        note: str = "", state: Mapping[str, Any] | None = None, endpoint: str | None = None,
        status: str | None = None,
    ) -> DeploymentRecord:
        """Make ``models`` the served set of deployment ``name``, as a new revision, in one
        transaction with any state change."""
        now = time.time()
        with self._write() as conn:
            self._require_deployment(conn, name)
            resolved = self._resolve_models(conn, models)
            self._add_revision(conn, name, resolved, dict(config or {}), note, now)
            self._update_deployment(conn, name, state=state, endpoint=endpoint, status=status, now=now)
        return self.get_deployment(name)

    def set_deployment_revision(self, name: str, revision: int, *, note: str = "") -> DeploymentRecord:
        """Serve an earlier revision again (a rollback), recorded as a new revision."""
        rev = S.deployment_revisions
        with self._write() as conn:
            self._require_deployment(conn, name)
            row = conn.execute(
                select(rev.c.models, rev.c.config).where(rev.c.deployment == name, rev.c.revision == revision)
            ).first()
            if row is None:
                raise InvalidInput(f"deployment {name!r} has no revision {revision}")
            models = self._resolve_models(conn, _loads(row.models))  # each version must still exist
            self._add_revision(conn, name, models, _loads(row.config), note, time.time())
        return self.get_deployment(name)

    def update_deployment(
        self, name: str, *, status: str | None = None, status_reason: str | None = None,
        endpoint: str | None = None, state: Mapping[str, Any] | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> DeploymentRecord:
        with self._write() as conn:
            self._require_deployment(conn, name)
            self._update_deployment(
                conn, name, status=status, status_reason=status_reason, endpoint=endpoint,
                state=state, config=config, now=time.time(),
            )
        return self.get_deployment(name)

    def _update_deployment(
        self, conn: Connection, name: str, *, now: float, status: str | None = None,
        status_reason: str | None = None, endpoint: str | None = None,
        state: Mapping[str, Any] | None = None, config: Mapping[str, Any] | None = None,
    ) -> None:
        values: dict[str, Any] = {"updated_at": now}
        if status is not None:
            values["status"] = status
            values["status_reason"] = status_reason or ""
        elif status_reason is not None:
            values["status_reason"] = status_reason
        if endpoint is not None:
            values["endpoint"] = endpoint
        if state is not None:
            values["state"] = _dumps(dict(state))
        if config is not None:
            values["config"] = _dumps(dict(config))
        conn.execute(update(S.deployments).where(S.deployments.c.name == name).values(**values))

    def _require_deployment(self, conn: Connection, name: str) -> None:
        dep = S.deployments
        if conn.execute(select(dep.c.name).where(dep.c.name == name)).first() is None:
            names = conn.execute(select(dep.c.name)).scalars().all()
            raise DeploymentNotFound(name, difflib.get_close_matches(name, names, n=3, cutoff=0.6))

    def get_deployment(self, name: str) -> DeploymentRecord:
        dep = S.deployments
        with self._read() as conn:
            row = conn.execute(select(dep).where(dep.c.name == name)).first()
            if row is None:
                self._require_deployment(conn, name)
            models = self._deployment_models(conn, [name]).get(name, [])
            return self._deployment_record(row, models)

    def list_deployments(self) -> list[DeploymentRecord]:
        dep = S.deployments
        with self._read() as conn:
            rows = conn.execute(select(dep).order_by(dep.c.name)).all()
            models = self._deployment_models(conn, [])
            return [self._deployment_record(r, models.get(r.name, [])) for r in rows]

    def deployment_revisions(self, name: str) -> list[DeploymentRevision]:
        rev = S.deployment_revisions
        with self._read() as conn:
            self._require_deployment(conn, name)
            rows = conn.execute(select(rev).where(rev.c.deployment == name).order_by(rev.c.revision)).all()
        return [
            DeploymentRevision(r.deployment, r.revision, _loads(r.models), _loads(r.config), r.created_at, r.note)
            for r in rows
        ]

    def delete_deployment(self, name: str) -> bool:
        """Forget a deployment (idempotent). Returns whether it existed."""
        dep = S.deployments
        with self._write() as conn:
            return bool(conn.execute(delete(dep).where(dep.c.name == name)).rowcount)


def _read_requirements(requirements: Iterable[str] | str | os.PathLike) -> list[str]:
    if isinstance(requirements, (str, os.PathLike)):
        path = Path(requirements)
        if not path.is_file():
            raise InvalidInput(
                f"requirements {str(requirements)!r} is not a file",
                hint="give a list of 'package==version' strings or a requirements.txt path",
            )
        lines = path.read_text().splitlines()
    else:
        lines = list(requirements)
    out = []
    for line in lines:
        if not isinstance(line, str):
            raise InvalidInput(f"requirement {line!r} is not a string")
        line = line.split("#", 1)[0].strip()
        if line:
            out.append(line)
    return out


def _to_parquet(data: Any) -> bytes:
    import io

    from .signature import to_dataframe

    try:
        df = to_dataframe(data)
    except Exception as exc:  # noqa: BLE001 - any conversion failure is the caller's input
        raise InvalidInput(f"baseline cannot be turned into a table: {exc}") from None
    df.columns = [str(c) for c in df.columns]
    buf = io.BytesIO()
    df.to_parquet(buf, index=False)
    return buf.getvalue()


_EXACT_KEYS = 100


@cache
def _attachments_query(n_keys: int):
    """One UNION ALL query for the tags, properties, aliases, files and deployments of a set of
    versions: ``n_keys`` exact (name, version) keys bound as ``n0, v0, n1, v1, ...``, or all
    versions of the names bound as ``names`` (``-1``), or everything (``0``).

    Built once per shape: constructing SQLAlchemy expressions costs more than running them.
    """
    text_null = cast(null(), String)

    def part(kind: str, table, a, b=None, c=None):
        q = select(
            literal(kind, String).label("kind"), table.c.name, table.c.version,
            a.label("a"), (b if b is not None else text_null).label("b"),
            (cast(c, String) if c is not None else text_null).label("c"),
        )
        if n_keys > 0:
            # OR of exact keys: each one a primary-key look-up on every backend.
            return q.where(
                or_(*(
                    and_(table.c.name == bindparam(f"n{i}"), table.c.version == bindparam(f"v{i}"))
                    for i in range(n_keys)
                ))
            )
        if n_keys < 0:
            return q.where(table.c.name.in_(bindparam("names", expanding=True)))
        return q

    t, p, al, f, d = S.version_tags, S.version_properties, S.model_aliases, S.version_files, S.deployment_models
    return union_all(
        part("t", t, t.c.key, t.c.value),
        part("p", p, p.c.key, p.c.value),
        part("a", al, al.c.alias),
        part("f", f, f.c.path, f.c.sha256, f.c.size),
        part("d", d, d.c.deployment),
    )



