"""Fault injection: workers that die at every point of a trial, at random, or freeze.

After each run the service must report only what is true: the study
completes with exactly ``n_trials`` counted trials, nothing is left RUNNING
or WAITING in Optuna, Optuna never shows more RUNNING trials than
``max_concurrent_trials``, every lost trial that had started is retried, and
no configuration is counted twice (``tests/workers/faults.py``).
"""

from __future__ import annotations

import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from storage.db import Database
from storage.models import Study
from storage.settings import Settings
from tests.conftest import make_settings, migrated_mlflow_store
from tests.workers.faults import (
    RunningSampler,
    Slots,
    mlflow_runs_left_running,
    run_round,
    trials_of,
    violations,
)

pytestmark = pytest.mark.slow


@pytest.fixture
def settings(tmp_path: Path, pg_urls: tuple[str, str]) -> Settings:
    return make_settings(
        tmp_path / "data",
        pg_urls,
        allowed_task_modules="tests",
        heartbeat_interval_s=0.3,
        heartbeat_grace_s=2.0,
        poll_interval_s=0.3,
    )


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


@pytest.fixture
def slots(settings: Settings, tmp_path: Path) -> Iterator[Slots]:
    logs = tmp_path / "slot-logs"
    logs.mkdir()
    running = Slots(settings, logs)
    yield running
    running.stop_all()


def _spec(name: str, n_trials: int, max_concurrent: int, **config: Any) -> dict[str, Any]:
    return {
        "name": name,
        "task": {"name": "python:tests.objectives:quadratic", "config": config},
        "objective": {"metric": "loss", "direction": "minimize"},
        "search_space": {"x": {"type": "float", "low": -5, "high": 5}},
        "pruner": {"name": "none"},
        "budget": {
            "n_trials": n_trials,
            "max_concurrent_trials": max_concurrent,
            "max_retries": 5,
        },
    }


