"""``pruner: auto``: Hyperband brackets of resumable halving over the task's declared fidelity."""

from __future__ import annotations

from collections import Counter
from typing import Any

import optuna
import pytest
from optuna.trial import TrialState

from storage.halving import is_paused, promote
from storage.hyperband import ATTR_FIRST_STEP, ATTR_MAX_STEP, AutoPruner
from storage.optimizers import build_pruner, check_pruner
from storage.optuna_store import ATTR_CONTINUES, ATTR_RETRY_ROOT
from storage.spec import StudySpec


def _frozen(number: int, **attrs: Any) -> optuna.trial.FrozenTrial:
    return optuna.trial.create_trial(value=0.0, user_attrs={**attrs, ATTR_RETRY_ROOT: number})


def test_rungs_are_placed_down_from_the_declared_maximum() -> None:
    pruner = AutoPruner(reduction_factor=3, max_brackets=4)
    declared = _frozen(0, **{ATTR_MAX_STEP: 8100, ATTR_FIRST_STEP: 100})
    assert pruner.rung_levels(declared) == [300, 900, 2700]
    # Only rungs at or after the first evaluation: 900 / 3**2 = 100 fits, 900 / 3**3 does not.
    short = _frozen(0, **{ATTR_MAX_STEP: 900, ATTR_FIRST_STEP: 100})
    assert pruner.rung_levels(short) == [100, 300]
    # Three epochs evaluated after each: one rung, at the first.
    assert pruner.rung_levels(_frozen(0, **{ATTR_MAX_STEP: 3, ATTR_FIRST_STEP: 1})) == [1]
    # Nothing declared: rungs up from min_resource, as in ASHA.
    assert AutoPruner(min_resource=2).rung_levels(_frozen(0)) == [2, 6, 18]


def test_a_small_trial_budget_keeps_fewer_brackets() -> None:
    declared = {ATTR_MAX_STEP: 8100, ATTR_FIRST_STEP: 1}
    rungs = {
        n: len(AutoPruner(n_trials=n).rung_levels(_frozen(0, **declared))) for n in (5, 20, 50, 200)
    }
    # 3**r configurations at the first rung of the most aggressive bracket, times r + 1 brackets.
    assert rungs == {5: 0, 20: 1, 50: 2, 200: 3}


def test_brackets_follow_hyperbands_weights_and_a_configurations_folder() -> None:
    pruner = AutoPruner(reduction_factor=3, max_brackets=4)
    declared = {ATTR_MAX_STEP: 81, ATTR_FIRST_STEP: 1}
    counts = Counter(pruner.bracket_of(_frozen(n, **declared)) for n in range(4000))
    # Weights ceil(4/(s+1) * 3**s) for s = 3, 2, 1, 0 halvings: 27, 12, 6, 4.
    shares = [counts[b] / 4000 for b in range(4)]
    assert shares == pytest.approx([27 / 49, 12 / 49, 6 / 49, 4 / 49], abs=0.03)
    # A retry or a continuation shares the folder root: the same bracket.
    first, again = _frozen(7, **declared), _frozen(99, **declared)
    again.user_attrs[ATTR_RETRY_ROOT] = 7
    assert pruner.bracket_of(first) == pruner.bracket_of(again)


def _roots_in(pruner: AutoPruner, bracket: int, count: int) -> list[int]:
    declared = {ATTR_MAX_STEP: 9, ATTR_FIRST_STEP: 1}
    roots = (n for n in range(10_000) if pruner.bracket_of(_frozen(n, **declared)) == bracket)
    return [next(roots) for _ in range(count)]


def _run(study: optuna.Study, root: int, values: list[float]) -> bool:
    """A trial of folder ``root`` reports ``values`` at steps 1, 2, ...; True when paused."""
    trial = study.ask({"x": optuna.distributions.FloatDistribution(0, 1)})
    trial.set_user_attr(ATTR_RETRY_ROOT, root)
    trial.set_user_attr(ATTR_MAX_STEP, 9)
    trial.set_user_attr(ATTR_FIRST_STEP, 1)
    for step, value in enumerate(values, start=1):
        trial.report(value, step)
        if trial.should_prune():
            study.tell(trial, state=TrialState.PRUNED)
            return True
    study.tell(trial, values[-1])
    return False


def _calibrated(pruner: AutoPruner) -> optuna.Study:
    """A study whose rungs are trusted: three never-pruned configurations whose
    values at every step rank them as their final values do."""
    study = optuna.create_study(direction="maximize", pruner=pruner)
    for root, value in zip(_roots_in(pruner, 2, 3), (0.01, 0.02, 0.03), strict=True):
        # The never-pruned bracket trains to the end whatever it scores.
        assert not _run(study, root, [value] * 9)
    return study


