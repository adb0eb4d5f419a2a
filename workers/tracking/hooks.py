"""Wiring the tracker into a worker slot: trial start, learning curves, trial end."""

from __future__ import annotations

import logging
import platform
from collections.abc import Mapping
from importlib.metadata import PackageNotFoundError, version
from typing import Any

import optuna
from optuna.trial import TrialState

from storage.budget import Claim, Outcome
from storage.optuna_store import ATTR_RETRY_OF
from storage.spec import StudySpec
from storage.tracking_rows import find_study
from workers.context import TrialContext
from workers.outcome import TrialResult, lost
from workers.slot_env import FinishedTrial, SlotEnv
from workers.tracking.ops import Op
from workers.tracking.run_tags import (
    TAG_ERROR,
    TAG_FAIL_REASON,
    TAG_RETRY_OF,
    TAG_SEED,
    TAG_STATE,
    TAG_TRIAL_NUMBER,
    TRIAL_RUN_STATUS,
    now_ms,
)
from workers.tracking.tracker import MlflowTracker

logger = logging.getLogger(__name__)
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
            TAG_TRIAL_NUMBER: ctx.number,
            TAG_SEED: ctx.seed,
            "hpo.worker": self.env.worker_id,
            "hpo.device": self.env.device_label,
            "hpo.task": spec.task.name,
            **self.versions,
        }
        if attrs.get(ATTR_RETRY_OF) is not None:
            tags[TAG_RETRY_OF] = attrs[ATTR_RETRY_OF]
        key = self.tracker.start_trial(
            spec.name,
            ctx.number,
            ctx.params,
            tags,
            lease_id=claim.lease_id,
            study_id=claim.study_id,
        )
        self.keys[ctx.number] = key
        reported: set[str] = set()
        self.reported[ctx.number] = reported

        def log_curve(step: int, metrics: Mapping[str, float]) -> None:
            reported.update(metrics)
            self.tracker.log_metrics(spec.name, key, step, metrics, claim.study_id)

        ctx.report_hooks.append(log_curve)

    def on_end(self, finished: FinishedTrial) -> None:
        claim, spec, trial, ctx, result = (
            finished.claim,
            finished.spec,
            finished.trial,
            finished.ctx,
            finished.result,
        )
        key = self.keys.pop(trial.number, None)
        reported = self.reported.pop(trial.number, set())
        if key is None:
            return
        if result.lost:
            # The trial was taken away: no model, no result; the run ends as the lease did.
            data = self._lost_data(claim, spec, ctx)
            self.tracker.put(Op("end_trial", spec.name, key, data, claim.study_id))
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
                    claim.study_id,
                )
            )
        finals = {k: v for k, v in result.metrics.items() if k not in reported}
        data = self._end_data(spec, ctx, result.outcome, finals)
        self.tracker.put(Op("end_trial", spec.name, key, data, claim.study_id))
        if self._study_ended(claim.study_id):
            self.tracker.put(Op("summary", spec.name, study_id=claim.study_id))

    def _lost_data(self, claim: Claim, spec: StudySpec, ctx: TrialContext) -> dict[str, Any]:
        """FAILED with ``fail_reason=lost``, unless the lease says otherwise when it is sent."""
        error = f"worker {self.env.worker_id} lost its lease (it stopped heartbeating in time)"
        data = self._end_data(spec, ctx, lost(error).outcome, {})
        return {**data, "lost": True, "lease_id": claim.lease_id}

    def _end_data(
        self, spec: StudySpec, ctx: TrialContext, outcome: Outcome, finals: dict[str, float]
    ) -> dict[str, Any]:
        """Tags, metrics not already on the curve, the resolved config, the run status."""
        tags = {
            TAG_STATE: outcome.state.name,
            TAG_FAIL_REASON: outcome.fail_reason,
            TAG_ERROR: outcome.error,
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
            "status": TRIAL_RUN_STATUS[outcome.state.name],
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
        if result.outcome.state != TrialState.COMPLETE or spec.is_multi_objective:
            return False
        if ctx.model_dir is None or not ctx.model_dir.is_dir():
            return False
        best = self.env.optuna_storage.get_best_trial(claim.optuna_study_id)
        return best.number == trial.number

    def _study_ended(self, study_id: int) -> bool:
        with self.env.db.session_scope(read_only=True) as session:
            study = find_study(session, study_id=study_id)
        return study is not None and study.ended
