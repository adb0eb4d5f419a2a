"""Samplers and pruners rebuilt from the spec.

Optuna stores neither: every worker calls these factories with the stored
spec, so all workers sample and prune the same way. Options are checked
against the real constructor signatures at submission time.
"""

from __future__ import annotations

import inspect
import typing
from collections.abc import Callable
from typing import Any, cast

import optuna
from optuna.pruners import BasePruner
from optuna.samplers import BaseSampler
from pydantic import TypeAdapter, ValidationError

from storage.errors import ErrorDetail
from storage.halving import ResumableHalvingPruner
from storage.hyperband import AutoPruner
from storage.pruners import CalibratedPruner
from storage.search_space import MAX_GRID_POINTS, grid_points, grid_size, grid_values
from storage.seeds import stream_seed
from storage.spec import PrunerSpec, SamplerSpec, StudySpec

SAMPLERS: dict[str, Callable[..., BaseSampler]] = {
    "tpe": optuna.samplers.TPESampler,
    "random": optuna.samplers.RandomSampler,
    "gp": optuna.samplers.GPSampler,
    "cmaes": optuna.samplers.CmaEsSampler,
    "nsga2": optuna.samplers.NSGAIISampler,
    "qmc": optuna.samplers.QMCSampler,
    "grid": optuna.samplers.GridSampler,
}
PRUNERS: dict[str, Callable[..., BasePruner]] = {
    "median": optuna.pruners.MedianPruner,
    "percentile": optuna.pruners.PercentilePruner,
    "sha": optuna.pruners.SuccessiveHalvingPruner,
    "hyperband": optuna.pruners.HyperbandPruner,
    "wilcoxon": optuna.pruners.WilcoxonPruner,
    "patient": optuna.pruners.PatientPruner,
    "calibrated": CalibratedPruner,
    "resumable-sha": ResumableHalvingPruner,
    "auto": AutoPruner,
    "none": optuna.pruners.NopPruner,
}
# Pruners that wrap another, given in ``options.wrapped``.
_WRAPPERS = {"patient", "calibrated"}
# Constructor arguments that the spec sets itself or that take Python objects.
_RESERVED = {"self", "seed", "search_space", "wrapped_pruner", "wrapped"}
_JSON_TYPES = (bool, int, float, str, type(None), list, dict)
# Samplers whose sequence must be shared by every worker (one seed for all).
_SHARED_SEED = {"qmc"}


def option_names(factory: Callable[..., object]) -> set[str]:
    """Constructor keywords that a spec may set (plain JSON values only)."""
    params = inspect.signature(factory).parameters.values()
    return {
        p.name
        for p in params
        if p.name not in _RESERVED
        and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)
        and not _takes_objects(p.annotation)
    }


def _takes_objects(annotation: object) -> bool:
    text = str(annotation)
    return any(
        word in text
        for word in ("Callable", "Sampler", "Pruner", "Mutation", "Crossover", "FrozenTrial")
    )


def _annotation(factory: Callable[..., object], name: str) -> object | None:
    """The evaluated annotation of one constructor keyword, None if unknown."""
    text = inspect.signature(factory).parameters[name].annotation
    if not isinstance(text, str):
        return text if text is not inspect.Parameter.empty else None
    namespace = {"Literal": typing.Literal, "Any": Any}
    try:
        annotation: object = eval(text, namespace)
    except Exception:
        return None
    return annotation


def _check_options(
    options: dict[str, Any],
    factory: Callable[..., object],
    loc: tuple[str | int, ...],
    extra: frozenset[str] = frozenset(),
) -> list[ErrorDetail]:
    """Unknown keys and values of the wrong type, checked against ``factory``'s signature."""
    allowed = option_names(factory)
    errors = []
    for key, value in options.items():
        if key in extra:
            continue
        if key not in allowed:
            hint = ", ".join(sorted(allowed)) or "none"
            errors.append(ErrorDetail((*loc, key), f"unknown option; allowed: {hint}"))
            continue
        annotation = _annotation(factory, key)
        if annotation is None:
            if not isinstance(value, _JSON_TYPES):
                errors.append(ErrorDetail((*loc, key), "must be a JSON value"))
            continue
        try:
            TypeAdapter(cast(Any, annotation)).validate_python(value, strict=True)
        except ValidationError:
            name = getattr(annotation, "__name__", str(annotation))
            errors.append(ErrorDetail((*loc, key), f"must be of type {name}"))
    return errors


