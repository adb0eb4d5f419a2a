"""Chaos: workers SIGKILLed again and again while a study runs."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from storage.settings import Settings
from tests.conftest import Fleet, make_settings
from tests.workers.faults import NOT_COUNTED

pytestmark = pytest.mark.slow


@pytest.fixture
def settings(tmp_path: Path, pg_urls: tuple[str, str]) -> Settings:
    return make_settings(
        tmp_path / "data", pg_urls, allowed_task_modules="tests", heartbeat_grace_s=3.0
    )


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def _trials(api: TestClient, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = api.get(
        f"/api/v1/studies/{name}/trials", params={"limit": 1000}
    ).json()["items"]
    return items


def _root(trial: dict[str, Any], by_number: dict[int, dict[str, Any]]) -> int:
    while trial["retry_of"] is not None:
        trial = by_number[trial["retry_of"]]
    return int(trial["number"])


def test_repeated_sigkills_lose_nothing_and_run_nothing_twice(
    api: TestClient, fleet: Fleet
) -> None:
    spec = {
        "name": "chaos",
        "task": {
            "name": "python:tests.objectives:quadratic",
            "config": {"steps": 6, "sleep_s": 0.2},
        },
        "objective": {"metric": "loss", "direction": "minimize"},
        "search_space": {"x": {"type": "float", "low": -5, "high": 5}},
        "pruner": {"name": "none"},
        "budget": {"n_trials": 30, "max_concurrent_trials": 3, "max_retries": 10},
    }
    assert api.post("/api/v1/studies", json=spec).status_code == 201
    workers: list[subprocess.Popen[bytes]] = [fleet.start() for _ in range(3)]
    rng = random.Random(0)
    kills = 0
    deadline = time.monotonic() + 300
    while api.get("/api/v1/studies/chaos").json()["status"] != "completed":
        assert time.monotonic() < deadline, fleet.logs()[-5000:]
        time.sleep(2.0)
        running = api.get("/api/v1/studies/chaos").json()["counts"]["RUNNING"]
        if kills < 6 and running:
            victim = workers.pop(rng.randrange(len(workers)))
            os.killpg(victim.pid, signal.SIGKILL)
            victim.wait()
            kills += 1
            workers.append(fleet.start())
    study = api.get("/api/v1/studies/chaos").json()
    trials = _trials(api, "chaos")
    by_number = {t["number"]: t for t in trials}
    lost = [t for t in trials if t["fail_reason"] == "lost"]
    counted = [
        t
        for t in trials
        if t["state"] in ("COMPLETE", "PRUNED", "FAIL") and t["fail_reason"] not in NOT_COUNTED
    ]
    assert kills >= 5
    assert study["budget"]["finished"] == 30 and study["budget"]["active"] == 0
    assert len(counted) == 30
    assert study["budget"]["lost"] == len(lost) >= 1
    for trial in lost:  # every lost trial was retried once, with its parameters
        retries = [
            t for t in trials if t["retry_of"] == trial["number"] and t["fail_reason"] != "orphaned"
        ]
        assert len(retries) == 1 and retries[0]["params"] == trial["params"]
    chains: dict[int, int] = {}
    for trial in counted:  # no configuration ran twice to completion
        root = _root(trial, by_number)
        chains[root] = chains.get(root, 0) + 1
    assert all(n == 1 for n in chains.values()), chains
