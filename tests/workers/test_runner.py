"""Real ``hpo worker`` processes on Postgres: exact budgets, kills, signals, lifecycle."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import create_engine, text

from service.app import create_app
from storage.settings import Settings
from tests.conftest import Fleet, make_settings

pytestmark = pytest.mark.slow
QUADRATIC = "python:tests.objectives:quadratic"


@pytest.fixture
def settings(tmp_path: Path, pg_urls: tuple[str, str]) -> Settings:
    return make_settings(
        tmp_path / "data", pg_urls, allowed_task_modules="tests", shutdown_grace_s=30.0
    )


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def spec(name: str, task: str = QUADRATIC, **budget: Any) -> dict[str, Any]:
    return {
        "name": name,
        "task": {"name": task, "config": budget.pop("config", {})},
        "objective": {"metric": "loss", "direction": "minimize"},
        "search_space": {"x": {"type": "float", "low": -10, "high": 10}},
        "sampler": {"name": "tpe", "seed": 7},
        "pruner": budget.pop("pruner", {"name": "none"}),
        "budget": {"n_trials": 5, "max_concurrent_trials": 2, **budget},
        "priority": budget.pop("priority", 0) if "priority" in budget else 0,
    }


def submit(api: TestClient, body: dict[str, Any]) -> None:
    response = api.post("/api/v1/studies", json=body)
    assert response.status_code == 201, response.text


def wait_for(predicate: Callable[[], bool], timeout: float, what: str, fleet: Fleet) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}\n{fleet.logs()[-4000:]}")


def study(api: TestClient, name: str) -> dict[str, Any]:
    body: dict[str, Any] = api.get(f"/api/v1/studies/{name}").json()
    return body


def trials(api: TestClient, name: str, state: str | None = None) -> list[dict[str, Any]]:
    params: dict[str, Any] = {"limit": 1000}
    if state:
        params["state"] = state
    items: list[dict[str, Any]] = api.get(f"/api/v1/studies/{name}/trials", params=params).json()[
        "items"
    ]
    return items


def finished_count(view: dict[str, Any]) -> int:
    counts = view["counts"]
    return int(counts["COMPLETE"] + counts["PRUNED"] + counts["FAIL"])


class RunningSampler(threading.Thread):
    """Samples how many trials run at once, from both databases."""

    def __init__(self, settings: Settings, name: str) -> None:
        super().__init__(daemon=True)
        self.service = create_engine(settings.database_url)
        self.optuna = create_engine(settings.optuna_storage)
        self.name = name
        self.peak_leases = 0
        self.peak_running = 0
        self.samples = 0
        self.done = threading.Event()

    def run(self) -> None:
        with self.service.connect() as service, self.optuna.connect() as optuna_conn:
            while not self.done.is_set():
                leases = (
                    service.execute(
                        text("SELECT n_active FROM hpo_studies WHERE name = :n"), {"n": self.name}
                    ).scalar()
                    or 0
                )
                running = (
                    optuna_conn.execute(
                        text(
                            "SELECT count(*) FROM trials t JOIN studies s "
                            "ON s.study_id = t.study_id "
                            "WHERE s.study_name = :n AND t.state = 'RUNNING'"
                        ),
                        {"n": self.name},
                    ).scalar()
                    or 0
                )
                self.peak_leases = max(self.peak_leases, int(leases))
                self.peak_running = max(self.peak_running, int(running))
                self.samples += 1
                time.sleep(0.02)
        self.service.dispose()
        self.optuna.dispose()


def test_three_workers_finish_exactly_n_trials_two_at_a_time(
    api: TestClient, fleet: Fleet, settings: Settings
) -> None:
    submit(
        api,
        spec("exact", n_trials=20, max_concurrent_trials=2, config={"steps": 3, "sleep_s": 0.05}),
    )
    sampler = RunningSampler(settings, "exact")
    sampler.start()
    workers = [fleet.start("--exit-when-idle") for _ in range(3)]
    wait_for(
        lambda: any(
            w["trial_number"] is not None for w in api.get("/api/v1/workers").json()["items"]
        ),
        60,
        "a busy worker in GET /workers",
        fleet,
    )
    wait_for(lambda: study(api, "exact")["status"] == "completed", 180, "completion", fleet)
    sampler.done.set()
    sampler.join()
    for proc in workers:
        assert proc.wait(timeout=60) == 0
    view = study(api, "exact")
    assert finished_count(view) == 20 and view["counts"]["RUNNING"] == 0
    assert view["budget"]["finished"] == 20 and view["budget"]["active"] == 0
    assert sampler.samples > 50
    assert sampler.peak_leases <= 2 and sampler.peak_running <= 2
    assert sampler.peak_running == 2  # the limit was actually reached
    assert len({t["worker"] for t in trials(api, "exact")}) >= 2
    assert api.get("/api/v1/workers").json()["items"] == []


def test_sigkill_mid_trial_is_retried_with_the_same_params(
    api: TestClient, fleet: Fleet, settings: Settings
) -> None:
    submit(
        api,
        spec(
            "killed",
            n_trials=4,
            max_concurrent_trials=2,
            max_retries=2,
            config={"steps": 12, "sleep_s": 0.25},
        ),
    )
    victim = fleet.start()
    wait_for(lambda: study(api, "killed")["counts"]["RUNNING"] >= 1, 60, "a running trial", fleet)
    time.sleep(0.5)
    os.killpg(victim.pid, signal.SIGKILL)
    lost_numbers = [t["number"] for t in trials(api, "killed", "RUNNING")]
    survivor = fleet.start("--exit-when-idle")
    wait_for(lambda: study(api, "killed")["status"] == "completed", 120, "completion", fleet)
    assert survivor.wait(timeout=60) == 0
    all_trials = trials(api, "killed")
    by_number = {t["number"]: t for t in all_trials}
    view = study(api, "killed")
    assert view["budget"]["finished"] == 4 and view["budget"]["lost"] == len(lost_numbers)
    for number in lost_numbers:
        lost = by_number[number]
        assert lost["state"] == "FAIL" and lost["fail_reason"] == "lost"
        retries = [t for t in all_trials if t["retry_of"] == number]
        assert len(retries) == 1 and retries[0]["params"] == lost["params"]
        assert retries[0]["state"] in ("COMPLETE", "PRUNED")
    counted = [t for t in all_trials if t["fail_reason"] != "lost"]
    assert len(counted) == 4


def test_sigterm_hands_back_the_trial_and_exits_zero(
    api: TestClient, fleet: Fleet, settings: Settings
) -> None:
    submit(
        api,
        spec("term", n_trials=2, max_concurrent_trials=1, config={"steps": 40, "sleep_s": 0.25}),
    )
    worker = fleet.start(HPO_SHUTDOWN_GRACE_S="1")
    wait_for(lambda: study(api, "term")["counts"]["RUNNING"] == 1, 60, "a running trial", fleet)
    os.killpg(worker.pid, signal.SIGTERM)
    assert worker.wait(timeout=30) == 0
    view = study(api, "term")
    counters = ("n_trials", "finished", "active", "lost", "max_concurrent_trials")
    assert {k: view["budget"][k] for k in counters} == {
        "n_trials": 2,
        "finished": 0,
        "active": 0,
        "lost": 0,
        "max_concurrent_trials": 1,
    }
    # The handed-back trial's device time was spent all the same.
    assert view["budget"]["compute_s"] > 0
    handed_back = trials(api, "term", "FAIL")
    assert [t["fail_reason"] for t in handed_back] == ["interrupted"]
    waiting = trials(api, "term", "WAITING")
    assert len(waiting) == 1 and waiting[0]["params"] == handed_back[0]["params"]
    assert "stop requested" in fleet.logs()


def test_sigterm_lets_a_short_trial_finish(api: TestClient, fleet: Fleet) -> None:
    submit(
        api,
        spec("graceful", n_trials=3, max_concurrent_trials=1, config={"steps": 6, "sleep_s": 0.25}),
    )
    worker = fleet.start()
    wait_for(lambda: study(api, "graceful")["counts"]["RUNNING"] == 1, 60, "a trial", fleet)
    os.killpg(worker.pid, signal.SIGTERM)
    assert worker.wait(timeout=60) == 0
    view = study(api, "graceful")
    assert view["counts"]["FAIL"] == 0 and view["counts"]["COMPLETE"] >= 1
    assert view["budget"]["active"] == 0


def test_pause_resume_cancel_while_workers_run(api: TestClient, fleet: Fleet) -> None:
    submit(
        api,
        spec(
            "lifecycle", n_trials=200, max_concurrent_trials=1, config={"steps": 2, "sleep_s": 0.1}
        ),
    )
    fleet.start()
    wait_for(lambda: finished_count(study(api, "lifecycle")) >= 2, 60, "two trials", fleet)
    assert api.post("/api/v1/studies/lifecycle/pause").status_code == 200
    wait_for(lambda: study(api, "lifecycle")["counts"]["RUNNING"] == 0, 30, "pause", fleet)
    paused_at = finished_count(study(api, "lifecycle"))
    time.sleep(2.0)
    assert finished_count(study(api, "lifecycle")) == paused_at
    assert api.post("/api/v1/studies/lifecycle/resume").json()["status"] == "running"
    wait_for(lambda: finished_count(study(api, "lifecycle")) > paused_at + 1, 60, "resume", fleet)
    api.post("/api/v1/studies/lifecycle/cancel")

    def stopped() -> bool:
        # The trial ends in Optuna's database before its lease is released in the
        # service's: two writes, so the two counts reach zero one after the other.
        view = study(api, "lifecycle")
        return view["counts"]["RUNNING"] == 0 and view["budget"]["active"] == 0

    wait_for(stopped, 30, "cancel", fleet)
    view = study(api, "lifecycle")
    assert view["status"] == "cancelled" and view["budget"]["active"] == 0
    time.sleep(1.5)
    assert finished_count(study(api, "lifecycle")) == finished_count(view)


def test_cancel_stops_a_running_trial_at_its_next_report(api: TestClient, fleet: Fleet) -> None:
    submit(
        api,
        spec("stopme", n_trials=2, max_concurrent_trials=1, config={"steps": 100, "sleep_s": 0.2}),
    )
    fleet.start()
    wait_for(lambda: study(api, "stopme")["counts"]["RUNNING"] == 1, 60, "a trial", fleet)
    started = time.monotonic()
    api.post("/api/v1/studies/stopme/cancel")
    wait_for(lambda: study(api, "stopme")["counts"]["RUNNING"] == 0, 30, "the stop", fleet)
    assert time.monotonic() - started < 10
    failed = trials(api, "stopme", "FAIL")
    assert [t["fail_reason"] for t in failed] == ["cancelled"]


def test_higher_priority_study_runs_first(api: TestClient, fleet: Fleet) -> None:
    submit(api, {**spec("low", n_trials=3, max_concurrent_trials=1), "priority": 0})
    submit(api, {**spec("high", n_trials=3, max_concurrent_trials=1), "priority": 10})
    fleet.start("--exit-when-idle")
    wait_for(lambda: study(api, "low")["status"] == "completed", 120, "both studies", fleet)
    high_starts = [t["datetime_start"] for t in trials(api, "high")]
    low_starts = [t["datetime_start"] for t in trials(api, "low")]
    assert max(high_starts) < min(low_starts)


def test_a_raising_task_fails_with_its_message_and_fails_the_study(
    api: TestClient, fleet: Fleet
) -> None:
    submit(
        api,
        spec(
            "raises", task="python:tests.objectives:raising", n_trials=10, max_concurrent_trials=1
        ),
    )
    fleet.start("--exit-when-idle")
    wait_for(lambda: study(api, "raises")["status"] == "failed", 60, "failure", fleet)
    failed = trials(api, "raises", "FAIL")
    assert len(failed) == 3
    assert all(t["fail_reason"] == "exception" for t in failed)
    assert failed[0]["error"].startswith("ValueError: learning rate")
    detail = api.get(f"/api/v1/studies/raises/trials/{failed[0]['number']}").json()
    assert "exploded" in detail["error"]
    assert "exploded" in study(api, "raises")["status_reason"]


def test_median_pruner_prunes_a_bad_configuration(api: TestClient, fleet: Fleet) -> None:
    body = spec(
        "pruned",
        n_trials=4,
        max_concurrent_trials=1,
        config={"steps": 5, "sleep_s": 0},
        pruner={"name": "median", "options": {"n_startup_trials": 3, "n_warmup_steps": 0}},
    )
    submit(api, body)
    for x in (2.0, 2.5, 1.5, -9.0):
        response = api.post("/api/v1/studies/pruned/trials", json={"params": {"x": x}})
        assert response.status_code == 202
    fleet.start("--exit-when-idle")
    wait_for(lambda: study(api, "pruned")["status"] == "completed", 60, "completion", fleet)
    states = {t["params"]["x"]: t for t in trials(api, "pruned")}
    assert states[-9.0]["state"] == "PRUNED"
    assert len(states[-9.0]["intermediate_values"]) == 1
    assert all(states[x]["state"] == "COMPLETE" for x in (2.0, 2.5, 1.5))


def test_a_new_study_wakes_idle_workers(api: TestClient, fleet: Fleet) -> None:
    fleet.start(HPO_POLL_INTERVAL_S="60")
    wait_for(lambda: len(api.get("/api/v1/workers").json()["items"]) == 1, 60, "a worker", fleet)
    time.sleep(1.0)  # the worker is now waiting on LISTEN
    started = time.monotonic()
    submit(api, spec("wake", task="python:tests.objectives:null", n_trials=1))
    wait_for(lambda: study(api, "wake")["status"] == "completed", 20, "the trial", fleet)
    assert time.monotonic() - started < 10  # far below the 60 s poll interval


def test_trial_and_study_timeouts(api: TestClient, fleet: Fleet) -> None:
    submit(
        api,
        spec(
            "slowtrial",
            n_trials=1,
            max_concurrent_trials=1,
            trial_timeout_s=1,
            config={"steps": 50, "sleep_s": 0.1},
        ),
    )
    submit(
        api,
        spec(
            "slowstudy",
            n_trials=500,
            max_concurrent_trials=1,
            timeout_s=3,
            config={"steps": 2, "sleep_s": 0.1},
        ),
    )
    fleet.start("--exit-when-idle")
    wait_for(lambda: study(api, "slowstudy")["status"] == "completed", 90, "timeouts", fleet)
    timed_out = trials(api, "slowtrial")
    assert [(t["state"], t["fail_reason"]) for t in timed_out] == [("FAIL", "timeout")]
    assert study(api, "slowtrial")["status"] == "failed"  # its only trial failed
    view = study(api, "slowstudy")
    assert "timeout" in view["status_reason"] and 0 < view["budget"]["finished"] < 500


def test_supervisor_restarts_a_slot_that_dies(api: TestClient, fleet: Fleet) -> None:
    submit(
        api,
        spec("restarted", n_trials=6, max_concurrent_trials=1, config={"steps": 8, "sleep_s": 0.2}),
    )
    supervisor = fleet.start("--exit-when-idle")
    wait_for(
        lambda: any(
            w["trial_number"] is not None for w in api.get("/api/v1/workers").json()["items"]
        ),
        60,
        "a busy slot",
        fleet,
    )
    slot = api.get("/api/v1/workers").json()["items"][0]
    os.kill(slot["pid"], signal.SIGKILL)  # the slot process only, not its supervisor
    wait_for(
        lambda: any(w["pid"] != slot["pid"] for w in api.get("/api/v1/workers").json()["items"]),
        60,
        "a replacement slot",
        fleet,
    )
    wait_for(lambda: study(api, "restarted")["status"] == "completed", 120, "completion", fleet)
    assert supervisor.wait(timeout=60) == 0
    assert "restarting" in fleet.logs()
    assert study(api, "restarted")["budget"]["finished"] == 6
