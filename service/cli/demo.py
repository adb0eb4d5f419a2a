"""``hpo demo``: the whole system on one machine with the embedded defaults.

Migrates, starts the API and one worker, submits a small BERT study on the
builtin sentiment set with Hyperband pruning, shows progress, prints the best
trial and where to look, then stops what it started.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from service.cli.client import ApiClient, ClientError
from storage.settings import Settings

console = Console()
DASHBOARD_PORT = 8080
MLFLOW_UI_PORT = 5000


DEFAULT_TRAIN_SIZE = 3000


def demo_spec(name: str, trials: int, train_size: int = DEFAULT_TRAIN_SIZE) -> dict[str, Any]:
    """A study that shows the product in a few minutes on two CPU cores.

    ``train_size`` training examples of the builtin sentiment set (a fifth as
    many, at least 100, for validation); Hyperband's first rung is one epoch.
    """
    return {
        "name": name,
        "task": {
            "name": "text-classification",
            "config": {
                "dataset": {
                    "source": "builtin",
                    "name": "sentiment",
                    "n_train": train_size,
                    "n_validation": max(100, train_size // 5),
                },
                "model": {"source": "scratch", "vocab_size": 2000},
                "max_epochs": 3,
                "eval_every_steps": 25,
                "max_seq_len": 64,
                # batch_size is searched: compare trials after the same data.
                "report_step": "examples",
            },
        },
        "objective": {"metric": "val_accuracy", "direction": "maximize"},
        "search_space": {
            "learning_rate": {"type": "float", "low": 2e-4, "high": 3e-3, "log": True},
            "num_layers": {"type": "int", "low": 1, "high": 2},
            "hidden_size": {"type": "categorical", "choices": [64, 128]},
            "hidden_dropout": {"type": "float", "low": 0.0, "high": 0.2},
            "batch_size": {"type": "categorical", "choices": [16, 32]},
        },
        "sampler": {"name": "tpe", "seed": 42, "options": {"n_startup_trials": 4}},
        # Resources are training examples: the first rung is after one epoch.
        "pruner": {
            "name": "hyperband",
            "options": {"min_resource": train_size, "reduction_factor": 3},
        },
        "budget": {"n_trials": trials, "max_concurrent_trials": 1, "max_retries": 1},
    }


def _port_free(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) != 0


def _free_port(preferred: int) -> int:
    if _port_free(preferred):
        return preferred
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    out = log.open("ab")
    return subprocess.Popen(
        [sys.executable, "-m", "service.cli.main", *args],
        env=env,
        stdout=out,
        stderr=subprocess.STDOUT,
    )


def _stop(proc: subprocess.Popen[bytes], timeout: float = 90) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _wait_ready(client: ApiClient, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ClientError(f"the API exited with {proc.returncode}; see {log}")
        try:
            client.get("/readyz")
            return
        except ClientError:
            time.sleep(0.5)
    raise ClientError(f"the API did not become ready; see {log}")


def _wait_for_worker(client: ApiClient, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Until the worker has registered (it loads torch first), so progress starts at once."""
    console.print(f"starting a worker (it loads torch first); its log: {log}", highlight=False)
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and proc.poll() is None:
        if client.get("/workers")["items"]:
            return
        time.sleep(0.5)
    if proc.poll() is not None and proc.returncode != 0:
        raise ClientError(f"the worker exited with {proc.returncode}; see {log}")


def _environment(settings: Settings, port: int) -> dict[str, str]:
    # No dashboard or MLflow UI links unless they run (--ui) or the user set them.
    env = dict(os.environ)
    env["HPO_DATA_DIR"] = str(settings.data_dir)
    env["HPO_API_URL"] = f"http://127.0.0.1:{port}"
    if settings.admin_token:
        env["HPO_API_TOKEN"] = settings.admin_token
    return env


def mlflow_store_uri(settings: Settings) -> str:
    """The tracking URI with an absolute path, so that it works from any folder."""
    uri = settings.mlflow_tracking_uri
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix) :].startswith("/"):
        return prefix + str(Path(uri[len(prefix) :]).resolve())
    return uri


