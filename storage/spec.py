"""The study spec: the document users submit and workers rebuild everything from.

Validation happens in two stages with the same error shape. Pydantic checks
the structure (unknown keys, types, ranges of single fields); then
:func:`check_spec` checks what depends on the task, the sampler and the pruner.
Both report the path of the offending field.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from storage.documents import check_document
from storage.errors import QUOTE_LIMIT, ErrorDetail, InvalidSpecError, shorten

NAME_PATTERN = r"^[a-z0-9][a-z0-9\-_.]{0,63}$"
PYTHON_TASK_PATTERN = re.compile(
    r"\Apython:(?P<module>[A-Za-z_]\w*(\.[A-Za-z_]\w*)*):(?P<function>[A-Za-z_]\w*)\Z",
    re.ASCII,
)
MAX_TRIALS = 100_000
MAX_CONCURRENT = 1_024
MAX_STUDY_TIMEOUT_S = 90 * 24 * 3600
MAX_TRIAL_TIMEOUT_S = 14 * 24 * 3600
MAX_COMPUTE_S = 10 * 365 * 24 * 3600.0
MAX_TRAIN_EXAMPLES = 10**15
# Optuna stores parameter values as floats: integers beyond 2**53 would change.
MAX_INT_PARAM = 2**53
MAX_SEARCH_SPACE = 1000

Scalar = str | int | float | bool | None


class StrictModel(BaseModel):
    """Rejects unknown keys: a typo in a spec must not be silently ignored."""

    model_config = ConfigDict(extra="forbid")


class FloatParam(StrictModel):
    type: Literal["float"]
    low: float
    high: float
    log: bool = False
    step: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _check_range(self) -> FloatParam:
        if not (math.isfinite(self.low) and math.isfinite(self.high)):
            raise ValueError("low and high must be finite numbers")
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be less than high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log-scaled range needs low > 0")
        if self.log and self.step is not None:
            raise ValueError("step cannot be combined with log")
        if self.step is not None and (self.high - self.low) / self.step > MAX_INT_PARAM:
            raise ValueError(f"step is too small: the range would hold over {MAX_INT_PARAM} steps")
        return self


class IntParam(StrictModel):
    type: Literal["int"]
    low: int = Field(ge=-MAX_INT_PARAM, le=MAX_INT_PARAM)
    high: int = Field(ge=-MAX_INT_PARAM, le=MAX_INT_PARAM)
    log: bool = False
    step: int = Field(default=1, ge=1, le=2 * MAX_INT_PARAM)

    @model_validator(mode="after")
    def _check_range(self) -> IntParam:
        if self.low >= self.high:
            raise ValueError(f"low ({self.low}) must be less than high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("a log-scaled range needs low > 0")
        if self.log and self.step != 1:
            raise ValueError("step cannot be combined with log")
        return self


class CategoricalParam(StrictModel):
    type: Literal["categorical"]
    choices: list[Scalar] = Field(min_length=1, max_length=1000)

    @field_validator("choices")
    @classmethod
    def _unique(cls, choices: list[Scalar]) -> list[Scalar]:
        seen = [repr(c) for c in choices]
        if len(set(seen)) != len(seen):
            raise ValueError("choices must be distinct")
        return choices


AnyParam = FloatParam | IntParam | CategoricalParam
ParamSpec = Annotated[AnyParam, Field(discriminator="type")]


class TaskSpec(StrictModel):
    name: str = Field(min_length=1, max_length=200)
    config: dict[str, Any] = Field(default_factory=dict)

    @property
    def python_target(self) -> tuple[str, str] | None:
        """``(module, function)`` for a ``python:module:function`` task, else None."""
        match = PYTHON_TASK_PATTERN.match(self.name)
        return (match["module"], match["function"]) if match else None


class ObjectiveSpec(StrictModel):
    metric: str = Field(min_length=1, max_length=100)
    direction: Literal["maximize", "minimize"]


SamplerName = Literal["tpe", "random", "gp", "cmaes", "nsga2", "qmc", "grid"]
PrunerName = Literal[
    "median",
    "percentile",
    "sha",
    "hyperband",
    "wilcoxon",
    "patient",
    "calibrated",
    "resumable-sha",
    "auto",
    "none",
]


class SamplerSpec(StrictModel):
    name: SamplerName = "tpe"
    seed: int | None = Field(default=None, ge=0, lt=2**32)
    options: dict[str, Any] = Field(default_factory=dict)


class PrunerSpec(StrictModel):
    name: PrunerName = "median"
    options: dict[str, Any] = Field(default_factory=dict)


class StopWhenSpec(StrictModel):
    """Study-level stopping: the study completes once either condition holds."""

    target: float | None = Field(
        default=None, description="stop once a trial reaches this objective value"
    )
    no_improvement_trials: int | None = Field(
        default=None,
        ge=1,
        le=MAX_TRIALS,
        description="stop after this many finished trials without a better value",
    )
    min_delta: float = Field(
        default=0.0, ge=0, description="how much better a value must be to count as better"
    )

    @model_validator(mode="after")
    def _one_condition_at_least(self) -> StopWhenSpec:
        if self.target is None and self.no_improvement_trials is None:
            raise ValueError("give target, no_improvement_trials or both")
        return self


class BudgetSpec(StrictModel):
    n_trials: int = Field(default=20, ge=1, le=MAX_TRIALS)
    max_concurrent_trials: int = Field(default=1, ge=1, le=MAX_CONCURRENT)
    timeout_s: float | None = Field(default=None, gt=0, le=MAX_STUDY_TIMEOUT_S)
    trial_timeout_s: float | None = Field(default=None, gt=0, le=MAX_TRIAL_TIMEOUT_S)
    max_retries: int = Field(default=2, ge=0, le=10)
    max_compute_s: float | None = Field(
        default=None,
        gt=0,
        le=MAX_COMPUTE_S,
        description="device-seconds of training summed over trials; no trial starts after",
    )
    max_train_examples: int | None = Field(
        default=None,
        ge=1,
        le=MAX_TRAIN_EXAMPLES,
        description="training examples seen summed over trials; no trial starts after",
    )
    stop_when: StopWhenSpec | None = None

    @model_validator(mode="after")
    def _trials_unbounded_under_a_compute_budget(self) -> BudgetSpec:
        # A compute budget alone bounds the study: n_trials then only caps it.
        bounded = self.max_compute_s is not None or self.max_train_examples is not None
        if bounded and "n_trials" not in self.model_fields_set:
            self.n_trials = MAX_TRIALS
        return self


class WarmStartSpec(StrictModel):
    """Start from the best configurations of an earlier study of the same task."""

    from_study: str = Field(pattern=NAME_PATTERN)
    top_k: int = Field(default=5, ge=1, le=100)


class StudySpec(StrictModel):
    """A study as users describe it (see the README's spec reference)."""

    name: str = Field(pattern=NAME_PATTERN)
    task: TaskSpec
    objective: ObjectiveSpec | None = None
    objectives: list[ObjectiveSpec] | None = Field(default=None, min_length=1, max_length=8)
    search_space: dict[str, ParamSpec] | None = Field(default=None, max_length=MAX_SEARCH_SPACE)
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    pruner: PrunerSpec | None = None
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    priority: int = Field(default=0, ge=-1000, le=1000)
    warm_start: WarmStartSpec | None = None

    @model_validator(mode="before")
    @classmethod
    def _storable(cls, data: Any) -> Any:
        return check_document(data, "StudySpec")

    @model_validator(mode="after")
    def _one_way_to_say_objectives(self) -> StudySpec:
        if self.objective is not None and self.objectives is not None:
            raise ValueError("give either objective or objectives, not both")
        return self

    @property
    def objective_list(self) -> list[ObjectiveSpec]:
        """The objectives in order (one for a single-objective study)."""
        if self.objectives is not None:
            return list(self.objectives)
        return [self.objective] if self.objective is not None else []

    @property
    def directions(self) -> list[Literal["maximize", "minimize"]]:
        return [o.direction for o in self.objective_list]

    @property
    def is_multi_objective(self) -> bool:
        return len(self.objective_list) > 1

    @property
    def effective_pruner(self) -> PrunerSpec:
        return self.pruner if self.pruner is not None else PrunerSpec(name="none")

    @property
    def default_pruner(self) -> PrunerSpec:
        """The pruner a submitted spec gets when it names none.

        ``auto`` under a compute budget (``max_compute_s``, ``max_train_examples``):
        that is where stopping weak trials early pays, since the compute they
        save buys more trials. ``median`` otherwise; ``none`` for several objectives.
        """
        if self.is_multi_objective:
            return PrunerSpec(name="none")
        budget = self.budget
        if budget.max_compute_s is not None or budget.max_train_examples is not None:
            return PrunerSpec(name="auto")
        return PrunerSpec(name="median")


def details_from_validation_error(
    exc: ValidationError, prefix: tuple[str | int, ...] = (), document: Any = None
) -> list[ErrorDetail]:
    """Turn pydantic's errors into located details, dropping union-tag noise.

    With the validated ``document``, a tag of a discriminated union (``csv``,
    ``huggingface``) is told from a field by walking the document itself.
    """
    details = []
    for err in exc.errors(include_url=False):
        loc = document_loc(err["loc"], document)
        details.append(ErrorDetail(prefix + loc, error_message(err)))
    return details


def document_loc(loc: tuple[str | int, ...], document: Any = None) -> tuple[str | int, ...]:
    """``loc`` without the parts that name a union member rather than a field."""
    kept: list[str | int] = []
    current = document
    for part in loc:
        in_list = isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current)
        if in_list or (isinstance(current, dict) and part in current):
            current = current[part]
        elif _is_union_tag(part) or (
            isinstance(current, dict) and part in (current.get("source"), current.get("type"))
        ):
            continue  # a member's tag: the discriminator's value, not a key
        else:
            current = None  # a missing field: named, and nothing below it
        kept.append(part)
    return tuple(kept)


def _is_union_tag(part: str | int) -> bool:
    return isinstance(part, str) and (part in {"float", "int", "categorical"} or "[" in part)


def error_message(err: Mapping[str, Any]) -> str:
    """pydantic's message for one error, with the user's values in it shortened.

    pydantic writes some inputs into the message itself (the tag of
    ``union_tag_invalid``, say); each comes from the error's context.
    """
    msg = str(err.get("msg", "invalid")).removeprefix("Value error, ")
    for value in (err.get("ctx") or {}).values():
        if isinstance(value, str) and len(value) > QUOTE_LIMIT:
            msg = msg.replace(value, shorten(value))
    return msg


def parse_spec(data: Any) -> StudySpec:
    """Validate the structure of a spec document.

    Raises:
        InvalidSpecError: with one located detail per problem.
    """
    if not isinstance(data, dict):
        raise InvalidSpecError("invalid study spec", [ErrorDetail((), "a spec must be a mapping")])
    try:
        return StudySpec.model_validate(data)
    except ValidationError as exc:
        raise InvalidSpecError(
            "invalid study spec", details_from_validation_error(exc, document=data)
        ) from None
