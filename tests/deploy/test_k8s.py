"""The Kubernetes base in deploy/k8s: it renders, validates against the
Kubernetes 1.31 schemas, and its pieces fit together and fit the service."""

from __future__ import annotations

import configparser
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.engine import make_url

from service.app import create_app
from service.dashboard import create_dashboard_app
from storage.settings import Settings
from tests.conftest import PostgresServer, make_settings, sqlite_urls
from tests.deploy.kustomize import Resource, containers, load_kustomization, pod_spec, render

REPO = Path(__file__).resolve().parents[2]
BASE = REPO / "deploy" / "k8s"
KUBERNETES_VERSION = "1.31"
KEDA_KINDS = {"ScaledObject", "TriggerAuthentication"}
NAMESPACE = "hpo"


@pytest.fixture(scope="module")
def resources() -> list[Resource]:
    return render(BASE)


def find(resources: list[Resource], kind: str, name: str) -> Resource:
    matches = [r for r in resources if r["kind"] == kind and r["metadata"]["name"] == name]
    assert len(matches) == 1, f"{kind}/{name}: {len(matches)} found"
    return matches[0]


def container(resources: list[Resource], kind: str, name: str, index: int = 0) -> dict[str, Any]:
    spec = pod_spec(find(resources, kind, name))
    assert spec is not None
    found: dict[str, Any] = spec["containers"][index]
    return found


def environment(resources: list[Resource], spec: dict[str, Any]) -> dict[str, str]:
    """A container's environment as the pod sees it (ConfigMaps and Secrets resolved)."""
    values: dict[str, str] = {}
    for source in spec.get("envFrom", []):
        values.update(find(resources, "ConfigMap", source["configMapRef"]["name"])["data"])
    for entry in spec.get("env", []):
        if "value" in entry:
            values[entry["name"]] = entry["value"]
            continue
        ref = entry["valueFrom"]["secretKeyRef"]
        values[entry["name"]] = find(resources, "Secret", ref["name"])["stringData"][ref["key"]]
    return values


