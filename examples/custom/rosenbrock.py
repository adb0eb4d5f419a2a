"""A custom objective: ``task: {name: "python:rosenbrock:objective"}``.

Run the workers with this folder importable and the module allowed:

    PYTHONPATH=examples/custom HPO_ALLOWED_TASK_MODULES=rosenbrock hpo worker

The function gets the same trial context as the built-in tasks: ``ctx.params``
(what the spec's search space sampled), ``ctx.suggest_*`` for define-by-run
parameters, ``ctx.report(step, metrics)`` for learning curves and pruning,
``ctx.should_prune()`` (never true after a report with ``final=True``), and
``ctx.config`` (the spec's ``task.config``).
"""

from __future__ import annotations

from collections.abc import Mapping

import optuna

from workers.context import TrialContext


def objective(ctx: TrialContext) -> Mapping[str, float]:
    """Minimise the Rosenbrock function by gradient descent from a sampled start."""
    x, y = float(ctx.params["x"]), float(ctx.params["y"])
    learning_rate = ctx.suggest_float("learning_rate", 1e-5, 1e-2, log=True)
    steps = int(ctx.config.get("steps", 200))
    loss = 0.0
    for step in range(1, steps + 1):
        grad_x = -2 * (1 - x) - 400 * x * (y - x * x)
        grad_y = 200 * (y - x * x)
        x, y = x - learning_rate * grad_x, y - learning_rate * grad_y
        loss = (1 - x) ** 2 + 100 * (y - x * x) ** 2
        if step % 20 == 0:
            # The last report is the final evaluation: it is never pruned.
            ctx.report(step, {"loss": min(loss, 1e12)}, final=step == steps)
            if ctx.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step}")
    return {"loss": min(loss, 1e12), "x": x, "y": y}
