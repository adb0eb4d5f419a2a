"""Response and request bodies of the REST API (they make the OpenAPI schema)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from storage.documents import check_document
from storage.spec import StudySpec
from storage.states import ErrorCode, FailReason

TrialStateName = Literal["RUNNING", "WAITING", "COMPLETE", "PRUNED", "FAIL"]
StudyStatusName = Literal["queued", "running", "paused", "completed", "cancelled", "failed"]


class ErrorItem(BaseModel):
    loc: list[str | int]
    msg: str


class ErrorOut(BaseModel):
    code: ErrorCode = Field(description="stable; service/errors.py maps each to its HTTP status")
    message: str
    errors: list[ErrorItem] = Field(default_factory=list)


class TrialOut(BaseModel):
    number: int
    state: TrialStateName
    params: dict[str, Any]
    value: float | None
    values: list[float | None] | None
    intermediate_values: dict[str, float | None]
    datetime_start: datetime | None
    datetime_complete: datetime | None
    duration_s: float | None
    worker: str | None
    device: str | None
    retry_of: int | None
    continues: int | None = Field(
        default=None,
        description="resumable-sha: the paused trial whose checkpoint this trial continues",
    )
    error: str | None
    # A plain string too: a trial imported from another deployment, or written
    # straight into Optuna, keeps whatever reason it carries.
    fail_reason: FailReason | str | None = Field(description="why a FAIL trial failed")
    mlflow_run_id: str | None
    compute_s: float | None = Field(default=None, description="device-seconds of training")
    train_examples: int | None = Field(default=None, description="training examples seen")
    user_attrs: dict[str, Any] = Field(default_factory=dict)
    links: dict[str, str | None] = Field(default_factory=dict)


class StudyLinks(BaseModel):
    dashboard: str | None
    mlflow: str | None


class BudgetState(BaseModel):
    n_trials: int = Field(description="trials that will finish")
    finished: int = Field(description="trials counted against n_trials so far")
    active: int = Field(description="trial slots held by workers now")
    lost: int = Field(description="trials lost to crashed workers and retried")
    max_concurrent_trials: int
    compute_s: float = Field(
        default=0.0, description="device-seconds of training used by every trial so far"
    )
    max_compute_s: float | None = None
    train_examples: int = Field(default=0, description="training examples seen by every trial")
    max_train_examples: int | None = None
    compute_saved_s: float | None = Field(
        default=None,
        description="device-seconds pruning saved: for each pruned trial, the mean of the "
        "completed trials minus its own (study view only)",
    )
    stop_reason: str | None = Field(
        default=None,
        description="why no new trial starts (budget spent, stop_when met); the study "
        "completes with it once its running trials end",
    )


class StudyOut(BaseModel):
    name: str
    status: StudyStatusName
    status_reason: str | None
    spec: StudySpec
    priority: int
    counts: dict[TrialStateName, int]
    budget: BudgetState
    best: TrialOut | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    links: StudyLinks


class StudyImported(StudyOut):
    """The study an import created, and what it left out of the document."""

    warnings: list[ErrorItem] = Field(
        default_factory=list,
        description="what the import dropped, located in the document: the service's own "
        "hpo.* user attributes of the trials (one entry per attribute name)",
    )


class StudySummary(BaseModel):
    """A study in a list: no trial statistics (those cost a query each)."""

    name: str
    status: StudyStatusName
    status_reason: str | None
    priority: int
    task: str
    budget: BudgetState
    created_at: datetime
    updated_at: datetime


class StudyPage(BaseModel):
    items: list[StudySummary]
    total: int
    limit: int
    offset: int


class TrialPage(BaseModel):
    items: list[TrialOut]
    total: int
    limit: int
    offset: int


class ParetoFront(BaseModel):
    pareto_front: list[TrialOut]


class ObjectiveImportances(BaseModel):
    metric: str
    importances: dict[str, float]


class ImportancesOut(BaseModel):
    items: list[ObjectiveImportances]


class EnqueueIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    params: dict[str, Any] = Field(description="a value for some or all search-space parameters")

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        return check_document(data, "EnqueueIn")


class EnqueueOut(BaseModel):
    study: str
    params: dict[str, Any]
    state: Literal["WAITING"] = "WAITING"


class WorkerOut(BaseModel):
    id: str
    host: str
    pid: int
    device: str
    slot: int
    status: str
    study: str | None
    trial_number: int | None
    trials_run: int
    started_at: datetime
    heartbeat_at: datetime


class WorkerList(BaseModel):
    items: list[WorkerOut]
    total: int


class HyperParameterOut(BaseModel):
    kind: Literal["float", "int", "categorical"]
    default: Any
    description: str
    choices: list[Any] | None


class FidelityOut(BaseModel):
    unit: str = Field(description="the reported step: what the pruner's rungs are placed over")
    maximum: str = Field(description="what sets a trial's last step")


class TaskOut(BaseModel):
    name: str
    description: str
    metrics: list[str]
    config_schema: dict[str, Any]
    default_search_space: dict[str, Any]
    default_search_spaces: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="the default space per kind of model (text tasks: scratch, pretrained)",
    )
    hyperparameters: dict[str, HyperParameterOut]
    fidelity: FidelityOut


class TaskList(BaseModel):
    items: list[TaskOut]


class HealthOut(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)


class TokenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100, pattern=r"^[^\x00]+$")
    scope: Literal["read", "write", "admin"] = "read"


class TokenCreated(BaseModel):
    id: int
    name: str
    scope: str
    token: str = Field(description="shown once; only its hash is stored")


class TokenOut(BaseModel):
    id: int
    name: str
    scope: str
    prefix: str
    created_at: datetime
    last_used_at: datetime | None
    revoked_at: datetime | None


class TokenList(BaseModel):
    items: list[TokenOut]


class ExportedTrial(BaseModel):
    """A finished trial as an export holds it (Optuna's distributions as JSON)."""

    model_config = ConfigDict(extra="forbid")
    number: int | None = Field(default=None, description="its number where it was exported")
    state: Literal["COMPLETE", "PRUNED", "FAIL"]
    params: dict[str, Any] = Field(default_factory=dict)
    distributions: dict[str, str] = Field(
        default_factory=dict, description="optuna.distributions.distribution_to_json of each"
    )
    values: list[float | None] | None = None
    intermediate_values: dict[str, float | None] = Field(default_factory=dict)
    user_attrs: dict[str, Any] = Field(default_factory=dict)
    datetime_start: datetime | None = None
    datetime_complete: datetime | None = None


class StudyExport(BaseModel):
    """A study's spec and finished trials: ``POST /studies/import`` recreates it elsewhere."""

    model_config = ConfigDict(extra="forbid")
    format: Literal["hpo-study"] = "hpo-study"
    version: Literal[1] = 1
    exported_at: datetime | None = None
    name: str | None = Field(default=None, description="informational; spec.name is used")
    status: StudyStatusName | None = Field(default=None, description="informational")
    spec: StudySpec
    trials: list[ExportedTrial] = Field(default_factory=list, max_length=100_000)

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        return check_document(data, "StudyExport")
