"""Which failures a worker waits out: a database out of reach, not a refused statement."""

from __future__ import annotations

import psycopg2
import pytest
from optuna.exceptions import StorageInternalError
from sqlalchemy.exc import DataError, OperationalError

from storage.errors import UnavailableError
from workers.retry import is_transient


def _wrapped(cause: BaseException) -> StorageInternalError:
    # As Optuna's RDB storage raises it: from the SQLAlchemy error of the call.
    try:
        raise StorageInternalError("An exception is raised during the commit.") from cause
    except StorageInternalError as exc:
        return exc


@pytest.mark.parametrize(
    ("failure", "transient"),
    [
        (UnavailableError("the database is down"), True),
        (_wrapped(OperationalError("SELECT 1", {}, psycopg2.OperationalError("refused"))), True),
        (_wrapped(DataError("INSERT", {}, psycopg2.DataError("out of range"))), False),
        (_wrapped(ValueError("no cause worth waiting for")), False),
    ],
)
def test_only_outages_are_waited_out(failure: BaseException, transient: bool) -> None:
    assert is_transient(failure) is transient
