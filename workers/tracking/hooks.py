"""Wiring the tracker into a worker slot: trial start, learning curves, trial end."""

from __future__ import annotations

import logging
import platform
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
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
        # Model folders still queued to be logged must outlive the pruning of trial folders.
        self.env.protected_dirs.append(self.tracker.pending_model_dirs)

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