def build_sampler(spec: StudySpec, stream: int | None = None) -> BaseSampler:
    """The sampler of ``spec``; ``stream`` (a claim number) varies its seed per claim."""
    sampler = spec.sampler
    seed = sampler.seed
    if stream is not None and sampler.name not in _SHARED_SEED:
        seed = stream_seed(seed, stream)
    options = dict(sampler.options)
    if sampler.name == "grid":
        space = spec.search_space or {}
        options["search_space"] = {name: grid_values(p) for name, p in space.items()}
    return SAMPLERS[sampler.name](seed=seed, **options)


def build_pruner(spec: PrunerSpec | None, n_trials: int | None = None) -> BasePruner:
    """The pruner of ``spec`` (``patient`` and ``calibrated`` wrap ``options.wrapped``).

    ``n_trials`` is the study's trial budget: ``auto`` sizes its brackets by it.
    """
    if spec is None:
        return optuna.pruners.NopPruner()
    options = dict(spec.options)
    if spec.name == "auto" and n_trials is not None:
        options.setdefault("n_trials", n_trials)
    if spec.name in _WRAPPERS:
        wrapped = options.pop("wrapped", None)
        inner = build_pruner(PrunerSpec.model_validate(wrapped)) if wrapped else None
        return PRUNERS[spec.name](inner, **options)
    return PRUNERS[spec.name](**options)


def check_sampler(spec: StudySpec) -> list[ErrorDetail]:
    """Problems with ``spec.sampler``; an empty list when it can be built."""
    sampler: SamplerSpec = spec.sampler
    loc = ("sampler", "options")
    errors = _check_options(sampler.options, SAMPLERS[sampler.name], loc)
    if sampler.name == "grid":
        errors += _check_grid(spec)
    if errors:
        return errors
    return _try_build(lambda: build_sampler(spec), loc)


def _check_grid(spec: StudySpec) -> list[ErrorDetail]:
    space = spec.search_space or {}
    if not space:
        return [ErrorDetail(("sampler", "name"), "the grid sampler needs a search space")]
    errors = [
        ErrorDetail(
            ("search_space", name),
            "the grid sampler cannot search a continuous "
            "parameter; give a step or use categorical choices",
        )
        for name, param in space.items()
        if grid_size(param) is None
    ]
    size = grid_points(space)
    if not errors and size is not None and size > MAX_GRID_POINTS:
        errors.append(
            ErrorDetail(
                ("search_space",),
                f"the grid has more than {MAX_GRID_POINTS} points; use fewer values "
                "or another sampler",
            )
        )
    return errors


def check_pruner(spec: StudySpec) -> list[ErrorDetail]:
    """Problems with ``spec.pruner``; an empty list when it can be built."""
    pruner = spec.pruner
    if pruner is None:
        return []
    if spec.is_multi_objective and pruner.name != "none":
        return [ErrorDetail(("pruner", "name"), "pruning needs a single objective; use 'none'")]
    loc = ("pruner", "options")
    extra = frozenset({"wrapped"}) if pruner.name in _WRAPPERS else frozenset()
    errors = _check_options(pruner.options, PRUNERS[pruner.name], loc, extra)
    if pruner.name in _WRAPPERS and not errors and "wrapped" in pruner.options:
        errors = _check_wrapped(pruner.options["wrapped"])
    if errors:
        return errors
    return _try_build(lambda: _build_checked_pruner(pruner), loc)


def _build_checked_pruner(spec: PrunerSpec) -> BasePruner:
    pruner = build_pruner(spec)
    if spec.name == "hyperband":
        # Hyperband builds its brackets lazily; check their arguments now.
        keys = ("min_resource", "reduction_factor", "bootstrap_count")
        optuna.pruners.SuccessiveHalvingPruner(
            **{k: spec.options[k] for k in keys if k in spec.options}
        )
    return pruner


def _check_wrapped(wrapped: object) -> list[ErrorDetail]:
    loc = ("pruner", "options", "wrapped")
    try:
        inner = PrunerSpec.model_validate(wrapped)
    except ValueError as exc:
        return [ErrorDetail(loc, f"not a pruner spec: {exc}".splitlines()[0])]
    if inner.name in _WRAPPERS or inner.name == "resumable-sha":
        return [ErrorDetail((*loc, "name"), f"{inner.name!r} cannot be wrapped in another pruner")]
    return _check_options(inner.options, PRUNERS[inner.name], (*loc, "options"))


def _try_build(build: Callable[[], object], loc: tuple[str | int, ...]) -> list[ErrorDetail]:
    try:
        build()
    except (TypeError, ValueError) as exc:
        return [ErrorDetail(loc, _first_line(exc))]
    return []


def _first_line(exc: Exception) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__
