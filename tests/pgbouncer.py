"""A real PgBouncer in transaction mode in front of the test Postgres, and a
sampler of the server connections that ``pg_stat_activity`` shows.

Used by the PgBouncer tests and by ``benchmarks/scale.py``.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from types import TracebackType

from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from storage.settings import normalize_database_url
from tests.procs import free_port

# PgBouncer refuses to run as root; as root it is started as this user.
RUN_AS = ("postgres", "nobody")


def pgbouncer_binary() -> str | None:
    """The ``pgbouncer`` executable (Debian installs it in /usr/sbin), or None."""
    return shutil.which("pgbouncer") or shutil.which("pgbouncer", path="/usr/sbin:/usr/bin")


class PgBouncer:
    """``pgbouncer`` in transaction mode on a free 127.0.0.1 port, for every
    database of ``server_url``'s server, trusting the server URL's user.

    ``pool_size`` is PgBouncer's ``default_pool_size``: server connections per
    (database, user) pair.
    """

    def __init__(self, server_url: str, pool_size: int = 10, max_client_conn: int = 2000) -> None:
        binary = pgbouncer_binary()
        if binary is None:
            raise FileNotFoundError("pgbouncer is not installed (apt-get install pgbouncer)")
        self.binary = binary
        self.server = make_url(normalize_database_url(server_url))
        self.pool_size = pool_size
        self.max_client_conn = max_client_conn
        self.port = free_port()
        # Not under pytest's tmp_path: that is private to root, and PgBouncer runs as another user.
        self.workdir = Path(tempfile.mkdtemp(prefix="hpo-pgbouncer-"))
        self.proc: subprocess.Popen[bytes] | None = None

    def url_for(self, direct_url: str) -> str:
        """``direct_url`` (a database on the same server) through PgBouncer."""
        url = make_url(normalize_database_url(direct_url))
        return url.set(host="127.0.0.1", port=self.port).render_as_string(hide_password=False)

    def config(self) -> str:
        server_host = self.server.host or "127.0.0.1"
        return "\n".join(
            [
                "[databases]",
                f"* = host={server_host} port={self.server.port or 5432}",
                "[pgbouncer]",
                "listen_addr = 127.0.0.1",
                f"listen_port = {self.port}",
                "unix_socket_dir =",
                "auth_type = trust",
                f"auth_file = {self.workdir / 'userlist.txt'}",
                "pool_mode = transaction",
                f"default_pool_size = {self.pool_size}",
                "reserve_pool_size = 0",
                f"max_client_conn = {self.max_client_conn}",
                f"logfile = {self.workdir / 'pgbouncer.log'}",
                f"pidfile = {self.workdir / 'pgbouncer.pid'}",
                "log_connections = 0",
                "log_disconnections = 0",
                "",
            ]
        )

    def start(self, timeout: float = 20.0) -> None:
        user = self.server.username or "postgres"
        (self.workdir / "pgbouncer.ini").write_text(self.config())
        (self.workdir / "userlist.txt").write_text(f'"{user}" ""\n')
        command = [self.binary, str(self.workdir / "pgbouncer.ini")]
        if os.geteuid() == 0:
            account = _unprivileged_account()
            for path in [self.workdir, *self.workdir.iterdir()]:
                os.chown(path, account.pw_uid, account.pw_gid)
            command[1:1] = ["-u", account.pw_name]
        self.proc = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self._wait_ready(timeout)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"pgbouncer exited with {self.proc.returncode}:\n{self.log()}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                time.sleep(0.1)
        raise TimeoutError(f"pgbouncer did not listen within {timeout}s:\n{self.log()}")

    def log(self) -> str:
        path = self.workdir / "pgbouncer.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> PgBouncer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _unprivileged_account() -> pwd.struct_passwd:
    for name in RUN_AS:
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    raise RuntimeError(f"none of the users {RUN_AS} exists to run pgbouncer as")


LISTEN_APPLICATION = "hpo-listen"
# Connections a test or benchmark opens to watch the databases: not counted.
PROBE_APPLICATION = "hpo-probe"


class ServerConnections(threading.Thread):
    """Samples ``pg_stat_activity`` for ``databases``: the peak of all server
    connections to them (``peak``), of the LISTEN connections among them
    (``peak_listen``), and of the others per database (``peak_pooled``).

    Connections named :data:`PROBE_APPLICATION` (the watchers') are not counted.
    """

    def __init__(self, server_url: str, databases: list[str], interval_s: float = 0.05) -> None:
        super().__init__(daemon=True, name="pg-activity")
        self.engine: Engine = create_engine(
            normalize_database_url(server_url), pool_size=1, max_overflow=0
        )
        self.databases = databases
        self.interval_s = interval_s
        self.peak = 0
        self.peak_listen = 0
        self.peak_pooled: Counter[str] = Counter()
        self.samples = 0
        self._done = threading.Event()

    def sample(self) -> tuple[int, int, dict[str, int]]:
        """(connections, LISTEN connections, other connections per database) right now."""
        query = text(
            "SELECT datname, application_name = :listen, count(*) FROM pg_stat_activity "
            "WHERE datname = ANY(:names) AND application_name <> :probe GROUP BY 1, 2"
        )
        with self.engine.connect() as conn:
            rows = conn.execute(
                query,
                {"listen": LISTEN_APPLICATION, "probe": PROBE_APPLICATION, "names": self.databases},
            ).all()
        pooled: Counter[str] = Counter()
        listen = 0
        for database, is_listen, count in rows:
            if is_listen:
                listen += int(count)
            else:
                pooled[database] += int(count)
        return sum(pooled.values()) + listen, listen, dict(pooled)

    def run(self) -> None:
        while not self._done.is_set():
            total, listen, pooled = self.sample()
            self.peak = max(self.peak, total)
            self.peak_listen = max(self.peak_listen, listen)
            for name, count in pooled.items():
                self.peak_pooled[name] = max(self.peak_pooled[name], count)
            self.samples += 1
            self._done.wait(self.interval_s)

    def stop(self) -> None:
        self._done.set()
        self.join(timeout=10)
        self.engine.dispose()
