"""The deployment: both compose files and the Postgres override, checked through
``docker-compose config`` (which validates and interpolates without a container
engine), the Dockerfiles' promises, and the MLflow server command run for real.

Without ``docker-compose`` the compose tests are skipped, except under
``CI=true``, where tests/run.sh installs it and its absence is a failure.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from packaging.requirements import Requirement

from storage.settings import Settings
from tests.procs import REPO, free_port, stop_group, wait_http

MAIN = REPO / "docker-compose.yml"
WORKERS = REPO / "deploy" / "docker-compose.workers.yml"
EXPOSE = REPO / "deploy" / "docker-compose.expose-postgres.yml"
ENV_EXAMPLE = REPO / "deploy" / "env.example"

SECRETS = {"POSTGRES_PASSWORD": "pgsecret123", "HPO_ADMIN_TOKEN": "admintoken456"}
REMOTE = {
    "HPO_DATABASE_URL": "postgresql://hpo:pgsecret123@10.0.0.5:5432/hpo",
    "HPO_OPTUNA_STORAGE": "postgresql://hpo:pgsecret123@10.0.0.5:5432/optuna",
    "HPO_MLFLOW_TRACKING_URI": "http://10.0.0.5:5000",
}
HPO_SERVICES = {"migrate", "api", "dashboard", "worker"}


def reserves_every_gpu(service: dict[str, Any]) -> bool:
    devices = service["deploy"]["resources"]["reservations"]["devices"]
    if len(devices) != 1:
        return False
    device = devices[0]
    # Compose 2 may print ``count: all`` as -1.
    return (
        device["driver"] == "nvidia"
        and device["capabilities"] == ["gpu"]
        and str(device["count"]) in ("all", "-1")
    )


def example_values() -> dict[str, str]:
    """The shipped env.example's assignments (commented-out lines excluded)."""
    values = {}
    for line in ENV_EXAMPLE.read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            key, _, value = line.partition("=")
            values[key.strip()] = value.strip()
    return values


def configured(**overrides: str) -> dict[str, str]:
    """env.example with its secrets filled in, then ``overrides``."""
    return {**example_values(), **SECRETS, **overrides}


class Compose:
    """``docker-compose`` with a throwaway env file and nothing from our environment."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir

    def run(
        self, files: list[Path], values: dict[str, str], *args: str
    ) -> subprocess.CompletedProcess[str]:
        env_file = self.workdir / "compose.env"
        env_file.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
        command = [self.binary, "--env-file", str(env_file)]
        for path in files:
            command += ["-f", str(path)]
        # Only PATH: an HPO_* or POSTGRES_* variable of the caller would win over the env file.
        env = {"PATH": os.environ.get("PATH", ""), "HOME": str(self.workdir)}
        return subprocess.run(
            [*command, "config", *args],
            env=env,
            cwd=self.workdir,
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def config(self, files: list[Path], values: dict[str, str]) -> dict[str, Any]:
        """The interpolated, merged configuration; fails the test when compose rejects it."""
        result = self.run(files, values)
        assert result.returncode == 0, result.stderr
        loaded: dict[str, Any] = yaml.safe_load(result.stdout)
        return loaded


@pytest.fixture(scope="module")
def compose(tmp_path_factory: pytest.TempPathFactory) -> Compose:
    binary = shutil.which("docker-compose")
    if binary is None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("docker-compose is required under CI (tests/run.sh installs it as root)")
        pytest.skip("docker-compose is not installed (apt-get install docker-compose)")
    return Compose(binary, tmp_path_factory.mktemp("compose"))


@pytest.fixture(scope="module")
def main(compose: Compose) -> dict[str, Any]:
    services: dict[str, Any] = compose.config([MAIN], configured())["services"]
    return services


# Both config formats: docker-compose 1.x prints short strings, Compose 2 long mappings.


def published_ports(service: dict[str, Any]) -> set[tuple[str, int, int]]:
    """(host address, published port, container port) of each published port."""
    ports = set()
    for port in service.get("ports", []):
        if isinstance(port, dict):
            ports.add((port.get("host_ip", ""), int(port["published"]), int(port["target"])))
        else:
            address, published, target = str(port).split("/")[0].rsplit(":", 2)
            ports.add((address, int(published), int(target)))
    return ports


def mounts(service: dict[str, Any]) -> dict[str, tuple[str, bool]]:
    """Container path → (source, read-only)."""
    found = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            found[volume["target"]] = (volume["source"], bool(volume.get("read_only")))
        else:
            source, target, *mode = str(volume).split(":")
            found[target] = (source, "ro" in mode)
    return found


def condition(service: dict[str, Any], dependency: str) -> str:
    depends_on = service.get("depends_on", {})
    assert isinstance(depends_on, dict), f"depends_on without conditions: {depends_on}"
    return str(depends_on[dependency]["condition"])


def seconds(duration: str) -> float:
    """Compose durations such as ``120s``, ``2m0s`` or ``1m30s``."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", duration)
    assert parts, duration
    return sum(float(n) * units[u] for n, u in parts)


