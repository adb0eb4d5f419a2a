"""Wiring the tracker into a worker slot: trial start, learning curves, trial end."""

from __future__ import annotations

import logging
import platform
import shutil
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

import optuna

from storage.budget import Claim
from storage.models import TERMINAL, Study, StudyStatus
from storage.spec import StudySpec
from workers.context import TrialContext
from workers.outcome import TrialResult
from workers.slot_env import SlotEnv
from workers.tracking.ops import Op, now_ms
from workers.tracking.tracker import MlflowTracker

logger = logging.getLogger(__name__)
RUN_STATUS = {"COMPLETE": "FINISHED", "PRUNED": "KILLED", "FAIL": "FAILED"}
_PACKAGES = ("torch", "transformers", "optuna", "mlflow", "hpo-service")


def package_versions() -> dict[str, str]:
    found = {"python": platform.python_version()}
    for name in _PACKAGES:
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            continue
    return found


class TrialTracking:
    """Per-slot glue between trials and the :class:`MlflowTracker`."""

    def __init__(self, env: SlotEnv, tracker: MlflowTracker) -> None:
        self.env = env
        self.tracker = tracker
        self.keys: dict[int, str] = {}
        self.reported: dict[int, set[str]] = {}
        self.versions = {f"hpo.version.{k}": v for k, v in package_versions().items()}

    def install(self) -> None:
        self.env.context_hooks.append(self.on_start)
        self.env.trial_hooks.append(self.on_end)

    def on_start(self, ctx: TrialContext, spec: StudySpec, claim: Claim) -> None:
        attrs = ctx.trial.user_attrs
        tags = {
            "hpo.trial_number": ctx.number,
            "hpo.seed": ctx.seed,
            "hpo.worker": self.env.worker_id,
            "hpo.device": self.env.device_label,
            "hpo.task": spec.task.name,
            **self.versions,
        }
        if attrs.get("hpo.retry_of") is not None:
            tags["hpo.retry_of"] = attrs["hpo.retry_of"]
        key = self.tracker.start_trial(spec.name, ctx.number, ctx.params, tags, claim.lease_id)
        self.keys[ctx.number] = key
        reported: set[str] = set()
        self.reported[ctx.number] = reported

        def log_curve(step: int, metrics: Mapping[str, float]) -> None:
            reported.update(metrics)
            self.tracker.log_metrics(spec.name, key, step, metrics)

        ctx.report_hooks.append(log_curve)

    def on_end(
        self,
        claim: Claim,
        spec: StudySpec,
        trial: optuna.Trial,
        ctx: TrialContext,
        result: TrialResult,
    ) -> None:
        key = self.keys.pop(trial.number, None)
        reported = self.reported.pop(trial.number, set())
        if key is None or result.lost:
            return
        if self._is_new_best(claim, spec, trial, ctx, result):
            self.tracker.put(
                Op(
                    "model",
                    spec.name,
                    key,
                    {
                        "model_dir": str(ctx.model_dir),
                        "task": spec.task.name,
                        "value": result.values[0] if result.values else None,
                        "direction": spec.objective_list[0].direction,
                        "number": trial.number,
                    },
                )
            )
        finals = {k: v for k, v in result.metrics.items() if k not in reported}
        self.tracker.put(Op("end_trial", spec.name, key, self._end_data(spec, ctx, result, finals)))
        if self._study_ended(claim.study_id):
            self.tracker.put(Op("summary", spec.name))
        prune_trial_dirs(self.env, claim, spec, self.tracker.pending_model_dirs())

    def _end_data(
        self, spec: StudySpec, ctx: TrialContext, result: TrialResult, finals: dict[str, float]
    ) -> dict[str, Any]:
        """Tags, metrics not already on the curve, the resolved config, the run status."""
        outcome = result.outcome
        tags = {
            "hpo.state": outcome.state,
            "hpo.fail_reason": outcome.fail_reason,
            "hpo.error": outcome.error,
            **{f"hpo.{k}": v for k, v in ctx.info.items()},
        }
        config = {
            "task": spec.task.model_dump(mode="json"),
            "params": ctx.params,
            "seed": ctx.seed,
            "device": self.env.device_label,
        }
        return {
            "tags": tags,
            "metrics": finals,
            "config": config,
            "status": RUN_STATUS[outcome.state],
            "end_ms": now_ms(),
            "step": max(0, ctx._last_step),
        }

    def _is_new_best(
        self,
        claim: Claim,
        spec: StudySpec,
        trial: optuna.Trial,
        ctx: TrialContext,
        result: TrialResult,
    ) -> bool:
        if result.outcome.state != "COMPLETE" or spec.is_multi_objective:
            return False
        if ctx.model_dir is None or not ctx.model_dir.is_dir():
            return False
        best = self.env.optuna_storage.get_best_trial(claim.optuna_study_id)
        return best.number == trial.number

    def _study_ended(self, study_id: int) -> bool:
        with self.env.db.session_scope(read_only=True) as session:
            study = session.get(Study, study_id)
            return study is not None and StudyStatus(study.status) in TERMINAL


def prune_trial_dirs(env: SlotEnv, claim: Claim, spec: StudySpec, keep: set[Path]) -> None:
    """Keep the model folders of the best ``keep_top_k_models`` trials; delete the rest.

    Folders of trials that may still be retried (lost) or whose model is still
    being logged are kept.
    """
    root = env.settings.trials_dir / spec.name
    if not root.is_dir() or spec.is_multi_objective:
        return
    trials = env.study(claim, spec).get_trials(deepcopy=False)
    direction = spec.objective_list[0].direction
    done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE and t.values]
    done.sort(key=lambda t: t.values[0], reverse=direction == "maximize")
    best = {_folder(t) for t in done[: env.settings.keep_top_k_models]}
    finished = {
        _folder(t)
        for t in trials
        if t.state.is_finished() and t.user_attrs.get("hpo.fail_reason") != "lost"
    }
    protected = {p.resolve() for p in keep}
    for folder in root.iterdir():
        if (
            folder.name in finished
            and folder.name not in best
            and not any(p.is_relative_to(folder.resolve()) for p in protected)
        ):
            shutil.rmtree(folder, ignore_errors=True)


def _folder(trial: optuna.trial.FrozenTrial) -> str:
    return f"trial-{trial.user_attrs.get('hpo.retry_root', trial.number):05d}"
