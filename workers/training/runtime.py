"""Device set-up: seeding, TF32, bf16 autocast, ``torch.compile``, memory errors."""

from __future__ import annotations

import contextlib
import logging
import random
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

logger = logging.getLogger(__name__)

# ``torch.cuda.OutOfMemoryError`` is an alias of the former on recent torch;
# both are listed so older releases are covered too.
OOM_ERRORS: tuple[type[BaseException], ...] = (torch.OutOfMemoryError, torch.cuda.OutOfMemoryError)


def seed_everything(seed: int) -> None:
    """Seed Python, NumPy and torch (all devices): weights, dropout, masking."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def configure_device(device: torch.device) -> None:
    """Let CUDA matmuls use TF32 (a large speed-up on Ampere+ for fp32 parts)."""
    if device.type == "cuda":
        torch.set_float32_matmul_precision("high")
        torch.backends.cudnn.allow_tf32 = True


def autocast_for(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast on CUDA; nothing elsewhere (CPU bf16 is slower on most CPUs)."""
    if device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def compiled(model: nn.Module, *, enabled: bool, device: torch.device) -> Callable[..., Any]:
    """``torch.compile(model)`` when asked for on CUDA, else the model itself.

    The compiled wrapper shares the parameters; checkpoints and the final
    model are saved from the original module.
    """
    if not enabled:
        return model
    if device.type != "cuda":
        logger.warning("compile: true is ignored on %s (it only pays off on CUDA)", device)
        return model
    return torch.compile(model)


def release_device_memory() -> None:
    """Return cached CUDA blocks so that the next trial starts with a clean device."""
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def peak_memory_bytes(device: torch.device) -> int | None:
    """Peak CUDA memory allocated since start-up, None on other devices."""
    if device.type == "cuda":
        return int(torch.cuda.max_memory_allocated(device))
    return None
