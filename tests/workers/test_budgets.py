"""Compute budgets, stop conditions and warm starts over REST with real workers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from storage.settings import Settings
from tests.conftest import Fleet, make_settings
from tests.workers.test_runner import spec, study, submit, trials, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture
def settings(tmp_path: Path, pg_urls: tuple[str, str]) -> Settings:
    return make_settings(tmp_path / "data", pg_urls, allowed_task_modules="tests")


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def _ended(api: TestClient, name: str) -> bool:
    return study(api, name)["status"] in ("completed", "failed")


def test_a_compute_budget_ends_the_study_after_the_trial_that_spends_it(
    api: TestClient, fleet: Fleet
) -> None:
    body = spec("compute", max_concurrent_trials=1, max_compute_s=1.5)
    body["budget"].pop("n_trials")
    body["task"]["config"] = {"steps": 3, "sleep_s": 0.2}
    submit(api, body)
    fleet.start("--exit-when-idle")
    wait_for(lambda: _ended(api, "compute"), 90, "the compute budget", fleet)
    view = study(api, "compute")
    done = sorted(trials(api, "compute"), key=lambda t: t["number"])
    used = [t["compute_s"] for t in done]
    assert view["status"] == "completed", view
    assert "compute budget spent" in view["status_reason"]
    assert view["budget"]["n_trials"] == 100_000  # the budget alone bounds the study
    # Exact: every trial but the last started with budget left; the last spent it.
    assert sum(used[:-1]) < 1.5 <= sum(used) == pytest.approx(view["budget"]["compute_s"], 0.01)
    assert all(u >= 0.6 for u in used)  # three reports 0.2 s apart each
    assert view["budget"]["compute_saved_s"] == 0.0  # nothing was pruned


def test_stop_when_target_and_warm_start_over_rest(api: TestClient, fleet: Fleet) -> None:
    body = spec("first", n_trials=20, max_concurrent_trials=1)
    body["budget"]["stop_when"] = {"target": 0.01}
    submit(api, body)
    for x in (-3.0, 4.0, 2.0):  # the third reaches the target: loss (x - 2)^2 = 0
        response = api.post("/api/v1/studies/first/trials", json={"params": {"x": x}})
        assert response.status_code == 202, response.text
    fleet.start("--exit-when-idle")
    wait_for(lambda: _ended(api, "first"), 90, "the target", fleet)
    view = study(api, "first")
    assert view["status"] == "completed" and view["budget"]["finished"] == 3
    assert "target 0.01 reached by trial 2" in view["status_reason"]

    warm: dict[str, Any] = spec("second", n_trials=2, max_concurrent_trials=1)
    warm["warm_start"] = {"from_study": "first", "top_k": 2}
    warm["search_space"] = {"x": {"type": "float", "low": -1, "high": 3}}
    submit(api, warm)
    fleet.start("--exit-when-idle")
    wait_for(lambda: _ended(api, "second"), 90, "the warm-started study", fleet)
    second = sorted(trials(api, "second"), key=lambda t: t["number"])
    assert [t["params"]["x"] for t in second] == [2.0, 3.0]  # the best two; 4.0 clipped to 3
    assert second[1]["user_attrs"]["warm_start_note"] == "x 4.0 -> 3.0"

    bad = spec("third")
    bad["warm_start"] = {"from_study": "missing"}
    response = api.post("/api/v1/studies", json=bad)
    assert response.status_code == 422
    assert response.json()["errors"][0]["loc"] == ["warm_start", "from_study"]