def _wait_status(api: TestClient, name: str, status: str, slots: Slots, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while api.get(f"/api/v1/studies/{name}").json()["status"] != status:
        assert time.monotonic() < deadline, slots.logs()[-4000:]
        time.sleep(0.2)


@pytest.mark.parametrize("point", ["before-ask", "after-ask", "before-attach", "before-settle"])
def test_a_worker_dying_at_any_point_of_a_trial_leaves_nothing_behind(
    api: TestClient, slots: Slots, settings: Settings, point: str
) -> None:
    name = f"dies-{point}"
    assert api.post("/api/v1/studies", json=_spec(name, 3, 1, steps=2)).status_code == 201
    # The first trial is an enqueued configuration: it must not be lost either.
    enqueued = api.post(f"/api/v1/studies/{name}/trials", json={"params": {"x": 1.5}})
    assert enqueued.status_code == 202, enqueued.text
    sampler = RunningSampler(settings.optuna_storage, name)
    sampler.start()
    dying = slots.start(point, "--study", name, module="tests.faults")
    assert dying.wait(timeout=60) == 137, slots.logs()
    slots.start("--study", name)
    _wait_status(api, name, "completed", slots, timeout=90)
    sampler.stop()
    study = api.get(f"/api/v1/studies/{name}").json()
    trials = trials_of(api, name)
    assert violations(study, trials, 3, sampler.peak) == [], trials
    orphaned = [t for t in trials if t["fail_reason"] == "orphaned"]
    assert len(orphaned) == (1 if point in ("after-ask", "before-attach") else 0), trials
    ran = [t for t in trials if t["state"] == "COMPLETE"]
    assert any(t["params"] == {"x": 1.5} for t in ran), trials
    if point == "before-settle":
        # Told but not settled: the reaper counts the told result, and nothing is retried.
        assert [t for t in trials if t["retry_of"] is not None] == []


def test_random_sigkills_over_rounds_break_no_invariant(
    api: TestClient, slots: Slots, settings: Settings
) -> None:
    rng = random.Random(11)
    # Trials of about a second: on a fast machine shorter ones let a round end before its kills.
    results = [
        run_round(
            api,
            slots,
            settings.optuna_storage,
            name=f"round-{i}",
            rng=rng,
            max_kills=8,
            report_every_s=0.25,
        )
        for i in range(3)
    ]
    assert sum(r.kills for r in results) >= 24
    assert [v for r in results for v in r.violations] == []


def test_a_frozen_worker_past_the_grace_period_does_not_count_twice(
    api: TestClient, slots: Slots, settings: Settings
) -> None:
    name = "frozen"
    spec = _spec(name, 2, 1, steps=10, sleep_s=0.3)
    assert api.post("/api/v1/studies", json=spec).status_code == 201
    frozen = slots.start("--study", name)
    deadline = time.monotonic() + 60
    while api.get(f"/api/v1/studies/{name}").json()["counts"]["RUNNING"] == 0:
        assert time.monotonic() < deadline, slots.logs()
        time.sleep(0.1)
    time.sleep(0.5)
    frozen.send_signal(signal.SIGSTOP)
    deadline = time.monotonic() + 30
    while not any(t["fail_reason"] == "lost" for t in trials_of(api, name)):
        assert time.monotonic() < deadline, slots.logs()
        time.sleep(0.2)
    # The retry runs elsewhere while the first worker is frozen, then it wakes up.
    slots.start("--study", name)
    time.sleep(1.0)
    frozen.send_signal(signal.SIGCONT)
    _wait_status(api, name, "completed", slots, timeout=90)
    study = api.get(f"/api/v1/studies/{name}").json()
    trials = trials_of(api, name)
    assert violations(study, trials, 2, 0) == [], trials
    lost = [t for t in trials if t["fail_reason"] == "lost"]
    assert len(lost) == 1
    retry = next(t for t in trials if t["retry_of"] == lost[0]["number"])
    assert retry["state"] == "COMPLETE" and retry["params"] == lost[0]["params"]
    assert retry["value"] == pytest.approx((retry["params"]["x"] - 2.0) ** 2)
    assert "taken over" in slots.logs() or "reaped" in slots.logs()


@pytest.mark.parametrize("replaced", [False, True])
def test_a_study_whose_optuna_study_vanished_is_failed_not_retried(
    api: TestClient, slots: Slots, settings: Settings, replaced: bool
) -> None:
    name = "vanished"
    assert api.post("/api/v1/studies", json=_spec(name, 3, 1)).status_code == 201
    optuna.delete_study(study_name=name, storage=settings.optuna_storage)
    if replaced:  # someone made another Optuna study of that name
        optuna.create_study(study_name=name, storage=settings.optuna_storage)
    worker = slots.start("--study", name, "--exit-when-idle")
    database = Database(settings.database_url)
    try:
        deadline = time.monotonic() + 30
        while True:
            with database.session_scope(read_only=True) as session:
                row = session.query(Study).filter_by(name=name).one()
                status, reason, active = row.status, row.status_reason, row.n_active
            if status == "failed":
                break
            assert time.monotonic() < deadline, slots.logs()
            time.sleep(0.2)
    finally:
        database.dispose()
    assert "Optuna study no longer exists" in (reason or "") and active == 0
    assert worker.wait(timeout=30) == 0  # nothing left to serve: it exits instead of retrying
    assert slots.logs().count("could not start a trial") == 1
    if replaced:
        other = optuna.load_study(study_name=name, storage=settings.optuna_storage)
        assert other.trials == []


def test_random_sigkills_leave_no_mlflow_run_running(
    tmp_path: Path, pg_urls: tuple[str, str]
) -> None:
    from mlflow.tracking import MlflowClient

    from tests.conftest import Fleet

    settings = make_settings(
        tmp_path / "data",
        pg_urls,
        allowed_task_modules="tests",
        heartbeat_interval_s=0.3,
        heartbeat_grace_s=2.0,
        poll_interval_s=0.3,
        mlflow_enabled=True,
    )
    migrated_mlflow_store(settings)
    (tmp_path / "logs").mkdir()
    slots = Slots(settings, tmp_path / "logs")
    # A supervisor that is never killed: it ends the runs of lost trials (its sweep).
    sweeper = Fleet(settings, tmp_path / "logs")
    client = MlflowClient(tracking_uri=settings.mlflow_tracking_uri)
    try:
        with TestClient(create_app(settings)) as api:
            # It serves no study, so that the killed slots run the trials.
            sweeper.start("--study", "sweeper-serves-no-study")
            result = run_round(
                api,
                slots,
                settings.optuna_storage,
                name="tracked",
                rng=random.Random(5),
                n_trials=10,
                max_kills=6,
                extra_check=mlflow_runs_left_running(settings.mlflow_tracking_uri),
                # Longer trials than the MLflow calls around them, so kills hit trials.
                report_every_s=0.5,
            )
    finally:
        slots.stop_all()
        sweeper.stop_all()
    assert result.kills >= 2  # slots that track in MLflow take a while to start
    assert result.violations == [], slots.logs()[-3000:]
    trial_runs = client.search_runs(
        [client.get_experiment_by_name("tracked").experiment_id], "tags.`hpo.kind` = 'trial'"
    )
    assert len(trial_runs) >= 10
    # Kills hit running trials; each of those whose MLflow run had been started
    # (a kill can come before the run is) ended FAILED as a lost trial.
    assert result.lost >= 1
    study = optuna.load_study(study_name="tracked", storage=settings.optuna_storage)
    lost_numbers = {t.number for t in study.trials if t.user_attrs.get("hpo.fail_reason") == "lost"}
    runs = {int(r.data.tags["hpo.trial_number"]): r for r in trial_runs}
    assert lost_numbers
    for number in lost_numbers & runs.keys():
        run = runs[number]
        assert run.info.status == "FAILED" and run.data.tags.get("hpo.fail_reason") == "lost"
