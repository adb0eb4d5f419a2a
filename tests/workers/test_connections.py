"""How many Postgres connections real ``hpo worker`` processes hold, straight
to Postgres and through PgBouncer in transaction mode, while they run a study
to exactly ``n_trials``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from benchmarks.pg import create_study
from storage.pools import worker_connections
from storage.settings import Settings
from storage.validation import ValidationPolicy, validate_spec
from tests.conftest import Fleet, PostgresServer, make_settings
from tests.pgbouncer import PROBE_APPLICATION, PgBouncer, ServerConnections, pgbouncer_binary
from tests.procs import stop_group

pytestmark = [pytest.mark.slow, pytest.mark.postgres]
WORKERS, SLOTS_PER_WORKER = 2, 3
N_TRIALS, MAX_CONCURRENT = 30, 4
POOL_SIZE = 3


@pytest.fixture
def pgbouncer(pg_server: PostgresServer) -> Iterator[PgBouncer]:
    if pgbouncer_binary() is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("pgbouncer is required under CI (tests/run.sh installs it as root)")
        pytest.skip("pgbouncer is not installed (apt-get install pgbouncer)")
    with PgBouncer(pg_server.url, pool_size=POOL_SIZE) as bouncer:
        yield bouncer


def spec(name: str) -> Any:
    return validate_spec(
        {
            "name": name,
            "task": {"name": "python:tests.objectives:quadratic", "config": {"steps": 2}},
            "objective": {"metric": "loss", "direction": "minimize"},
            "search_space": {"x": {"type": "float", "low": -10, "high": 10}},
            "sampler": {"name": "tpe", "seed": 3},
            "pruner": {"name": "none"},
            "budget": {"n_trials": N_TRIALS, "max_concurrent_trials": MAX_CONCURRENT},
        },
        ValidationPolicy(allowed_task_modules=["tests"]),
    )


def run_fleet(settings: Settings, tmp_path: Path, direct: tuple[str, str], **env: str) -> int:
    """Idle workers first, then the study: only a notification wakes them in time.

    Returns the most trials seen running at once (leases and Optuna RUNNING trials).
    """
    logs = tmp_path / "logs"
    logs.mkdir()
    fleet = Fleet(settings, logs)
    probes = [
        create_engine(url, connect_args={"application_name": PROBE_APPLICATION}) for url in direct
    ]
    try:
        procs = [fleet.start("--per-device", str(SLOTS_PER_WORKER), **env) for _ in range(WORKERS)]
        wait_for(lambda: probe(probes[0], IDLE_SLOTS) == WORKERS * SLOTS_PER_WORKER, 90, fleet)
        time.sleep(1.0)  # past their first claim: now waiting for a wake-up
        started = time.monotonic()
        create_study(as_probe(direct[0]), as_probe(direct[1]), spec("scale"))
        peak = 0

        def completed() -> bool:
            nonlocal peak
            peak = max(peak, probe(probes[0], ACTIVE), probe(probes[1], RUNNING))
            return probe(probes[0], COMPLETED) == 1

        wait_for(completed, 60, fleet)
        # Far below HPO_POLL_INTERVAL_S: the slots were woken, not polling.
        assert time.monotonic() - started < settings.poll_interval_s / 2, fleet.logs()[-4000:]
        for proc in procs:
            assert stop_group(proc) == 0, fleet.logs()[-4000:]
        return peak
    finally:
        fleet.stop_all()
        for engine in probes:
            engine.dispose()


def as_probe(url: str) -> str:
    """``url`` with the probes' application name, so that its connections are not counted."""
    named = make_url(url).update_query_dict({"application_name": PROBE_APPLICATION})
    return named.render_as_string(hide_password=False)


IDLE_SLOTS = "SELECT count(*) FROM hpo_workers WHERE status = 'idle'"
ACTIVE = "SELECT coalesce(max(n_active), 0) FROM hpo_studies"
COMPLETED = "SELECT count(*) FROM hpo_studies WHERE status = 'completed'"
RUNNING = "SELECT count(*) FROM trials WHERE state = 'RUNNING'"


def probe(engine: Engine, query: str) -> int:
    with engine.connect() as conn:
        return int(conn.execute(text(query)).scalar_one())


def wait_for(predicate: Callable[[], bool], timeout: float, fleet: Fleet) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out\n{fleet.logs()[-4000:]}")


def assert_exact_budget(service_url: str, optuna_url: str, peak_running: int) -> None:
    service = create_engine(service_url)
    optuna_engine = create_engine(optuna_url)
    try:
        with service.connect() as conn:
            study = conn.execute(
                text("SELECT status, n_finished, n_active FROM hpo_studies WHERE name = 'scale'")
            ).one()
        with optuna_engine.connect() as conn:
            states: dict[Any, int] = dict(
                conn.execute(text("SELECT state, count(*) FROM trials GROUP BY state")).all()
            )
    finally:
        service.dispose()
        optuna_engine.dispose()
    assert tuple(study) == ("completed", N_TRIALS, 0)
    assert {str(k).split(".")[-1]: v for k, v in states.items()} == {"COMPLETE": N_TRIALS}
    assert 1 < peak_running <= MAX_CONCURRENT


def databases(urls: tuple[str, str]) -> list[str]:
    return [make_url(url).database or "" for url in urls]


def test_workers_straight_to_postgres_stay_within_the_documented_connections(
    pg_server: PostgresServer, pg_urls: tuple[str, str], tmp_path: Path
) -> None:
    settings = make_settings(tmp_path / "data", pg_urls, poll_interval_s=30.0)
    activity = ServerConnections(pg_server.url, databases(pg_urls))
    activity.start()
    try:
        peak_running = run_fleet(settings, tmp_path, pg_urls)
    finally:
        activity.stop()
    assert_exact_budget(*pg_urls, peak_running)
    assert activity.samples > 20
    # One LISTEN per hpo worker, shared by its slots.
    assert activity.peak_listen == WORKERS
    assert activity.peak <= worker_connections(WORKERS * SLOTS_PER_WORKER, WORKERS)


def test_a_study_runs_through_pgbouncer_in_transaction_mode(
    pg_server: PostgresServer, pg_urls: tuple[str, str], pgbouncer: PgBouncer, tmp_path: Path
) -> None:
    pooled = (pgbouncer.url_for(pg_urls[0]), pgbouncer.url_for(pg_urls[1]))
    settings = make_settings(tmp_path / "data", pooled, poll_interval_s=30.0)
    activity = ServerConnections(pg_server.url, databases(pg_urls))
    activity.start()
    try:
        # LISTEN does not pass through PgBouncer: wake-ups listen on Postgres itself.
        peak_running = run_fleet(settings, tmp_path, pg_urls, HPO_LISTEN_DATABASE_URL=pg_urls[0])
    finally:
        activity.stop()
    assert_exact_budget(*pg_urls, peak_running)
    assert activity.peak_listen == WORKERS
    # Every other server connection is one of PgBouncer's: at most its pool per database.
    pooled_peaks = [activity.peak_pooled[name] for name in databases(pg_urls)]
    assert all(0 < peak <= POOL_SIZE for peak in pooled_peaks), pooled_peaks
