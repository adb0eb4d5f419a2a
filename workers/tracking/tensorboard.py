"""TensorBoard event files of every trial's curves, for ``tensorboard --logdir``.

With ``HPO_TENSORBOARD_DIR`` set, each trial writes the metrics it reports
(the same values and steps MLflow records) to ``<dir>/<study>/trial-<N>``,
and its params as text, so ``tensorboard --logdir <dir>`` shows the trials of
every study side by side. MLflow stays the record: these files are a view,
and nothing fails when they cannot be written.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from storage.budget import Claim
from storage.spec import StudySpec
from workers.context import TrialContext
from workers.slot_env import FinishedTrial, SlotEnv

logger = logging.getLogger(__name__)


def trial_log_dir(root: Path, study: str, number: int) -> Path:
    """Where the events of trial ``number`` of ``study`` go."""
    return root / study / f"trial-{number}"


class TensorBoardCurves:
    """Per-slot writer of trial curves; one ``SummaryWriter`` per running trial."""

    def __init__(self, env: SlotEnv, root: Path) -> None:
        self.env = env
        self.root = root
        self.writers: dict[int, Any] = {}

    def install(self) -> bool:
        """Hook into the slot's trials; False (and a warning) without tensorboard."""
        try:
            from torch.utils.tensorboard import SummaryWriter  # noqa: F401
        except ImportError:
            logger.warning(
                "HPO_TENSORBOARD_DIR is set but the tensorboard package is missing "
                "(pip install 'hpo-service[tensorboard]'); no event files are written"
            )
            return False
        self.env.context_hooks.append(self.on_start)
        self.env.trial_hooks.append(self.on_end)
        self.env.closers.append(self.close_all)
        return True

    def on_start(self, ctx: TrialContext, spec: StudySpec, claim: Claim) -> None:
        from torch.utils.tensorboard import SummaryWriter

        folder = trial_log_dir(self.root, spec.name, ctx.number)
        try:
            writer = SummaryWriter(log_dir=str(folder))
            writer.add_text("params", json.dumps(ctx.params, sort_keys=True, default=str))
        except Exception:
            logger.warning("cannot write TensorBoard events to %s", folder, exc_info=True)
            return
        self.writers[ctx.number] = writer

        def write(step: int, metrics: Mapping[str, float]) -> None:
            try:
                for name, value in metrics.items():
                    writer.add_scalar(name, value, step)
                writer.flush()
            except Exception:
                logger.warning("TensorBoard write failed for trial %d", ctx.number, exc_info=True)

        ctx.report_hooks.append(write)

    def on_end(self, finished: FinishedTrial) -> None:
        trial, result = finished.trial, finished.result
        writer = self.writers.pop(trial.number, None)
        if writer is None:
            return
        writer.add_text("state", result.outcome.state.name)
        writer.close()

    def close_all(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers.clear()
