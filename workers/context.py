"""The trial context: everything a task sees of the system.

A task is ``run(ctx: TrialContext) -> Mapping[str, float]``. It reads
``ctx.params`` (the task's defaults overlaid with the sampled values) and
``ctx.config`` (the validated task config), trains, calls ``ctx.report(step,
metrics)`` after each evaluation and then ``ctx.should_prune()``, and returns
its final metrics (which must include the study's objective metrics). The
last evaluation is reported with ``final=True``: a trial whose training is
done is never pruned.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna

from storage.hyperband import ATTR_FIRST_STEP, ATTR_MAX_STEP

logger = logging.getLogger(__name__)
ReportHook = Callable[[int, Mapping[str, float]], None]


@dataclass
class TrialContext:
    """What one running trial offers its task.

    Attributes:
        trial: the Optuna trial (for define-by-run ``suggest_*`` in custom tasks).
        params: hyperparameters for this trial (defaults + sampled values).
        config: the task config from the spec, validated and with defaults.
        objective_metrics: the metrics the study optimizes, in order.
        seed: the seed of this trial (recorded so it can be re-run).
        device: a ``torch.device`` string, ``cpu`` or ``cuda``.
        work_dir: this trial's folder; it survives a retry of the trial, so a
            checkpoint written here lets the retry resume.
        cache_dir: shared across trials (tokenizers by dataset fingerprint...).
        dataset_roots: folders that dataset paths may point into.
    """

    trial: optuna.Trial
    params: dict[str, Any]
    config: dict[str, Any]
    objective_metrics: list[str]
    seed: int
    device: str
    work_dir: Path
    cache_dir: Path
    dataset_roots: list[Path]
    report_hooks: list[ReportHook] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    model_dir: Path | None = None
    critical: Callable[[], AbstractContextManager[None]] = nullcontext
    # How Optuna storage calls are made; the worker retries them through outages.
    db_call: Callable[[Callable[[], Any]], Any] = field(default=lambda call: call())
    # Checked before the final model is written (a worker whose trial was
    # taken over must not overwrite the retry's files).
    save_checks: list[Callable[[], None]] = field(default_factory=list)
    # A resumable pruner (``resumable-sha``) may continue a stopped trial from
    # its checkpoint later: the task keeps the checkpoint when pruned.
    keep_checkpoint_when_pruned: bool = False
    # Training examples seen so far (compute budgets, compute saved by pruning).
    train_examples: int = 0
    # The most examples a trial that trains until a plateau may see: its share
    # of the study's max_train_examples (None: no such budget).
    max_trial_examples: int | None = None
    # Called with a trial's estimated peak device memory (bytes) before it loads
    # its model: on a packed slot it waits until the device has room (see
    # workers/packing.py); a later call only raises the reservation. Elsewhere a no-op.
    reserve_device_memory: Callable[[int], None] = field(default=lambda nbytes: None)
    _last_step: int = -1
    _final_reported: bool = False

    @property
    def number(self) -> int:
        return self.trial.number

    @property
    def log(self) -> logging.LoggerAdapter[logging.Logger]:
        """A logger whose records name this trial and its study."""
        return logging.LoggerAdapter(
            logger, {"study": self.trial.study.study_name, "trial": self.trial.number}
        )

    def suggest_float(
        self, name: str, low: float, high: float, *, log: bool = False, step: float | None = None
    ) -> float:
        with self.critical():
            return self.trial.suggest_float(name, low, high, log=log, step=step)

    def suggest_int(
        self, name: str, low: int, high: int, *, log: bool = False, step: int = 1
    ) -> int:
        with self.critical():
            return self.trial.suggest_int(name, low, high, log=log, step=step)

    def suggest_categorical(self, name: str, choices: Sequence[Any]) -> Any:
        with self.critical():
            return self.trial.suggest_categorical(name, list(choices))

    def report(self, step: int, metrics: Mapping[str, float], *, final: bool = False) -> None:
        """Record an evaluation at ``step`` (which must grow) and tell the pruner.

        Every metric goes to the learning curve (MLflow); the first objective
        metric, when present, is reported to Optuna for pruning. ``final``
        marks the evaluation after the last training step: from then on
        :meth:`should_prune` says no, since the whole training is paid for.
        """
        if step <= self._last_step:
            raise ValueError(f"report steps must grow: {step} after {self._last_step}")
        self._last_step = step
        self._final_reported = self._final_reported or final
        clean = {k: float(v) for k, v in metrics.items()}
        objective = self.objective_metrics[0] if self.objective_metrics else None
        # A database write: interruptions wait until it is done.
        with self.critical():
            if objective in clean and len(self.objective_metrics) == 1:
                self.db_call(lambda: self.trial.report(clean[objective], step))
            for hook in self.report_hooks:
                hook(step, clean)

    def should_prune(self) -> bool:
        """True when the pruner says stop (raise ``optuna.TrialPruned`` then).

        Never after the final evaluation: the trial completes with its result.
        """
        if len(self.objective_metrics) != 1 or self._final_reported:
            return False
        with self.critical():
            return bool(self.db_call(self.trial.should_prune))

    def declare_fidelity(self, max_step: int, first_step: int | None = None) -> None:
        """Say where this trial's training ends: the reported step of its last evaluation
        (and of its first).

        ``pruner: auto`` places its rungs over this range; a task that declares
        nothing gets rungs from the pruner's ``min_resource`` up. Call it before
        the first report.
        """
        attrs: dict[str, int] = {ATTR_MAX_STEP: int(max_step)}
        if first_step is not None:
            attrs[ATTR_FIRST_STEP] = int(first_step)
        storage, trial_id = self.trial.storage, self.trial._trial_id

        def write() -> None:
            for key, value in attrs.items():
                storage.set_trial_system_attr(trial_id, key, value)

        with self.critical():
            self.db_call(write)

    def count_examples(self, n: int) -> None:
        """Add ``n`` training examples seen (``budget.max_train_examples`` counts them)."""
        self.train_examples += int(n)

    def set_info(self, **facts: Any) -> None:
        """Record facts that make the trial reproducible (dataset fingerprint...)."""
        self.info.update(facts)

    def check_before_save(self) -> None:
        """Raise if the trial may no longer write its final files (it was taken over)."""
        for check in self.save_checks:
            check()

    def set_model_dir(self, path: Path) -> None:
        """Where the task saved its final model (``transformers`` format)."""
        self.model_dir = path
