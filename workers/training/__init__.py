"""The training loop shared by the BERT tasks, and the helpers beside it.

A task builds a :class:`TrainingJob` and calls :func:`train`; see
``workers.training.loop`` for the contract.
"""

from __future__ import annotations

from workers.training.batching import Batch, pad_sequences, sorted_batches
from workers.training.loop import CHECKPOINT_DIR, MODEL_DIR, TrainingJob, train
from workers.training.models import TextModel, build_text_model, trainable_parameters_m
from workers.training.runtime import seed_everything
from workers.training.settings import TrainSettings

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
