"""DEHB on the multi-fidelity Hartmann functions (an outside reference).

Runs in a virtualenv with ``dehb`` (not the product's); the multi-fidelity
benchmark calls it with that interpreter:

    .venv-dehb/bin/python -m benchmarks.dehb_reference \\
        --function hartmann6-bad --seeds 1 2 3 --budget 3000 --out results.json

DEHB at its defaults (eta 3, fidelities 1..100) through its ask/tell
interface, one evaluation at a time. DEHB does not continue a configuration
from a checkpoint: an evaluation at fidelity ``z`` walks ``z`` epochs, and
the budget counts them (the same unit as the service's studies). Writes the
points ``(epochs spent, best full-fidelity value so far)`` after each
full-fidelity evaluation, up to the budget.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any

from benchmarks.hartmann import MAX_FIDELITY, MultiFidelityFunction, get_function


def run(function: MultiFidelityFunction, seed: int, budget: int) -> list[list[float]]:
    """One DEHB run: ``[epochs spent, best value]`` after each full-fidelity evaluation."""
    from dehb import DEHB

    with tempfile.TemporaryDirectory() as scratch:
        optimizer: Any = DEHB(
            f=None,
            dimensions=function.dims,
            min_fidelity=1,
            max_fidelity=MAX_FIDELITY,
            seed=seed,
            n_workers=1,
            output_path=scratch,
            log_level="ERROR",
            save_freq="end",  # only at the end of run(), which ask/tell never calls
        )
        spent, best, points = 0, float("inf"), []
        while True:
            job = optimizer.ask()
            z = min(MAX_FIDELITY, max(1, round(float(job["fidelity"]))))
            if spent + z > budget:
                break
            point = tuple(float(v) for v in job["config"])
            value = function(point, z)
            spent += z
            optimizer.tell(job, {"fitness": value, "cost": float(z)})
            if z == MAX_FIDELITY:
                best = min(best, value)
                points.append([float(spent), best])
    points.append([float(spent), best])
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--function", required=True)
    parser.add_argument("--seeds", nargs="+", type=int, required=True)
    parser.add_argument("--budget", type=int, required=True, help="epochs over all evaluations")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    function = get_function(args.function)
    results = {"dehb": {str(seed): run(function, seed, args.budget) for seed in args.seeds}}
    args.out.write_text(json.dumps(results))


if __name__ == "__main__":
    main()
