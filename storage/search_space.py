"""Search-space entries of a spec as Optuna distributions."""

from __future__ import annotations

import math

from optuna.distributions import (
    BaseDistribution,
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)

from storage.spec import CategoricalParam, FloatParam, IntParam

AnyParam = FloatParam | IntParam | CategoricalParam
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


def grid_values(param: AnyParam) -> list[object] | None:
    """Every value of a discrete parameter, or None for a continuous one."""
    if isinstance(param, CategoricalParam):
        return list(param.choices)
    if isinstance(param, IntParam):
        return list(range(param.low, param.high + 1, param.step))
    if param.step is None:
        return None
    # The tolerance keeps the upper bound when (high - low) / step is an integer.
    count = math.floor((param.high - param.low) / param.step + 1e-9) + 1
    return [param.low + i * param.step for i in range(count)]
