"""Early stopping on a plateau: the default when a spec gives no training length."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from storage.tasks.text import PLATEAU_EPOCH_CAP, TextClassificationConfig
from workers.context import TrialContext
from workers.tasks.text_classification import run
from workers.training.plateau import Plateau
from workers.training.settings import TrainSettings

ContextFactory = Callable[..., TrialContext]


def test_patience_counts_evaluations_without_a_large_enough_gain() -> None:
    plateau = Plateau({"val_accuracy": True}, patience=2, min_delta=0.01)
    assert not plateau.reached({"val_accuracy": 0.5})
    assert not plateau.reached({"val_accuracy": 0.505})  # within min_delta: no better
    assert not plateau.reached({"val_accuracy": 0.6})  # better: the count starts again
    assert not plateau.reached({"val_accuracy": float("nan")})
    assert plateau.reached({"val_accuracy": 0.55})
    lower = Plateau({"val_loss": False}, patience=1)
    assert not lower.reached({"val_loss": 1.0}) and not lower.reached({"val_loss": 0.9})
    assert lower.reached({"val_loss": 0.95})


def test_a_falling_validation_loss_keeps_a_trial_going_while_its_objective_stands_still() -> None:
    plateau = Plateau.of_objective("val_bleu", maximize=True, patience=2)
    assert plateau.watched == {"val_bleu": True, "val_loss": False}
    for loss in (3.0, 2.5, 2.0, 1.5):  # BLEU stays at 0 on short targets while words form
        assert not plateau.reached({"val_bleu": 0.0, "val_loss": loss})
    assert not plateau.reached({"val_bleu": 0.0, "val_loss": 1.6})
    assert plateau.reached({"val_bleu": 0.0, "val_loss": 1.7})
    assert Plateau.of_objective("val_loss", maximize=False, patience=1).watched == {
        "val_loss": False
    }


def test_a_spec_without_a_length_trains_until_a_plateau() -> None:
    default = TextClassificationConfig.model_validate({})
    assert default.early_stopping is not None and default.max_epochs == PLATEAU_EPOCH_CAP
    # The resolved config is stored: validating it again changes nothing.
    again = TextClassificationConfig.model_validate(default.model_dump(mode="json"))
    assert again == default
    for given in ({"max_epochs": 5}, {"max_steps": 100}, {"early_stopping": None}):
        config = TextClassificationConfig.model_validate(given)
        assert config.early_stopping is None and config.max_epochs == given.get("max_epochs", 3)


def test_a_trial_stops_once_its_objective_stops_improving(
    make_context: ContextFactory,
    builtin_config: Callable[..., dict[str, Any]],
    tiny_params: dict[str, Any],
) -> None:
    # A learning rate this small leaves the weights where they are: the accuracy never moves.
    config = builtin_config(max_steps=200, eval_every_steps=5, early_stopping={"patience": 2})
    ctx = make_context(config=config, params={**tiny_params, "learning_rate": 1e-12})
    steps: list[int] = []
    ctx.report_hooks.append(lambda step, metrics: steps.append(step))
    metrics = run(ctx)
    assert steps == [5, 10, 15]
    assert "val_accuracy" in metrics and ctx.train_examples <= 15 * tiny_params["batch_size"]


def test_under_an_examples_budget_a_trial_gets_its_share(
    make_context: ContextFactory, tiny_params: dict[str, Any]
) -> None:
    ctx = make_context(params=tiny_params)  # no length given: early stopping
    ctx.max_trial_examples = 10 * tiny_params["batch_size"]
    assert TrainSettings.from_context(ctx).max_steps == 10
    fixed = make_context(config={"max_epochs": 2}, params=tiny_params)
    fixed.max_trial_examples = 10 * tiny_params["batch_size"]
    assert TrainSettings.from_context(fixed).max_steps is None


@pytest.mark.parametrize("patience", [0, 1001])
def test_patience_is_checked(patience: int) -> None:
    with pytest.raises(ValueError, match="patience"):
        TextClassificationConfig.model_validate({"early_stopping": {"patience": patience}})
