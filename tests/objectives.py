"""Custom objectives (``python:tests.objectives:<name>``) for worker tests.

They are fast and deterministic so that tests check the machinery, not training.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping

import optuna

from workers.context import TrialContext


def _x(ctx: TrialContext) -> float:
    if "x" in ctx.params:
        return float(ctx.params["x"])
    return ctx.suggest_float("x", -10.0, 10.0)


def quadratic(ctx: TrialContext) -> Mapping[str, float]:
    """Loss (x - 2)^2, reported at ``steps`` steps ``sleep_s`` apart; prunable."""
    x = _x(ctx)
    steps = int(ctx.config.get("steps", 3))
    for step in range(steps):
        time.sleep(float(ctx.config.get("sleep_s", 0.05)))
        loss = (x - 2.0) ** 2 + (steps - step)
        ctx.report(step, {"loss": loss, "step_time": 0.0}, final=step == steps - 1)
        if ctx.should_prune():
            raise optuna.TrialPruned(f"pruned at step {step}")
    return {"loss": (x - 2.0) ** 2}


def null(ctx: TrialContext) -> Mapping[str, float]:
    """The cheapest objective: what the dispatch benchmark measures."""
    return {"loss": _x(ctx) ** 2}


def raising(ctx: TrialContext) -> Mapping[str, float]:
    raise ValueError(f"learning rate {ctx.params.get('x', 'x')} exploded")


def nan_loss(ctx: TrialContext) -> Mapping[str, float]:
    return {"loss": math.nan}


def two_objectives(ctx: TrialContext) -> Mapping[str, float]:
    x = _x(ctx)
    return {"loss": (x - 2.0) ** 2, "size": abs(x)}


def out_of_memory(ctx: TrialContext) -> Mapping[str, float]:
    """What a CUDA out-of-memory looks like to the worker (torch's own exception)."""
    import torch

    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB")


def fails_below(ctx: TrialContext) -> Mapping[str, float]:
    """``quadratic``, except that a trial with x below ``fail_below`` (-5) raises."""
    if _x(ctx) < float(ctx.config.get("fail_below", -5.0)):
        raise ValueError(f"x = {_x(ctx)} is out of the objective's domain")
    return quadratic(ctx)
