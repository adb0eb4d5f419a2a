"""The connection limits of worker processes hold on a real Postgres."""

from __future__ import annotations

import pytest
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from sqlalchemy.pool import QueuePool

from storage.db import Database
from storage.optuna_store import open_optuna_storage
from storage.pools import SLOT_OPTUNA, SLOT_SERVICE, PoolLimits, worker_connections


def test_sqlite_keeps_its_own_pooling() -> None:
    assert SLOT_SERVICE.engine_kwargs("sqlite:///x.db") == {}
    assert SLOT_SERVICE.engine_kwargs("postgresql+psycopg2://h/db")["pool_size"] == 1


def test_the_documented_figures() -> None:
    # README "Connections to Postgres": 5 a slot, 5 a supervisor.
    assert SLOT_SERVICE.most + SLOT_OPTUNA.most == 5
    assert worker_connections(slots=1, supervisors=1) == 10
    assert worker_connections(slots=32, supervisors=1) == 165


@pytest.mark.postgres
def test_a_slot_pool_opens_at_most_its_limit_and_keeps_one(pg_urls: tuple[str, str]) -> None:
    url = pg_urls[0]
    limits = PoolLimits(SLOT_SERVICE.size, SLOT_SERVICE.overflow)
    database = Database(url, **{**limits.engine_kwargs(url), "pool_timeout": 0.3})
    pool = database.engine.pool
    assert isinstance(pool, QueuePool)
    try:
        held = [database.engine.connect() for _ in range(limits.most)]
        with pytest.raises(PoolTimeoutError):
            database.engine.connect()
        for conn in held:
            conn.close()
        assert pool.checkedin() == limits.size  # the overflow was closed
    finally:
        database.dispose()


@pytest.mark.postgres
def test_optuna_storage_of_a_slot_is_bounded(pg_urls: tuple[str, str]) -> None:
    storage = open_optuna_storage(pg_urls[1], pool=SLOT_OPTUNA)
    try:
        pool = storage.engine.pool
        assert isinstance(pool, QueuePool)
        assert pool.size() == SLOT_OPTUNA.size
        assert pool._max_overflow == SLOT_OPTUNA.overflow
    finally:
        storage.engine.dispose()
