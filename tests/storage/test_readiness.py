"""Processes that start on a database say clearly when it is unreachable or not migrated."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from storage.db import Database
from storage.migrate import downgrade_service_schema, upgrade_optuna_schema, upgrade_service_schema
from storage.readiness import (
    DatabaseNotReadyError,
    check_databases,
    check_optuna_schema,
    check_service_schema,
    safe_url,
)
from tests.conftest import PostgresServer


def test_migrated_databases_pass(db_urls: tuple[str, str]) -> None:
    check_databases(*db_urls)


def test_missing_sqlite_file_is_not_created(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'nothing' / 'hpo.db'}"
    with pytest.raises(DatabaseNotReadyError, match="does not exist; run `hpo db upgrade`"):
        check_service_schema(url)
    assert not (tmp_path / "nothing").exists()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_empty_databases_ask_for_an_upgrade(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'empty.db'}"
        create_engine(url).connect().close()
    else:
        server: PostgresServer = request.getfixturevalue("pg_server")
        url = server.create()
    with pytest.raises(DatabaseNotReadyError, match=r"HPO_DATABASE_URL: .* no service tables"):
        check_service_schema(url)
    with pytest.raises(DatabaseNotReadyError, match=r"HPO_OPTUNA_STORAGE: .* no Optuna tables"):
        check_optuna_schema(url)
    upgrade_optuna_schema(url)
    check_optuna_schema(url)


def test_an_old_service_revision_is_named(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    database = Database(url)
    upgrade_service_schema(database)
    downgrade_service_schema(database)
    with database.engine.begin() as conn:
        # A revision this version does not know stands for an older or newer schema.
        conn.execute(text("UPDATE hpo_alembic_version SET version_num = 'abc123'"))
        if conn.execute(text("SELECT count(*) FROM hpo_alembic_version")).scalar() == 0:
            conn.execute(text("INSERT INTO hpo_alembic_version VALUES ('abc123')"))
    database.dispose()
    with pytest.raises(DatabaseNotReadyError, match="at revision abc123"):
        check_service_schema(url)


def test_unreachable_server_names_the_variable_and_hides_the_password() -> None:
    url = "postgresql+psycopg2://hpo:s3cret@127.0.0.1:9/hpo"
    with pytest.raises(DatabaseNotReadyError) as info:
        check_service_schema(url)
    assert info.value.message.startswith("HPO_DATABASE_URL: cannot open")
    assert "s3cret" not in info.value.message
    assert "s3cret" not in safe_url(url)


@pytest.mark.parametrize("url", ["nosuchdialect://host/db", "mysql+nosuchdriver://host/db"])
def test_unusable_url(url: str) -> None:
    with pytest.raises(DatabaseNotReadyError, match="not a usable URL"):
        check_optuna_schema(url)
