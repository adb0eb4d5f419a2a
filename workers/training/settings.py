"""The knobs of the training loop, read once from a trial's params and config."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from typing import Any

from storage.tasks.text import TransformerConfig, shared_hyperparameters
from workers.context import TrialContext
from workers.errors import TaskError

# The task declarations are the one source of defaults and choices: a knob a
# spec leaves out trains as ``GET /tasks`` says it does.
_KNOBS = shared_hyperparameters()
_DEFAULTS: dict[str, Any] = {name: knob.default for name, knob in _KNOBS.items()}
_CONFIG_DEFAULTS: dict[str, Any] = {
    name: field.default for name, field in TransformerConfig.model_fields.items()
}
OPTIMIZERS = tuple(str(choice) for choice in _KNOBS["optimizer"].choices or ())
SCHEDULES = tuple(str(choice) for choice in _KNOBS["lr_schedule"].choices or ())
REPORT_STEPS = ("steps", "examples")


@dataclass(frozen=True)
class TrainSettings:
    """How to train; validated on creation.

    ``batch_size`` is per micro-batch; an optimizer step sees
    ``batch_size * grad_accum_steps`` examples. ``eval_every_steps`` counts
    optimizer steps; None evaluates once per epoch. ``report_step`` is the unit
    of the reported step: ``steps``, or ``examples`` (trials with different
    batch sizes are then compared by pruners after the same amount of data).

    Raises:
        TaskError: a value out of range or an unknown optimizer / schedule.
    """

    learning_rate: float
    batch_size: int
    max_epochs: int
    seed: int
    device: str = "cpu"
    optimizer: str = _DEFAULTS["optimizer"]
    momentum: float = _DEFAULTS["momentum"]
    weight_decay: float = _DEFAULTS["weight_decay"]
    l1_penalty: float = _DEFAULTS["l1_penalty"]
    warmup_ratio: float = _DEFAULTS["warmup_ratio"]
    lr_schedule: str = _DEFAULTS["lr_schedule"]
    max_grad_norm: float = _DEFAULTS["max_grad_norm"]
    grad_accum_steps: int = _DEFAULTS["grad_accum_steps"]
    max_steps: int | None = _CONFIG_DEFAULTS["max_steps"]
    eval_every_steps: int | None = _CONFIG_DEFAULTS["eval_every_steps"]
    compile: bool = _CONFIG_DEFAULTS["compile"]
    report_step: str = _CONFIG_DEFAULTS["report_step"]
    # Early stopping on a plateau of the objective (None: off).
    patience: int | None = None
    min_delta: float = 0.0

    def __post_init__(self) -> None:
        problems = []
        if not self.learning_rate > 0:
            problems.append(f"learning_rate must be > 0, not {self.learning_rate}")
        if self.batch_size < 1 or self.grad_accum_steps < 1 or self.max_epochs < 1:
            problems.append("batch_size, grad_accum_steps and max_epochs must be >= 1")
        if self.optimizer not in OPTIMIZERS:
            problems.append(f"optimizer must be one of {OPTIMIZERS}, not {self.optimizer!r}")
        if self.lr_schedule not in SCHEDULES:
            problems.append(f"lr_schedule must be one of {SCHEDULES}, not {self.lr_schedule!r}")
        if not 0.0 <= self.warmup_ratio < 1.0:
            problems.append(f"warmup_ratio must be in [0, 1), not {self.warmup_ratio}")
        if min(self.weight_decay, self.l1_penalty, self.max_grad_norm, self.momentum) < 0:
            problems.append("weight_decay, l1_penalty, max_grad_norm and momentum must be >= 0")
        if self.report_step not in REPORT_STEPS:
            problems.append(f"report_step must be one of {REPORT_STEPS}, not {self.report_step!r}")
        for name in ("max_steps", "eval_every_steps"):
            value = getattr(self, name)
            if value is not None and value < 1:
                problems.append(f"{name} must be >= 1, not {value}")
        if problems:
            raise TaskError("invalid training settings: " + "; ".join(problems))

    @classmethod
    def from_context(cls, ctx: TrialContext) -> TrainSettings:
        """Settings from the trial's hyperparameters and task config.

        A value missing from both takes the task declaration's default.
        """
        params = {**_DEFAULTS, **ctx.params}
        config = {**_CONFIG_DEFAULTS, **ctx.config}
        stopping = config.get("early_stopping") or {}
        batch = int(params["batch_size"]) * int(params["grad_accum_steps"])
        return cls(
            learning_rate=float(params["learning_rate"]),
            batch_size=int(params["batch_size"]),
            max_epochs=int(config["max_epochs"]),
            seed=ctx.seed,
            device=ctx.device,
            optimizer=str(params["optimizer"]),
            momentum=float(params["momentum"]),
            weight_decay=float(params["weight_decay"]),
            l1_penalty=float(params["l1_penalty"]),
            warmup_ratio=float(params["warmup_ratio"]),
            lr_schedule=str(params["lr_schedule"]),
            max_grad_norm=float(params["max_grad_norm"]),
            grad_accum_steps=int(params["grad_accum_steps"]),
            max_steps=_capped_steps(config, stopping, batch, ctx.max_trial_examples),
            eval_every_steps=_optional_int(config["eval_every_steps"]),
            compile=bool(config["compile"]),
            report_step=str(config["report_step"]),
            patience=_optional_int(stopping.get("patience")),
            min_delta=float(stopping.get("min_delta", 0.0)),
        )

    def reported_step(self, optimizer_step: int) -> int:
        """The step metrics are reported at: optimizer steps or examples seen."""
        if self.report_step == "examples":
            return optimizer_step * self.batch_size * self.grad_accum_steps
        return optimizer_step


def _capped_steps(
    config: dict[str, Any], stopping: dict[str, Any], batch: int, max_examples: int | None
) -> int | None:
    """``max_steps``, and under early stopping the trial's share of an examples budget."""
    steps = _optional_int(config["max_steps"])
    if not stopping or max_examples is None:
        return steps
    share = max(1, max_examples // batch)
    return share if steps is None else min(steps, share)


def run_fingerprint(settings: TrainSettings, ctx: TrialContext) -> str:
    """Identifies a run: a checkpoint is resumed only by a run with the same one.

    The device is left out on purpose: a retry may land on another machine.
    """
    facts: dict[str, Any] = {
        "settings": {k: v for k, v in asdict(settings).items() if k != "device"},
        "params": ctx.params,
        "config": ctx.config,
    }
    encoded = json.dumps(facts, sort_keys=True, default=str).encode()
    return hashlib.sha256(encoded).hexdigest()


def _optional_int(value: Any) -> int | None:
    return None if value is None else int(value)
