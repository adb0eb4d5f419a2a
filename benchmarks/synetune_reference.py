"""Syne Tune's ASHA and BOHB on the multi-fidelity Hartmann functions (outside reference).

Runs in a virtualenv with ``syne-tune`` (not the product's); the multi-fidelity
benchmark calls it with that interpreter:

    .venv-synetune/bin/python -m benchmarks.synetune_reference \\
        --function hartmann6-bad --seeds 1 2 3 --budget 3000 --out results.json

Each run is Syne Tune's simulator (``UserBlackboxBackend`` with
checkpointing, four workers) on the same function as the service's task: the
learning curve of a configuration is ``f(x, z)`` for ``z = 1..100``, each
epoch costs one simulated second, and the budget is counted in the same unit
(epochs walked over all trials). Writes, per method and seed, the points
``(epochs spent, best full-fidelity value so far)`` at each completed trial,
up to the budget.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.hartmann import MAX_FIDELITY, MultiFidelityFunction, get_function, point_of

METHODS = ("asha", "bohb")


def blackbox(function: MultiFidelityFunction) -> Any:
    """The function as a Syne Tune blackbox: all fidelities of a point at once."""
    from syne_tune.blackbox_repository.blackbox import Blackbox
    from syne_tune.config_space import randint, uniform

    class HartmannBlackbox(Blackbox):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__(
                configuration_space={f"x{i}": uniform(0.0, 1.0) for i in range(function.dims)},
                fidelity_space={"epoch": randint(1, MAX_FIDELITY)},
                objectives_names=["value", "elapsed_time"],
            )

        @property
        def fidelity_values(self) -> np.ndarray:
            return np.arange(1, MAX_FIDELITY + 1)

        def _objective_function(
            self, configuration: dict[str, Any], fidelity: Any = None, seed: Any = None
        ) -> np.ndarray:
            point = point_of(configuration, function.dims)
            zs = range(1, MAX_FIDELITY + 1)
            # elapsed_time is cumulative: walking to epoch z costs z seconds.
            return np.array([[function(point, z), float(z)] for z in zs])

    return HartmannBlackbox()


def scheduler(method: str, config_space: dict[str, Any], seed: int) -> Any:
    """ASHA or BOHB at Syne Tune's defaults (grace period 1, reduction factor 3)."""
    from syne_tune.optimizer.baselines import ASHA, BOHB

    kinds = {"asha": ASHA, "bohb": BOHB}
    return kinds[method](
        config_space=config_space,
        metric="value",
        time_attr="epoch",
        max_t=MAX_FIDELITY,
        do_minimize=True,
        random_seed=seed,
    )


def run(function: MultiFidelityFunction, method: str, seed: int, budget: int) -> list[list[float]]:
    """One tuning run: ``[epochs spent, best value]`` after each completed trial."""
    from syne_tune import Tuner
    from syne_tune.backend.simulator_backend.simulator_callback import SimulatorCallback
    from syne_tune.blackbox_repository.simulated_tabular_backend import UserBlackboxBackend
    from syne_tune.tuner_callback import TunerCallback

    points: list[list[float]] = []
    state = {"spent": 0, "best": float("inf")}

    class Record(TunerCallback):  # type: ignore[misc]
        def on_trial_result(
            self, trial: Any, status: str, result: dict[str, Any], decision: str
        ) -> None:
            if state["spent"] >= budget:
                return
            state["spent"] += 1  # one result is one epoch walked
            if int(result["epoch"]) == MAX_FIDELITY:
                state["best"] = min(state["best"], float(result["value"]))
                points.append([float(state["spent"]), state["best"]])

    box = blackbox(function)
    backend = UserBlackboxBackend(blackbox=box, elapsed_time_attr="elapsed_time", seed=seed)
    with tempfile.TemporaryDirectory() as scratch:
        # Syne Tune writes its results under $SYNETUNE_FOLDER (default ~/syne-tune).
        os.environ["SYNETUNE_FOLDER"] = scratch
        tuner = Tuner(
            trial_backend=backend,
            scheduler=scheduler(method, box.configuration_space, seed),
            stop_criterion=lambda status: state["spent"] >= budget,
            n_workers=4,
            sleep_time=0,
            callbacks=[SimulatorCallback(), Record()],
            tuner_name=f"{function.name}-{method}-{seed}",
            save_tuner=False,
            trial_backend_path=scratch,
            print_update_interval=1e9,
            results_update_interval=1e9,
        )
        tuner.run()
    if state["spent"] < budget:
        logging.warning("%s %s seed %d spent only %d", function.name, method, seed, state["spent"])
    points.append([float(state["spent"]), state["best"]])
    return points


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--function", required=True)
    parser.add_argument("--seeds", nargs="+", type=int, required=True)
    parser.add_argument("--budget", type=int, required=True, help="epochs over all trials")
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    function = get_function(args.function)
    results = {
        method: {str(seed): run(function, method, seed, args.budget) for seed in args.seeds}
        for method in args.methods
    }
    args.out.write_text(json.dumps(results))


if __name__ == "__main__":
    main()
