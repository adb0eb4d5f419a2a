"""Engines and the one scoped-session context manager."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, DisconnectionError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from storage.errors import UnavailableError

logger = logging.getLogger(__name__)
SQLITE_BUSY_TIMEOUT_MS = 60_000
# A pooled connection idle for longer than this is pinged before it is used.
PING_AFTER_IDLE_S = 1.0


def is_sqlite(url: str) -> bool:
    return make_url(url).get_backend_name() == "sqlite"


def ensure_sqlite_dir(url: str) -> None:
    """Create the folder of a file-backed SQLite database."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite" and parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)


def create_db_engine(url: str, *, ping_idle_s: float = PING_AFTER_IDLE_S, **kwargs: Any) -> Engine:
    """An engine for the service database.

    SQLite gets WAL and ``BEGIN IMMEDIATE`` so that concurrent processes
    serialise their transactions instead of failing to upgrade read locks;
    a transaction opened with the ``hpo_read_only`` option begins deferred.
    Elsewhere a pooled connection idle for ``ping_idle_s`` is pinged before use
    (see :func:`ping_when_idle`).
    """
    if not is_sqlite(url):
        engine = create_engine(url, pool_recycle=1800, **kwargs)
        ping_when_idle(engine, ping_idle_s)
        return engine
    ensure_sqlite_dir(url)
    engine = create_engine(
        url,
        connect_args={"timeout": SQLITE_BUSY_TIMEOUT_MS / 1000, "check_same_thread": False},
        **kwargs,
    )
    event.listen(engine, "connect", _sqlite_on_connect)
    event.listen(engine, "begin", _sqlite_on_begin)
    return engine


def _sqlite_on_connect(dbapi_connection: Any, _record: Any) -> None:
    # Let SQLAlchemy's "begin" event decide how transactions start.
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _sqlite_on_begin(connection: Any) -> None:
    read_only = connection.get_execution_options().get("hpo_read_only", False)
    connection.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")


def ping_when_idle(engine: Engine, idle_s: float = PING_AFTER_IDLE_S) -> None:
    """Ping a pooled connection at checkout only when it sat unused for ``idle_s``.

    ``pool_pre_ping`` pings at every checkout: one more round trip for each
    short transaction, several per trial on a worker's hot path. A connection
    used a moment ago is alive unless the server went away in that moment, an
    error the callers already treat as transient (and SQLAlchemy then renews
    the pool); one that sat idle, across a restart perhaps, is pinged and
    replaced if dead. ``idle_s=0`` pings at every checkout, as ``pool_pre_ping``
    does, for callers that would rather pay the round trip than fail once.
    """

    def on_checkin(_dbapi_connection: Any, record: Any) -> None:
        if record is not None:
            record.info["hpo_checked_in"] = time.monotonic()

    def on_checkout(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("hpo_checked_in")
        if since is None or time.monotonic() - since < idle_s:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as exc:
            # The pool discards this connection and checks out another.
            raise DisconnectionError(f"a pooled connection was dead: {exc}") from exc

    event.listen(engine, "checkin", on_checkin)
    event.listen(engine, "checkout", on_checkout)


def bound_idle_transactions(engine: Engine, seconds: float) -> None:
    """Have Postgres end a session of ``engine`` that stays idle inside a
    transaction for longer than ``seconds`` (new connections; SQLite: no-op).

    A worker frozen between two statements of a transaction (SIGSTOP, a stalled
    VM) would otherwise keep its row locks, and the reaper that must fail its
    lease would wait on them until the worker woke up. Behind PgBouncer in
    transaction mode the setting reaches only the server connections these
    sessions happened to open; set it on the server or role there.
    """
    if engine.dialect.name != "postgresql":
        return
    milliseconds = max(1000, int(seconds * 1000))

    def on_connect(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute(f"SET idle_in_transaction_session_timeout = {milliseconds}")
        cursor.close()
        dbapi_connection.commit()

    event.listen(engine, "connect", on_connect)
    # Connections opened before the listener (a storage's version check) lack it.
    engine.dispose()


# Postgres' program_limit_exceeded (a statement with too many arguments, an
# index row too large): drivers call it an OperationalError, yet the same
# statement fails again however long one waits.
_PERMANENT_SQLSTATE_CLASSES = ("54",)


def is_connection_error(exc: BaseException) -> bool:
    """True when the database could not be reached or was busy (worth retrying)."""
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    if isinstance(exc, OperationalError):
        # psycopg2 names the SQLSTATE pgcode, psycopg 3 sqlstate.
        code = getattr(exc.orig, "pgcode", None) or getattr(exc.orig, "sqlstate", None)
        return not str(code or "").startswith(_PERMANENT_SQLSTATE_CLASSES)
    return isinstance(exc, DisconnectionError)


def is_outage(exc: BaseException) -> bool:
    """True when ``exc`` or an exception it was raised from is a connection error.

    Optuna raises ``StorageInternalError`` from every SQLAlchemy error of a
    storage call, whatever it was: the cause tells a database out of reach
    (waiting helps) from a call that went wrong (a DataError, a missing table:
    waiting does not). An error whose causes hold no connection error is not
    an outage.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if is_connection_error(current):
            return True
        seen.add(id(current))
        current = current.__cause__
    return False


class Database:
    """The service database: an engine and sessions scoped to one unit of work."""

    def __init__(
        self, url: str, *, ping_idle_s: float = PING_AFTER_IDLE_S, **engine_kwargs: Any
    ) -> None:
        self.url = url
        self.engine = create_db_engine(url, ping_idle_s=ping_idle_s, **engine_kwargs)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        self._read_sessions = sessionmaker(
            self.engine.execution_options(hpo_read_only=True), expire_on_commit=False
        )

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def session_scope(self, *, read_only: bool = False) -> Iterator[Session]:
        """One transaction: commit on success, roll back and re-raise on error.

        Raises:
            UnavailableError: the database could not be reached.
        """
        session = (self._read_sessions if read_only else self._sessions)()
        try:
            yield session
            session.commit()
        except BaseException as exc:
            _rollback_quietly(session)
            if isinstance(exc, DBAPIError) and is_connection_error(exc):
                logger.warning("database unavailable: %s", type(exc.orig).__name__)
                raise UnavailableError("the database is temporarily unavailable") from exc
            raise
        finally:
            session.close()

    def dispose(self) -> None:
        self.engine.dispose()


def _rollback_quietly(session: Session) -> None:
    # A dead connection cannot roll back; the original error is the one to report.
    try:
        session.rollback()
    except DBAPIError:
        logger.debug("rollback failed on a broken connection", exc_info=True)