def option(args: list[str], name: str) -> str:
    """The value of ``--name=value`` in a command line."""
    values = [a.split("=", 1)[1] for a in args if a.startswith(f"{name}=")]
    assert len(values) == 1, f"{name} in {args}"
    return values[0]


def test_main_file_is_valid(compose: Compose) -> None:
    result = compose.run([MAIN], configured(), "-q")
    assert result.returncode == 0, result.stderr


def test_main_file_has_the_services(main: dict[str, Any]) -> None:
    assert set(main) == {"postgres", "migrate", "api", "mlflow", "dashboard", "worker"}
    assert main["api"]["command"] == [
        "serve",
        "--host",
        "0.0.0.0",
        "--port",
        "8000",
        "--no-migrate",
    ]
    assert main["dashboard"]["command"] == ["dashboard", "--host", "0.0.0.0", "--port", "8080"]
    assert main["migrate"]["command"] == ["db", "upgrade"]


def test_postgres_has_a_volume_a_healthcheck_and_the_init_script(main: dict[str, Any]) -> None:
    postgres = main["postgres"]
    assert postgres["image"] == "postgres:16"
    assert "pg_isready" in postgres["healthcheck"]["test"]
    volumes = mounts(postgres)
    source, _ = volumes["/var/lib/postgresql/data"]
    assert not source.startswith("/"), "the data belongs in a named volume"
    init_source, read_only = next(
        v for k, v in volumes.items() if k.startswith("/docker-entrypoint-initdb.d/")
    )
    script = Path(init_source).read_text()
    assert read_only
    assert all(f"'{name}'" in script for name in ("hpo", "optuna", "mlflow"))


def test_migrate_gates_the_api_dashboard_and_worker(main: dict[str, Any]) -> None:
    assert condition(main["migrate"], "postgres") == "service_healthy"
    assert main["migrate"]["restart"] == "no"
    for name in ("api", "dashboard", "worker"):
        assert condition(main[name], "migrate") == "service_completed_successfully", name


def test_worker_reserves_every_gpu(main: dict[str, Any]) -> None:
    worker = main["worker"]
    assert worker["command"] == ["worker", "--devices", "auto"]
    assert reserves_every_gpu(worker)
    assert worker["init"] is True
    assert mounts(worker)["/data"][0] == "worker-data"
    assert worker["environment"]["HPO_DATA_DIR"] == "/data"


def test_worker_outlasts_its_shutdown_grace(main: dict[str, Any]) -> None:
    worker = main["worker"]
    grace = float(worker["environment"]["HPO_SHUTDOWN_GRACE_S"])
    # The supervisor gives its slots HPO_SHUTDOWN_GRACE_S + 30 s before killing them.
    assert seconds(str(worker["stop_grace_period"])) > grace + 30


def test_mlflow_server_on_postgres_with_host_checks(main: dict[str, Any]) -> None:
    mlflow = main["mlflow"]
    args = [*mlflow["entrypoint"], *mlflow["command"]]
    env = mlflow["environment"]
    assert args[:2] == ["mlflow", "server"]
    assert env["MLFLOW_BACKEND_STORE_URI"] == (
        "postgresql+psycopg2://hpo:pgsecret123@postgres:5432/mlflow"
    )
    assert env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] == "false"
    assert "--serve-artifacts" in args
    assert option(args, "--artifacts-destination") == "/mlartifacts"
    assert mounts(mlflow)["/mlartifacts"][0] == "mlflow-artifacts"
    assert option(args, "--workers") == "1"
    hosts = option(args, "--allowed-hosts").split(",")
    assert "mlflow:5000" in hosts
    assert set(example_values()["MLFLOW_ALLOWED_HOSTS"].split(",")) <= set(hosts)
    assert option(args, "--cors-allowed-origins") == example_values()["MLFLOW_CORS_ALLOWED_ORIGINS"]


