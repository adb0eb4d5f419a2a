"""Which enqueued values a search space takes: Optuna's range and step rules, no booleans."""

from __future__ import annotations

import math

import pytest
from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from storage.search_space import param_problem

SPACE: dict[str, BaseDistribution] = {
    "lr": FloatDistribution(1e-5, 1e-1, log=True),
    "dropout": FloatDistribution(0.0, 0.5, step=0.1),
    "layers": IntDistribution(1, 7, step=2),
    "optimizer": CategoricalDistribution(["adam", "sgd", None]),
}


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("lr", 1e-3),
        ("lr", 1e-1),
        ("dropout", 0.3),  # 0.30000000000000004 steps off in binary: still on the grid
        ("layers", 5),
        ("layers", 5.0),
        ("optimizer", "sgd"),
        ("optimizer", None),
    ],
)
def test_values_in_the_space_are_taken(key: str, value: object) -> None:
    assert param_problem(key, value, SPACE) is None


@pytest.mark.parametrize(
    ("key", "value"),
    [
        ("lr", 0.0),  # log scale: not above zero
        ("lr", 0.5),
        ("lr", math.nan),
        ("lr", "fast"),
        ("dropout", 0.25),  # between two steps
        ("layers", 4),  # off the step grid
        ("layers", 2.5),
        ("layers", True),  # a boolean is no number here
        ("optimizer", "adamw"),
    ],
)
def test_values_outside_the_space_are_refused(key: str, value: object) -> None:
    assert param_problem(key, value, SPACE) == f"{value!r} is outside the search space of {key}"


def test_an_unknown_name_lists_the_known_ones() -> None:
    assert param_problem("momentum", 0.9, SPACE) == (
        "not in the search space (dropout, layers, lr, optimizer)"
    )
