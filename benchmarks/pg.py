"""Throwaway Postgres databases for benchmarks."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from storage.settings import normalize_database_url


@contextmanager
def throwaway_databases(server_url: str, count: int) -> Iterator[list[str]]:
    """``count`` new empty databases on ``server_url``, dropped afterwards."""
    server = normalize_database_url(server_url)
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
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
