"""The multi-fidelity benchmark's own pieces: functions, task checkpoint, figures."""

from __future__ import annotations

import math
from pathlib import Path

import optuna
import pytest

from benchmarks.hartmann import (
    ALPHA,
    HARTMANN3,
    HARTMANN6,
    MAX_FIDELITY,
    Hartmann,
    functions,
    get_function,
)
from benchmarks.hartmann_task import objective
from benchmarks.mf_report import best_at, first_reaching
from workers.context import TrialContext


def plain_hartmann(base: Hartmann, x: tuple[float, ...]) -> float:
    """The textbook formula, written out again: -sum a_i exp(-sum A_ij (x_j - P_ij)^2)."""
    a, p = base.a, base.p
    return -float(
        sum(
            ALPHA[i] * math.exp(-sum(a[i][j] * (x[j] - p[i][j]) ** 2 for j in range(len(x))))
            for i in range(4)
        )
    )


@pytest.mark.parametrize("base", [HARTMANN3, HARTMANN6])
def test_known_minimum_at_known_location_for_every_level(base: Hartmann) -> None:
    for function in functions().values():
        if function.base is not base:
            continue
        at_optimum = function(function.base.argmin, MAX_FIDELITY)
        assert at_optimum == pytest.approx(function.minimum, abs=1e-4)
        # Nearby points are worse: the location is a minimum.
        for j in range(function.dims):
            moved = list(function.base.argmin)
            moved[j] += 0.02
            assert function(tuple(moved), MAX_FIDELITY) > at_optimum


def test_published_minima() -> None:
    assert get_function("hartmann3-good").minimum == pytest.approx(-3.86278)
    assert get_function("hartmann6-terrible").minimum == pytest.approx(-3.32237)


def test_fidelity_bias_and_noise_vanish_at_full_fidelity_only() -> None:
    points = [(0.1, 0.2, 0.3), (0.9, 0.5, 0.05), HARTMANN3.argmin]
    for level in ("good", "moderate", "bad", "terrible"):
        function = get_function(f"hartmann3-{level}")
        for x in points:
            exact = plain_hartmann(HARTMANN3, x)
            assert function(x, MAX_FIDELITY) == pytest.approx(exact, abs=1e-12)
            # Lower fidelities are flattened (bias) and blurred upwards (noise).
            assert function(x, 1) > exact
            assert abs(function(x, 99) - exact) < abs(function(x, 2) - exact)


def test_worse_correlation_levels_are_further_off_at_low_fidelity() -> None:
    x = HARTMANN3.argmin
    gaps = [get_function(f"hartmann3-{lvl}")(x, 10) - HARTMANN3.minimum for lvl in ("good", "bad")]
    assert 0 < gaps[0] < gaps[1]


class _Ctx(TrialContext):
    """A trial context whose pruner says stop once ``stop_at`` is reported."""

    stop_at: int = 0

    def should_prune(self) -> bool:
        return self._last_step == self.stop_at


def _context(tmp_path: Path, stop_at: int) -> _Ctx:
    trial = optuna.create_study().ask()
    ctx = _Ctx(
        trial=trial,
        params={"x0": 0.2, "x1": 0.4, "x2": 0.6},
        config={"function": "hartmann3-bad"},
        objective_metrics=["value"],
        seed=1,
        device="cpu",
        work_dir=tmp_path,
        cache_dir=tmp_path,
        dataset_roots=[],
        keep_checkpoint_when_pruned=True,
    )
    ctx.stop_at = stop_at
    return ctx


def test_a_paused_trial_resumes_from_the_fidelity_it_reached(tmp_path: Path) -> None:
    first = _context(tmp_path, stop_at=12)
    with pytest.raises(optuna.TrialPruned):
        objective(first)
    assert first.train_examples == 12
    continuation = _context(tmp_path, stop_at=-1)
    result = objective(continuation)
    # Only the steps after the pause are walked (and paid for) again.
    assert continuation.train_examples == MAX_FIDELITY - 12
    assert min(continuation.trial.study.trials[0].intermediate_values) == 13
    assert result["value"] == pytest.approx(get_function("hartmann3-bad")((0.2, 0.4, 0.6)))
    assert not any(tmp_path.iterdir())  # the checkpoint is gone once the trial completes


def test_best_so_far_and_share_to_reach_a_target() -> None:
    points = [(100.0, -1.0), (250.0, -2.0), (400.0, -3.0)]
    assert best_at(points, 50) == math.inf
    assert best_at(points, 300) == -2.0
    assert first_reaching(points, -2.0, 1000) == pytest.approx(0.25)
    assert first_reaching(points, -3.0, 300) is None
