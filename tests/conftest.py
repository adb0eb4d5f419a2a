"""Shared fixtures: throwaway Postgres databases, settings, an API client.

Postgres tests run against the server at ``HPO_TEST_POSTGRES_URL`` (default:
the local server on 127.0.0.1:5432). Without a server they are skipped, except
under ``CI=true`` where a missing server is a failure.
"""

from __future__ import annotations

import fcntl
import os
import queue
import shutil
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from storage.db import Database
from storage.migrate import upgrade_optuna_schema, upgrade_service_schema
from storage.settings import Settings, normalize_database_url

DEFAULT_SERVER = "postgresql+psycopg2://postgres@127.0.0.1:5432/postgres"


class PostgresServer:
    """Creates databases from migrated templates and drops them afterwards."""

    def __init__(self, url: str) -> None:
        self.url = normalize_database_url(url)
        self.admin = create_engine(self.url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
        self.prefix = f"hpo_test_{uuid.uuid4().hex[:8]}"
        self.created: list[str] = []
        self.templates: dict[str, str] = {}
        # A DROP DATABASE waits for a checkpoint (~0.4 s): hundreds of them at the
        # end of the session took minutes, so finished tests' databases are
        # dropped by a thread while later tests run.
        self._to_drop: queue.Queue[str | None] = queue.Queue()
        self._dropper = threading.Thread(target=self._drop_queued, name="dropdb", daemon=True)
        self._dropper.start()

    def url_for(self, database: str) -> str:
        return make_url(self.url).set(database=database).render_as_string(hide_password=False)

    def create(self, template: str | None = None) -> str:
        name = f"{self.prefix}_{len(self.created)}"
        suffix = f" TEMPLATE {template}" if template else ""
        with self.admin.connect() as conn:
            conn.execute(text(f'CREATE DATABASE "{name}"{suffix}'))
        self.created.append(name)
        return self.url_for(name)

    def template(self, kind: str) -> str:
        """A database migrated once (``service`` or ``optuna``) to copy from."""
        if kind not in self.templates:
            url = self.create()
            if kind == "service":
                database = Database(url)
                upgrade_service_schema(database)
                database.dispose()
            else:
                upgrade_optuna_schema(url)
            self.templates[kind] = make_url(url).database or ""
        return self.templates[kind]

    def drop_later(self, url: str) -> None:
        """Drop the database of ``url`` soon, in the background (its test is over)."""
        self._to_drop.put(make_url(url).database or "")

    def _drop(self, name: str) -> None:
        with self.admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    def _drop_queued(self) -> None:
        while (name := self._to_drop.get()) is not None:
            try:
                self._drop(name)
            except Exception:  # dropped again, and reported, by drop_all
                continue

    def drop_all(self) -> None:
        self._to_drop.put(None)
        self._dropper.join()
        for name in reversed(self.created):
            self._drop(name)
        self.admin.dispose()


def pytest_configure(config: pytest.Config) -> None:
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # Two test processes share the machine's cores: the workers and servers
        # each one starts train with one thread instead of all of them spinning.
        # (tests/workers/test_cpu_share.py removes this for its own workers.)
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
            os.environ.setdefault(name, "1")


def pytest_unconfigure(config: pytest.Config) -> None:
    for folder in _SQLITE_TEMPLATES:
        shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture(autouse=True)
def exclusive_gate(request: pytest.FixtureRequest) -> Iterator[None]:
    """Under pytest-xdist, a test marked ``exclusive`` runs while no other test does.

    Such a test restarts the Postgres server every test shares. The others hold
    a shared lock while they run, the exclusive one an exclusive lock; a
    turnstile lets a waiting exclusive test in before later shared ones.
    """
    run = os.environ.get("PYTEST_XDIST_TESTRUNUID")
    if run is None:
        yield
        return
    base = Path(tempfile.gettempdir()) / f"hpo-tests-{run[:16]}"
    exclusive = request.node.get_closest_marker("exclusive") is not None
    with open(f"{base}.turnstile", "a") as turnstile, open(f"{base}.gate", "a") as gate:
        fcntl.flock(turnstile, fcntl.LOCK_EX)
        fcntl.flock(gate, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        if not exclusive:
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        try:
            yield
        finally:
            fcntl.flock(gate, fcntl.LOCK_UN)
            fcntl.flock(turnstile, fcntl.LOCK_UN)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PostgresServer]:
    url = os.environ.get("HPO_TEST_POSTGRES_URL", DEFAULT_SERVER)
    server = PostgresServer(url)
    try:
        with server.admin.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"PostgreSQL is required under CI but unreachable at {url}: {exc}")
        pytest.skip(f"PostgreSQL unreachable at {url}")
    yield server
    server.drop_all()


@pytest.fixture
def pg_urls(pg_server: PostgresServer) -> Iterator[tuple[str, str]]:
    """(service database URL, Optuna storage URL), both migrated and empty."""
    urls = (
        pg_server.create(pg_server.template("service")),
        pg_server.create(pg_server.template("optuna")),
    )
    yield urls
    for url in urls:
        pg_server.drop_later(url)


