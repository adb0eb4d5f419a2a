"""BERT studies submitted over REST and run by real worker processes on CPU."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.app import create_app
from storage.settings import Settings
from tests.conftest import Fleet, make_settings

pytestmark = pytest.mark.slow
# Small enough for two CPU cores, big enough to learn the builtin task in 150 steps.
TINY = {
    "hidden_size": 64,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "num_layers": 2,
    "hidden_dropout": 0.0,
    "batch_size": 32,
}


@pytest.fixture
def settings(tmp_path: Path, pg_urls: tuple[str, str]) -> Settings:
    return make_settings(tmp_path / "data", pg_urls, allowed_task_modules="tests")


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def _text_spec(name: str, n_trials: int, **config: Any) -> dict[str, Any]:
    return {
        "name": name,
        "task": {
            "name": "text-classification",
            "config": {
                "dataset": {
                    "source": "builtin",
                    "name": "sentiment",
                    "n_train": 4800,
                    "n_validation": 200,
                },
                "model": {"source": "scratch", "vocab_size": 1000},
                "max_steps": 150,
                "eval_every_steps": 50,
                "max_seq_len": 48,
                **config,
            },
        },
        "objective": {"metric": "val_accuracy", "direction": "maximize"},
        "search_space": {
            "learning_rate": {"type": "float", "low": 1e-4, "high": 10.0, "log": True},
            # One-choice parameters fix a hyperparameter without searching it.
            **{k: {"type": "categorical", "choices": [v]} for k, v in TINY.items()},
        },
        "sampler": {"name": "random", "seed": 1},
        "pruner": {"name": "median", "options": {"n_startup_trials": 2}},
        "budget": {"n_trials": n_trials, "max_concurrent_trials": 2, "max_retries": 2},
    }


def _wait(
    api: TestClient, name: str, fleet: Fleet, status: str = "completed", timeout: float = 300
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        study: dict[str, Any] = api.get(f"/api/v1/studies/{name}").json()
        if study["status"] == status:
            return study
        time.sleep(0.5)
    raise AssertionError(f"{name} is not {status}\n{fleet.logs()[-5000:]}")


def _trials(api: TestClient, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = api.get(
        f"/api/v1/studies/{name}/trials", params={"limit": 1000}
    ).json()["items"]
    return items


def test_text_classification_study_with_two_workers_and_pruning(
    api: TestClient, fleet: Fleet
) -> None:
    spec = _text_spec("bert-e2e", 5)
    assert api.post("/api/v1/studies", json=spec).status_code == 201
    for lr in (1e-3, 1.5e-3, 2e-3, 1e-3):
        api.post("/api/v1/studies/bert-e2e/trials", json={"params": {"learning_rate": lr}})
    api.post("/api/v1/studies/bert-e2e/trials", json={"params": {"learning_rate": 9.0}})
    first = fleet.start("--exit-when-idle")
    second = fleet.start("--exit-when-idle")
    study = _wait(api, "bert-e2e", fleet)
    assert first.wait(timeout=60) == 0 and second.wait(timeout=60) == 0
    trials = _trials(api, "bert-e2e")
    assert study["budget"]["finished"] == 5 and len(trials) == 5
    absurd = next(t for t in trials if t["params"]["learning_rate"] == 9.0)
    assert absurd["state"] == "PRUNED", [
        (t["number"], t["state"], t["value"], t["intermediate_values"], t["datetime_start"])
        for t in trials
    ]
    completed = [t for t in trials if t["state"] == "COMPLETE"]
    # The median pruner may also stop a slow starter; the absurd one must not finish.
    assert len(completed) >= 2 and max(t["value"] for t in completed) > 0.6
    assert len({t["worker"] for t in trials}) == 2
    steps = [int(s) for s in completed[0]["intermediate_values"]]
    assert steps == [50, 100, 150]


def test_masked_lm_study_runs_over_rest(api: TestClient, fleet: Fleet) -> None:
    spec = _text_spec("mlm-e2e", 2, max_steps=60, eval_every_steps=20)
    spec["task"]["name"] = "masked-lm"
    spec["objective"] = {"metric": "val_perplexity", "direction": "minimize"}
    spec["search_space"]["learning_rate"] = {"type": "float", "low": 1e-3, "high": 3e-3}
    assert api.post("/api/v1/studies", json=spec).status_code == 201
    fleet.start("--exit-when-idle")
    _wait(api, "mlm-e2e", fleet)
    for trial in _trials(api, "mlm-e2e"):
        assert trial["state"] == "COMPLETE"
        curve = list(trial["intermediate_values"].values())
        assert curve[-1] < curve[0]  # validation perplexity falls


def test_a_killed_bert_trial_resumes_from_its_checkpoint(api: TestClient, fleet: Fleet) -> None:
    # Killed after its second evaluation (step 20): long enough to be killed mid-way.
    spec = _text_spec("resume", 1, max_steps=160, eval_every_steps=10)
    spec["search_space"]["learning_rate"] = {"type": "float", "low": 1e-3, "high": 2e-3}
    assert api.post("/api/v1/studies", json=spec).status_code == 201
    victim = fleet.start()
    deadline = time.monotonic() + 120
    while not any(len(t["intermediate_values"]) >= 2 for t in _trials(api, "resume")):
        assert time.monotonic() < deadline, fleet.logs()[-4000:]
        time.sleep(0.2)
    os.killpg(victim.pid, signal.SIGKILL)
    fleet.start("--exit-when-idle")
    _wait(api, "resume", fleet)
    trials = {t["number"]: t for t in _trials(api, "resume")}
    lost = trials[0]
    retry = next(t for t in trials.values() if t["retry_of"] == 0)
    assert lost["fail_reason"] == "lost" and retry["state"] == "COMPLETE"
    assert retry["params"] == lost["params"]
    lost_steps = sorted(int(s) for s in lost["intermediate_values"])
    retry_steps = sorted(int(s) for s in retry["intermediate_values"])
    assert retry_steps[0] > lost_steps[0]  # it did not start over


def test_out_of_memory_is_recorded_as_oom_and_not_retried(api: TestClient, fleet: Fleet) -> None:
    spec = {
        "name": "oom",
        "task": {"name": "python:tests.objectives:out_of_memory"},
        "objective": {"metric": "loss", "direction": "minimize"},
        "search_space": {"x": {"type": "float", "low": 0, "high": 1}},
        "budget": {"n_trials": 1, "max_retries": 2},
    }
    assert api.post("/api/v1/studies", json=spec).status_code == 201
    fleet.start("--exit-when-idle")
    _wait(api, "oom", fleet, status="failed")
    trials = _trials(api, "oom")
    assert [(t["state"], t["fail_reason"]) for t in trials] == [("FAIL", "oom")]
    assert "out of memory" in trials[0]["error"]
