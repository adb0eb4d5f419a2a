"""Task declarations: what each built-in task accepts, reports and searches by default.

Declarations are data (no torch here): the control plane validates specs and
serves ``GET /tasks`` from them; ``workers.tasks`` holds the code that runs
each task under the same name.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from storage.errors import ErrorDetail

# AnyParam is re-exported: declarations and their callers are typed with it.
from storage.spec import AnyParam as AnyParam

Kind = Literal["float", "int", "categorical"]


@dataclass(frozen=True)
class HyperParameter:
    """One tunable knob of a task.

    ``bounds`` (inclusive) and ``choices`` limit what a search space may ask
    for; ``search`` is the entry of the default search space, if any.
    """

    kind: Kind
    default: Any
    description: str
    search: AnyParam | None = None
    bounds: tuple[float, float] | None = None
    choices: tuple[Any, ...] | None = None


@dataclass(frozen=True)
class Fidelity:
    """What a trial's training is measured in, and where it ends.

    ``unit`` is the step that metrics are reported at (the pruner's rungs are
    placed over it); ``maximum`` says what sets the last step. Each trial
    declares its own maximum when it starts (``TrialContext.declare_fidelity``).
    """

    unit: str
    maximum: str


# The transformer tasks' shared training loop.
TRANSFORMER_FIDELITY = Fidelity(
    unit="optimizer steps, or training examples seen with report_step: examples",
    maximum="max_epochs x optimizer steps per epoch, or max_steps when it comes first",
)


@dataclass(frozen=True)
class TaskDeclaration:
    """A built-in task as the control plane sees it."""

    name: str
    description: str
    metrics: dict[str, Literal["maximize", "minimize"]]
    config_model: type[BaseModel]
    hyperparameters: dict[str, HyperParameter]
    default_objective: str
    check: Callable[[BaseModel, dict[str, AnyParam]], list[ErrorDetail]] | None = field(
        default=None, repr=False
    )
    # Default search spaces that depend on the config (e.g. pretrained vs scratch
    # models), by a name users see in GET /tasks; the first is the plain default.
    spaces: dict[str, Callable[[], dict[str, AnyParam]]] = field(default_factory=dict)
    choose_space: Callable[[BaseModel], str] | None = field(default=None, repr=False)
    # Metrics that only some configs report: (config, metric) -> why not, or None.
    metric_problem: Callable[[BaseModel, str], str | None] | None = field(default=None, repr=False)
    fidelity: Fidelity = TRANSFORMER_FIDELITY

    def default_search_space(self, config: BaseModel | None = None) -> dict[str, AnyParam]:
        """The space searched when a spec gives none; ``config`` may pick another one."""
        if self.spaces:
            chosen = self.choose_space(config) if config is not None and self.choose_space else None
            return self.spaces[chosen or next(iter(self.spaces))]()
        return {n: h.search for n, h in self.hyperparameters.items() if h.search is not None}

    def default_search_spaces(self) -> dict[str, dict[str, AnyParam]]:
        """Every default space by name (``default`` when the task has only one)."""
        if not self.spaces:
            return {"default": self.default_search_space()}
        return {name: make() for name, make in self.spaces.items()}

    def defaults(self) -> dict[str, Any]:
        return {n: h.default for n, h in self.hyperparameters.items()}


_REGISTRY: dict[str, TaskDeclaration] = {}


def register(declaration: TaskDeclaration) -> TaskDeclaration:
    """Add a declaration; a name may be registered once."""
    if declaration.name in _REGISTRY:
        raise ValueError(f"task {declaration.name!r} is already registered")
    _REGISTRY[declaration.name] = declaration
    return declaration


def get_declaration(name: str) -> TaskDeclaration | None:
    _load_builtin()
    return _REGISTRY.get(name)


def all_declarations() -> list[TaskDeclaration]:
    _load_builtin()
    return sorted(_REGISTRY.values(), key=lambda d: d.name)


def _load_builtin() -> None:
    # Imported lazily so that each module can import this one for ``register``.
    from storage.tasks import mlp, seq2seq, text  # noqa: F401
