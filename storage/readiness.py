"""Is a database reachable and migrated? Answers for processes that start on one.

Workers and ``hpo token create`` need the schemas that ``hpo db upgrade`` (or
``hpo serve``) creates; without them they would fail deep inside SQLAlchemy or
Optuna. These checks turn that into one sentence that says what to do.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Connection, inspect
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, NoSuchModuleError

from storage.db import create_db_engine, is_sqlite
from storage.errors import UnavailableError
from storage.migrate import service_schema_head, service_schema_revision

logger = logging.getLogger(__name__)
T = TypeVar("T")
UPGRADE_HINT = "run `hpo db upgrade` (or start `hpo serve`, which migrates)"


class DatabaseNotReadyError(UnavailableError):
    """A database cannot be opened, or its schema is missing or out of date."""


def safe_url(url: str) -> str:
    """The URL with any password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable URL>"


def describe_db_error(exc: BaseException) -> str:
    """The first line of the driver's message (no SQL, no parameters)."""
    original = getattr(exc, "orig", None) or exc
    lines = str(original).strip().splitlines()
    return lines[0] if lines else type(original).__name__


def _inspect(url: str, variable: str, probe: Callable[[Connection], T]) -> T:
    """Run ``probe(connection)`` on a short-lived engine; connection problems → clear error."""
    if is_sqlite(url):
        database = make_url(url).database
        if database and database != ":memory:" and not Path(database).is_file():
            raise DatabaseNotReadyError(
                f"{variable}: the database file {database} does not exist; {UPGRADE_HINT}"
            )
    try:
        engine = create_db_engine(url)
    except (ArgumentError, NoSuchModuleError, ImportError) as exc:
        raise DatabaseNotReadyError(
            f"{variable}: {safe_url(url)} is not a usable URL ({exc})"
        ) from None
    try:
        with engine.connect() as connection:
            return probe(connection)
    except DBAPIError as exc:
        raise DatabaseNotReadyError(
            f"{variable}: cannot open {safe_url(url)}: {describe_db_error(exc)}"
        ) from None
    finally:
        engine.dispose()


def check_service_schema(url: str) -> None:
    """Raise unless the service tables are reachable and at the newest revision."""
    head = service_schema_head(url)
    revision = _inspect(url, "HPO_DATABASE_URL", service_schema_revision)
    if revision is None:
        raise DatabaseNotReadyError(
            f"HPO_DATABASE_URL: {safe_url(url)} has no service tables; {UPGRADE_HINT}"
        )
    if revision != head:
        raise DatabaseNotReadyError(
            f"HPO_DATABASE_URL: the service tables in {safe_url(url)} are at revision "
            f"{revision}, this version needs {head}; {UPGRADE_HINT}"
        )


def check_optuna_schema(url: str) -> None:
    """Raise unless Optuna's tables exist in the storage (Optuna checks their version)."""
    found = _inspect(url, "HPO_OPTUNA_STORAGE", lambda c: inspect(c).has_table("version_info"))
    if not found:
        raise DatabaseNotReadyError(
            f"HPO_OPTUNA_STORAGE: {safe_url(url)} has no Optuna tables; {UPGRADE_HINT}"
        )


def check_databases(database_url: str, optuna_url: str) -> None:
    """Both databases a worker needs: reachable and migrated."""
    check_service_schema(database_url)
    check_optuna_schema(optuna_url)


def wait_for_databases(
    database_url: str,
    optuna_url: str,
    timeout_s: float,
    interval_s: float = 2.0,
    sleep: Callable[[float], None] = time.sleep,
) -> None:
    """Block until :func:`check_databases` passes (the migration job has run).

    Raises:
        DatabaseNotReadyError: still not ready after ``timeout_s`` (the last reason).
    """
    deadline = time.monotonic() + timeout_s
    last_reason = ""
    while True:
        try:
            check_databases(database_url, optuna_url)
            return
        except DatabaseNotReadyError as exc:
            if str(exc) != last_reason:
                logger.info("waiting: %s", exc)
                last_reason = str(exc)
            if time.monotonic() + interval_s > deadline:
                raise
        sleep(interval_s)


def main(argv: list[str] | None = None) -> int:
    """``python -m storage.readiness [--timeout S]``: wait until ``HPO_DATABASE_URL`` and
    ``HPO_OPTUNA_STORAGE`` are reachable and migrated (an init container's command).

    Exits 0 once they are, 1 after the timeout.
    """
    import argparse

    from storage.settings import Settings

    parser = argparse.ArgumentParser(prog="python -m storage.readiness")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds (default 600)")
    parser.add_argument("--interval", type=float, default=2.0, help="seconds between checks")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    settings = Settings()
    try:
        wait_for_databases(
            settings.database_url, settings.optuna_storage, args.timeout, args.interval
        )
    except DatabaseNotReadyError as exc:
        logger.error("not ready after %.0fs: %s", args.timeout, exc)
        return 1
    logger.info("both databases are reachable and migrated")
    return 0


if __name__ == "__main__":
    sys.exit(main())
