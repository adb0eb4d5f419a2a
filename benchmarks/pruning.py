"""Pruning efficiency: the same seeded BERT study with no pruner, median and Hyperband.

Each study (the builtin text-classification task, ``--trials`` trials, TPE with
one seed) runs through the service with one worker slot; the table gives the
best ``val_accuracy`` and the optimizer steps and training examples of all
trials together (up to the last evaluation of each), against the unpruned study.

    python -m benchmarks.pruning --trials 30
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import optuna

from benchmarks.pg import add_server_argument, create_study, migrated_databases
from storage.validation import ValidationPolicy, validate_spec

SCRATCH = Path(tempfile.gettempdir()) / "hpo-pruning"

REPO = Path(__file__).resolve().parent.parent
# Label -> (pruner, unit of the reported step). Resources of the "examples"
# settings are training examples (4,000 = one epoch of the training set); the
# "steps" settings start pruning after 100 optimizer steps.
PRUNERS: dict[str, tuple[dict[str, Any], str]] = {
    "none": ({"name": "none"}, "examples"),
    "median": (
        {"name": "median", "options": {"n_startup_trials": 5, "n_warmup_steps": 4000}},
        "examples",
    ),
    "hyperband": (
        {"name": "hyperband", "options": {"min_resource": 4000, "reduction_factor": 3}},
        "examples",
    ),
    "median-steps-early": (
        {"name": "median", "options": {"n_startup_trials": 5, "n_warmup_steps": 100}},
        "steps",
    ),
    "hyperband-steps-early": (
        {"name": "hyperband", "options": {"min_resource": 100, "reduction_factor": 3}},
        "steps",
    ),
}
N_TRAIN = 4000


def spec(
    name: str, pruner: dict[str, Any], report_step: str, n_trials: int, seed: int
) -> dict[str, Any]:
    return {
        "name": name,
        "task": {
            "name": "text-classification",
            "config": {
                "dataset": {
                    "source": "builtin",
                    "name": "sentiment",
                    "n_train": N_TRAIN,
                    "n_validation": 800,
                },
                "model": {"source": "scratch", "vocab_size": 2000},
                "max_epochs": 4,
                "eval_every_steps": 50,
                "max_seq_len": 64,
                "report_step": report_step,
            },
        },
        "objective": {"metric": "val_accuracy", "direction": "maximize"},
        "search_space": {
            "learning_rate": {"type": "float", "low": 1e-4, "high": 5e-3, "log": True},
            "num_layers": {"type": "int", "low": 1, "high": 2},
            "hidden_size": {"type": "categorical", "choices": [64, 128]},
            "hidden_dropout": {"type": "float", "low": 0.0, "high": 0.2},
            "batch_size": {"type": "categorical", "choices": [16, 32]},
        },
        "sampler": {"name": "tpe", "seed": seed},
        "pruner": pruner,
        "budget": {"n_trials": n_trials, "max_concurrent_trials": 1},
    }


def run_study(service_url: str, optuna_url: str, name: str, body: dict[str, Any]) -> float:
    create_study(service_url, optuna_url, validate_spec(body, ValidationPolicy()))
    env = dict(
        os.environ,
        HPO_DATABASE_URL=service_url,
        HPO_OPTUNA_STORAGE=optuna_url,
        HPO_MLFLOW_ENABLED="false",
        HPO_DATA_DIR=str(SCRATCH / name),
        PYTHONPATH=str(REPO),
    )
    started = time.monotonic()
    subprocess.run(
        [
            sys.executable,
            "-m",
            "service.cli.main",
            "worker",
            "--devices",
            "cpu",
            "--study",
            name,
            "--exit-when-idle",
        ],
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.monotonic() - started


def trial_rows(optuna_url: str, name: str, report_step: str) -> list[dict[str, Any]]:
    """Per trial: state, params, final value, curve, and the data it trained on."""
    trials = optuna.load_study(study_name=name, storage=optuna_url).get_trials(deepcopy=False)
    rows = []
    for t in trials:
        last = max(t.intermediate_values, default=0)
        batch = int(t.params["batch_size"])
        examples = last if report_step == "examples" else last * batch
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "params": t.params,
                "value": t.value,
                "examples": examples,
                "steps": examples // batch,
                "curve": t.intermediate_values,
            }
        )
    return rows


def summarize(rows: list[dict[str, Any]]) -> dict[str, float]:
    complete = [r["value"] for r in rows if r["state"] == "COMPLETE" and r["value"] is not None]
    return {
        "best": max(complete),
        "steps": sum(r["steps"] for r in rows),
        "examples": sum(r["examples"] for r in rows),
        "complete": len(complete),
        "pruned": sum(r["state"] == "PRUNED" for r in rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    add_server_argument(parser)
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument(
        "--pruners",
        nargs="+",
        default=list(PRUNERS),
        choices=list(PRUNERS),
        help="which to run; 'none' is always run first as the baseline",
    )
    parser.add_argument("--seed", type=int, default=2026, help="the TPE sampler's seed")
    parser.add_argument("--details", type=Path, help="write every trial (params, curve) as JSON")
    args = parser.parse_args()
    rows = {}
    details: dict[str, list[dict[str, Any]]] = {}
    with migrated_databases(args.server) as (service_url, optuna_url):
        for label in ["none", *(p for p in args.pruners if p != "none")]:
            pruner, report_step = PRUNERS[label]
            name = f"pruning-{label}"
            body = spec(name, pruner, report_step, args.trials, args.seed)
            wall = run_study(service_url, optuna_url, name, body)
            details[label] = trial_rows(optuna_url, name, report_step)
            rows[label] = {**summarize(details[label]), "wall": wall}
    if args.details is not None:
        args.details.write_text(json.dumps(details, indent=1))
    base = rows["none"]
    print(
        "| pruner | best val_accuracy | Δ vs none (points) | optimizer steps | steps vs none "
        "| examples vs none | complete / pruned | wall s |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for label, r in rows.items():
        print(
            f"| {label} | {r['best']:.4f} | {100 * (r['best'] - base['best']):+.1f} | "
            f"{r['steps']:.0f} | {100 * r['steps'] / base['steps']:.0f} % | "
            f"{100 * r['examples'] / base['examples']:.0f} % | "
            f"{r['complete']:.0f} / {r['pruned']:.0f} | {r['wall']:.0f} |"
        )


if __name__ == "__main__":
    main()