def settings_of(values: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    import os

    for key in [k for k in os.environ if k.startswith("HPO_")]:
        monkeypatch.delenv(key)
    for key, value in values.items():
        monkeypatch.setenv(key, value)
    return Settings()


# Rendering and schemas


def test_the_kustomization_lists_every_manifest_here() -> None:
    listed = set(load_kustomization(BASE)["resources"])
    present = {p.name for p in BASE.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present


def test_every_resource_validates_against_the_kubernetes_schemas(
    resources: list[Resource],
) -> None:
    core = [r for r in resources if r["kind"] not in KEDA_KINDS]
    assert len(core) > 15
    for resource in core:
        # Strict: an unknown or misspelt field fails too.
        kubernetes_validate.validate(resource, KUBERNETES_VERSION, strict=True)


def test_a_misspelt_field_is_caught(resources: list[Resource]) -> None:
    broken = find(resources, "Deployment", "worker")
    broken = {**broken, "spec": {**broken["spec"], "replica": 2}}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


def test_everything_is_in_the_namespace_and_labelled(resources: list[Resource]) -> None:
    assert find(resources, "Namespace", NAMESPACE)
    for resource in resources:
        metadata = resource["metadata"]
        assert metadata["labels"]["app.kubernetes.io/part-of"] == "hpo"
        if resource["kind"] != "Namespace":
            assert metadata["namespace"] == NAMESPACE, metadata["name"]


def workloads(resources: list[Resource]) -> list[Resource]:
    return [r for r in resources if pod_spec(r) is not None]


def template_labels(resource: Resource) -> dict[str, str]:
    labels: dict[str, str] = resource["spec"]["template"]["metadata"]["labels"]
    return labels


def selects(selector: dict[str, str], resource: Resource) -> bool:
    return selector.items() <= template_labels(resource).items()


def test_selectors_find_their_pods(resources: list[Resource]) -> None:
    for workload in workloads(resources):
        if workload["kind"] != "Job":
            assert selects(workload["spec"]["selector"]["matchLabels"], workload)
    pods = workloads(resources)
    for resource in resources:
        if resource["kind"] == "Service":
            selector = resource["spec"]["selector"]
        elif resource["kind"] in ("PodDisruptionBudget", "NetworkPolicy"):
            selector = resource["spec"].get("selector", resource["spec"].get("podSelector"))
            selector = selector["matchLabels"]
        else:
            continue
        chosen = [p["metadata"]["name"] for p in pods if selects(selector, p)]
        assert len(chosen) == 1, (resource["kind"], resource["metadata"]["name"], chosen)


def test_service_ports_and_probes_name_container_ports(resources: list[Resource]) -> None:
    by_labels = {tuple(sorted(template_labels(w).items())): w for w in workloads(resources)}
    for service in (r for r in resources if r["kind"] == "Service"):
        workload = next(w for k, w in by_labels.items() if selects(service["spec"]["selector"], w))
        spec = pod_spec(workload)
        assert spec is not None
        names = {p["name"] for c in spec["containers"] for p in c.get("ports", [])}
        for port in service["spec"]["ports"]:
            assert port["targetPort"] in names, service["metadata"]["name"]
    for workload in workloads(resources):
        for spec in containers(workload):
            names = {p["name"] for p in spec.get("ports", [])}
            for probe in ("readinessProbe", "livenessProbe"):
                check = spec.get(probe, {})
                action = check.get("httpGet") or check.get("tcpSocket")
                if action and isinstance(action["port"], str):
                    assert action["port"] in names, (workload["metadata"]["name"], probe)


def test_every_reference_resolves(resources: list[Resource]) -> None:
    """Secrets, keys, ConfigMaps and claims that pods name are all in the base."""
    secrets = {r["metadata"]["name"]: r for r in resources if r["kind"] == "Secret"}
    config_maps = {r["metadata"]["name"] for r in resources if r["kind"] == "ConfigMap"}
    claims = {r["metadata"]["name"] for r in resources if r["kind"] == "PersistentVolumeClaim"}
    for workload in workloads(resources):
        spec = pod_spec(workload)
        assert spec is not None
        for entry in (e for c in containers(workload) for e in c.get("env", [])):
            ref = entry.get("valueFrom", {}).get("secretKeyRef")
            if ref:
                assert ref["key"] in secrets[ref["name"]]["stringData"], ref
        for source in (s for c in containers(workload) for s in c.get("envFrom", [])):
            assert source["configMapRef"]["name"] in config_maps
        for volume in spec.get("volumes", []):
            if "configMap" in volume:
                assert volume["configMap"]["name"] in config_maps
            if "persistentVolumeClaim" in volume:
                assert volume["persistentVolumeClaim"]["claimName"] in claims
            for source in volume.get("projected", {}).get("sources", []):
                if "secret" in source:
                    assert source["secret"]["name"] in secrets
                if "configMap" in source:
                    assert source["configMap"]["name"] in config_maps


def test_images_are_the_projects_own(resources: list[Resource]) -> None:
    expected = {"postgres": "postgres:16", "pgbouncer": "edoburu/pgbouncer:v1.25.2-p0"}
    for workload in workloads(resources):
        name = workload["metadata"]["name"]
        own = "hpo-worker:latest" if name == "worker" else "hpo-service:latest"
        for spec in containers(workload):
            assert spec["image"] == expected.get(name, own), (name, spec["name"])


# Workers


def test_worker_pods_take_one_gpu_each_and_run_one_slot(resources: list[Resource]) -> None:
    worker = find(resources, "Deployment", "worker")
    spec = container(resources, "Deployment", "worker")
    assert spec["image"] == "hpo-worker:latest"
    assert spec["args"] == ["worker", "--devices", "0", "--per-device", "1"]
    assert spec["resources"]["requests"]["nvidia.com/gpu"] == 1
    assert spec["resources"]["limits"]["nvidia.com/gpu"] == 1
    # The autoscaler owns the replica count.
    assert "replicas" not in worker["spec"]
    assert worker["spec"]["strategy"]["rollingUpdate"]["maxSurge"] == 0
    mounts = {m["mountPath"]: m for m in spec["volumeMounts"]}
    assert {"/data", "/datasets", "/dev/shm"} <= set(mounts)
    assert mounts["/datasets"]["readOnly"] is True


def test_a_stopped_worker_pod_has_time_to_hand_its_trial_back(
    resources: list[Resource], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = pod_spec(find(resources, "Deployment", "worker"))
    assert spec is not None
    settings = settings_of(environment(resources, spec["containers"][0]), monkeypatch)
    # The slot lets its trial run HPO_SHUTDOWN_GRACE_S, the supervisor waits 30 s
    # more, then flushes MLflow: all of it before the kubelet's SIGKILL.
    needed = settings.shutdown_grace_s + 30 + settings.mlflow_flush_timeout_s
    assert spec["terminationGracePeriodSeconds"] > needed


def test_workers_go_through_pgbouncer_and_listen_on_postgres(
    resources: list[Resource], monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = pod_spec(find(resources, "Deployment", "worker"))
    assert spec is not None
    settings = settings_of(environment(resources, spec["containers"][0]), monkeypatch)
    for url in (settings.database_url, settings.optuna_storage):
        assert (make_url(url).host, make_url(url).port) == ("pgbouncer", 6432)
    listen = make_url(settings.listen_database_url)
    assert (listen.host, listen.port, listen.database) == ("postgres", 5432, "hpo")
    assert settings.listen_enabled
    assert settings.mlflow_tracking_uri == "http://mlflow:5000"
    assert settings.dataset_root_paths == [Path("/datasets")]
    assert settings.admin_token is None  # workers never talk to the API


def test_pgbouncer_pools_transactions_for_both_worker_databases(
    resources: list[Resource],
) -> None:
    ini = configparser.ConfigParser()
    ini.read_string(find(resources, "ConfigMap", "hpo-pgbouncer")["data"]["pgbouncer.ini"])
    assert ini["pgbouncer"]["pool_mode"] == "transaction"
    assert ini["pgbouncer"]["listen_port"] == "6432"
    assert ini["pgbouncer"]["auth_file"] == "/etc/pgbouncer/userlist.txt"
    for database in ("hpo", "optuna"):
        assert f"dbname={database}" in ini["databases"][database]
        assert "host=postgres port=5432" in ini["databases"][database]
    users = find(resources, "Secret", "hpo-pgbouncer")["stringData"]["userlist.txt"]
    password = find(resources, "Secret", "hpo-database")["stringData"]["postgres-password"]
    assert users.strip() == f'"hpo" "{password}"'
    mount = container(resources, "Deployment", "pgbouncer")["volumeMounts"][0]
    assert mount["mountPath"] == "/etc/pgbouncer"


# Autoscaling (KEDA's CRDs are not in the core schemas: their shape is checked here)

SCALED_OBJECT_SPEC = {
    "scaleTargetRef",
    "minReplicaCount",
    "maxReplicaCount",
    "pollingInterval",
    "cooldownPeriod",
    "idleReplicaCount",
    "initialCooldownPeriod",
    "fallback",
    "advanced",
    "triggers",
}
POSTGRES_TRIGGER = {
    "host",
    "port",
    "userName",
    "dbName",
    "sslmode",
    "query",
    "targetQueryValue",
    "activationTargetQueryValue",
    "connectionFromEnv",
    "passwordFromEnv",
}


def scaled_object(resources: list[Resource]) -> Resource:
    return find(resources, "ScaledObject", "worker")


def test_the_scaled_object_drives_the_worker_deployment(resources: list[Resource]) -> None:
    scaled = scaled_object(resources)
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    spec = scaled["spec"]
    assert set(spec) <= SCALED_OBJECT_SPEC
    assert spec["scaleTargetRef"] == {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "name": "worker",
    }
    assert spec["minReplicaCount"] == 0 < spec["maxReplicaCount"]
    behavior = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]
    # The behavior block is a HorizontalPodAutoscaler's: validate it as one.
    kubernetes_validate.validate(
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": "worker"},
            "spec": {
                "scaleTargetRef": spec["scaleTargetRef"],
                "maxReplicas": spec["maxReplicaCount"],
                "behavior": behavior,
            },
        },
        KUBERNETES_VERSION,
        strict=True,
    )
    [trigger] = spec["triggers"]
    assert trigger["type"] == "postgresql"
    assert set(trigger) <= {"type", "name", "metadata", "authenticationRef", "metricType"}
    metadata = trigger["metadata"]
    assert set(metadata) <= POSTGRES_TRIGGER
    assert all(isinstance(v, str) for v in metadata.values()), "trigger metadata are strings"
    assert float(metadata["targetQueryValue"]) == 1  # one pod per trial slot
    assert float(metadata["activationTargetQueryValue"]) == 0


def test_the_trigger_reaches_postgres_with_the_secret(resources: list[Resource]) -> None:
    metadata = scaled_object(resources)["spec"]["triggers"][0]["metadata"]
    # KEDA runs in its own namespace: the Service's full name.
    assert metadata["host"] == f"postgres.{NAMESPACE}.svc.cluster.local"
    assert metadata["port"] == str(
        find(resources, "Service", "postgres")["spec"]["ports"][0]["port"]
    )
    url = make_url(find(resources, "Secret", "hpo-database")["stringData"]["database-url"])
    assert (metadata["userName"], metadata["dbName"]) == (url.username, url.database)
    auth_name = scaled_object(resources)["spec"]["triggers"][0]["authenticationRef"]["name"]
    auth = find(resources, "TriggerAuthentication", auth_name)
    assert auth["apiVersion"] == "keda.sh/v1alpha1"
    [ref] = auth["spec"]["secretTargetRef"]
    assert ref["parameter"] == "password"
    assert find(resources, "Secret", ref["name"])["stringData"][ref["key"]] == url.password


@pytest.mark.postgres
def test_the_scaling_query_counts_the_slots_that_could_run(
    resources: list[Resource], pg_urls: tuple[str, str]
) -> None:
    from sqlalchemy import create_engine

    query = scaled_object(resources)["spec"]["triggers"][0]["metadata"]["query"]
    engine = create_engine(pg_urls[0])
    rows = [
        # name, status, n_trials, max_concurrent, finished, active -> slots wanted
        ("queued", "queued", 10, 4, 0, 0),  # 4
        ("tail", "running", 10, 4, 8, 2),  # 2: only two trials left
        ("paused", "paused", 10, 4, 3, 1),  # 1: still running one
        ("done", "completed", 10, 4, 10, 0),  # 0
        ("cancelled", "cancelled", 10, 4, 2, 0),  # 0
    ]
    try:
        with engine.begin() as conn:
            assert conn.execute(text(query)).scalar() == 0  # nothing queued: scale to zero
            for name, status, n_trials, concurrent, finished, active in rows:
                conn.execute(
                    text(
                        "INSERT INTO hpo_studies (name, status, spec, priority, n_trials, "
                        "max_concurrent_trials, n_active, n_finished, n_lost, n_claims, "
                        "created_at, updated_at) VALUES (:name, :status, '{}', 0, :n, :c, :a, "
                        ":f, 0, 0, now(), now())"
                    ),
                    {"name": name, "status": status, "n": n_trials, "c": concurrent}
                    | {"a": active, "f": finished},
                )
            assert conn.execute(text(query)).scalar() == 4 + 2 + 1
    finally:
        engine.dispose()


# The API, the dashboard, MLflow, the migration


def test_the_api_runs_twice_with_a_disruption_budget(resources: list[Resource]) -> None:
    api = find(resources, "Deployment", "api")
    assert api["spec"]["replicas"] == 2
    assert find(resources, "PodDisruptionBudget", "api")["spec"]["minAvailable"] == 1
    args = container(resources, "Deployment", "api")["args"]
    assert args == ["serve", "--host", "0.0.0.0", "--port", "8000", "--no-migrate"]


def probe_path(resources: list[Resource], name: str, probe: str) -> str:
    path: str = container(resources, "Deployment", name)[probe]["httpGet"]["path"]
    return path


def test_api_probes_answer_on_a_migrated_service(resources: list[Resource], tmp_path: Path) -> None:
    settings = make_settings(tmp_path, sqlite_urls(tmp_path))
    with TestClient(create_app(settings)) as client:
        for probe in ("readinessProbe", "livenessProbe"):
            response = client.get(probe_path(resources, "api", probe))
            assert response.status_code == 200, probe
    assert probe_path(resources, "api", "readinessProbe") == "/api/v1/readyz"
    assert probe_path(resources, "api", "livenessProbe") == "/api/v1/healthz"


def test_dashboard_readiness_page_answers_without_a_token(
    resources: list[Resource], tmp_path: Path
) -> None:
    settings = make_settings(
        tmp_path, sqlite_urls(tmp_path), admin_token="k8s-test-token-0123456789"
    )
    with TestClient(create_dashboard_app(settings)) as client:
        response = client.get(probe_path(resources, "dashboard", "readinessProbe"))
    assert response.status_code == 200


def test_mlflow_serves_artifacts_from_its_claim_with_host_checks(
    resources: list[Resource],
) -> None:
    spec = container(resources, "Deployment", "mlflow")
    assert spec["command"] == ["mlflow", "server"]
    args = dict(a.split("=", 1) for a in spec["args"] if "=" in a)
    assert "--serve-artifacts" in spec["args"]
    assert args["--workers"] == "1"
    hosts = args["--allowed-hosts"].split(",")
    assert {"mlflow:5000", "mlflow.hpo.svc.cluster.local:5000"} <= set(hosts)
    assert "*" not in hosts
    # The workers' tracking URI is one of the hosts MLflow answers.
    tracking = find(resources, "ConfigMap", "hpo-config")["data"]["HPO_MLFLOW_TRACKING_URI"]
    assert make_url(tracking.replace("http://", "postgresql://")).host == "mlflow"
    mount = {m["mountPath"]: m["name"] for m in spec["volumeMounts"]}
    assert args["--artifacts-destination"] in mount
    backend = environment(resources, spec)["MLFLOW_BACKEND_STORE_URI"]
    assert make_url(backend).database == "mlflow"
    assert find(resources, "Deployment", "mlflow")["spec"]["strategy"]["type"] == "Recreate"
    # /health answers whatever the Host header (tests/deploy/test_compose.py checks the server).
    assert probe_path(resources, "mlflow", "readinessProbe") == "/health"


def test_the_migration_job_and_the_waits_for_the_schema(
    resources: list[Resource], monkeypatch: pytest.MonkeyPatch
) -> None:
    job = find(resources, "Job", "hpo-migrate")
    spec = pod_spec(job)
    assert spec is not None
    migrate = spec["containers"][0]
    assert migrate["args"] == ["db", "upgrade"]
    settings = settings_of(environment(resources, migrate), monkeypatch)
    # The migration lock is a session lock: never through PgBouncer.
    assert make_url(settings.database_url).host == "postgres"
    assert make_url(settings.optuna_storage).host == "postgres"
    for name in ("api", "dashboard", "worker"):
        workload_spec = pod_spec(find(resources, "Deployment", name))
        assert workload_spec is not None
        [wait] = workload_spec["initContainers"]
        assert wait["command"][:3] == ["python", "-m", "storage.readiness"]
        main = workload_spec["containers"][0]
        # It checks the very databases the main container uses.
        waited = {e["name"]: e for e in wait["env"]}
        used = {e["name"]: e for e in main["env"]}
        for key in ("HPO_DATABASE_URL", "HPO_OPTUNA_STORAGE"):
            assert waited[key] == used[key], (name, key)


def test_every_hpo_variable_is_a_setting(resources: list[Resource]) -> None:
    known = {f"HPO_{name.upper()}" for name in Settings.model_fields}
    for workload in workloads(resources):
        for spec in containers(workload):
            names = set(environment(resources, spec))
            assert {n for n in names if n.startswith("HPO_")} <= known, workload["metadata"]["name"]


def test_the_example_admin_token_is_refused(
    resources: list[Resource], monkeypatch: pytest.MonkeyPatch
) -> None:
    values = environment(resources, container(resources, "Deployment", "api"))
    with pytest.raises(ValueError, match="admin_token"):
        settings_of(values, monkeypatch)
    values["HPO_ADMIN_TOKEN"] = "0123456789abcdef0123456789abcdef"
    assert settings_of(values, monkeypatch).admin_token


def test_postgres_creates_the_same_databases_as_compose(resources: list[Resource]) -> None:
    script = find(resources, "ConfigMap", "hpo-postgres-init")["data"]["10-create-databases.sql"]
    assert script == (REPO / "deploy" / "postgres-init.sql").read_text()
    args = container(resources, "StatefulSet", "postgres")["args"]
    assert int(re.search(r"max_connections=(\d+)", " ".join(args)).group(1)) >= 300  # type: ignore[union-attr]


def test_postgres_pgbouncer_and_mlflow_are_private_to_the_namespace(
    resources: list[Resource],
) -> None:
    policies = {r["metadata"]["name"]: r for r in resources if r["kind"] == "NetworkPolicy"}
    assert set(policies) == {"postgres", "pgbouncer", "mlflow"}
    for name, policy in policies.items():
        [rule] = policy["spec"]["ingress"]
        peers = rule["from"]
        assert {"podSelector": {}} in peers, name
        others = [p for p in peers if p != {"podSelector": {}}]
        # Only Postgres lets one more in: KEDA's operator, which reads the queue.
        expected = (
            [
                {
                    "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "keda"}},
                    "podSelector": {"matchLabels": {"app": "keda-operator"}},
                }
            ]
            if name == "postgres"
            else []
        )
        assert others == expected, name
        assert policy["spec"]["policyTypes"] == ["Ingress"]


def test_the_readme_names_every_file_and_prerequisite() -> None:
    readme = (BASE / "README.md").read_text()
    for name in load_kustomization(BASE)["resources"]:
        assert name in readme, name
    for needed in ("NVIDIA device plugin", "KEDA", "kubectl apply -k deploy/k8s", "drain"):
        assert needed in readme, needed
    assert yaml.safe_load((BASE / "kustomization.yaml").read_text())["namespace"] == NAMESPACE


@pytest.mark.postgres
def test_the_init_containers_command_waits_for_the_migration(
    pg_server: PostgresServer, tmp_path: Path
) -> None:
    """``python -m storage.readiness`` as the init containers run it: it exits 0
    only once the schemas exist, and 1 when they never come."""
    import subprocess
    import sys
    import time

    from storage.db import Database
    from storage.migrate import upgrade_optuna_schema, upgrade_service_schema
    from tests.procs import REPO as ROOT
    from tests.procs import hpo_env

    service, optuna_url = pg_server.create(), pg_server.create()
    env = hpo_env({"HPO_DATABASE_URL": service, "HPO_OPTUNA_STORAGE": optuna_url})
    command = [sys.executable, "-m", "storage.readiness", "--interval", "0.2"]
    gave_up = subprocess.run(
        [*command, "--timeout", "1"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert gave_up.returncode == 1
    assert "hpo db upgrade" in gave_up.stderr
    waiting = subprocess.Popen(
        [*command, "--timeout", "60"], env=env, cwd=ROOT, stderr=subprocess.PIPE, text=True
    )
    try:
        time.sleep(1.5)
        assert waiting.poll() is None  # still waiting
        database = Database(service)
        upgrade_service_schema(database)
        database.dispose()
        upgrade_optuna_schema(optuna_url)
        assert waiting.wait(timeout=30) == 0
    finally:
        if waiting.poll() is None:
            waiting.kill()
        waiting.wait()
