"""Waiting for work: Postgres LISTEN/NOTIFY, with polling as the fallback.

One LISTEN connection per ``hpo worker``, not per slot: the supervisor's
:class:`WakeupRelay` listens and writes a byte into a pipe per slot, and each
slot's :class:`Wakeup` waits on its pipe. The listen connection goes straight
to Postgres (``HPO_LISTEN_DATABASE_URL``): PgBouncer in transaction mode does
not pass notifications on. Whatever fails, slots still poll every
``HPO_POLL_INTERVAL_S``.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import threading
from typing import Any

from sqlalchemy.engine import make_url

from storage.events import NOTIFY_CHANNEL
from storage.settings import Settings

logger = logging.getLogger(__name__)
# How long the relay waits before connecting again after its connection broke.
RELAY_RETRY_S = 5.0


def listens(settings: Settings) -> bool:
    """True when workers should LISTEN (Postgres, and not turned off)."""
    return (
        settings.listen_enabled
        and make_url(settings.listen_database_url).get_backend_name() == "postgresql"
    )


def listen_connection(url: str) -> Any:
    """A psycopg2 connection in autocommit mode that LISTENs on the wake-up channel."""
    import psycopg2

    parsed = make_url(url)
    conn = psycopg2.connect(
        host=parsed.host,
        port=parsed.port,
        user=parsed.username,
        password=parsed.password,
        dbname=parsed.database,
        connect_timeout=5,
        application_name="hpo-listen",
        # A Postgres that vanished without closing the socket (a node lost) is
        # noticed within a minute, not after the kernel's two hours.
        keepalives=1,
        keepalives_idle=30,
        keepalives_interval=10,
        keepalives_count=3,
    )
    conn.set_session(autocommit=True)
    with conn.cursor() as cursor:
        cursor.execute(f"LISTEN {NOTIFY_CHANNEL}")
    return conn


def _close_quietly(conn: Any) -> None:
    try:
        conn.close()
    except Exception:
        logger.debug("closing the LISTEN connection failed", exc_info=True)


class Wakeup:
    """``wait(timeout)`` returns early when a study becomes claimable.

    With ``relay_fd`` it waits on the supervisor's pipe; else, with a Postgres
    ``listen_url``, on a LISTEN connection of its own; else it sleeps for the
    timeout, i.e. polls. A broken connection or pipe falls back to polling.
    """

    def __init__(self, listen_url: str | None, relay_fd: int | None = None) -> None:
        self._url = listen_url
        self._relay_fd = relay_fd
        self._conn: Any = None
        self._stop = threading.Event()
        # A signal handler writes here to end a wait at once (select() would resume).
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_write, False)
        if relay_fd is not None:
            os.set_blocking(relay_fd, False)
        self._postgres = (
            listen_url is not None and make_url(listen_url).get_backend_name() == "postgresql"
        )

    @classmethod
    def for_slot(cls, settings: Settings, relay_fd: int | None) -> Wakeup:
        """A slot's wake-up: the supervisor's relay, its own LISTEN, or polling."""
        if relay_fd is not None:
            return cls(None, relay_fd)
        return cls(settings.listen_database_url if listens(settings) else None)

    def wait(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds; True when woken by a notification."""
        if self._relay_fd is not None:
            return self._wait_relay(timeout)
        if not self._postgres:
            self._stop.wait(timeout)
            return False
        try:
            if self._conn is None:
                self._conn = listen_connection(str(self._url))
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

    def _wait_relay(self, timeout: float) -> bool:
        fd = self._relay_fd
        assert fd is not None
        ready, _, _ = select.select([fd, self._wake_read], [], [], timeout)
        if self._wake_read in ready or fd not in ready:
            return False
        try:
            # Several notifications while a trial ran make one wake-up.
            while chunk := os.read(fd, 4096):
                if len(chunk) < 4096:
                    return True
        except BlockingIOError:
            return True
        # End of file: the supervisor is gone; poll from now on.
        logger.warning("wake-up relay closed; polling")
        self._close_relay()
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
        self._close_relay()
        self._drop_connection()

    def _close_relay(self) -> None:
        if self._relay_fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._relay_fd)
            self._relay_fd = None
            self._postgres = False  # poll

    def _drop_connection(self) -> None:
        if self._conn is not None:
            _close_quietly(self._conn)
            self._conn = None


class WakeupRelay:
    """One LISTEN connection for all the slots of a supervisor.

    Each slot gets the read end of a pipe (:meth:`add_slot`); a notification
    writes one byte into every pipe. A full pipe already holds a pending
    wake-up, so writes never block. The connection is re-opened after
    :data:`RELAY_RETRY_S` when it breaks; slots poll meanwhile.
    """

    def __init__(self, listen_url: str, retry_s: float = RELAY_RETRY_S) -> None:
        self._url = listen_url
        self._retry_s = retry_s
        self._writers: list[int] = []
        self._readers: list[int] = []
        self._stop = threading.Event()
        self._stop_read, self._stop_write = os.pipe()
        self._thread = threading.Thread(target=self._run, name="wakeup-relay", daemon=True)
        self.notifications = 0

    @classmethod
    def for_settings(cls, settings: Settings) -> WakeupRelay | None:
        """The relay of a supervisor, or None when workers only poll."""
        return cls(settings.listen_database_url) if listens(settings) else None

    def add_slot(self) -> int:
        """A new pipe; returns its read end, for a slot process to inherit."""
        read_fd, write_fd = os.pipe()
        os.set_blocking(write_fd, False)
        self._readers.append(read_fd)
        self._writers.append(write_fd)
        return read_fd

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            os.write(self._stop_write, b"x")
        if self._thread.is_alive():
            self._thread.join(timeout=10)
        for fd in (*self._readers, *self._writers, self._stop_read, self._stop_write):
            with contextlib.suppress(OSError):
                os.close(fd)
        self._readers, self._writers = [], []

    def _run(self) -> None:
        failing = False
        while not self._stop.is_set():
            try:
                conn = listen_connection(self._url)
            except Exception as exc:
                if not failing:
                    logger.warning("cannot LISTEN (%s); slots poll", type(exc).__name__)
                failing = True
                self._stop.wait(self._retry_s)
                continue
            if failing:
                logger.info("LISTEN connection restored")
                failing = False
            try:
                self._relay(conn)
            except Exception as exc:
                logger.warning("LISTEN connection broke (%s); slots poll", type(exc).__name__)
                failing = True
                self._stop.wait(self._retry_s)
            finally:
                _close_quietly(conn)

    def _relay(self, conn: Any) -> None:
        # A reconnect may have missed notifications: wake the slots to look.
        self._fan_out()
        while not self._stop.is_set():
            ready, _, _ = select.select([conn, self._stop_read], [], [], RELAY_RETRY_S)
            if self._stop_read in ready:
                return
            if conn in ready:
                conn.poll()
                if conn.notifies:
                    conn.notifies.clear()
                    self._fan_out()

    def _fan_out(self) -> None:
        self.notifications += 1
        for fd in self._writers:
            # BlockingIOError: a wake-up is already pending in that pipe.
            with contextlib.suppress(OSError):
                os.write(fd, b"x")
