"""Objectives for benchmarks (``python:benchmarks.objectives:<name>``)."""

from __future__ import annotations

from collections.abc import Mapping

from workers.context import TrialContext


def null(ctx: TrialContext) -> Mapping[str, float]:
    """No work at all: what is left is the cost of dispatching a trial."""
    return {"loss": float(ctx.params["x"]) ** 2}
