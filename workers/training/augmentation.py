"""Token-level augmentation of training inputs: random deletion, swap and masking.

Applied to training batches only, never to validation. The draws come from
torch's global generator, which checkpoints capture, so a resumed run sees
the same noise as an uninterrupted one. Special tokens ([CLS], [SEP],
padding) are never touched.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch


@dataclass(frozen=True)
class Augmentation:
    """Per-token probabilities; all zero (the default) leaves inputs as they are."""

    deletion: float = 0.0
    swap: float = 0.0
    mask: float = 0.0

    @classmethod
    def from_params(cls, params: Mapping[str, Any]) -> Augmentation:
        return cls(
            deletion=float(params.get("augment_deletion", 0.0)),
            swap=float(params.get("augment_swap", 0.0)),
            mask=float(params.get("augment_mask", 0.0)),
        )

    @property
    def active(self) -> bool:
        return self.deletion > 0 or self.swap > 0 or self.mask > 0

    def apply(
        self, ids: Sequence[int], *, protected: Collection[int], mask_id: int | None
    ) -> list[int]:
        """A noisy copy of ``ids``: delete, then swap neighbours, then mask.

        At least one ordinary token survives deletion. Without a ``mask_id``
        (a tokenizer with neither a mask nor an unknown token) nothing is masked.
        """
        tokens = list(ids)
        if not self.active:
            return tokens
        draws = torch.rand(len(tokens), 3).tolist()
        ordinary = [i for i, token in enumerate(tokens) if token not in protected]
        if self.deletion > 0 and ordinary:
            dropped = {i for i in ordinary if draws[i][0] < self.deletion}
            if len(dropped) == len(ordinary):
                dropped.discard(ordinary[0])
            tokens = [t for i, t in enumerate(tokens) if i not in dropped]
            draws = [d for i, d in enumerate(draws) if i not in dropped]
        if self.swap > 0:
            _swap_neighbours(tokens, [d[1] for d in draws], self.swap, protected)
        if self.mask > 0 and mask_id is not None:
            tokens = [
                mask_id if t not in protected and d[2] < self.mask else t
                for t, d in zip(tokens, draws, strict=True)
            ]
        return tokens


def _swap_neighbours(
    tokens: list[int], draws: list[float], probability: float, protected: Collection[int]
) -> None:
    i = 0
    while i < len(tokens) - 1:
        if draws[i] < probability and tokens[i] not in protected and tokens[i + 1] not in protected:
            tokens[i], tokens[i + 1] = tokens[i + 1], tokens[i]
            i += 2  # a swapped token does not move again
        else:
            i += 1


def augmenter(params: Mapping[str, Any], tokenizer: Any) -> Callable[[Sequence[int]], list[int]]:
    """The trial's augmentation for one tokenizer's ids: its special tokens are spared."""
    augmentation = Augmentation.from_params(params)
    protected = {int(i) for i in getattr(tokenizer, "all_special_ids", [])}
    if getattr(tokenizer, "pad_token_id", None) is not None:
        protected.add(int(tokenizer.pad_token_id))
    mask_id = mask_token_of(tokenizer)
    return lambda ids: augmentation.apply(ids, protected=protected, mask_id=mask_id)


def mask_token_of(tokenizer: Any) -> int | None:
    """The id masking writes: the mask token, else the unknown token, else none."""
    for attribute in ("mask_token_id", "unk_token_id"):
        value = getattr(tokenizer, attribute, None)
        if value is not None:
            return int(value)
    return None
