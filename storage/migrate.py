"""``hpo db upgrade``: the service schema (Alembic) and Optuna's own schema."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text

from storage.db import Database, ensure_sqlite_dir
from storage.optuna_store import open_optuna_storage

logger = logging.getLogger(__name__)
MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"
VERSION_TABLE = "hpo_alembic_version"
# Any fixed number: it only has to be the same in every process that migrates.
_ADVISORY_LOCK_KEY = 0x4870_6F4D


def alembic_config(url: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


@contextmanager
def _migration_lock(connection: Connection) -> Iterator[None]:
    """Serialise concurrent migrations on Postgres (SQLite serialises by itself)."""
    if connection.dialect.name != "postgresql":
        yield
        return
    connection.execute(text("SELECT pg_advisory_lock(:k)"), {"k": _ADVISORY_LOCK_KEY})
    try:
        yield
    finally:
        connection.execute(text("SELECT pg_advisory_unlock(:k)"), {"k": _ADVISORY_LOCK_KEY})


def upgrade_service_schema(database: Database, revision: str = "head") -> None:
    """Migrate the service tables to ``revision``."""
    config = alembic_config(database.url)
    with database.engine.connect() as connection, _migration_lock(connection):
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
        connection.commit()


def downgrade_service_schema(database: Database, revision: str = "base") -> None:
    config = alembic_config(database.url)
    with database.engine.connect() as connection, _migration_lock(connection):
        config.attributes["connection"] = connection
        command.downgrade(config, revision)
        connection.commit()


def upgrade_service_database(url: str) -> None:
    """:func:`upgrade_service_schema` to head through a pool opened for it alone."""
    database = Database(url)
    try:
        upgrade_service_schema(database)
    finally:
        database.dispose()


def service_schema_head(url: str) -> str | None:
    """The newest revision of the service tables that this version knows."""
    return ScriptDirectory.from_config(alembic_config(url)).get_current_head()


def service_schema_revision(connection: Connection) -> str | None:
    """The revision the service tables are at (None: never migrated)."""
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def service_schema_is_current(database: Database) -> bool:
    """True when the service tables are at the newest revision."""
    with database.engine.connect() as connection:
        current = service_schema_revision(connection)
    return current == service_schema_head(database.url)


def upgrade_optuna_schema(url: str) -> None:
    """Create Optuna's tables, or upgrade them to this Optuna's version.

    Done once here rather than by every fresh worker at the same moment.
    """
    storage = open_optuna_storage(url, create_tables=True)
    try:
        if storage.get_current_version() != storage.get_head_version():
            logger.info("upgrading Optuna's schema from %s", storage.get_current_version())
            storage.upgrade()
    finally:
        storage.engine.dispose()


def upgrade_mlflow_store(tracking_uri: str) -> None:
    """Create MLflow's tables once when it tracks straight into a database.

    A tracking server (http URI) migrates its own store; a database URI would
    otherwise be migrated by the first few workers at the same moment.
    """
    if tracking_uri.startswith(("http://", "https://")) or "://" not in tracking_uri:
        return
    ensure_sqlite_dir(tracking_uri)
    from mlflow.tracking import MlflowClient

    MlflowClient(tracking_uri=tracking_uri).search_experiments(max_results=1)
    if tracking_uri.startswith("sqlite:///"):
        import sqlite3

        with sqlite3.connect(tracking_uri.removeprefix("sqlite:///")) as conn:
            conn.execute("PRAGMA journal_mode=WAL")
