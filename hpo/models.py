"""What the API returns, as typed objects: trials, workers, tasks."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

FINISHED_STATES = ("COMPLETE", "PRUNED", "FAIL")


def parse_time(value: str | None) -> datetime | None:
    """An ISO 8601 time from the API (``Z`` or an offset), or None."""
    return datetime.fromisoformat(value) if value else None


@dataclass(frozen=True)
class Trial:
    """One trial, with Optuna's names (``number``, ``params``, ``value``, ``state``).

    ``value`` is set for single-objective studies, ``values`` always once the
    trial finished; ``intermediate_values`` is the learning curve by step;
    ``model_uri`` is where MLflow keeps the trial's model (the best trial's
    is ``models:/<study>@best``), None where no model was registered.
    """

    study: str
    number: int
    state: str
    params: dict[str, Any]
    value: float | None
    values: list[float | None] | None
    intermediate_values: dict[int, float | None]
    datetime_start: datetime | None
    datetime_complete: datetime | None
    duration: timedelta | None
    worker: str | None = None
    device: str | None = None
    retry_of: int | None = None
    error: str | None = None
    fail_reason: str | None = None
    mlflow_run_id: str | None = None
    user_attrs: dict[str, Any] = field(default_factory=dict)
    links: dict[str, str | None] = field(default_factory=dict)
    model_uri: str | None = None

    @classmethod
    def from_api(cls, study: str, data: dict[str, Any], *, best: bool = False) -> Trial:
        """A trial from the API's JSON shape; ``best`` marks the study's best trial."""
        duration = data.get("duration_s")
        run_id = data.get("mlflow_run_id")
        return cls(
            study=study,
            number=int(data["number"]),
            state=str(data["state"]),
            params=dict(data.get("params") or {}),
            value=data.get("value"),
            values=data.get("values"),
            intermediate_values={
                int(step): v for step, v in (data.get("intermediate_values") or {}).items()
            },
            datetime_start=parse_time(data.get("datetime_start")),
            datetime_complete=parse_time(data.get("datetime_complete")),
            duration=timedelta(seconds=duration) if duration is not None else None,
            worker=data.get("worker"),
            device=data.get("device"),
            retry_of=data.get("retry_of"),
            error=data.get("error"),
            fail_reason=data.get("fail_reason"),
            mlflow_run_id=run_id,
            user_attrs=dict(data.get("user_attrs") or {}),
            links=dict(data.get("links") or {}),
            model_uri=f"models:/{study}@best" if best and run_id else None,
        )

    @property
    def finished(self) -> bool:
        return self.state in FINISHED_STATES

    @property
    def last_step(self) -> int | None:
        """The latest step of the learning curve (None before the first report)."""
        return max(self.intermediate_values) if self.intermediate_values else None


@dataclass(frozen=True)
class Worker:
    """One live worker slot and what it runs now."""

    id: str
    host: str
    pid: int
    device: str
    slot: int
    status: str
    study: str | None
    trial_number: int | None
    trials_run: int
    started_at: datetime | None
    heartbeat_at: datetime | None

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Worker:
        return cls(
            id=data["id"],
            host=data["host"],
            pid=int(data["pid"]),
            device=data["device"],
            slot=int(data["slot"]),
            status=data["status"],
            study=data.get("study"),
            trial_number=data.get("trial_number"),
            trials_run=int(data.get("trials_run") or 0),
            started_at=parse_time(data.get("started_at")),
            heartbeat_at=parse_time(data.get("heartbeat_at")),
        )


@dataclass(frozen=True)
class Task:
    """A built-in task: the metrics it reports, its config schema, its default space."""

    name: str
    description: str
    metrics: list[str]
    config_schema: dict[str, Any]
    default_search_space: dict[str, Any]
    default_search_spaces: dict[str, dict[str, Any]]
    hyperparameters: dict[str, Any]

    @classmethod
    def from_api(cls, data: dict[str, Any]) -> Task:
        return cls(
            name=data["name"],
            description=data.get("description", ""),
            metrics=list(data.get("metrics") or []),
            config_schema=dict(data.get("config_schema") or {}),
            default_search_space=dict(data.get("default_search_space") or {}),
            default_search_spaces=dict(data.get("default_search_spaces") or {}),
            hyperparameters=dict(data.get("hyperparameters") or {}),
        )