_SQLITE_TEMPLATES: list[Path] = []


def _sqlite_template() -> Path:
    """A folder with both SQLite databases migrated, once per test process."""
    if not _SQLITE_TEMPLATES:
        folder = Path(tempfile.mkdtemp(prefix="hpo-sqlite-template-"))
        database = Database(f"sqlite:///{folder / 'hpo.db'}")
        upgrade_service_schema(database)
        database.dispose()
        upgrade_optuna_schema(f"sqlite:///{folder / 'optuna.db'}")
        _SQLITE_TEMPLATES.append(folder)
    return _SQLITE_TEMPLATES[0]


def migrated_mlflow_store(settings: Settings) -> None:
    """Give ``settings``' SQLite MLflow store its tables: a copy of a store migrated once.

    MLflow's own migrations take seconds in the first process that opens a new
    store; tests that track in MLflow start from the copy instead.
    """
    from storage.migrate import upgrade_mlflow_store

    uri = settings.mlflow_tracking_uri
    prefix = "sqlite:///"
    if not uri.startswith(prefix):
        upgrade_mlflow_store(uri)
        return
    template = _sqlite_template() / "mlflow.db"
    if not template.exists():
        upgrade_mlflow_store(f"{prefix}{template}")
    target = Path(uri[len(prefix) :])
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, target)


def sqlite_urls(data_dir: Path) -> tuple[str, str]:
    """Migrated, empty SQLite databases in ``data_dir`` (copies of migrated templates)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    template = _sqlite_template()
    for name in ("hpo.db", "optuna.db"):
        shutil.copyfile(template / name, data_dir / name)
    return f"sqlite:///{data_dir / 'hpo.db'}", f"sqlite:///{data_dir / 'optuna.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def db_urls(backend: str, request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    if backend == "postgres":
        urls: tuple[str, str] = request.getfixturevalue("pg_urls")
        return urls
    return sqlite_urls(tmp_path / "data")


def make_settings(data_dir: Path, urls: tuple[str, str], **overrides: object) -> Settings:
    values: dict[str, object] = {
        "data_dir": data_dir,
        "database_url": urls[0],
        "optuna_storage": urls[1],
        "mlflow_tracking_uri": f"sqlite:///{data_dir / 'mlflow.db'}",
        "dataset_roots": str(data_dir),
        "heartbeat_interval_s": 0.5,
        "heartbeat_grace_s": 4.0,
        "poll_interval_s": 0.5,
        # Tests about MLflow turn it on; the others do not pay for it.
        "mlflow_enabled": False,
    }
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


@pytest.fixture
def settings(tmp_path: Path, db_urls: tuple[str, str]) -> Settings:
    return make_settings(tmp_path / "data", db_urls)


def process_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of ``hpo`` processes that share ``settings``."""
    from tests.procs import hpo_env

    values = {
        "HPO_DATA_DIR": str(settings.data_dir),
        "HPO_DATABASE_URL": settings.database_url,
        "HPO_OPTUNA_STORAGE": settings.optuna_storage,
        "HPO_MLFLOW_TRACKING_URI": settings.mlflow_tracking_uri,
        "HPO_DATASET_ROOTS": settings.dataset_roots,
        "HPO_HEARTBEAT_INTERVAL_S": str(settings.heartbeat_interval_s),
        "HPO_HEARTBEAT_GRACE_S": str(settings.heartbeat_grace_s),
        "HPO_POLL_INTERVAL_S": str(settings.poll_interval_s),
        "HPO_SHUTDOWN_GRACE_S": str(settings.shutdown_grace_s),
        "HPO_ALLOWED_TASK_MODULES": "tests",
        "HPO_MLFLOW_ENABLED": str(settings.mlflow_enabled).lower(),
    }
    values.update(extra)
    return hpo_env(values)


class Fleet:
    """Worker processes (``hpo worker``), each in its own process group."""

    def __init__(self, settings: Settings, log_dir: Path) -> None:
        self.settings = settings
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, **env: str) -> subprocess.Popen[bytes]:
        from tests.procs import HPO, REPO

        log = (self.log_dir / f"worker-{len(self.procs)}.log").open("wb")
        proc = subprocess.Popen(
            [*HPO, "worker", "--devices", "cpu", *args],
            env=process_env(self.settings, **env),
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("*.log")))

    def stop_all(self) -> None:
        from tests.procs import stop_group

        for proc in self.procs:
            stop_group(proc)


@pytest.fixture
def fleet(settings: Settings, tmp_path: Path) -> Iterator[Fleet]:
    logs = tmp_path / "logs"
    logs.mkdir()
    workers = Fleet(settings, logs)
    yield workers
    workers.stop_all()


@pytest.fixture
def fleet_factory() -> type[Fleet]:
    return Fleet
