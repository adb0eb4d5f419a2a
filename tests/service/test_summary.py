"""The study view's trial summary: reused while the study's row is unchanged, yet exact."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from fastapi.testclient import TestClient
from optuna.trial import TrialState

from service.app import create_app
from service.summary import SummaryCache, TrialSummary
from storage.models import Study
from storage.settings import Settings
from tests.conftest import Fleet, make_settings


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def _study(**changes: Any) -> Study:
    values: dict[str, Any] = {
        "id": 1,
        "optuna_study_id": 1,
        "updated_at": None,
        "status": "running",
        "n_claims": 0,
        "n_active": 0,
        "n_finished": 0,
        "n_lost": 0,
    }
    return Study(**{**values, **changes})


def _computing(calls: list[int]) -> Any:
    def compute() -> TrialSummary:
        calls.append(1)
        return TrialSummary({"COMPLETE": len(calls)}, None, None)

    return compute


def test_a_summary_is_computed_once_per_version_of_the_row() -> None:
    clock = Clock()
    cache = SummaryCache(max_age_s=1.0, clock=clock)
    calls: list[int] = []
    compute = _computing(calls)
    first = cache.get(_study(), compute)
    assert cache.get(_study(), compute) is first
    assert cache.get(_study(n_finished=1), compute).counts == {"COMPLETE": 2}
    assert cache.get(_study(n_finished=1, n_claims=1), compute).counts == {"COMPLETE": 3}
    assert cache.get(_study(n_finished=1, n_claims=1), compute).counts == {"COMPLETE": 3}
    clock.now += 1.0  # what no row records (an ask) shows within max_age_s
    assert cache.get(_study(n_finished=1, n_claims=1), compute).counts == {"COMPLETE": 4}
    assert cache.get(_study(id=2), compute).counts == {"COMPLETE": 5}


def test_concurrent_readers_compute_a_summary_once() -> None:
    cache = SummaryCache(max_age_s=60.0)
    calls: list[int] = []

    def slow() -> TrialSummary:
        calls.append(1)
        time.sleep(0.2)
        return TrialSummary({}, None, None)

    threads = [threading.Thread(target=cache.get, args=(_study(), slow)) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(calls) == 1


@pytest.fixture
def settings(tmp_path: Path, pg_urls: tuple[str, str]) -> Settings:
    return make_settings(
        tmp_path / "data", pg_urls, allowed_task_modules="tests", shutdown_grace_s=30.0
    )


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    app = create_app(settings)
    # Never refreshed by age: only a change of the study's row may show new trials.
    app.state.hpo.summaries = SummaryCache(max_age_s=3600.0)
    with TestClient(app) as client:
        yield client


def _truth(settings: Settings, name: str) -> tuple[dict[str, int], optuna.trial.FrozenTrial]:
    """Counts by state and the best trial, as Optuna itself tells them."""
    study = optuna.load_study(study_name=name, storage=settings.optuna_storage)
    states = ("RUNNING", "WAITING", "COMPLETE", "PRUNED", "FAIL")
    counts = {state: len(study.get_trials(states=(TrialState[state],))) for state in states}
    return counts, study.best_trial


@pytest.mark.slow
def test_the_view_matches_optuna_after_a_study_with_real_workers(
    api: TestClient, fleet: Fleet, settings: Settings
) -> None:
    name = "summary"
    body = {
        "name": name,
        "task": {"name": "python:tests.objectives:fails_below", "config": {"steps": 4}},
        "objective": {"metric": "loss", "direction": "minimize"},
        "search_space": {"x": {"type": "float", "low": -10, "high": 10}},
        "sampler": {"name": "tpe", "seed": 7},
        "pruner": {"name": "median", "options": {"n_startup_trials": 1, "n_warmup_steps": 0}},
        "budget": {"n_trials": 7, "max_concurrent_trials": 1},
    }
    assert api.post("/api/v1/studies", json=body).status_code == 201
    # Complete, fail, prune, then the best; the rest sampled.
    for x in (2.5, -8.0, 9.0, 2.1, -9.0):
        enqueued = api.post(f"/api/v1/studies/{name}/trials", json={"params": {"x": x}})
        assert enqueued.status_code == 202
    view = api.get(f"/api/v1/studies/{name}").json()
    assert view["counts"]["WAITING"] == 5  # an enqueue changes the row: seen at once
    fleet.start("--exit-when-idle")
    deadline = time.monotonic() + 120
    while view["status"] != "completed":
        assert time.monotonic() < deadline, fleet.logs()[-4000:]
        view = api.get(f"/api/v1/studies/{name}").json()  # the cache sees every version
        time.sleep(0.05)
    counts, best = _truth(settings, name)
    assert view["counts"] == counts
    assert counts["COMPLETE"] >= 2 and counts["PRUNED"] >= 1 and counts["FAIL"] >= 2
    assert sum(counts.values()) == 7
    assert view["best"]["number"] == best.number
    assert view["best"]["value"] == best.value
    assert view["best"]["params"] == best.params
    assert view["budget"]["finished"] == 7
