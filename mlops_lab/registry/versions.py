"""Model versions and what names them: registration (version numbers allocated gap-free inside
the write transaction), references and aliases, tags, properties, search, deletion.

A part of :class:`~mlops_lab.registry.store.Registry`, which holds the engine, the settings and
the artifact store these methods use."""

from __future__ import annotations

import difflib
import os
import shutil
import time
from collections.abc import Iterable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

from sqlalchemy import (
    String,
    and_,
    bindparam,
    cast,
    delete,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    tuple_,
    union_all,
    update,
)
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError, IntegrityError

from .._faults import crashpoint
from ..errors import (
    AliasNotFound,
    InvalidInput,
    InvalidModel,
    ModelNotFound,
    VersionInUse,
    VersionNotFound,
)
from ..refs import ModelRef, check_alias, check_name, check_tag_key, parse_ref
from . import schema as S
from .artifacts import storage_error
from .database import _dumps, _loads
from .entities import ArtifactFile, ModelVersion, RegisteredModel


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


class Versions:
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
