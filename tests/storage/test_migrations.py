"""Migrations: empty -> head, schema matches the models, downgrade, foreign tables untouched."""

from __future__ import annotations

from pathlib import Path

import optuna
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect

from storage.db import Database
from storage.migrate import (
    VERSION_TABLE,
    downgrade_service_schema,
    service_schema_is_current,
    upgrade_optuna_schema,
    upgrade_service_schema,
)
from storage.models import Base
from tests.conftest import PostgresServer

OUR_TABLES = set(Base.metadata.tables)


@pytest.fixture(params=["sqlite", "postgres"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'shared.db'}"
    server: PostgresServer = request.getfixturevalue("pg_server")
    return server.create()


def _diff(database: Database) -> list[object]:
    with database.engine.connect() as conn:
        context = MigrationContext.configure(
            conn,
            opts={
                "version_table": VERSION_TABLE,
                "compare_type": True,
                "include_object": lambda obj, name, type_, *_: (
                    type_ != "table" or name in OUR_TABLES
                ),
            },
        )
        return list(compare_metadata(context, Base.metadata))


def test_empty_to_head_matches_models_and_downgrades(empty_url: str) -> None:
    database = Database(empty_url)
    assert not service_schema_is_current(database)
    upgrade_service_schema(database)
    assert service_schema_is_current(database)
    tables = set(inspect(database.engine).get_table_names())
    assert OUR_TABLES | {VERSION_TABLE} <= tables
    assert _diff(database) == []
    upgrade_service_schema(database)  # idempotent
    downgrade_service_schema(database)
    assert set(inspect(database.engine).get_table_names()) & OUR_TABLES == set()
    database.dispose()


def test_sharing_a_database_with_optuna_never_touches_its_tables(empty_url: str) -> None:
    upgrade_optuna_schema(empty_url)
    optuna.create_study(storage=empty_url, study_name="theirs")
    database = Database(empty_url)
    upgrade_service_schema(database)
    before = set(inspect(database.engine).get_table_names())
    assert {"studies", "trials", "alembic_version"} <= before
    # Autogenerate sees no difference: Optuna's tables are not proposed for deletion.
    assert _diff(database) == []
    downgrade_service_schema(database)
    after = set(inspect(database.engine).get_table_names())
    assert after == before - OUR_TABLES
    database.dispose()
    assert optuna.get_all_study_names(empty_url) == ["theirs"]
