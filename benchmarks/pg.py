"""Throwaway Postgres databases and studies for benchmarks."""

from __future__ import annotations

import argparse
import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from storage import studies
from storage.db import Database
from storage.migrate import upgrade_optuna_schema, upgrade_service_database
from storage.optuna_store import open_optuna_storage
from storage.settings import normalize_database_url
from storage.spec import StudySpec


@contextmanager
def throwaway_databases(server_url: str, count: int) -> Iterator[list[str]]:
    """``count`` new empty databases on ``server_url``, dropped afterwards."""
    server = normalize_database_url(server_url)
    # pre_ping: a Postgres restarted while the benchmark ran must not keep its databases.
    admin = create_engine(server, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    names = [f"hpo_bench_{uuid.uuid4().hex[:8]}_{i}" for i in range(count)]
    with admin.connect() as conn:
        for name in names:
            conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield [
            make_url(server).set(database=n).render_as_string(hide_password=False) for n in names
        ]
    finally:
        with admin.connect() as conn:
            for name in names:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def add_server_argument(parser: argparse.ArgumentParser) -> None:
    """``--server``: the Postgres server the throwaway databases are made on."""
    parser.add_argument(
        "--server",
        default=os.environ.get(
            "HPO_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )


@contextmanager
def migrated_databases(server_url: str) -> Iterator[tuple[str, str]]:
    """(service database URL, Optuna storage URL): new, migrated, dropped afterwards."""
    with throwaway_databases(server_url, 2) as (service_url, optuna_url):
        upgrade_service_database(service_url)
        upgrade_optuna_schema(optuna_url)
        yield service_url, optuna_url


def create_study(service_url: str, optuna_url: str, spec: StudySpec) -> None:
    """Create a study as the API would, without running one."""
    database = Database(service_url)
    try:
        with database.session_scope() as session:
            studies.create_study(session, open_optuna_storage(optuna_url), spec, "bench")
    finally:
        database.dispose()
