"""Length-bucketed batches, dynamic padding and the plan of optimizer steps.

Padding every batch to the longest sequence of the whole set wastes most of
the compute on short texts. Sorting everything by length would make each
batch homogeneous but also make the batch order a curriculum. The middle
way: shuffle, cut into buckets of ~50 batches, sort within a bucket, cut
into batches, then shuffle the batches. Batches hold similar lengths and
their order carries no length signal.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch

from workers.training.settings import TrainSettings

BATCHES_PER_BUCKET = 50
Batch = dict[str, torch.Tensor]


def bucketed_batches(
    lengths: Sequence[int],
    batch_size: int,
    *,
    seed: int,
    batches_per_bucket: int = BATCHES_PER_BUCKET,
) -> list[list[int]]:
    """Example indices grouped into batches of similar length, in seeded order.

    The same ``lengths``, ``batch_size`` and ``seed`` give the same batches,
    which is what lets a resumed run skip exactly the batches it had done.
    """
    rng = random.Random(seed)
    order = list(range(len(lengths)))
    rng.shuffle(order)
    bucket = batch_size * batches_per_bucket
    batches: list[list[int]] = []
    for start in range(0, len(order), bucket):
        ranked = sorted(order[start : start + bucket], key=lambda i: lengths[i])
        batches.extend(ranked[i : i + batch_size] for i in range(0, len(ranked), batch_size))
    rng.shuffle(batches)
    return batches


def sorted_batches(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    """Batches in length order, for evaluation (no shuffling needed, least padding)."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[i : i + batch_size] for i in range(0, len(order), batch_size)]


def pad_sequences(
    sequences: Sequence[Sequence[int]], *, pad_id: int, multiple_of: int = 1
) -> tuple[torch.Tensor, torch.Tensor]:
    """``input_ids`` and ``attention_mask`` padded to the batch's longest sequence.

    ``multiple_of`` rounds the width up (8 suits tensor cores on CUDA).
    """
    width = max(len(s) for s in sequences)
    width = -(-width // multiple_of) * multiple_of
    input_ids = torch.full((len(sequences), width), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for row, sequence in enumerate(sequences):
        input_ids[row, : len(sequence)] = torch.as_tensor(sequence, dtype=torch.long)
        attention_mask[row, : len(sequence)] = 1
    return input_ids, attention_mask


@dataclass(frozen=True)
class PlannedStep:
    """One optimizer step: its micro-batches and where the run stands after it."""

    step: int
    epoch: int
    step_in_epoch: int
    micro_batches: list[list[int]]
    ends_epoch: bool


@dataclass(frozen=True)
class StepPlan:
    """Which micro-batches make up each optimizer step, epoch by epoch."""

    lengths: Sequence[int]
    settings: TrainSettings

    @property
    def steps_per_epoch(self) -> int:
        batches = -(-len(self.lengths) // self.settings.batch_size)
        return -(-batches // self.settings.grad_accum_steps)

    @property
    def total_steps(self) -> int:
        planned = self.steps_per_epoch * self.settings.max_epochs
        limit = self.settings.max_steps
        return planned if limit is None else min(planned, limit)

    def steps(
        self, *, from_epoch: int = 0, from_step_in_epoch: int = 0, done: int = 0
    ) -> Iterator[PlannedStep]:
        """The steps still to run after ``done`` steps (``from_*`` locate them)."""
        step = done
        for epoch in range(from_epoch, self.settings.max_epochs):
            groups = self.epoch_groups(epoch)
            first = from_step_in_epoch if epoch == from_epoch else 0
            for index in range(first, len(groups)):
                if step >= self.total_steps:
                    return
                step += 1
                yield PlannedStep(step, epoch, index + 1, groups[index], index + 1 == len(groups))

    def epoch_groups(self, epoch: int) -> list[list[list[int]]]:
        """Micro-batches of ``epoch`` grouped per optimizer step (last group may be short)."""
        # Each epoch's order follows from (seed, epoch) alone: nothing to checkpoint.
        batches = bucketed_batches(
            self.lengths, self.settings.batch_size, seed=self.settings.seed * 100_003 + epoch
        )
        size = self.settings.grad_accum_steps
        return [batches[i : i + size] for i in range(0, len(batches), size)]
