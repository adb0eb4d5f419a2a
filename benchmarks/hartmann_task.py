"""The multi-fidelity Hartmann functions as a custom task.

``task: {name: "python:benchmarks.hartmann_task:objective", config: {function: ...}}``.

A trial walks the fidelity like epochs of training: at step ``z = 1..100``
it "trains" one epoch (``ctx.count_examples(1)``, so ``budget.max_train_examples``
counts epochs and reaching fidelity ``z`` costs ``z``), reports ``f(x, z)`` as
``value`` and asks the pruner. ``task.config.function`` names the function
(``hartmann6-bad``...); the parameters are ``x0``.. in the unit cube.

A checkpoint in the trial folder records the last step done, so that a
retried trial or a ``resumable-sha`` continuation goes on from the fidelity it
reached instead of walking (and paying for) the earlier steps again.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path

import optuna

from benchmarks.hartmann import MAX_FIDELITY, get_function, point_of
from workers.context import TrialContext

CHECKPOINT = "hartmann-checkpoint.json"


def objective(ctx: TrialContext) -> Mapping[str, float]:
    """Walk the fidelity to the top, reporting and checking pruning at each step."""
    function = get_function(str(ctx.config["function"]))
    max_fidelity = int(ctx.config.get("max_fidelity", MAX_FIDELITY))
    point = point_of(ctx.params, function.dims)
    path = ctx.work_dir / CHECKPOINT
    # Where the walk ends: pruner auto places its rungs over 1..max_fidelity.
    ctx.declare_fidelity(max_fidelity, 1)
    done = load_step(path, point)
    value = function(point, done) if done else float("nan")
    for step in range(done + 1, max_fidelity + 1):
        ctx.count_examples(1)
        value = function(point, step)
        final = step == max_fidelity
        save_step(path, point, step)
        ctx.report(step, {"value": value}, final=final)
        if ctx.should_prune():
            if not ctx.keep_checkpoint_when_pruned:
                path.unlink(missing_ok=True)
            raise optuna.TrialPruned(f"pruned at fidelity {step}")
    path.unlink(missing_ok=True)
    return {"value": value, "fidelity": float(max_fidelity)}


def load_step(path: Path, point: tuple[float, ...]) -> int:
    """The last step done for ``point`` according to the checkpoint (0 without one)."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, ValueError):
        return 0
    return int(saved["step"]) if tuple(saved.get("point", ())) == point else 0


def save_step(path: Path, point: tuple[float, ...], step: int) -> None:
    """Record ``step`` as done, atomically (a crash leaves the old or the new one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_suffix(".tmp")
    scratch.write_text(json.dumps({"point": list(point), "step": step}))
    scratch.replace(path)
