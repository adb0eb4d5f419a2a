"""The CLI against a real ``hpo serve`` and ``hpo worker``: every read in table, json, yaml, csv."""

from __future__ import annotations

import csv
import io
import json
import queue
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.conftest import PostgresServer
from tests.deployment import Deployment, deployment, quadratic_spec
from tests.procs import HPO, REPO

NAME = "cli-first"


@pytest.fixture(scope="module")
def site(
    pg_server: PostgresServer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Deployment]:
    # No worker at first: the first test shows what a user sees before one starts.
    with deployment(pg_server, tmp_path_factory.mktemp("cli"), worker=False) as running:
        yield running


def _write_spec(path: Path, **spec: object) -> Path:
    path.write_text(yaml.safe_dump(spec))
    return path


def _lines(proc: subprocess.Popen[str]) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _until(lines: queue.Queue[str], text: str, seen: list[str], timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            line = lines.get(timeout=1)
        except queue.Empty:
            continue
        seen.append(line)
        if text in line:
            return
    raise AssertionError(f"{text!r} did not appear:\n{''.join(seen)}")


def test_submit_wait_warns_until_a_worker_serves_the_study(
    site: Deployment, tmp_path: Path
) -> None:
    spec = quadratic_spec(NAME, n_trials=4)
    spec["task"]["config"]["sleep_s"] = 0.3  # a second per trial: progress in between
    path = _write_spec(tmp_path / "spec.yaml", **spec)
    proc = subprocess.Popen(
        [*HPO, "submit", str(path), "--wait", "--interval", "0.3"],
        env=site.env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen: list[str] = []
    try:
        lines = _lines(proc)
        _until(lines, "warning: no live worker", seen)
        site.start_worker()
        assert proc.wait(timeout=120) == 0
    finally:
        proc.kill()
    while not lines.empty():
        seen.append(lines.get())
    out = "".join(seen)
    assert f"created study {NAME}" in out and "`hpo worker" in out
    assert f"{NAME}: completed  4/4 finished" in out
    assert "elapsed" in out and "ETA" in out  # once a trial finished, the rest is estimated


def test_reads_in_every_format(site: Deployment) -> None:
    listed = json.loads(site.hpo("ls", "-o", "json").stdout)
    assert listed["total"] >= 1 and listed["items"][0]["name"] == NAME
    rows = list(csv.DictReader(io.StringIO(site.hpo("ls", "-o", "csv").stdout)))
    assert rows[0]["name"] == NAME and rows[0]["budget.finished"] == "4"

    shown = yaml.safe_load(site.hpo("show", NAME, "-o", "yaml").stdout)
    assert shown["status"] == "completed" and shown["counts"]["COMPLETE"] == 4
    row = next(csv.DictReader(io.StringIO(site.hpo("show", NAME, "-o", "csv").stdout)))
    assert row["counts.COMPLETE"] == "4" and row["status"] == "completed"

    best = json.loads(site.hpo("best", NAME, "-o", "json").stdout)
    trials = json.loads(site.hpo("trials", NAME, "-o", "json").stdout)
    assert trials["total"] == 4 and [t["number"] for t in trials["items"]] == [0, 1, 2, 3]
    assert best["value"] == min(t["value"] for t in trials["items"])
    table = list(csv.DictReader(io.StringIO(site.hpo("trials", NAME, "-o", "csv").stdout)))
    assert {"number", "state", "value", "params_x", "steps"} <= set(table[0])
    assert float(min(r["value"] for r in table)) == pytest.approx(best["value"])
    assert site.hpo("trials", NAME, "--state", "FAIL", "-o", "json").stdout.count('"number"') == 0
    bad = site.hpo("trials", NAME, "--state", "DONE")
    assert bad.returncode == 1 and "use one of RUNNING" in bad.stderr

    detail = site.hpo("trial", NAME, str(best["number"]))
    assert detail.returncode == 0, detail.stderr
    assert "3 reports" in detail.stdout and "params" in detail.stdout
    assert "mlflow" not in detail.stdout  # tracking is off: no run, no link


def test_workers_and_tasks(site: Deployment) -> None:
    workers = json.loads(site.hpo("workers", "-o", "json").stdout)
    assert workers["total"] >= 1 and workers["items"][0]["device"] == "cpu"
    assert "live workers" in site.hpo("workers").stdout
    tasks = site.hpo("tasks")
    assert "mlp-classifier" in tasks.stdout and "masked-lm" in tasks.stdout
    one = json.loads(site.hpo("tasks", "mlp-classifier", "-o", "json").stdout)
    assert one["config_schema"]["properties"] and one["default_search_space"]
    shown = site.hpo("tasks", "mlp-classifier").stdout
    assert "search_space" in shown and "max_epochs" in shown
    missing = site.hpo("tasks", "nope")
    assert missing.returncode == 1 and "no built-in task 'nope'" in missing.stderr


def test_enqueue_pause_resume_are_gentle(site: Deployment, tmp_path: Path) -> None:
    name = "cli-gentle"
    # Many trials: it is still running when the commands below reach it.
    site.hpo("submit", str(_write_spec(tmp_path / "s.yaml", **quadratic_spec(name, n_trials=500))))
    assert "paused" in site.hpo("pause", name).stdout
    again = site.hpo("pause", name)
    assert again.returncode == 0 and "already paused; nothing to do" in again.stderr
    queued = site.hpo("enqueue", name, "--param", "x=2")
    assert queued.returncode == 0 and "x=2" in queued.stdout
    waiting = json.loads(site.hpo("trials", name, "--state", "WAITING", "-o", "json").stdout)
    assert [t["params"] for t in waiting["items"]] == [{"x": 2}]
    unknown = site.hpo("enqueue", name, "--param", "y=1")
    assert unknown.returncode == 1 and "params.y" in unknown.stderr
    malformed = site.hpo("enqueue", name, "--param", "x")
    assert malformed.returncode == 1 and "name=value" in malformed.stderr
    assert site.hpo("resume", name).returncode == 0
    resumed = site.hpo("resume", name)
    assert resumed.returncode == 0 and "nothing to do" in resumed.stderr
    assert "cancelled" in site.hpo("cancel", name).stdout
    assert site.hpo("watch", name).returncode == 0


def test_delete_asks_first(site: Deployment, tmp_path: Path) -> None:
    name = "cli-delete"
    site.hpo("submit", str(_write_spec(tmp_path / "d.yaml", **quadratic_spec(name, n_trials=1))))
    site.hpo("cancel", name)
    refused = subprocess.run(
        [*HPO, "delete", name],
        env=site.env,
        cwd=REPO,
        input="n\n",
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 1 and "not deleted" in refused.stderr
    assert "delete study cli-delete" in refused.stderr
    assert site.hpo("show", name).returncode == 0
    site.hpo("watch", name)  # until its trial, if one started, has stopped
    deleted = site.hpo("delete", name, "--yes")
    assert deleted.returncode == 0 and f"deleted {name}" in deleted.stdout
    assert site.hpo("show", name).returncode == 1


def test_tokens_listed_and_revoked(site: Deployment) -> None:
    made = site.hpo("token", "create", "--name", "ci", "--scope", "read")
    assert made.returncode == 0, made.stderr
    token = made.stdout.strip()
    listed = json.loads(site.hpo("token", "list", "-o", "json").stdout)["items"]
    mine = next(t for t in listed if t["name"] == "ci")
    assert mine["revoked_at"] is None and token.startswith(mine["prefix"])
    assert "token" not in mine  # never the secret
    assert site.hpo("token", "revoke", str(mine["id"])).returncode == 0
    listed = json.loads(site.hpo("token", "list", "-o", "json").stdout)["items"]
    assert next(t for t in listed if t["id"] == mine["id"])["revoked_at"] is not None
    refused = subprocess.run(
        [*HPO, "ls"],
        env={**site.env, "HPO_API_TOKEN": token},
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert refused.returncode == 1 and "HTTP 401" in refused.stderr


def test_export_then_import(site: Deployment, tmp_path: Path) -> None:
    exported = site.hpo("export", NAME)
    assert exported.returncode == 0, exported.stderr
    document = json.loads(exported.stdout)
    assert len(document["trials"]) == 4
    assert all(t["intermediate_values"] and t["params"] for t in document["trials"])
    path = tmp_path / "study.json"
    path.write_text(exported.stdout)
    taken = site.hpo("import", str(path))
    assert taken.returncode == 1 and "already exists" in taken.stderr
    imported = site.hpo("import", str(path), "--name", "cli-moved")
    assert imported.returncode == 0, imported.stderr
    assert "with 4 trials (4/4 finished, completed)" in imported.stdout
    # The service's own markers (seeds, leases) of the old deployment stay behind.
    assert "note: trials.0.user_attrs.hpo." in imported.stderr
    moved = json.loads(site.hpo("trials", "cli-moved", "-o", "json").stdout)["items"]
    assert [t["params"] for t in moved] == [t["params"] for t in document["trials"]]
    broken = tmp_path / "broken.json"
    broken.write_text('{"spec": {"name": "x",\n  "task": }\n')
    bad = site.hpo("import", str(broken))
    assert (
        bad.returncode == 1 and "broken.json:2:" in bad.stderr and "Expecting value" in bad.stderr
    )


def test_version_and_mistyped_variables(site: Deployment) -> None:
    version = site.hpo("--version")
    assert version.returncode == 0 and version.stdout.startswith("hpo ")
    typo = subprocess.run(
        [*HPO, "ls"],
        env={**site.env, "HPO_API_TOKNE": "x"},
        cwd=REPO,
        capture_output=True,
        text=True,
        check=False,
    )
    assert typo.returncode == 0
    assert (
        "HPO_API_TOKNE is not a setting" in typo.stderr
        and "did you mean HPO_API_TOKEN" in typo.stderr
    )
