"""The training loop shared by the BERT tasks.

A task builds a :class:`TrainingJob` (model, tokenizer, how to batch, what
the loss is, how to evaluate) and calls :func:`train`. The loop owns
everything else: optimizer and schedule, accumulation and clipping,
evaluation, reporting and pruning, checkpoints and resumption, saving the
final model.

Reading order: :func:`train` -> :func:`_train` (the loop itself) ->
the step, evaluation, report and save helpers below it.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch
from torch import nn

from workers.context import TrialContext
from workers.errors import OutOfMemory
from workers.training.batching import Batch, PlannedStep, StepPlan
from workers.training.checkpoint import (
    Position,
    load_checkpoint,
    remove_checkpoint,
    replace_directory,
    save_checkpoint,
)
from workers.training.memory import estimate_training_bytes, measured_peak_bytes, reset_peak_memory
from workers.training.models import trainable_parameters_m
from workers.training.optim import build_optimizer, build_scheduler, decayed_parameters, l1_norm
from workers.training.plateau import Plateau
from workers.training.runtime import (
    OOM_ERRORS,
    autocast_for,
    compiled,
    configure_device,
    release_device_memory,
)
from workers.training.settings import TrainSettings, run_fingerprint

CHECKPOINT_DIR = "checkpoint"
MODEL_DIR = "model"
Forward = Callable[..., Any]


@dataclass
class TrainingJob:
    """What a task hands to :func:`train`.

    Attributes:
        model: a ``transformers`` model (``save_pretrained``), on any device.
        tokenizer: saved next to the final model.
        train_lengths: token count of each training example (for bucketing).
        collate: training example indices -> a batch of CPU tensors.
        compute_loss: (model, batch on the device) -> scalar loss.
        evaluate: model -> validation metrics; called in eval mode, without
            gradients, under the device's autocast.
    """

    model: Any
    tokenizer: Any
    train_lengths: Sequence[int]
    collate: Callable[[list[int]], Batch]
    compute_loss: Callable[[Forward, Batch], torch.Tensor]
    evaluate: Callable[[Forward], dict[str, float]]


@dataclass
class _Session:
    """The live pieces of one run, passed to the helpers as one value."""

    job: TrainingJob
    settings: TrainSettings
    ctx: TrialContext
    device: torch.device
    model: nn.Module
    forward: Forward
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    penalised: list[nn.Parameter]
    loss_sum: float = 0.0
    loss_count: int = 0
    started: float = field(default_factory=time.monotonic)

    @property
    def checkpoint_dir(self) -> Path:
        return self.ctx.work_dir / CHECKPOINT_DIR


def train(job: TrainingJob, settings: TrainSettings, ctx: TrialContext) -> dict[str, float]:
    """Train ``job.model``; return the final validation metrics, ``train_loss``
    and ``params_m``.

    Evaluates every ``settings.eval_every_steps`` optimizer steps (else once
    per epoch) and at the end; after each evaluation it writes a checkpoint,
    calls ``ctx.report(step, metrics)`` and then asks ``ctx.should_prune()``.
    A run with a checkpoint of the same params and config in ``ctx.work_dir``
    resumes from it. At the end the model and tokenizer are saved to
    ``ctx.work_dir / "model"`` (``ctx.set_model_dir``) and the checkpoint
    is deleted. A non-finite training loss ends training early (the final
    evaluation shows the damage).

    Raises:
        optuna.TrialPruned: the pruner stopped the trial.
        OutOfMemory: the device ran out of memory.
        TaskError: invalid settings (from :class:`TrainSettings`).
    """
    try:
        return _train(job, settings, ctx)
    except OOM_ERRORS as exc:
        message = (
            f"out of memory on {settings.device} (batch_size={settings.batch_size}, "
            f"grad_accum_steps={settings.grad_accum_steps}): {exc}"
        )
    # Raised outside the handler so the traceback, which holds the device
    # tensors of the failed step, is gone before the memory is released.
    release_device_memory()
    raise OutOfMemory(message)


def _train(job: TrainingJob, settings: TrainSettings, ctx: TrialContext) -> dict[str, float]:
    session = _open_session(job, settings, ctx)
    plan = StepPlan(job.train_lengths, settings)
    fingerprint = run_fingerprint(settings, ctx)
    start = load_checkpoint(
        session.checkpoint_dir,
        model=session.model,
        optimizer=session.optimizer,
        scheduler=session.scheduler,
        fingerprint=fingerprint,
    ) or Position(step=0, epoch=0, step_in_epoch=0)
    first_evaluation = min(settings.eval_every_steps or plan.steps_per_epoch, plan.total_steps)
    ctx.declare_fidelity(
        settings.reported_step(plan.total_steps), settings.reported_step(first_evaluation)
    )
    ctx.log.info(
        "training %d optimizer steps (%d per epoch), from step %d",
        plan.total_steps,
        plan.steps_per_epoch,
        start.step,
    )
    plateau = plateau_of(settings, ctx)
    position, metrics, evaluated_at = start, {}, start.step
    for planned in plan.steps(
        from_epoch=start.epoch, from_step_in_epoch=start.step_in_epoch, done=start.step
    ):
        loss = _optimizer_step(session, planned.micro_batches)
        if planned.step == start.step + 1 and (peak := measured_peak_bytes(session.device)):
            ctx.reserve_device_memory(peak)  # the measured first step corrects the estimate
        position = Position(planned.step, planned.epoch, planned.step_in_epoch)
        if not math.isfinite(loss):
            ctx.log.warning("training diverged at step %d (loss %s); stopping", position.step, loss)
            break
        if _evaluates_after(planned, settings, plan.total_steps):
            metrics = _evaluate(session)
            save_checkpoint(
                session.checkpoint_dir,
                model=session.model,
                optimizer=session.optimizer,
                scheduler=session.scheduler,
                position=position,
                fingerprint=fingerprint,
            )
            _report(session, position.step, metrics)
            evaluated_at = position.step
            if plateau is not None and plateau.reached(metrics):
                ctx.log.info(
                    "no better %s in %d evaluations: stopping at step %d of %d",
                    " or ".join(plateau.watched),
                    plateau.patience,
                    position.step,
                    plan.total_steps,
                )
                break
    if evaluated_at != position.step or not metrics:
        # The last evaluation: no checkpoint, the final model is saved right after.
        metrics = _evaluate(session)
        _report(session, position.step, metrics, final=True)
    _save_final(session)
    ctx.log.info("trained to step %d in %.1f s", position.step, time.monotonic() - session.started)
    return {**metrics, "params_m": trainable_parameters_m(session.model)}


def plateau_of(settings: TrainSettings, ctx: TrialContext) -> Plateau | None:
    """The trial's early stopping, if on: its objective, direction and patience.

    Off for several objectives (no single value to watch). A resumed trial
    counts its patience from the evaluations after the resume.
    """
    if settings.patience is None or len(ctx.objective_metrics) != 1:
        return None
    maximize = ctx.trial.study.direction == optuna.study.StudyDirection.MAXIMIZE
    return Plateau.of_objective(
        ctx.objective_metrics[0], maximize, settings.patience, settings.min_delta
    )


def _open_session(job: TrainingJob, settings: TrainSettings, ctx: TrialContext) -> _Session:
    device = torch.device(settings.device)
    configure_device(device)
    # On a packed device this waits until the trial fits (workers/packing.py).
    seq_len = max(job.train_lengths, default=1)
    ctx.reserve_device_memory(estimate_training_bytes(job.model, settings, seq_len))
    reset_peak_memory(device)
    model = job.model.to(device)
    optimizer = build_optimizer(model, settings)
    total_steps = StepPlan(job.train_lengths, settings).total_steps
    return _Session(
        job=job,
        settings=settings,
        ctx=ctx,
        device=device,
        model=model,
        forward=compiled(model, enabled=settings.compile, device=device),
        optimizer=optimizer,
        scheduler=build_scheduler(optimizer, settings, total_steps),
        penalised=decayed_parameters(model)[0],
    )


def _optimizer_step(session: _Session, micro_batches: list[list[int]]) -> float:
    """Forward/backward each micro-batch, clip, step; return the mean loss."""
    settings, device = session.settings, session.device
    session.model.train()
    total = torch.zeros((), device=device)
    for indices in micro_batches:
        session.ctx.count_examples(len(indices))
        batch = {
            k: v.to(device, non_blocking=True) for k, v in session.job.collate(indices).items()
        }
        with autocast_for(device):
            loss = session.job.compute_loss(session.forward, batch)
        if settings.l1_penalty > 0:
            loss = loss + settings.l1_penalty * l1_norm(session.penalised)
        # Accumulated gradients must average, not sum, over the micro-batches.
        torch.autograd.backward(loss / len(micro_batches))
        total += loss.detach().float()
    if settings.max_grad_norm > 0:
        torch.nn.utils.clip_grad_norm_(session.model.parameters(), settings.max_grad_norm)
    session.optimizer.step()
    session.scheduler.step()
    session.optimizer.zero_grad(set_to_none=True)
    mean = float(total) / len(micro_batches)
    session.loss_sum += mean
    session.loss_count += 1
    return mean


def _evaluates_after(planned: PlannedStep, settings: TrainSettings, total_steps: int) -> bool:
    if planned.step >= total_steps:
        return False  # the final evaluation follows the loop
    if settings.eval_every_steps is not None:
        return planned.step % settings.eval_every_steps == 0
    return planned.ends_epoch


def _evaluate(session: _Session) -> dict[str, float]:
    session.model.eval()
    with torch.no_grad(), autocast_for(session.device):
        metrics = dict(session.job.evaluate(session.forward))
    if session.loss_count:
        # Mean training loss since the previous evaluation: the other half of the curve.
        metrics["train_loss"] = session.loss_sum / session.loss_count
        session.loss_sum, session.loss_count = 0.0, 0
    return metrics


def _report(
    session: _Session, optimizer_step: int, metrics: dict[str, float], *, final: bool = False
) -> None:
    step = session.settings.reported_step(optimizer_step)
    session.ctx.report(step, metrics, final=final)
    if session.ctx.should_prune():
        # Unless the pruner may continue it later, a pruned trial is never
        # resumed: its checkpoint is dead weight.
        if not session.ctx.keep_checkpoint_when_pruned:
            remove_checkpoint(session.checkpoint_dir)
        shown = ", ".join(f"{k}={v:.4g}" for k, v in sorted(metrics.items()))
        raise optuna.TrialPruned(f"pruned at step {step} ({shown})")


def _save_final(session: _Session) -> None:
    session.ctx.check_before_save()
    target = session.ctx.work_dir / MODEL_DIR

    def write(folder: Path) -> None:
        session.job.model.save_pretrained(folder)
        session.job.tokenizer.save_pretrained(folder)

    replace_directory(target, write)
    session.ctx.set_model_dir(target)
    remove_checkpoint(session.checkpoint_dir)
