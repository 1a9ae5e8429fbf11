"""The registry's tables (SQLAlchemy Core) and their schema version.

The schema is versioned: ``mlops_lab_schema`` holds one row with the version the database was
created or last migrated to. :data:`MIGRATIONS` maps each version to the function that brings a
database from the previous version to it, so a later release can upgrade an existing registry in
place. A database written by a newer release is refused rather than guessed at.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
)
from sqlalchemy.engine import Connection

SCHEMA_VERSION = 3

metadata = MetaData()

NAME = String(64)
KEY = String(250)

schema_info = Table(
    "mlops_lab_schema",
    metadata,
    Column("id", Integer, primary_key=True),
    Column("version", Integer, nullable=False),
)

registered_models = Table(
    "registered_models",
    metadata,
    Column("name", NAME, primary_key=True),
    Column("description", Text, nullable=False, default=""),
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
    # The last version number handed out; incremented inside the registering transaction so
    # concurrent registrations get distinct, gap-free numbers and deleted numbers are never reused.
    Column("last_version", Integer, nullable=False, default=0),
)

model_versions = Table(
    "model_versions",
    metadata,
    Column("name", NAME, nullable=False),
    Column("version", Integer, nullable=False),
    Column("created_at", Float, nullable=False),
    Column("description", Text, nullable=False, default=""),
    Column("flavor", String(32), nullable=False),
    # JSON documents, stored as text so every SQL backend holds them the same way.
    Column("loader", Text, nullable=False),  # how to load: flavor-specific settings
    Column("signature", Text),
    Column("input_example", Text),
    Column("requirements", Text, nullable=False),
    Column("lineage", Text, nullable=False),
    Column("baseline_sha256", String(64)),
    Column("size", BigInteger, nullable=False),
    PrimaryKeyConstraint("name", "version"),
    ForeignKeyConstraint(["name"], ["registered_models.name"], ondelete="CASCADE"),
)

version_files = Table(
    "version_files",
    metadata,
    Column("name", NAME, nullable=False),
    Column("version", Integer, nullable=False),
    Column("path", String(1024), nullable=False),
    Column("sha256", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    PrimaryKeyConstraint("name", "version", "path"),
    ForeignKeyConstraint(
        ["name", "version"], ["model_versions.name", "model_versions.version"], ondelete="CASCADE"
    ),
    Index("ix_version_files_sha256", "sha256"),
)

version_tags = Table(
    "version_tags",
    metadata,
    Column("name", NAME, nullable=False),
    Column("version", Integer, nullable=False),
    Column("key", KEY, nullable=False),
    Column("value", Text, nullable=False),
    PrimaryKeyConstraint("name", "version", "key"),
    ForeignKeyConstraint(
        ["name", "version"], ["model_versions.name", "model_versions.version"], ondelete="CASCADE"
    ),
    Index("ix_version_tags_kv", "key", "value"),
)

version_properties = Table(
    "version_properties",
    metadata,
    Column("name", NAME, nullable=False),
    Column("version", Integer, nullable=False),
    Column("key", KEY, nullable=False),
    Column("value", Text, nullable=False),
    PrimaryKeyConstraint("name", "version", "key"),
    ForeignKeyConstraint(
        ["name", "version"], ["model_versions.name", "model_versions.version"], ondelete="CASCADE"
    ),
    Index("ix_version_properties_kv", "key", "value"),
)

model_aliases = Table(
    "model_aliases",
    metadata,
    Column("name", NAME, nullable=False),
    Column("alias", NAME, nullable=False),
    Column("version", Integer, nullable=False),
    PrimaryKeyConstraint("name", "alias"),
    ForeignKeyConstraint(
        ["name", "version"], ["model_versions.name", "model_versions.version"], ondelete="CASCADE"
    ),
)

# --- deployments: one record shared by every deployer (local, docker, kubernetes) -----------

deployments = Table(
    "deployments",
    metadata,
    Column("name", NAME, primary_key=True),
    Column("target", String(32), nullable=False),
    Column("status", String(32), nullable=False),
    Column("status_reason", Text, nullable=False, default=""),
    Column("endpoint", Text, nullable=False, default=""),
    Column("config", Text, nullable=False, default="{}"),  # JSON: target-specific settings
    Column("state", Text, nullable=False, default="{}"),  # JSON: pid, port, container id, ...
    Column("revision", Integer, nullable=False, default=0),  # the revision serving now
    Column("created_at", Float, nullable=False),
    Column("updated_at", Float, nullable=False),
)

deployment_revisions = Table(
    "deployment_revisions",
    metadata,
    Column("deployment", NAME, nullable=False),
    Column("revision", Integer, nullable=False),
    Column("models", Text, nullable=False),  # JSON list of {"name", "version", "traffic"}
    Column("config", Text, nullable=False, default="{}"),
    Column("created_at", Float, nullable=False),
    Column("note", Text, nullable=False, default=""),
    PrimaryKeyConstraint("deployment", "revision"),
    ForeignKeyConstraint(["deployment"], ["deployments.name"], ondelete="CASCADE"),
)

# The model versions a deployment serves right now (all of them during a canary). Deleting a
# version that appears here is refused; the rows go when the deployment moves on or is deleted.
deployment_models = Table(
    "deployment_models",
    metadata,
    Column("deployment", NAME, nullable=False),
    Column("name", NAME, nullable=False),
    Column("version", Integer, nullable=False),
    PrimaryKeyConstraint("deployment", "name", "version"),
    ForeignKeyConstraint(["deployment"], ["deployments.name"], ondelete="CASCADE"),
    # No cascade: the database itself refuses to drop a version that is served.
    ForeignKeyConstraint(["name", "version"], ["model_versions.name", "model_versions.version"]),
    Index("ix_deployment_models_version", "name", "version"),
)

# --- alerts: rules per deployment, and every firing with its evidence (schema version 2) ----

alert_rules = Table(
    "alert_rules",
    metadata,
    Column("deployment", NAME, primary_key=True),
    Column("rules", Text, nullable=False),  # JSON list of {"kind", "threshold", "window"}
    Column("webhook", Text, nullable=True),
    Column("every_s", Float, nullable=False, default=60.0),  # how often the deployment's watcher evaluates them
    Column("updated_at", Float, nullable=False),
    ForeignKeyConstraint(["deployment"], ["deployments.name"], ondelete="CASCADE"),
)

alert_events = Table(
    "alert_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("deployment", NAME, nullable=False),
    Column("time", Float, nullable=False),
    Column("rule", Text, nullable=False),  # JSON: the rule that fired
    Column("value", Float, nullable=True),
    Column("evidence", Text, nullable=False, default="{}"),  # JSON: what the rule saw
    Column("delivery", Text, nullable=False, default="{}"),  # JSON: the webhook's attempts
    # "firing": the rule started firing; "resolved": a rule that fired holds again (schema 3)
    Column("status", String(16), nullable=False, default="firing", server_default="firing"),
    ForeignKeyConstraint(["deployment"], ["deployments.name"], ondelete="CASCADE"),
    Index("ix_alert_events_deployment_time", "deployment", "time"),
)


def _add_alert_tables(conn: Connection) -> None:
    alert_rules.create(conn, checkfirst=True)
    alert_events.create(conn, checkfirst=True)


def _add_alert_status(conn: Connection) -> None:
    from sqlalchemy import inspect, text

    # A database migrated from version 1 just now has the column already (made by version 2's step)
    if "status" not in {c["name"] for c in inspect(conn).get_columns("alert_events")}:
        conn.execute(text("ALTER TABLE alert_events ADD COLUMN status VARCHAR(16) NOT NULL DEFAULT 'firing'"))


#: version -> function migrating a database from ``version - 1`` to ``version``.
MIGRATIONS: dict[int, Callable[[Connection], None]] = {2: _add_alert_tables, 3: _add_alert_status}
