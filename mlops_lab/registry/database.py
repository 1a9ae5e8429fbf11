"""The registry's SQL database: the engine (SQLite with write transactions that take the lock
when they begin, or PostgreSQL), one transaction per operation, the schema and its migrations.

A part of :class:`~mlops_lab.registry.store.Registry`, which holds the engine, the settings and
the artifact store these methods use."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import orjson
from sqlalchemy import create_engine, event, insert, inspect, select, update
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import DBAPIError, OperationalError

from ..errors import RegistrySchemaError, StorageError
from . import schema as S


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


def _dumps(obj: Any) -> str:
    return orjson.dumps(obj, default=str, option=orjson.OPT_NON_STR_KEYS).decode()


def _loads(text: str | None) -> Any:
    return None if text is None else orjson.loads(text)


class Database:
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

    def close(self) -> None:
        self.engine.dispose()
