"""Engines: a session frozen inside a transaction does not hold its locks for ever."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from storage.db import bound_idle_transactions
from tests.conftest import PostgresServer

pytestmark = pytest.mark.postgres


def test_a_session_idle_in_a_transaction_past_the_bound_releases_its_row_locks(
    pg_server: PostgresServer,
) -> None:
    url = pg_server.create()
    other = create_engine(url)
    with other.begin() as conn:
        conn.execute(text("CREATE TABLE lease (id int PRIMARY KEY, beat int)"))
        conn.execute(text("INSERT INTO lease VALUES (1, 0)"))
    frozen = create_engine(url)
    bound_idle_transactions(frozen, 1.0)
    holder = frozen.connect()
    holder.begin()
    holder.execute(text("UPDATE lease SET beat = 1 WHERE id = 1"))  # then nothing: frozen
    started = time.monotonic()
    with other.begin() as conn:
        # Without the bound this waits for the holder and fails after 10 s.
        conn.execute(text("SET LOCAL lock_timeout = '10s'"))
        conn.execute(text("UPDATE lease SET beat = 2 WHERE id = 1"))
    assert time.monotonic() - started < 8
    with pytest.raises(OperationalError):  # the frozen session was ended, its update undone
        holder.execute(text("SELECT 1"))
    holder.invalidate()
    with other.connect() as conn:
        assert conn.execute(text("SELECT beat FROM lease")).scalar_one() == 2
    frozen.dispose()
    other.dispose()


def test_an_engine_bound_this_way_still_runs_short_transactions(
    pg_server: PostgresServer,
) -> None:
    engine = create_engine(pg_server.create())
    bound_idle_transactions(engine, 1.0)
    with engine.begin() as conn:
        setting = conn.execute(text("SHOW idle_in_transaction_session_timeout")).scalar_one()
    assert setting == "1s"
    engine.dispose()