def test_only_api_dashboard_and_mlflow_are_published(compose: Compose) -> None:
    def ports(values: dict[str, str]) -> dict[str, set[tuple[str, int, int]]]:
        services = compose.config([MAIN], values)["services"]
        return {name: published_ports(s) for name, s in services.items() if s.get("ports")}

    assert ports(configured()) == {
        "api": {("127.0.0.1", 8000, 8000)},
        "dashboard": {("127.0.0.1", 8080, 8080)},
        "mlflow": {("127.0.0.1", 5000, 5000)},
    }
    moved = ports(configured(BIND_ADDRESS="10.0.0.5", API_PORT="18000"))
    assert moved["api"] == {("10.0.0.5", 18000, 8000)}
    assert moved["mlflow"] == {("10.0.0.5", 5000, 5000)}


def test_services_get_the_settings_they_need(main: dict[str, Any]) -> None:
    known = {f"HPO_{name.upper()}" for name in Settings.model_fields}
    for name in HPO_SERVICES:
        env = main[name]["environment"]
        assert set(k for k in env if k.startswith("HPO_")) <= known, name
        assert env["HPO_DATABASE_URL"] == "postgresql://hpo:pgsecret123@postgres:5432/hpo"
        assert env["HPO_OPTUNA_STORAGE"] == "postgresql://hpo:pgsecret123@postgres:5432/optuna"
        assert env["HPO_MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
        for key in ("HPO_MLFLOW_UI_URL", "HPO_DASHBOARD_URL", "HPO_DATASET_ROOTS"):
            assert env[key] == example_values()[key], (name, key)
        assert "HPO_ALLOWED_TASK_MODULES" in env
    for name in ("api", "dashboard"):
        assert main[name]["environment"]["HPO_ADMIN_TOKEN"] == "admintoken456"
    # The workers talk to the databases, never to the API: no admin token for them.
    assert "HPO_ADMIN_TOKEN" not in main["worker"]["environment"]


def test_worker_environment_is_valid_settings(
    main: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    for key in [k for k in os.environ if k.startswith("HPO_")]:
        monkeypatch.delenv(key)
    for key, value in main["worker"]["environment"].items():
        monkeypatch.setenv(key, str(value))
    settings = Settings()
    assert settings.database_url.startswith("postgresql+psycopg2://")
    assert settings.dataset_root_paths == [Path("/datasets")]
    assert mounts(main["worker"])["/datasets"][1], "datasets are mounted read-only"


@pytest.mark.parametrize("secret", sorted(SECRETS))
def test_a_missing_secret_stops_compose_with_its_name(compose: Compose, secret: str) -> None:
    values = configured()
    del values[secret]
    result = compose.run([MAIN], values, "-q")
    assert result.returncode != 0
    assert f"set {secret} in .env" in result.stderr


def test_the_unedited_example_asks_for_its_secrets(compose: Compose) -> None:
    result = compose.run([MAIN], example_values(), "-q")
    assert result.returncode != 0
    assert re.search(r"set (POSTGRES_PASSWORD|HPO_ADMIN_TOKEN) in \.env", result.stderr)


def test_workers_file_runs_only_gpu_workers(compose: Compose) -> None:
    services = compose.config([WORKERS], {**REMOTE})["services"]
    assert set(services) == {"worker"}
    worker = services["worker"]
    assert worker["command"] == ["worker", "--devices", "auto"]
    assert reserves_every_gpu(worker)
    assert worker["init"] is True
    assert not worker.get("ports")
    for key, value in REMOTE.items():
        assert worker["environment"][key] == value
    assert Path(worker["build"]["context"]).resolve() == REPO


@pytest.mark.parametrize("missing", sorted(REMOTE))
def test_workers_file_requires_the_first_box(compose: Compose, missing: str) -> None:
    values = {k: v for k, v in REMOTE.items() if k != missing}
    result = compose.run([WORKERS], values, "-q")
    assert result.returncode != 0
    assert f"set {missing} to the first box's" in result.stderr


def test_expose_override_publishes_postgres_on_the_given_address(compose: Compose) -> None:
    services = compose.config([MAIN, EXPOSE], configured(POSTGRES_BIND_ADDRESS="10.0.0.5"))[
        "services"
    ]
    assert published_ports(services["postgres"]) == {("10.0.0.5", 5432, 5432)}
    assert published_ports(services["api"]) == {("127.0.0.1", 8000, 8000)}

    result = compose.run([MAIN, EXPOSE], configured(), "-q")
    assert result.returncode != 0
    assert "set POSTGRES_BIND_ADDRESS" in result.stderr


def test_env_example_documents_exactly_the_variables_used() -> None:
    used = set()
    for path in (MAIN, WORKERS, EXPOSE):
        used |= set(re.findall(r"\$\{([A-Z0-9_]+)", path.read_text()))
    documented = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", ENV_EXAMPLE.read_text(), re.M))
    assert used == documented


def dockerfile(name: str) -> str:
    return (REPO / "deploy" / name).read_text()


def test_each_image_installs_only_its_role() -> None:
    service = dockerfile("Dockerfile")
    installs = [line for line in service.splitlines() if "pip install" in line]
    assert installs == ['RUN pip install ".[server]" "mlflow==${MLFLOW_VERSION}" \\']
    assert "find_spec('torch') is None" in service  # the build fails if torch creeps in
    assert service.startswith("#") and "FROM python:3.11-slim" in service
    worker = dockerfile("Dockerfile.worker")
    assert '".[worker]"' in worker and "mlflow-skinny==${MLFLOW_VERSION}" in worker
    for text in (service, worker):
        assert "COPY hpo ./hpo" in text  # the client package the CLI builds on


def test_worker_base_image_torch_satisfies_the_project() -> None:
    """Otherwise pip would replace the base image's CUDA build of torch."""
    base = re.search(
        r"BASE_IMAGE=pytorch/pytorch:(\d+\.\d+\.\d+)-cuda", dockerfile("Dockerfile.worker")
    )
    assert base is not None
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    dependencies = project["optional-dependencies"]["worker"]
    torch = next(Requirement(d) for d in dependencies if Requirement(d).name == "torch")
    assert torch.specifier.contains(base.group(1))


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.worker"])
def test_images_run_hpo_as_a_user_on_data(name: str) -> None:
    text = dockerfile(name)
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    assert 'ENTRYPOINT ["hpo"]' in text
    assert "HPO_DATA_DIR=/data" in text
    assert "MLFLOW_VERSION=3.17.2" in text


def test_secrets_and_environments_stay_out_of_the_build_context() -> None:
    ignored = set((REPO / ".dockerignore").read_text().split())
    assert {".env", ".venv", ".hpo", ".git"} <= ignored


# The MLflow server exactly as compose starts it, on a throwaway Postgres database.


@pytest.fixture
def mlflow_server(compose: Compose, pg_server: Any, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    values = configured(MLFLOW_ALLOWED_HOSTS="gpu1.example.internal:5000,127.0.0.1:*")
    service = compose.config([MAIN], values)["services"]["mlflow"]
    port, artifacts = free_port(), tmp_path / "mlartifacts"
    local = {"--port": str(port), "--host": "127.0.0.1", "--artifacts-destination": str(artifacts)}

    def localize(arg: str) -> str:
        name = arg.split("=", 1)[0]
        return f"{name}={local[name]}" if name in local else arg

    args = [localize(a) for a in service["command"]]
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    env.update({k: str(v) for k, v in service["environment"].items()})
    env["MLFLOW_BACKEND_STORE_URI"] = pg_server.create()
    mlflow = Path(sys.executable).parent / service["entrypoint"][0]
    with (tmp_path / "mlflow.log").open("wb") as log:
        proc = subprocess.Popen(
            [str(mlflow), *service["entrypoint"][1:], *args],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            wait_http(f"http://127.0.0.1:{port}/health", timeout=120, proc=proc)
            yield f"http://127.0.0.1:{port}", artifacts
        finally:
            stop_group(proc)


@pytest.mark.slow
@pytest.mark.postgres
def test_mlflow_command_serves_runs_and_artifacts_to_allowed_hosts(
    mlflow_server: tuple[str, Path],
) -> None:
    from mlflow.tracking import MlflowClient

    url, artifacts = mlflow_server
    search = f"{url}/api/2.0/mlflow/experiments/search?max_results=1"
    for host, status in [
        ("mlflow:5000", 200),
        ("gpu1.example.internal:5000", 200),
        ("evil.example:5000", 403),
    ]:
        assert httpx.get(search, headers={"Host": host}, timeout=10).status_code == status, host
    # The compose healthcheck must pass whatever MLFLOW_ALLOWED_HOSTS lists.
    health = httpx.get(f"{url}/health", headers={"Host": "evil.example:5000"}, timeout=10)
    assert health.status_code == 200

    client = MlflowClient(tracking_uri=url)
    run = client.create_run(client.create_experiment("deploy-check"))
    client.log_text(run.info.run_id, "hello", "note.txt")
    stored = list(artifacts.rglob("note.txt"))
    assert [p.read_text() for p in stored] == ["hello"]
