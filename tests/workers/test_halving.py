"""Resumable successive halving with real workers: paused trials continue from checkpoints."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from storage.settings import Settings
from tests.conftest import Fleet, make_settings
from tests.workers.test_runner import study, submit, trials, wait_for

pytestmark = pytest.mark.slow
EPOCHS = 9


@pytest.fixture
def settings(tmp_path: Path, pg_urls: tuple[str, str]) -> Settings:
    return make_settings(tmp_path / "data", pg_urls)


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def _spec(name: str, n_trials: int) -> dict[str, Any]:
    return {
        "name": name,
        "task": {"name": "mlp-classifier", "config": {"max_epochs": EPOCHS}},
        "objective": {"metric": "val_accuracy", "direction": "maximize"},
        "search_space": {
            "learning_rate": {"type": "float", "low": 1e-5, "high": 3e-2, "log": True},
            "hidden_size_1": {"type": "int", "low": 8, "high": 64},
        },
        "sampler": {"name": "tpe", "seed": 3},
        "pruner": {"name": "resumable-sha", "options": {"min_resource": 1, "reduction_factor": 3}},
        "budget": {"n_trials": n_trials, "max_concurrent_trials": 1},
    }


def test_paused_trials_are_promoted_and_resume_from_their_checkpoint(
    api: TestClient, fleet: Fleet, settings: Settings
) -> None:
    submit(api, _spec("halving", n_trials=14))
    fleet.start("--exit-when-idle")
    wait_for(lambda: study(api, "halving")["status"] == "completed", 240, "the study", fleet)
    done = {t["number"]: t for t in trials(api, "halving")}
    assert len(done) == 14 and study(api, "halving")["budget"]["finished"] == 14
    assert {t["state"] for t in done.values()} <= {"COMPLETE", "PRUNED"}

    continuations = [t for t in done.values() if t["continues"] is not None]
    assert continuations, "no paused trial was promoted"
    full_run = max(t["train_examples"] for t in done.values())
    for child in continuations:
        parent = done[child["continues"]]
        assert parent["state"] == "PRUNED"
        assert child["params"] == parent["params"]
        # Resumed from the parent's checkpoint: its curve starts after the parent's.
        parent_last = max(int(s) for s in parent["intermediate_values"])
        assert min(int(s) for s in child["intermediate_values"]) == parent_last + 1
        assert child["train_examples"] < full_run
    # Promotions happen only at a claim, so every continuation follows its parent.
    assert all(child["number"] > child["continues"] for child in continuations)
    assert "promoted: it goes on from its checkpoint" in fleet.logs()

    # Once the study has ended, no paused trial's checkpoint is kept on disk.
    root = settings.trials_dir / "halving"
    assert not list(root.glob("trial-*/checkpoint")), sorted(root.iterdir())


def test_a_compute_budget_without_a_pruner_runs_resumable_hyperband(
    api: TestClient, fleet: Fleet, settings: Settings
) -> None:
    spec = _spec("auto", n_trials=1)
    del spec["pruner"]
    spec["budget"] = {"max_train_examples": 12 * EPOCHS * 1437, "max_concurrent_trials": 1}
    submit(api, spec)
    fleet.start("--exit-when-idle")
    wait_for(lambda: study(api, "auto")["status"] == "completed", 240, "the study", fleet)
    done = {t["number"]: t for t in trials(api, "auto")}
    full_run = max(t["train_examples"] for t in done.values())
    # Brackets that judge early stop most configurations after an epoch or three:
    # the budget of twelve full runs buys many more trials than twelve.
    assert len(done) > 16, sorted((t["state"], t["train_examples"]) for t in done.values())
    paused = [t for t in done.values() if t["state"] == "PRUNED"]
    assert paused and all(t["train_examples"] < full_run for t in paused)
    assert any(t["state"] == "COMPLETE" and t["train_examples"] == full_run for t in done.values())
    continuations = [t for t in done.values() if t["continues"] is not None]
    assert continuations, "no paused configuration was promoted"
    for child in continuations:
        parent_last = max(int(s) for s in done[child["continues"]]["intermediate_values"])
        assert min(int(s) for s in child["intermediate_values"]) == parent_last + 1
