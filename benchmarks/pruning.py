"""Pruning efficiency: the same seeded BERT study with no pruner, median and Hyperband.

Each study (the builtin text-classification task, ``--trials`` trials, TPE with
one seed) runs through the service with one worker slot; the table gives the
best ``val_accuracy`` and the optimizer steps trained in total (the last
reported step of every trial), against the unpruned study.

    python -m benchmarks.pruning --trials 30
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna

from benchmarks.pg import throwaway_databases
from storage import studies
from storage.db import Database
from storage.migrate import upgrade_optuna_schema, upgrade_service_schema
from storage.optuna_store import open_optuna_storage
from storage.validation import ValidationPolicy, validate_spec

REPO = Path(__file__).resolve().parent.parent
PRUNERS: dict[str, dict[str, Any]] = {
    "none": {"name": "none"},
    "median": {"name": "median", "options": {"n_startup_trials": 5, "n_warmup_steps": 100}},
    "hyperband": {"name": "hyperband", "options": {"min_resource": 100, "reduction_factor": 3}},
    "hyperband-eta4": {
        "name": "hyperband",
        "options": {"min_resource": 50, "reduction_factor": 4},
    },
}


def spec(name: str, pruner: dict[str, Any], n_trials: int) -> dict[str, Any]:
    return {
        "name": name,
        "task": {
            "name": "text-classification",
            "config": {
                "dataset": {
                    "source": "builtin",
                    "name": "sentiment",
                    "n_train": 4000,
                    "n_validation": 800,
                },
                "model": {"source": "scratch", "vocab_size": 2000},
                "max_epochs": 4,
                "eval_every_steps": 50,
                "max_seq_len": 64,
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
        "sampler": {"name": "tpe", "seed": 2026},
        "pruner": pruner,
        "budget": {"n_trials": n_trials, "max_concurrent_trials": 1},
    }


def run_study(service_url: str, optuna_url: str, name: str, body: dict[str, Any]) -> float:
    database = Database(service_url)
    with database.session_scope() as session:
        studies.create_study(
            session,
            open_optuna_storage(optuna_url),
            validate_spec(body, ValidationPolicy()),
            "bench",
        )
    database.dispose()
    env = dict(
        os.environ,
        HPO_DATABASE_URL=service_url,
        HPO_OPTUNA_STORAGE=optuna_url,
        HPO_MLFLOW_ENABLED="false",
        HPO_DATA_DIR=f"/tmp/hpo-pruning/{name}",
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


def summarize(optuna_url: str, name: str) -> dict[str, float]:
    trials = optuna.load_study(study_name=name, storage=optuna_url).get_trials(deepcopy=False)
    steps = sum(max(t.intermediate_values, default=0) for t in trials)
    complete = [t.value for t in trials if t.state.name == "COMPLETE" and t.value is not None]
    return {
        "best": max(complete),
        "steps": steps,
        "complete": len(complete),
        "pruned": sum(t.state.name == "PRUNED" for t in trials),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--server",
        default=os.environ.get(
            "HPO_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
        ),
    )
    parser.add_argument("--trials", type=int, default=30)
    parser.add_argument(
        "--pruners",
        nargs="+",
        default=list(PRUNERS),
        choices=list(PRUNERS),
        help="which to run; 'none' is always run first as the baseline",
    )
    args = parser.parse_args()
    rows = {}
    with throwaway_databases(args.server, 2) as (service_url, optuna_url):
        database = Database(service_url)
        upgrade_service_schema(database)
        database.dispose()
        upgrade_optuna_schema(optuna_url)
        for label in ["none", *(p for p in args.pruners if p != "none")]:
            pruner = PRUNERS[label]
            name = f"pruning-{label}"
            wall = run_study(service_url, optuna_url, name, spec(name, pruner, args.trials))
            rows[label] = {**summarize(optuna_url, name), "wall": wall}
    base = rows["none"]
    print(
        "| pruner | best val_accuracy | Δ vs none (points) | training steps | steps vs none "
        "| complete / pruned | wall s |"
    )
    print("|---|---|---|---|---|---|---|")
    for label, r in rows.items():
        print(
            f"| {label} | {r['best']:.4f} | {100 * (r['best'] - base['best']):+.1f} | "
            f"{r['steps']:.0f} | {100 * r['steps'] / base['steps']:.0f} % | "
            f"{r['complete']:.0f} / {r['pruned']:.0f} | {r['wall']:.0f} |"
        )


if __name__ == "__main__":
    main()
