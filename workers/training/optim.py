"""Optimizer, learning-rate schedule and weight penalties."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR

from workers.errors import TaskError
from workers.training.settings import TrainSettings


def decayed_parameters(model: nn.Module) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
    """Trainable parameters split into (decayed, not decayed).

    Biases and LayerNorm scales are 1-D; decaying them only pulls the
    normalisation towards zero without regularising anything, so every
    parameter with fewer than two dimensions is left alone (embedding and
    projection matrices are decayed).
    """
    decayed: list[nn.Parameter] = []
    plain: list[nn.Parameter] = []
    for parameter in model.parameters():
        if parameter.requires_grad:
            (decayed if parameter.dim() >= 2 else plain).append(parameter)
    return decayed, plain


def build_optimizer(model: nn.Module, settings: TrainSettings) -> torch.optim.Optimizer:
    """The optimizer of ``settings`` for ``model``, weights decayed but not biases and norms.

    AdamW decays weights decoupled from the gradient. SGD applies
    ``weight_decay`` through the gradient (torch's L2 form), which for plain
    SGD is the same up to the learning-rate scale.
    """
    decayed, plain = decayed_parameters(model)
    groups = [
        {"params": decayed, "weight_decay": settings.weight_decay},
        {"params": plain, "weight_decay": 0.0},
    ]
    return make_optimizer(
        settings.optimizer,
        groups,
        learning_rate=settings.learning_rate,
        momentum=settings.momentum,
        fused=settings.device.startswith("cuda"),
    )


def make_optimizer(
    name: str,
    groups: list[dict[str, Any]],
    *,
    learning_rate: float,
    momentum: float,
    fused: bool = False,
) -> torch.optim.Optimizer:
    """``adamw``, ``adam`` or ``sgd`` (with ``momentum``) over parameter groups.

    Each group carries its own ``weight_decay``. ``fused`` picks the fused
    CUDA kernels of the Adam family.

    Raises:
        TaskError: an unknown optimizer name.
    """
    if name == "sgd":
        return torch.optim.SGD(groups, lr=learning_rate, momentum=momentum)
    if name in ("adamw", "adam"):
        family = torch.optim.AdamW if name == "adamw" else torch.optim.Adam
        return family(groups, lr=learning_rate, betas=(0.9, 0.999), eps=1e-8, fused=fused)
    raise TaskError(f"unknown optimizer {name!r}")


def lr_factor(step: int, *, total_steps: int, warmup_steps: int, schedule: str) -> float:
    """Multiplier of the peak learning rate for optimizer step ``step`` (from 0).

    Linear warm-up over ``warmup_steps`` (the first step already moves), then
    linear or cosine decay towards zero at ``total_steps``, or constant.
    """
    if step < warmup_steps:
        return (step + 1) / (warmup_steps + 1)
    if schedule == "constant":
        return 1.0
    progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
    if schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * progress))
    return 1.0 - progress


def build_scheduler(
    optimizer: torch.optim.Optimizer, settings: TrainSettings, total_steps: int
) -> LambdaLR:
    """The schedule of :func:`lr_factor`, stepped once per optimizer step."""
    warmup_steps = round(settings.warmup_ratio * total_steps)

    def factor(step: int) -> float:
        return lr_factor(
            step, total_steps=total_steps, warmup_steps=warmup_steps, schedule=settings.lr_schedule
        )

    return LambdaLR(optimizer, factor)


def l1_norm(parameters: list[nn.Parameter]) -> torch.Tensor:
    """Sum of absolute values, the L1 penalty before its coefficient."""
    return torch.stack([p.abs().sum() for p in parameters]).sum()
