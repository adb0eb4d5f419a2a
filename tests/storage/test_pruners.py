"""The calibrated pruner: prune only where early values predict final ones."""

from __future__ import annotations

import optuna
import pytest

from storage.pruners import CalibratedPruner, spearman


def test_spearman_with_ties_and_constants() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 1, 2, 2], [1, 1, 2, 2]) == pytest.approx(1.0)
    assert spearman([1, 1, 1], [1, 2, 3]) == 0.0


def _study_with_history(pruner: CalibratedPruner) -> optuna.Study:
    """Six completed trials: step 0 is noise, step 5 ranks them as their final values do."""
    study = optuna.create_study(direction="maximize", pruner=pruner)
    noise = [0.5, 0.1, 0.9, 0.3, 0.7, 0.2]
    for index, final in enumerate([0.60, 0.65, 0.70, 0.75, 0.80, 0.85]):
        trial = study.ask()
        trial.report(noise[index], 0)
        trial.report(final - 0.1, 5)
        study.tell(trial, final)
    return study


def test_prunes_only_at_calibrated_steps() -> None:
    pruner = CalibratedPruner(min_correlation=0.7, min_trials=5)
    study = _study_with_history(pruner)
    completed = study.get_trials(states=(optuna.trial.TrialState.COMPLETE,))
    assert pruner.step_correlation(completed, 0) < 0.7
    assert pruner.step_correlation(completed, 5) == pytest.approx(1.0)

    bad = study.ask()
    bad.report(0.0, 0)  # far below the median, but step 0 says nothing yet
    assert not bad.should_prune()
    bad.report(0.0, 5)  # at a step that predicts the end: the median pruner decides
    assert bad.should_prune()


def test_needs_enough_completed_trials() -> None:
    pruner = CalibratedPruner(min_correlation=0.7, min_trials=10)
    study = _study_with_history(pruner)
    bad = study.ask()
    bad.report(0.0, 5)
    assert not bad.should_prune()


def test_rejects_nonsense_options() -> None:
    with pytest.raises(ValueError, match="min_correlation"):
        CalibratedPruner(min_correlation=2.0)
    with pytest.raises(ValueError, match="min_trials"):
        CalibratedPruner(min_trials=1)
