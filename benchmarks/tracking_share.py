"""The share of a BERT trial's wall time that MLflow tracking costs.

The same study (a small scratch BERT on the builtin sentiment data, fixed
hyperparameters and seeds, so every trial trains the same) is run by one
``hpo worker --devices cpu`` slot three ways: tracking off, tracking to a
local MLflow store (SQLite file and artifact folder), and tracking to an
``mlflow server``. Tracking runs in the slot's sender thread, so what the
trial pays is the calls on its own thread (queueing the run, its curve, its
end and its model) plus whatever the sender takes from the training's cores;
both show in the trial's wall time (Optuna's start to complete, the task's
training, evaluation and saves), which is compared. The modes are
interleaved, ``--repeats`` times, and the fastest run of each mode kept: other
load on a shared machine only slows a run down.

    python -m benchmarks.tracking_share --trials 3 --repeats 2
"""

from __future__ import annotations

import argparse
import os
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import optuna

from benchmarks.pg import add_server_argument, create_study, migrated_databases
from storage.validation import ValidationPolicy, validate_spec

REPO = Path(__file__).resolve().parent.parent
FIXED = {
    "num_layers": 2,
    "hidden_size": 128,
    "num_attention_heads": 2,
    "intermediate_size": 512,
    "hidden_dropout": 0.1,
    "attention_dropout": 0.1,
    "batch_size": 32,
    "learning_rate": 1e-3,
}
MODES = ("off", "local store", "server")
HPO_WORKER = [sys.executable, "-m", "service.cli.main", "worker", "--devices", "cpu"]


def _spec(name: str, n_trials: int, steps: int) -> dict[str, object]:
    return {
        "name": name,
        "task": {
            "name": "text-classification",
            "config": {
                "dataset": {"source": "builtin", "n_train": 6000, "n_validation": 400},
                "model": {"source": "scratch", "vocab_size": 2000},
                "max_seq_len": 64,
                "max_steps": steps,
                "eval_every_steps": max(1, steps // 3),
            },
        },
        "objective": {"metric": "val_accuracy", "direction": "maximize"},
        "search_space": {k: {"type": "categorical", "choices": [v]} for k, v in FIXED.items()},
        "sampler": {"name": "random", "seed": 5},
        "pruner": {"name": "none"},
        "budget": {"n_trials": n_trials, "max_concurrent_trials": 1, "max_retries": 0},
    }


def trial_seconds(optuna_url: str, name: str) -> list[float]:
    trials = optuna.load_study(study_name=name, storage=optuna_url).get_trials(deepcopy=False)
    return [
        (t.datetime_complete - t.datetime_start).total_seconds()
        for t in trials
        if t.state.name == "COMPLETE" and t.datetime_complete and t.datetime_start
    ]


def run_mode(
    urls: tuple[str, str],
    mode: str,
    *,
    name: str,
    args: argparse.Namespace,
    scratch: Path,
    server: str,
) -> tuple[list[float], float]:
    service_url, optuna_url = urls
    spec = validate_spec(_spec(name, args.trials, args.steps), ValidationPolicy())
    create_study(service_url, optuna_url, spec)
    data = scratch / "data"
    tracking_uri = {"local store": f"sqlite:///{scratch / 'mlflow.db'}", "server": server}
    env = dict(
        os.environ,
        HPO_DATABASE_URL=service_url,
        HPO_OPTUNA_STORAGE=optuna_url,
        HPO_DATA_DIR=str(data),
        HPO_MLFLOW_ENABLED="false" if mode == "off" else "true",
        HPO_MLFLOW_TRACKING_URI=tracking_uri.get(mode, ""),
        PYTHONPATH=str(REPO),
    )
    log_path = scratch / f"{name}.log"
    before = _children_cpu_s()
    with log_path.open("wb") as log:
        subprocess.run(
            [*HPO_WORKER, "--study", name, "--exit-when-idle"],
            env=env,
            check=True,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=REPO,
        )
    cpu_s = _children_cpu_s() - before
    seconds = trial_seconds(optuna_url, name)
    if not seconds:
        raise RuntimeError(f"no trial of {name} completed:\n{log_path.read_text()[-3000:]}")
    return seconds, cpu_s


def _children_cpu_s() -> float:
    """CPU seconds (user + system) of every finished child process so far, theirs included."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def start_server(scratch: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1"]
    command += ["--port", str(port), "--workers", "1"]
    command += ["--backend-store-uri", f"sqlite:///{scratch / 'mlflow-server.db'}"]
    command += ["--serve-artifacts", "--artifacts-destination", str(scratch / "artifacts")]
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    proc = subprocess.Popen(
        command,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2):
                return proc, url
        except OSError:
            time.sleep(1)
    proc.kill()
    raise RuntimeError("mlflow server did not start")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_server_argument(parser)
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--steps", type=int, default=150)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    medians: dict[str, list[float]] = {mode: [] for mode in MODES}
    cpu: dict[str, list[float]] = {mode: [] for mode in MODES}
    with (
        tempfile.TemporaryDirectory(prefix="tracking-share-") as folder,
        migrated_databases(args.server) as urls,
    ):
        scratch = Path(folder)
        server, url = start_server(scratch)
        try:
            for repeat in range(args.repeats):
                for mode in MODES:
                    name = f"share-{mode.replace(' ', '-')}-{repeat}"
                    seconds, cpu_s = run_mode(
                        urls, mode, name=name, args=args, scratch=scratch, server=url
                    )
                    medians[mode].append(statistics.median(seconds))
                    cpu[mode].append(cpu_s)
                    print(f"{mode}: trials of {seconds} s, {cpu_s:.1f} CPU-s", flush=True)
                # The table so far: a run cut short still tells what it measured.
                print(render(medians, cpu, args.trials), flush=True)
        finally:
            os.killpg(server.pid, 15)
            server.wait()


def render(medians: dict[str, list[float]], cpu: dict[str, list[float]], trials: int) -> str:
    """Wall time per trial (best run) and CPU time of the whole worker run (least)."""
    best = {mode: min(values) for mode, values in medians.items() if values}
    if len(best) < len(MODES):
        return "(not every mode measured yet)"
    least = {mode: min(values) for mode, values in cpu.items()}
    lines = [
        "| tracking | median trial s (best run) | all runs | wall share | worker CPU-s "
        "(least) | all runs | CPU-s over off, per trial |",
        "|---|---|---|---|---|---|---|",
    ]
    for mode in MODES:
        share = "-" if mode == "off" else f"{(best[mode] - best['off']) / best[mode]:+.1%}"
        extra = "-" if mode == "off" else f"{(least[mode] - least['off']) / trials:+.1f}"
        every = ", ".join(f"{v:.2f}" for v in medians[mode])
        every_cpu = ", ".join(f"{v:.1f}" for v in cpu[mode])
        lines.append(
            f"| {mode} | {best[mode]:.2f} | {every} | {share} | {least[mode]:.1f} "
            f"| {every_cpu} | {extra} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
