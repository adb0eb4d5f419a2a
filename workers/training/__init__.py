"""The training loop shared by the BERT tasks, and the helpers beside it.

A task builds a :class:`TrainingJob` and calls :func:`train`; see
``workers.training.loop`` for the contract.

The names below are imported on first use: the MLP and custom tasks use the
submodules they need (checkpoints, optimizers) without loading
``transformers``, which the BERT models need (seconds of a slot's start-up).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from workers.training.batching import Batch, pad_sequences, sorted_batches
    from workers.training.loop import CHECKPOINT_DIR, MODEL_DIR, TrainingJob, train
    from workers.training.models import TextModel, build_text_model, trainable_parameters_m
    from workers.training.runtime import seed_everything
    from workers.training.settings import TrainSettings

_SOURCES = {
    "Batch": "batching",
    "pad_sequences": "batching",
    "sorted_batches": "batching",
    "CHECKPOINT_DIR": "loop",
    "MODEL_DIR": "loop",
    "TrainingJob": "loop",
    "train": "loop",
    "TextModel": "models",
    "build_text_model": "models",
    "trainable_parameters_m": "models",
    "seed_everything": "runtime",
    "TrainSettings": "settings",
}

__all__ = [
    "CHECKPOINT_DIR",
    "MODEL_DIR",
    "Batch",
    "TextModel",
    "TrainSettings",
    "TrainingJob",
    "build_text_model",
    "pad_sequences",
    "seed_everything",
    "sorted_batches",
    "train",
    "trainable_parameters_m",
]


def __getattr__(name: str) -> Any:
    source = _SOURCES.get(name)
    if source is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{source}"), name)
