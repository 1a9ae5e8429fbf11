"""The record of deployments every deployer shares: a deployment's models, revisions and status,
read by every process (kernel, CLI, Jupyter server) as the one truth.

A part of :class:`~mlops_lab.registry.store.Registry`, which holds the engine, the settings and
the artifact store these methods use."""

from __future__ import annotations

import difflib
import time
from collections.abc import Mapping
from typing import Any

from sqlalchemy import and_, delete, func, insert, select, update
from sqlalchemy.engine import Connection

from ..errors import AlreadyExists, DeploymentNotFound, InvalidInput
from ..refs import ModelRef, check_name
from . import schema as S
from .database import _dumps, _loads
from .entities import DeploymentRecord, DeploymentRevision


class DeploymentRecords:
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
