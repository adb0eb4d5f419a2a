"""One validated settings object, read from ``HPO_*`` variables and passed in."""

from __future__ import annotations

import ipaddress
from pathlib import Path

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_ADMIN_TOKEN_LENGTH = 16
MIN_ADMIN_TOKEN_DISTINCT = 8


def normalize_database_url(url: str) -> str:
    """Return ``url`` with the driver SQLAlchemy should use.

    SQLAlchemy 2.1 maps a bare ``postgresql://`` URL to psycopg 3, which is not
    installed; we ship psycopg2, so a bare (or ``postgres://``) URL is rewritten.
    """
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg2://" + url[len(prefix) :]
    return url


def is_loopback(host: str) -> bool:
    """True when ``host`` names only this machine."""
    if host in ("localhost", "ip6-localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class Settings(BaseSettings):
    """Everything the service, the workers and the CLI read from the environment."""

    model_config = SettingsConfigDict(env_prefix="HPO_", extra="ignore")

    data_dir: Path = Path(".hpo")
    database_url: str = ""
    optuna_storage: str = ""
    # Where idle workers LISTEN for new work: Postgres itself, never a PgBouncer
    # in transaction mode (it does not pass notifications on). Default: database_url.
    listen_database_url: str = ""
    listen_enabled: bool = True
    mlflow_tracking_uri: str = ""
    mlflow_ui_url: str = ""
    dashboard_url: str = ""
    admin_token: str | None = None
    api_url: str = "http://127.0.0.1:8000"
    api_token: str | None = None
    dataset_roots: str = ""
    allowed_task_modules: str = ""
    cors_origins: str = ""

    heartbeat_interval_s: float = Field(default=5.0, gt=0)
    heartbeat_grace_s: float = Field(default=30.0, gt=0)
    poll_interval_s: float = Field(default=2.0, gt=0)
    shutdown_grace_s: float = Field(default=60.0, ge=0)
    max_request_bytes: int = Field(default=1_000_000, gt=0)
    fail_fast_trials: int = Field(default=3, ge=1)
    keep_top_k_models: int = Field(default=3, ge=1)
    mlflow_enabled: bool = True
    mlflow_flush_timeout_s: float = Field(default=60.0, ge=0)
    # Memory each device offers to packed trials (``hpo worker --per-device auto``);
    # unset: the device's free memory, measured when the worker starts.
    device_memory_gib: float | None = Field(default=None, gt=0)
    # State shared by every hpo worker on this machine (device memory ledgers, the
    # CPU slots that share the cores); unset: a folder in the system's temp dir.
    host_state_dir: Path | None = None
    # Trials also write their curves as TensorBoard event files below this folder.
    tensorboard_dir: Path | None = None

    @field_validator("admin_token", "api_token", "tensorboard_dir", mode="before")
    @classmethod
    def _empty_token_is_unset(cls, value: object) -> object:
        return None if value == "" else value

    @field_validator("admin_token")
    @classmethod
    def _strong_admin_token(cls, value: str | None) -> str | None:
        # It opens every door, the dashboard's sign-in form included: no short guessable ones.
        if value is None:
            return value
        if len(value) < MIN_ADMIN_TOKEN_LENGTH or len(set(value)) < MIN_ADMIN_TOKEN_DISTINCT:
            raise ValueError(
                f"must be at least {MIN_ADMIN_TOKEN_LENGTH} characters, "
                f"{MIN_ADMIN_TOKEN_DISTINCT} of them different (e.g. `openssl rand -hex 24`)"
            )
        if any(c.isspace() for c in value):
            raise ValueError("must not contain whitespace")
        return value

    @model_validator(mode="after")
    def _fill_embedded_defaults(self) -> Settings:
        data = self.data_dir
        if not self.database_url:
            self.database_url = f"sqlite:///{data / 'hpo.db'}"
        if not self.optuna_storage:
            self.optuna_storage = f"sqlite:///{data / 'optuna.db'}"
        if not self.mlflow_tracking_uri:
            self.mlflow_tracking_uri = f"sqlite:///{data / 'mlflow.db'}"
        self.database_url = normalize_database_url(self.database_url)
        self.optuna_storage = normalize_database_url(self.optuna_storage)
        self.mlflow_tracking_uri = normalize_database_url(self.mlflow_tracking_uri)
        self.listen_database_url = normalize_database_url(
            self.listen_database_url or self.database_url
        )
        return self

    @property
    def mlflow_artifacts_dir(self) -> Path:
        return self.data_dir / "mlartifacts"

    @property
    def trials_dir(self) -> Path:
        """Where trials keep checkpoints and final models."""
        return self.data_dir / "trials"

    @property
    def dataset_root_paths(self) -> list[Path]:
        """Folders that dataset paths in a spec may point into (resolved)."""
        if self.dataset_roots:
            roots = [Path(p) for p in self.dataset_roots.split(":") if p]
        else:
            roots = [Path.cwd(), self.data_dir]
        return [root.expanduser().resolve() for root in roots]

    @property
    def allowed_task_module_prefixes(self) -> list[str]:
        return [p.strip() for p in self.allowed_task_modules.split(",") if p.strip()]

    @property
    def cors_origin_list(self) -> list[str]:
        return [o.strip() for o in self.cors_origins.split(",") if o.strip()]

    def ensure_data_dir(self) -> None:
        """Create ``data_dir`` when an embedded store lives in it."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
