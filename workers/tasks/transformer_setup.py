"""The start that every transformer task shares: config, settings, seeds, data facts, model.

Each task loads its own data and builds its own training job; what comes
before and between is the same for all of them and lives here.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, TypeVar

from storage.tasks.text import TransformerConfig
from workers.context import TrialContext
from workers.data import round_trip_failures
from workers.training import TextModel, TrainSettings, build_text_model, seed_everything

logger = logging.getLogger(__name__)

ConfigT = TypeVar("ConfigT", bound=TransformerConfig)
# Texts of the corpus whose round trip through the tokenizer is checked.
ROUND_TRIP_SAMPLE = 200


def start_task(ctx: TrialContext, config_model: type[ConfigT]) -> tuple[ConfigT, TrainSettings]:
    """The trial's validated task config and training settings; every RNG seeded from the trial.

    Raises:
        pydantic.ValidationError: the config does not fit ``config_model``.
        TaskError: a training setting is out of range.
    """
    config = config_model.model_validate(ctx.config)
    settings = TrainSettings.from_context(ctx)
    seed_everything(ctx.seed)
    return config, settings


def build_task_model(
    ctx: TrialContext,
    config: TransformerConfig,
    model_class: Any,
    *,
    corpus: Sequence[str],
    fingerprint: str,
    sizes: tuple[int, int],
    info: dict[str, Any] | None = None,
    **model_options: Any,
) -> TextModel:
    """Record the data's facts on the trial, then build the model and its tokenizer.

    ``sizes`` is (training examples, validation examples); ``info`` adds
    task-specific facts; ``model_options`` go to :func:`build_text_model`
    (a scratch config maker, head sizes). The share of the corpus that the
    tokenizer gives back unchanged is recorded as ``tokenizer_round_trip``
    (1.0 for the scratch tokenizer; a lowercasing checkpoint's is lower).

    Raises:
        ModelLoadError: the checkpoint or its tokenizer cannot be loaded.
    """
    ctx.set_info(
        dataset_fingerprint=fingerprint,
        n_train=sizes[0],
        n_validation=sizes[1],
        **(info or {}),
    )
    built = build_text_model(
        config.model,
        model_class=model_class,
        ctx=ctx,
        corpus=corpus,
        fingerprint=fingerprint,
        max_seq_len=config.max_seq_len,
        **model_options,
    )
    _check_round_trip(ctx, built.tokenizer, corpus)
    return built


def _check_round_trip(ctx: TrialContext, tokenizer: Any, corpus: Sequence[str]) -> None:
    # Evenly spread over the corpus: the first texts may all be alike.
    step = max(1, len(corpus) // ROUND_TRIP_SAMPLE)
    sample = list(corpus[::step][:ROUND_TRIP_SAMPLE])
    if not sample:
        return
    failures = round_trip_failures(tokenizer, sample)
    ctx.set_info(tokenizer_round_trip=round(1 - len(failures) / len(sample), 4))
    if failures:
        text, back = failures[0]
        logger.warning(
            "the tokenizer changes %d of %d sampled texts (the model sees, and generates, "
            "the changed form): %r comes back as %r",
            len(failures),
            len(sample),
            text[:80],
            back[:80],
        )
