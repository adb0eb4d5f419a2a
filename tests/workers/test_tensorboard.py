"""TensorBoard: a real worker writes every trial's curves where ``tensorboard --logdir`` looks."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from service.app import create_app
from storage.settings import Settings
from tests.conftest import Fleet, make_settings

pytestmark = pytest.mark.slow


@pytest.fixture
def settings(tmp_path: Path, pg_urls: tuple[str, str]) -> Settings:
    return make_settings(tmp_path / "data", pg_urls)


@pytest.fixture
def api(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as client:
        yield client


def test_each_trial_writes_its_curves_as_event_files(
    api: TestClient, fleet: Fleet, tmp_path: Path
) -> None:
    spec = {
        "name": "boards",
        "task": {"name": "mlp-classifier", "config": {"max_epochs": 3}},
        "sampler": {"name": "random", "seed": 2},
        "pruner": {"name": "none"},
        "budget": {"n_trials": 2, "max_concurrent_trials": 1},
    }
    assert api.post("/api/v1/studies", json=spec).status_code == 201
    logdir = tmp_path / "tensorboard"
    worker = fleet.start("--exit-when-idle", HPO_TENSORBOARD_DIR=str(logdir))
    deadline = time.monotonic() + 180
    while api.get("/api/v1/studies/boards").json()["status"] != "completed":
        assert time.monotonic() < deadline, fleet.logs()[-4000:]
        time.sleep(0.5)
    assert worker.wait(timeout=60) == 0
    trials = api.get("/api/v1/studies/boards/trials").json()["items"]
    assert sorted(p.name for p in (logdir / "boards").iterdir()) == ["trial-0", "trial-1"]
    for trial in trials:
        events = EventAccumulator(str(logdir / "boards" / f"trial-{trial['number']}"))
        events.Reload()
        assert "val_accuracy" in events.Tags()["scalars"]
        curve = {e.step: e.value for e in events.Scalars("val_accuracy")}
        # The same steps and values as the trial's intermediate values (float32 on disk).
        expected = {int(s): v for s, v in trial["intermediate_values"].items()}
        assert curve.keys() == expected.keys() and len(curve) == 3
        assert all(abs(curve[s] - expected[s]) < 1e-6 for s in curve)
        assert {"params/text_summary", "state/text_summary"} <= set(events.Tags()["tensors"])
