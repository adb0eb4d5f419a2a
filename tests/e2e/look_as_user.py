"""Look at a finished study as a user would: the Optuna dashboard and the MLflow UI.

Runs ``hpo demo`` in a fresh folder, starts ``hpo dashboard`` (with auth on) and
``mlflow ui``, then drives headless Chromium through the dashboard's sign-in
form and the MLflow pages and saves screenshots.

Needs Debian's ``chromium`` and the ``playwright`` Python package (it drives
that browser; no browser download):

    apt-get install -y chromium && pip install playwright
    python -m tests.e2e.look_as_user --out /tmp/screenshots
"""

from __future__ import annotations

import argparse
import logging
import os
import secrets
import subprocess
import sys
import tempfile
from pathlib import Path

from mlflow.tracking import MlflowClient
from playwright.sync_api import Page, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.procs import free_port, stop_group, wait_http

logger = logging.getLogger("look_as_user")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def hpo(args: list[str], env: dict[str, str], cwd: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "service.cli.main", *args],
        env=env,
        cwd=cwd,
        stdout=log.open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def shoot(page: Page, url: str, path: Path, wait_for: str | None = None) -> None:
    page.goto(url)
    try:
        page.wait_for_load_state("networkidle", timeout=20_000)
    except PlaywrightTimeout:
        logger.info("%s keeps polling; taking the picture anyway", url)
    if wait_for:
        try:
            page.get_by_text(wait_for).first.wait_for(timeout=30_000)
        except PlaywrightTimeout:
            logger.warning("%r did not appear on %s", wait_for, url)
    page.wait_for_timeout(1500)
    page.screenshot(path=str(path), full_page=False)
    logger.info("saved %s", path)


def look(out: Path, work: Path, trials: int) -> None:
    token = secrets.token_hex(16)
    env = dict(
        os.environ,
        HPO_ADMIN_TOKEN=token,
        HPO_API_TOKEN=token,
        PYTHONPATH=str(Path(__file__).resolve().parents[2]),
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "service.cli.main",
            "demo",
            "--trials",
            str(trials),
            "--port",
            str(free_port()),
        ],
        env=env,
        cwd=work,
        check=True,
    )
    tracking = f"sqlite:///{work / '.hpo' / 'mlflow.db'}"
    client = MlflowClient(tracking)
    experiment = next(e for e in client.search_experiments() if e.name.startswith("demo-"))
    runs = client.search_runs([experiment.experiment_id], order_by=["attributes.start_time"])
    trial_run = next(
        r
        for r in runs
        if r.data.tags.get("hpo.kind") == "trial" and r.data.tags.get("hpo.state") == "COMPLETE"
    )
    dash_port, mlflow_port = free_port(), free_port()
    dashboard = hpo(["dashboard", "--port", str(dash_port)], env, work, work / "dashboard.log")
    mlflow_env = dict(env, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    mlflow_ui = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "ui",
            "--backend-store-uri",
            tracking,
            "--port",
            str(mlflow_port),
            "--workers",
            "1",
        ],
        env=mlflow_env,
        cwd=work,
        stdout=(work / "mlflow.log").open("ab"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        wait_http(f"http://127.0.0.1:{dash_port}/login", proc=dashboard)
        wait_http(f"http://127.0.0.1:{mlflow_port}/health", timeout=120, proc=mlflow_ui)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            page = browser.new_page(viewport={"width": 1440, "height": 900})
            dash = f"http://127.0.0.1:{dash_port}"
            shoot(page, f"{dash}/dashboard", out / "1-dashboard-login.png")
            page.fill("input[name=token]", token)
            with page.expect_navigation():
                page.click("button[type=submit]")
            shoot(page, f"{dash}/dashboard", out / "2-dashboard-studies.png", experiment.name)
            shoot(page, f"{dash}/dashboard/studies/1", out / "3-dashboard-study.png")
            shoot(page, f"{dash}/dashboard/studies/1/analytics", out / "4-dashboard-analytics.png")
            ui = f"http://127.0.0.1:{mlflow_port}"
            page.goto(ui)
            page.get_by_text("Model training").first.click()  # MLflow 3 opens in GenAI mode
            shoot(
                page,
                f"{ui}/#/experiments/{experiment.experiment_id}/runs",
                out / "5-mlflow-experiment.png",
                "trial-",
            )
            shoot(
                page,
                f"{ui}/#/experiments/{experiment.experiment_id}/runs/"
                f"{trial_run.info.run_id}/model-metrics",
                out / "6-mlflow-trial-curves.png",
            )
            shoot(
                page,
                f"{ui}/#/models/{experiment.name}",
                out / "7-mlflow-registered-model.png",
                "best",
            )
            browser.close()
    finally:
        stop_group(dashboard)
        stop_group(mlflow_ui)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--out", type=Path, default=Path("screenshots"))
    parser.add_argument("--trials", type=int, default=6)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="hpo-look-") as work:
        look(args.out.resolve(), Path(work), args.trials)


if __name__ == "__main__":
    main()
