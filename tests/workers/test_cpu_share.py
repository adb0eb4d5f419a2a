"""CPU slots of every ``hpo worker`` on a machine share its cores."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from storage.settings import Settings
from tests.conftest import Fleet, make_settings
from workers.cpu_share import CpuShare, host_cores


def test_the_cores_are_split_among_the_live_slots(tmp_path: Path) -> None:
    registry = tmp_path / "cpu-slots.json"
    mine = CpuShare(registry)
    mine.join()
    assert mine.threads() == host_cores()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        CpuShare(registry, owner=other.pid).join()
        assert mine.live_slots() == 2
        assert mine.threads() == max(1, host_cores() // 2)
    finally:
        other.kill()
        other.wait()
    assert mine.live_slots() == 1  # a dead slot's entry is dropped
    mine.leave()


@pytest.fixture
def settings(tmp_path: Path, pg_urls: tuple[str, str]) -> Settings:
    return make_settings(tmp_path / "data", pg_urls, allowed_task_modules="tests")


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def _live_workers(api: TestClient) -> list[dict[str, Any]]:
    return list(api.get("/api/v1/workers").json()["items"])


@pytest.mark.slow
def test_two_workers_on_one_machine_split_its_cores(
    api: TestClient,
    fleet: Fleet,
    settings: Settings,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    host = {"HPO_HOST_STATE_DIR": str(tmp_path / "host")}
    # An explicit thread count for hpo worker turns the split off.
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    fleet.start(**host)
    fleet.start(**host)
    deadline = time.monotonic() + 60
    while len(_live_workers(api)) < 2:
        assert time.monotonic() < deadline, fleet.logs()[-3000:]
        time.sleep(0.3)
    spec = {
        "name": "threads",
        "task": {"name": "python:tests.workers.sharing_tasks:cpu_threads", "config": {}},
        "objective": {"metric": "threads", "direction": "maximize"},
        "search_space": {"x": {"type": "float", "low": 0, "high": 1}},
        "budget": {"n_trials": 4, "max_concurrent_trials": 2},
    }
    assert api.post("/api/v1/studies", json=spec).status_code == 201
    deadline = time.monotonic() + 120
    while api.get("/api/v1/studies/threads").json()["status"] != "completed":
        assert time.monotonic() < deadline, fleet.logs()[-3000:]
        time.sleep(0.3)
    trials = optuna.load_study(study_name="threads", storage=settings.optuna_storage).trials
    # Each worker alone would give its slot every core; together they split them.
    assert [t.value for t in trials] == [max(1, host_cores() // 2)] * 4, fleet.logs()[-3000:]
