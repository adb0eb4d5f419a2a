"""Outages of one throwaway database, cheap and safe for the tests beside it.

A restart is played by ending the database's server processes
(``pg_terminate_backend``), an outage by also refusing new connections to it
(``ALLOW_CONNECTIONS false``). The server itself, which every test shares,
keeps running; for a real restart see ``tests/service/test_outages.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import text
from sqlalchemy.engine import make_url

from tests.conftest import PostgresServer


def _database(url: str) -> str:
    return make_url(url).database or ""


def end_connections(server: PostgresServer, url: str) -> int:
    """End every session on the database of ``url``, as a restart does; how many there were."""
    with server.admin.connect() as conn:
        ended = conn.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = :name AND pid <> pg_backend_pid()"
            ),
            {"name": _database(url)},
        ).scalar_one()
    return int(ended)


@contextmanager
def unreachable(server: PostgresServer, url: str) -> Iterator[None]:
    """The database of ``url`` refuses connections and has lost those it had."""
    name = _database(url)
    with server.admin.connect() as conn:
        conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
    try:
        end_connections(server, url)
        yield
    finally:
        with server.admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