def _start_uis(settings: Settings, env: dict[str, str], logs: Path, stack: ExitStack) -> None:
    """``--ui``: the Optuna dashboard and the MLflow UI on the demo's data, links in the API."""
    dashboard_port = _free_port(DASHBOARD_PORT)
    dashboard = _start(["dashboard", "--port", str(dashboard_port)], env, logs / "demo-ui.log")
    stack.callback(_stop, dashboard)
    mlflow_port = _free_port(MLFLOW_UI_PORT)
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri"]
    command += [mlflow_store_uri(settings), "--port", str(mlflow_port), "--workers", "1"]
    mlflow_env = dict(env, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    with (logs / "demo-ui.log").open("ab") as out:
        mlflow = subprocess.Popen(command, env=mlflow_env, stdout=out, stderr=subprocess.STDOUT)
    stack.callback(_stop, mlflow)
    env["HPO_DASHBOARD_URL"] = f"http://127.0.0.1:{dashboard_port}"
    env["HPO_MLFLOW_UI_URL"] = f"http://127.0.0.1:{mlflow_port}"
    console.print(
        f"Optuna dashboard on {env['HPO_DASHBOARD_URL']}, MLflow UI on "
        f"{env['HPO_MLFLOW_UI_URL']} (log: {logs / 'demo-ui.log'})",
        highlight=False,
    )


def run_demo(
    settings: Settings,
    trials: int,
    port: int,
    upgrade: Any,
    ui: bool = False,
    *,
    train_size: int = DEFAULT_TRAIN_SIZE,
) -> int:
    """Run the demo; return the process exit code."""
    # SIGTERM unwinds like Ctrl-C, so that what the demo started is stopped too.
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    settings.ensure_data_dir()
    logs = settings.data_dir / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    console.print(f"[bold]hpo demo[/]: data in {settings.data_dir.resolve()}")
    console.print("migrating the embedded databases ...")
    upgrade(settings)
    port = _free_port(port)
    env = _environment(settings, port)
    name = "demo-sentiment-" + datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    with ExitStack() as stack:
        if ui:
            _start_uis(settings, env, logs, stack)
        api = _start(["serve", "--port", str(port), "--no-migrate"], env, logs / "demo-api.log")
        stack.callback(_stop, api)
        client = ApiClient(env["HPO_API_URL"], env.get("HPO_API_TOKEN"))
        _wait_ready(client, api, logs / "demo-api.log")
        console.print(f"API on {env['HPO_API_URL']} (docs: {env['HPO_API_URL']}/docs)")
        # The study first: a worker that exits when idle must find it.
        client.post("/studies", demo_spec(name, trials, train_size))
        console.print(f"submitted study [bold]{name}[/] ({trials} trials)")
        worker = _start(
            ["worker", "--devices", "auto", "--study", name, "--exit-when-idle"],
            env,
            logs / "demo-worker.log",
        )
        stack.callback(_stop, worker)
        _wait_for_worker(client, worker, logs / "demo-worker.log")
        from service.cli.studies import watch_study

        study = watch_study(client, name, interval=1.0)
        worker.wait(timeout=max(30.0, settings.mlflow_flush_timeout_s + 30))
        study = client.get(f"/studies/{name}")
        _report(settings, study, ui)
        if ui:
            _keep_uis_open()
    return 0 if study["status"] == "completed" else 1


def _keep_uis_open() -> None:
    console.print("\nthe dashboard and the MLflow UI keep running: press Ctrl-C to stop them")

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    # Also when started without a terminal (SIGINT ignored) or stopped with SIGTERM.
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        console.print("stopping the dashboard and the MLflow UI")


def _report(settings: Settings, study: dict[str, Any], ui: bool) -> None:
    name = study["name"]
    counts = "  ".join(f"{state} {n}" for state, n in study["counts"].items() if n)
    console.print(f"\nstudy {name}: [bold]{study['status']}[/]  ({counts})")
    best = study.get("best")
    if best:
        console.print(f"best trial #{best['number']}: val_accuracy {best['value']:.4f}")
        console.print(f"  params: {best['params']}", highlight=False)
    links = {k: v for k, v in (study.get("links") or {}).items() if v}
    console.print("\nwhere to look:")
    console.print(
        f"  MLflow experiment '{name}': runs, learning curves, the registered model "
        f"'{name}' with alias 'best' (models:/{name}@best)",
        highlight=False,
    )
    if "mlflow" in links and ui:
        console.print(f"    open {links['mlflow']}", highlight=False)
    else:
        console.print(
            f"    mlflow ui --backend-store-uri {mlflow_store_uri(settings)} "
            f"--port {MLFLOW_UI_PORT}   then open "
            f"{links.get('mlflow') or _mlflow_runs_url(settings, name)}",
            highlight=False,
        )
    console.print("  Optuna dashboard (trials, learning curves, importances):")
    if "dashboard" in links and ui:
        console.print(f"    open {links['dashboard']}", highlight=False)
    else:
        console.print(
            f"    HPO_DATA_DIR={settings.data_dir} hpo dashboard --port {DASHBOARD_PORT}   "
            f"then open {links.get('dashboard') or f'http://127.0.0.1:{DASHBOARD_PORT}/dashboard'}",
            highlight=False,
        )
    if not ui:
        console.print("  or run the demo with --ui to have both started on its data")
    console.print(
        f"  the API again: hpo serve, then hpo show {name} (or hpo.Client().study({name!r}))",
        highlight=False,
    )


def _mlflow_runs_url(settings: Settings, name: str) -> str:
    """The runs view of the study's experiment on a local MLflow UI (its id from the store)."""
    base = f"http://127.0.0.1:{MLFLOW_UI_PORT}"
    try:
        from mlflow.tracking import MlflowClient

        experiment = MlflowClient(mlflow_store_uri(settings)).get_experiment_by_name(name)
    except Exception:  # the store is the MLflow library's business; the link is a nicety
        return base
    return f"{base}/#/experiments/{experiment.experiment_id}/runs" if experiment else base


def register(app: typer.Typer, load_settings: Any, upgrade: Any) -> None:
    @app.command()
    def demo(
        trials: Annotated[int, typer.Option(min=1, max=200, help="trials in the study")] = 12,
        port: Annotated[int, typer.Option(help="API port (another is used if taken)")] = 8000,
        ui: Annotated[
            bool,
            typer.Option(
                help="also start the Optuna dashboard and the MLflow UI on the demo's data"
            ),
        ] = False,
        train_size: Annotated[
            int,
            typer.Option(
                min=200,
                max=20000,
                help="training examples of the builtin sentiment set (fewer: quicker, rougher)",
            ),
        ] = DEFAULT_TRAIN_SIZE,
    ) -> None:
        """Run the whole system on this machine: API, one worker, a BERT study, MLflow."""
        raise typer.Exit(
            run_demo(load_settings(), trials, port, upgrade, ui, train_size=train_size)
        )
