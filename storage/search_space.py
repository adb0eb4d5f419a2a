"""Search-space entries of a spec as Optuna distributions."""

from __future__ import annotations

import math

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from storage.errors import quote, shorten
from storage.spec import AnyParam, CategoricalParam, FloatParam, IntParam

# A grid sampler holds every point in memory, in the API and in each worker.
MAX_GRID_POINTS = 100_000


def to_distribution(param: AnyParam) -> BaseDistribution:
    """The Optuna distribution that samples ``param``."""
    if isinstance(param, FloatParam):
        return FloatDistribution(param.low, param.high, log=param.log, step=param.step)
    if isinstance(param, IntParam):
        return IntDistribution(param.low, param.high, log=param.log, step=param.step)
    return CategoricalDistribution(param.choices)


def to_distributions(space: dict[str, AnyParam]) -> dict[str, BaseDistribution]:
    return {name: to_distribution(param) for name, param in space.items()}


def grid_size(param: AnyParam) -> int | None:
    """How many values :func:`grid_values` would list, computed without listing them."""
    if isinstance(param, CategoricalParam):
        return len(param.choices)
    if isinstance(param, IntParam):
        return (param.high - param.low) // param.step + 1
    if param.step is None:
        return None
    # The tolerance keeps the upper bound when (high - low) / step is an integer.
    return math.floor((param.high - param.low) / param.step + 1e-9) + 1


def grid_points(space: dict[str, AnyParam]) -> int | None:
    """Points in the grid over ``space``; None when a parameter is continuous.

    Stops multiplying once past ``MAX_GRID_POINTS``: the exact size of a
    hostile grid does not matter, only that it is too large.
    """
    total = 1
    for param in space.values():
        size = grid_size(param)
        if size is None:
            return None
        total = min(total * size, MAX_GRID_POINTS + 1)
    return total


def grid_values(param: AnyParam) -> list[object] | None:
    """Every value of a discrete parameter, or None for a continuous one.

    Callers bound the size first (:func:`grid_points`): this builds the list.
    """
    count = grid_size(param)
    if count is None:
        return None
    if isinstance(param, CategoricalParam):
        return list(param.choices)
    if isinstance(param, IntParam):
        return list(range(param.low, param.high + 1, param.step))
    assert param.step is not None
    return [param.low + i * param.step for i in range(count)]


def param_problem(
    key: str, value: object, distributions: dict[str, BaseDistribution]
) -> str | None:
    """Why ``value`` cannot be used for ``key`` in ``distributions``; None when it can."""
    distribution = distributions.get(key)
    if distribution is None:
        known = ", ".join(shorten(name) for name in sorted(distributions))
        return f"not in the search space ({known or 'empty'})"
    # Optuna would take True for 1, but a boolean is no number of a spec's range.
    numeric = not isinstance(distribution, CategoricalDistribution)
    if not (numeric and isinstance(value, bool)) and _contains(distribution, value):
        return None
    return f"{quote(value)} is outside the search space of {shorten(key)}"


def _contains(distribution: BaseDistribution, value: object) -> bool:
    """Whether Optuna can store ``value`` and it lies in the range (and on the step grid)."""
    try:
        internal = distribution.to_internal_repr(value)
    except (ValueError, TypeError):
        return False  # not a number, NaN, not above 0 on a log scale, not among the choices
    if isinstance(distribution, CategoricalDistribution):
        return True
    if not isinstance(distribution, FloatDistribution | IntDistribution):
        return False
    if not distribution.low <= internal <= distribution.high:
        return False
    if isinstance(distribution, IntDistribution):
        return (internal - distribution.low) % distribution.step == 0
    if distribution.step is None:
        return True
    steps = (internal - distribution.low) / distribution.step
    # Optuna's own tolerance: a float step grid is not exact in binary.
    return abs(steps - round(steps)) < 1.0e-8
