"""Multi-fidelity at scale: search settings of the service on the MF Hartmann functions.

Every setting runs through the real service: ``hpo serve`` (studies created
over REST), one ``hpo worker`` process with ``--slots`` CPU slots, Postgres.
The objective is ``python:benchmarks.hartmann_task:objective``: a trial walks
the fidelity 1..100 like epochs, counting one training example per epoch, so
``budget.max_train_examples`` is the same budget in fidelity epochs for every
setting (``--budget 3000``: thirty full-fidelity evaluations). The search space
is the function's unit cube; the study minimises ``value``.

Settings (``SETTINGS``, a table: one the service refuses with 422 is skipped
and said so): random search, TPE, TPE with Optuna's ``HyperbandPruner()`` at
its defaults, TPE with the service's ``resumable-sha`` and TPE with the
recommended ``auto`` pruner. Outside references on the same functions and
budget, each from its own virtualenv: Syne Tune's ASHA and BOHB
(``benchmarks/synetune_reference.py``, ``--synetune-python``, Syne Tune's
simulator) and DEHB (``benchmarks/dehb_reference.py``, ``--dehb-python``).

    python -m benchmarks.multi_fidelity --seeds 3 \\
        --functions hartmann3-good hartmann3-bad hartmann6-good hartmann6-bad

Prints the Markdown table for RESULTS.md and writes a PNG per function and the
raw trajectories (``--out``, default ``benchmarks/figures``).

The outside references live in virtualenvs of their own at the top of the
checkout (never in the product's; a missing one is skipped with a warning):

    python3 -m venv .venv-synetune && .venv-synetune/bin/pip install "syne-tune==0.16.0"
    python3 -m venv .venv-dehb && .venv-dehb/bin/pip install "dehb==0.1.2"
    python3 -m venv .venv-mfpb && .venv-mfpb/bin/pip install "torch==2.13.0" \\
        && .venv-mfpb/bin/pip install "mf-prior-bench==1.10.0"

(the last only for ``python -m benchmarks.hartmann_check``, which compares the
functions here with mf-prior-bench's).
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from benchmarks.hartmann import get_function
from benchmarks.mf_report import Runs, markdown, plot
from benchmarks.mf_service import REPO, Service, SettingRefused, run_study, running_service
from benchmarks.mf_service import trajectory as study_trajectory
from benchmarks.pg import add_server_argument

TASK = "python:benchmarks.hartmann_task:objective"
SCRATCH = Path(tempfile.gettempdir()) / "hpo-multi-fidelity"
# name -> (sampler, pruner). resumable-sha: rungs at 4, 12 and 36 epochs of
# 100 (reduction factor 3), the top rung below the full fidelity.
SETTINGS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "random": ({"name": "random"}, {"name": "none"}),
    "tpe": ({"name": "tpe"}, {"name": "none"}),
    "tpe+hyperband": ({"name": "tpe"}, {"name": "hyperband"}),
    "tpe+resumable-sha": (
        {"name": "tpe"},
        {"name": "resumable-sha", "options": {"min_resource": 4, "reduction_factor": 3}},
    ),
    "tpe+auto": ({"name": "tpe"}, {"name": "auto"}),
}
logger = logging.getLogger(__name__)


def study_body(function: str, setting: str, seed: int, budget: int, slots: int) -> dict[str, Any]:
    sampler, pruner = SETTINGS[setting]
    dims = get_function(function).dims
    return {
        "name": f"{function}-{setting.replace('+', '-')}-{seed}",
        "task": {"name": TASK, "config": {"function": function}},
        "objective": {"metric": "value", "direction": "minimize"},
        "search_space": {f"x{i}": {"type": "float", "low": 0.0, "high": 1.0} for i in range(dims)},
        "sampler": {**sampler, "seed": seed},
        "pruner": pruner,
        "budget": {"max_train_examples": budget, "max_concurrent_trials": slots},
    }


# Outside references: (module, the option naming its interpreter, prefix of its names).
REFERENCES = (
    ("benchmarks.synetune_reference", "synetune_python", "syne-tune "),
    ("benchmarks.dehb_reference", "dehb_python", ""),
)


def run_references(args: argparse.Namespace, out: dict[str, Any]) -> None:
    """The outside references per function, one after another (a background thread).

    Each runs in its own virtualenv; a missing one is skipped with a warning.
    """
    for module, option, prefix in REFERENCES:
        python = Path(getattr(args, option))
        if not python.exists():
            logger.warning("no %s: %s is skipped", python, module)
            continue
        for function in args.functions:
            target = SCRATCH / f"{module.rsplit('.', 1)[1]}-{function}.json"
            command = [str(python), "-m", module, "--function", function]
            command += ["--budget", str(args.budget), "--out", str(target), "--seeds"]
            command += [str(s) for s in seeds_of(args)]
            with (SCRATCH / "references.log").open("ab") as log:
                done = subprocess.run(
                    command, check=False, cwd=REPO, stdout=log, stderr=subprocess.STDOUT
                )
            if done.returncode != 0:
                logger.warning("%s on %s failed (see references.log)", module, function)
                continue
            for method, runs in json.loads(target.read_text()).items():
                out.setdefault(function, {})[f"{prefix}{method}"] = runs


def run_settings(service: Service, args: argparse.Namespace, runs: Runs) -> list[str]:
    """Every (function, seed, setting) through the service; returns the skip notes."""
    skipped: list[str] = []
    for seed in seeds_of(args):
        for function in args.functions:
            for setting in SETTINGS:
                if any(note.startswith(f"{setting}:") for note in skipped):
                    continue
                if str(seed) in runs.get(function, {}).get(setting, {}):
                    continue  # --resume: done in an earlier run
                body = study_body(function, setting, seed, args.budget, args.slots)
                started = time.monotonic()
                try:
                    trials = run_study(service, body)
                except SettingRefused as refused:
                    skipped.append(f"{setting}: refused by the service (422): {refused}")
                    print(f"skipped {setting}: the service refused it (422)", file=sys.stderr)
                    continue
                points = study_trajectory(trials)
                runs.setdefault(function, {}).setdefault(setting, {})[str(seed)] = points
                print(
                    f"{body['name']}: {len(trials)} trials, best {points[-1][1]:.4f} "
                    f"({time.monotonic() - started:.0f}s)",
                    file=sys.stderr,
                    flush=True,
                )
                save(args.out / "multi_fidelity.json", runs, args)
    return skipped


def seeds_of(args: argparse.Namespace) -> list[int]:
    return list(range(1, args.seeds + 1))


def save(path: Path, runs: Runs, args: argparse.Namespace) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"budget": args.budget, "runs": runs}))


def with_saved_references(runs: Runs) -> Runs:
    """``runs`` plus the reference runs left in the scratch folder, on the same seeds.

    For a run that was stopped before its end: the references ran beside it.
    """
    for function, settings in runs.items():
        seeds = set(settings.get("random", {}))
        for module, _, prefix in REFERENCES:
            path = SCRATCH / f"{module.rsplit('.', 1)[1]}-{function}.json"
            if not path.exists():
                continue
            for method, by_seed in json.loads(path.read_text()).items():
                kept = {seed: points for seed, points in by_seed.items() if seed in seeds}
                settings.setdefault(f"{prefix}{method}", kept)
    return runs


def report(runs: Runs, budget: float, out: Path) -> None:
    """Print the table; a plot per function under ``out``."""
    names = list(SETTINGS)
    for function, settings in runs.items():
        # The service's settings in the table's order, then the references (a stable sort).
        ranked = sorted(settings, key=lambda n: names.index(n) if n in names else len(names))
        runs[function] = {name: settings[name] for name in ranked}
    for function, settings in runs.items():
        plot(function, settings, budget, out / f"multi_fidelity_{function}.png")
    print(markdown(runs, budget))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_server_argument(parser)
    parser.add_argument("--functions", nargs="+", default=["hartmann3-good", "hartmann6-bad"])
    parser.add_argument("--seeds", type=int, default=3, help="seeds 1..N")
    parser.add_argument("--budget", type=int, default=3000, help="fidelity epochs per study")
    parser.add_argument("--slots", type=int, default=4, help="worker slots")
    parser.add_argument("--out", type=Path, default=REPO / "benchmarks" / "figures")
    parser.add_argument(
        "--synetune-python", default=str(REPO / ".venv-synetune" / "bin" / "python")
    )
    parser.add_argument("--dehb-python", default=str(REPO / ".venv-dehb" / "bin" / "python"))
    parser.add_argument(
        "--report-only", action="store_true", help="redo the table and plots from --out's JSON"
    )
    parser.add_argument(
        "--resume", action="store_true", help="keep --out's JSON and run only what it lacks"
    )
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per poll otherwise
    if args.report_only:
        saved = json.loads((args.out / "multi_fidelity.json").read_text())
        report(with_saved_references(saved["runs"]), saved["budget"], args.out)
        return
    for function in args.functions:
        get_function(function)  # unknown names fail before anything runs
    SCRATCH.mkdir(parents=True, exist_ok=True)
    references: dict[str, Any] = {}
    thread = threading.Thread(target=run_references, args=(args, references))
    thread.start()
    runs: Runs = {}
    saved_path = args.out / "multi_fidelity.json"
    if args.resume and saved_path.exists():
        saved = json.loads(saved_path.read_text())
        if saved["budget"] != args.budget:
            raise SystemExit(f"{saved_path} has budget {saved['budget']}, not {args.budget}")
        runs = saved["runs"]
    with running_service(args.server, args.slots, SCRATCH) as service:
        skipped = run_settings(service, args, runs)
    thread.join()
    for function, methods in references.items():
        runs.setdefault(function, {}).update(methods)
    save(args.out / "multi_fidelity.json", runs, args)
    report(runs, args.budget, args.out)
    for note in skipped:
        print(f"\nskipped {note}")


if __name__ == "__main__":
    main()
