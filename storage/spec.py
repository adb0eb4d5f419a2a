"""The study spec: the document users submit and workers rebuild everything from.

Validation happens in two stages with the same error shape. Pydantic checks
the structure (unknown keys, types, ranges of single fields); then
:func:`check_spec` checks what depends on the task, the sampler and the pruner.
Both report the path of the offending field.
"""

from __future__ import annotations

import math
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from storage.errors import ErrorDetail, InvalidSpecError

NAME_PATTERN = r"^[a-z0-9][a-z0-9\-_.]{0,63}$"
PYTHON_TASK_PATTERN = re.compile(
    r"^python:(?P<module>[A-Za-z_][\w]*(\.[A-Za-z_][\w]*)*):(?P<function>[A-Za-z_]\w*)$"
)
MAX_TRIALS = 100_000
MAX_CONCURRENT = 1_024
MAX_STUDY_TIMEOUT_S = 90 * 24 * 3600
MAX_TRIAL_TIMEOUT_S = 14 * 24 * 3600

Scalar = str | int | float | bool | None


def nul_paths(value: Any, path: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    """Paths of the strings (keys included) that hold a NUL character.

    Databases cannot store them (Postgres refuses), so inputs are checked up front.
    """
    if isinstance(value, str):
        return [path] if "\x00" in value else []
    if isinstance(value, dict):
        found = [(*path, str(k)) for k in value if isinstance(k, str) and "\x00" in k]
        for key, item in value.items():
            found += nul_paths(item, (*path, str(key)))
        return found
    if isinstance(value, list | tuple):
        return [p for i, item in enumerate(value) for p in nul_paths(item, (*path, i))]
    return []


def reject_nul(data: Any, title: str = "input") -> Any:
    """A ``mode="before"`` validator body: refuse NUL characters anywhere.

    Raises:
        ValidationError: one located error per offending string.
    """
    found = nul_paths(data)
    if found:
        error = PydanticCustomError("nul_character", "NUL characters are not allowed")
        details = [InitErrorDetails(type=error, loc=path, input=None) for path in found]
        raise ValidationError.from_exception_data(title, details)
    return data


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
        return self


class IntParam(StrictModel):
    type: Literal["int"]
    low: int
    high: int
    log: bool = False
    step: int = Field(default=1, ge=1)

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


ParamSpec = Annotated[FloatParam | IntParam | CategoricalParam, Field(discriminator="type")]


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
PrunerName = Literal["median", "percentile", "sha", "hyperband", "wilcoxon", "patient", "none"]


class SamplerSpec(StrictModel):
    name: SamplerName = "tpe"
    seed: int | None = Field(default=None, ge=0, lt=2**32)
    options: dict[str, Any] = Field(default_factory=dict)


class PrunerSpec(StrictModel):
    name: PrunerName = "median"
    options: dict[str, Any] = Field(default_factory=dict)


class BudgetSpec(StrictModel):
    n_trials: int = Field(default=20, ge=1, le=MAX_TRIALS)
    max_concurrent_trials: int = Field(default=1, ge=1, le=MAX_CONCURRENT)
    timeout_s: float | None = Field(default=None, gt=0, le=MAX_STUDY_TIMEOUT_S)
    trial_timeout_s: float | None = Field(default=None, gt=0, le=MAX_TRIAL_TIMEOUT_S)
    max_retries: int = Field(default=2, ge=0, le=10)


class StudySpec(StrictModel):
    """A study as users describe it (see the README's spec reference)."""

    name: str = Field(pattern=NAME_PATTERN)
    task: TaskSpec
    objective: ObjectiveSpec | None = None
    objectives: list[ObjectiveSpec] | None = Field(default=None, min_length=1, max_length=8)
    search_space: dict[str, ParamSpec] | None = None
    sampler: SamplerSpec = Field(default_factory=SamplerSpec)
    pruner: PrunerSpec | None = None
    budget: BudgetSpec = Field(default_factory=BudgetSpec)
    priority: int = Field(default=0, ge=-1000, le=1000)

    @model_validator(mode="before")
    @classmethod
    def _no_nul(cls, data: Any) -> Any:
        return reject_nul(data)

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


def details_from_validation_error(
    exc: ValidationError, prefix: tuple[str | int, ...] = ()
) -> list[ErrorDetail]:
    """Turn pydantic's errors into located details, dropping union-tag noise."""
    details = []
    for err in exc.errors(include_url=False):
        loc = tuple(part for part in err["loc"] if not _is_union_tag(part))
        details.append(ErrorDetail(prefix + loc, _clean_message(err["msg"])))
    return details


def _is_union_tag(part: str | int) -> bool:
    return isinstance(part, str) and (part in {"float", "int", "categorical"} or "[" in part)


def _clean_message(msg: str) -> str:
    return msg.removeprefix("Value error, ")


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
        raise InvalidSpecError("invalid study spec", details_from_validation_error(exc)) from None
