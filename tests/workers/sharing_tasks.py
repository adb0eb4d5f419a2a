"""Custom tasks (``python:tests.workers.sharing_tasks:<name>``) for the host-sharing tests."""

from __future__ import annotations

import time
from collections.abc import Mapping

import torch

from workers.context import TrialContext


def cpu_threads(ctx: TrialContext) -> Mapping[str, float]:
    """The thread count this trial's torch got, after a little real work."""
    x = torch.randn(256, 256)
    deadline = time.monotonic() + float(ctx.config.get("seconds", 1.0))
    while time.monotonic() < deadline:
        x = torch.tanh(x @ x.T / 256)
    return {"threads": float(torch.get_num_threads())}
