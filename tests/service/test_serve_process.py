"""A real ``hpo serve`` process on Postgres, driven over HTTP and through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.procs import background, free_port, hpo_env, run_hpo, wait_http

ADMIN = "serve-admin-token"


def test_serve_process_and_cli(tmp_path: Path, pg_urls: tuple[str, str]) -> None:
    port = free_port()
    # Plain postgresql:// URLs (as users write them) are normalised to psycopg2.
    service_url, optuna_url = (
        u.replace("postgresql+psycopg2://", "postgresql://") for u in pg_urls
    )
    env = hpo_env(
        {
            "HPO_DATA_DIR": str(tmp_path / "data"),
            "HPO_DATABASE_URL": service_url,
            "HPO_OPTUNA_STORAGE": optuna_url,
            "HPO_ADMIN_TOKEN": ADMIN,
            "HPO_API_URL": f"http://127.0.0.1:{port}",
        }
    )
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "name: cli-study\ntask: {name: mlp-classifier}\nbudget: {n_trials: 3, max_compute_s: 600}\n"
    )
    with background(["serve", "--port", str(port)], env, tmp_path / "serve.log") as proc:
        wait_http(f"http://127.0.0.1:{port}/api/v1/healthz", proc=proc)
        anonymous = httpx.get(f"http://127.0.0.1:{port}/api/v1/studies")
        assert anonymous.status_code == 401

        denied = run_hpo(["ls"], env)
        assert denied.returncode == 1 and "HTTP 401" in denied.stderr

        made = run_hpo(["token", "create", "--name", "cli", "--scope", "write"], env)
        assert made.returncode == 0, made.stderr
        env["HPO_API_TOKEN"] = made.stdout.strip()

        submitted = run_hpo(["submit", str(spec)], env)
        assert submitted.returncode == 0, submitted.stderr
        assert "cli-study" in run_hpo(["ls"], env).stdout
        shown = run_hpo(["show", "cli-study"], env)
        assert shown.returncode == 0 and "0/3 finished" in shown.stdout
        assert "0 device-s of 600, 0 examples" in shown.stdout
        assert "paused" in run_hpo(["pause", "cli-study"], env).stdout
        again = run_hpo(["pause", "cli-study"], env)
        assert again.returncode == 0 and "already paused; nothing to do" in again.stderr
        assert "queued" in run_hpo(["resume", "cli-study"], env).stdout
        no_best = run_hpo(["best", "cli-study"], env)
        assert no_best.returncode == 1 and "has completed yet" in no_best.stderr

        duplicate = run_hpo(["submit", str(spec)], env)
        assert duplicate.returncode == 1 and "already exists" in duplicate.stderr
        bad = tmp_path / "bad.json"
        bad.write_text(
            json.dumps(
                {"name": "Bad", "task": {"name": "mlp-classifier"}, "budget": {"n_trials": 0}}
            )
        )
        rejected = run_hpo(["submit", str(bad)], env)
        assert rejected.returncode == 1
        assert "name:" in rejected.stderr and "budget.n_trials:" in rejected.stderr
        assert "[a-z0-9]" in rejected.stderr  # the pattern is shown, not eaten as markup

        assert "cancelled" in run_hpo(["cancel", "cli-study"], env).stdout
        watched = run_hpo(["watch", "cli-study"], env)
        # Not a terminal: plain progress lines instead of a live view.
        assert watched.returncode == 0 and "cli-study: cancelled  0/3 finished" in watched.stdout

        openapi = httpx.get(f"http://127.0.0.1:{port}/openapi.json").json()
        assert "/api/v1/studies/{name}/trials/{number}" in openapi["paths"]
    assert proc.returncode in (0, -15)


def test_cli_messages_for_unreachable_server_and_bad_files(tmp_path: Path) -> None:
    env = hpo_env({"HPO_API_URL": f"http://127.0.0.1:{free_port()}", "HPO_DATA_DIR": str(tmp_path)})
    down = run_hpo(["ls"], env)
    assert down.returncode == 1 and "cannot reach the API" in down.stderr
    missing = run_hpo(["submit", str(tmp_path / "nope.yaml")], env)
    assert missing.returncode == 1 and "cannot read" in missing.stderr
    broken = tmp_path / "broken.yaml"
    broken.write_text("name: [unclosed\n")
    assert "not valid YAML" in run_hpo(["submit", str(broken)], env).stderr
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    assert "must hold a mapping" in run_hpo(["submit", str(listing)], env).stderr


def test_serve_refuses_a_public_bind_without_auth(tmp_path: Path) -> None:
    env = hpo_env({"HPO_DATA_DIR": str(tmp_path)})
    result = run_hpo(["serve", "--host", "0.0.0.0", "--port", str(free_port())], env, timeout=60)
    assert result.returncode == 1
    assert "refusing to serve on 0.0.0.0 without authentication" in result.stderr


def test_cli_messages_for_databases_that_are_not_ready(tmp_path: Path) -> None:
    env = hpo_env({"HPO_DATA_DIR": str(tmp_path / "data")})
    worker = run_hpo(["worker", "--devices", "cpu", "--exit-when-idle"], env)
    assert worker.returncode == 1
    assert "run `hpo db upgrade`" in worker.stderr and "Traceback" not in worker.stderr
    serve = run_hpo(["serve", "--no-migrate", "--port", str(free_port())], env)
    assert serve.returncode == 1 and "run `hpo db upgrade`" in serve.stderr
    token = run_hpo(["token", "create", "--name", "x"], env)
    assert token.returncode == 1 and "run `hpo db upgrade`" in token.stderr
    down = hpo_env(
        {
            "HPO_DATA_DIR": str(tmp_path / "data"),
            "HPO_DATABASE_URL": f"postgresql://hpo:s3cret@127.0.0.1:{free_port()}/hpo",
        }
    )
    for args in (["db", "upgrade"], ["worker", "--devices", "cpu"]):
        result = run_hpo(args, down)
        assert result.returncode == 1 and "Traceback" not in result.stderr
        assert "HPO_DATABASE_URL: cannot" in result.stderr and "s3cret" not in result.stderr