def test_configurations_are_ranked_within_their_bracket_only() -> None:
    pruner = AutoPruner(reduction_factor=3, max_brackets=3, min_trials=3)
    study = _calibrated(pruner)
    aggressive, never = _roots_in(pruner, 0, 4), _roots_in(pruner, 2, 5)[3:]
    # Bracket 0 judges at step 1: three configurations there, only the best third goes on.
    assert _run(study, aggressive[0], [0.5])
    assert _run(study, aggressive[1], [0.4])
    assert not _run(study, aggressive[2], [0.9, 0.9])  # past rung 0, short of rung 1 (step 3)
    paused = [t for t in study.get_trials() if is_paused(t)]
    assert [t.user_attrs[ATTR_RETRY_ROOT] for t in paused] == aggressive[:2]
    # A fourth and fifth in bracket 0 put the 0.5 configuration in the best third:
    # it is promoted, and goes on from its own folder.
    assert _run(study, aggressive[3], [0.1])
    assert promote(study, base_seed=None) is None  # 0.5 is second of four: not yet
    assert not _run(study, never[0], [0.0] * 9)
    assert _run(study, _roots_in(pruner, 0, 6)[5], [0.05])
    assert _run(study, _roots_in(pruner, 0, 7)[6], [0.02])
    parent = promote(study, base_seed=None)
    assert parent is not None
    continuation = study.get_trials(states=(TrialState.WAITING,))[0]
    assert continuation.user_attrs[ATTR_CONTINUES] == parent
    assert continuation.user_attrs[ATTR_RETRY_ROOT] == aggressive[0]


def _spec(**fields: Any) -> StudySpec:
    return StudySpec.model_validate(
        {
            "name": "s",
            "task": {"name": "mlp-classifier"},
            "objective": {"metric": "val_accuracy", "direction": "maximize"},
            **fields,
        }
    )


def test_a_compute_budget_without_a_pruner_defaults_to_auto() -> None:
    assert _spec(budget={"max_train_examples": 10_000}).default_pruner.name == "auto"
    assert _spec(budget={"max_compute_s": 600}).default_pruner.name == "auto"
    assert _spec().default_pruner.name == "median"
    named = _spec(budget={"max_compute_s": 600}, pruner={"name": "median"})
    assert (
        named.effective_pruner.name == "median"
        and _spec(pruner={"name": "none"}).effective_pruner.name == "none"
    )
    two = _spec(
        objective=None,
        objectives=[
            {"metric": "val_accuracy", "direction": "maximize"},
            {"metric": "params_m", "direction": "minimize"},
        ],
        budget={"max_compute_s": 600},
    )
    assert two.default_pruner.name == "none"


def test_auto_is_sized_by_the_trial_budget_and_its_options_are_checked() -> None:
    spec = _spec(pruner={"name": "auto"}, budget={"n_trials": 20})
    built = build_pruner(spec.effective_pruner, spec.budget.n_trials)
    assert isinstance(built, AutoPruner) and built.n_trials == 20
    assert check_pruner(spec) == []
    bad = _spec(pruner={"name": "auto", "options": {"reduction_factor": 1}})
    assert [e.loc for e in check_pruner(bad)] == [("pruner", "options")]
    unknown = _spec(pruner={"name": "auto", "options": {"min_resources": 2}})
    assert check_pruner(unknown)


def test_a_rung_shared_by_two_brackets_ranks_each_apart() -> None:
    pruner = AutoPruner(reduction_factor=3, max_brackets=3, min_trials=3)
    study = _calibrated(pruner)
    # Bracket 1 judges first at step 3, the rung that bracket 0 reaches second.
    for root, value in zip(_roots_in(pruner, 1, 3), (0.1, 0.2, 0.3), strict=True):
        _run(study, root, [value] * 3)
    assert sum(is_paused(t) for t in study.get_trials()) == 2
    # Bracket 0's first three at step 1; the best goes on and is alone at step 3
    # in its bracket: paused, although it beats every bracket-1 value there.
    roots = _roots_in(pruner, 0, 3)
    _run(study, roots[0], [0.5])
    _run(study, roots[1], [0.4])
    assert _run(study, roots[2], [0.9, 0.9, 0.9])
    assert study.get_trials()[-1].user_attrs["hpo.paused_rung"] == 1


def test_a_rung_judges_nobody_until_its_values_predict_the_end() -> None:
    pruner = AutoPruner(reduction_factor=3, max_brackets=3, min_trials=3)
    study = optuna.create_study(direction="maximize", pruner=pruner)
    roots = _roots_in(pruner, 0, 6)
    # Too few completed configurations to tell: the first rung lets everybody on.
    for root, value in zip(roots[:3], (0.1, 0.2, 0.3), strict=True):
        assert not _run(study, root, [value] * 9)
    # Early values that rank them backwards: the rung stays silent.
    for root, (early, final) in zip(
        _roots_in(pruner, 2, 3), ((0.9, 0.1), (0.5, 0.5), (0.1, 0.9)), strict=True
    ):
        assert not _run(study, root, [early] * 3 + [final] * 6)
    assert not pruner.rung_trusted(study.get_trials(), 0)
    assert not _run(study, roots[3], [0.0] * 9)  # the worst so far at rung 0, not paused
    assert not any(is_paused(t) for t in study.get_trials())
    # Every trial recorded its value at each rung's step, whatever its bracket.
    assert all("hpo.level_0" in t.system_attrs for t in study.get_trials())
