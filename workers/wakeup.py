"""Waiting for work: Postgres LISTEN/NOTIFY, with polling as the fallback."""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
from typing import Any

from sqlalchemy.engine import make_url

from storage.events import NOTIFY_CHANNEL

logger = logging.getLogger(__name__)


class Wakeup:
    """``wait(timeout)`` returns early when a study becomes claimable.

    On Postgres a dedicated connection LISTENs; on SQLite (or when that
    connection breaks) it sleeps for the timeout, i.e. polls.
    """

    def __init__(self, database_url: str) -> None:
        self._url = database_url
        self._conn: Any = None
        self._stop = threading.Event()
        # A signal handler writes here to end a wait at once (select() would resume).
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)
        self._postgres = make_url(database_url).get_backend_name() == "postgresql"

    def _connect(self) -> Any:
        import psycopg2

        url = make_url(self._url)
        conn = psycopg2.connect(
            host=url.host,
            port=url.port,
            user=url.username,
            password=url.password,
            dbname=url.database,
            connect_timeout=5,
        )
        conn.set_session(autocommit=True)
        with conn.cursor() as cursor:
            cursor.execute(f"LISTEN {NOTIFY_CHANNEL}")
        return conn

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds; True when woken by a notification."""
        if not self._postgres:
            self._stop.wait(timeout)
            return False
        try:
            if self._conn is None:
                self._conn = self._connect()
            ready, _, _ = select.select([self._conn, self._wake_read], [], [], timeout)
            if self._wake_read in ready or not ready:
                return False
            self._conn.poll()
            woken = bool(self._conn.notifies)
            self._conn.notifies.clear()
            return woken
        except Exception as exc:
            logger.warning("LISTEN connection failed (%s); polling", type(exc).__name__)
            self._drop_connection()
            self._stop.wait(timeout)
            return False

    def interrupt(self) -> None:
        self._stop.set()
        # A full pipe means a wake-up is already pending.
        with contextlib.suppress(OSError):
            os.write(self._wake_write, b"x")

    def close(self) -> None:
        for fd in (self._wake_read, self._wake_write):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._wake_read = self._wake_write = -1
        self._drop_connection()

    def _drop_connection(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            except Exception:
                logger.debug("closing the LISTEN connection failed", exc_info=True)
            self._conn = None
