"""Token-level augmentation: rates, special tokens, reproducibility, training batches only."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from typing import Any

import pytest
import torch

from workers.context import TrialContext
from workers.tasks.text_classification import run
from workers.training.augmentation import Augmentation

CLS, SEP, MASK = 2, 3, 4
SPECIAL = {0, CLS, SEP, MASK}
SEQUENCE = [CLS, *range(10, 50), SEP]


def _apply(augmentation: Augmentation, rounds: int = 300) -> list[list[int]]:
    torch.manual_seed(0)
    return [augmentation.apply(SEQUENCE, protected=SPECIAL, mask_id=MASK) for _ in range(rounds)]


def test_all_zero_leaves_inputs_alone() -> None:
    state = torch.get_rng_state()
    assert Augmentation().apply(SEQUENCE, protected=SPECIAL, mask_id=MASK) == SEQUENCE
    assert torch.equal(state, torch.get_rng_state())  # no draw: unaugmented runs are unchanged
    assert not Augmentation.from_params({"augment_swap": 0.0}).active


def test_deletion_rate_and_framing() -> None:
    outputs = _apply(Augmentation(deletion=0.2))
    kept = sum(len(o) - 2 for o in outputs) / (len(outputs) * 40)
    assert abs(kept - 0.8) < 0.02
    assert all(o[0] == CLS and o[-1] == SEP and len(o) >= 3 for o in outputs)
    # Everything deleted would leave no text: one token always survives.
    survivors = _apply(Augmentation(deletion=1.0), rounds=5)
    assert all(len(o) == 3 for o in survivors)


def test_swap_moves_neighbours_and_keeps_every_token() -> None:
    outputs = _apply(Augmentation(swap=0.2))
    assert all(Counter(o) == Counter(SEQUENCE) and o[0] == CLS and o[-1] == SEP for o in outputs)
    moved = sum(a != b for o in outputs for a, b in zip(o, SEQUENCE, strict=True))
    share = moved / (len(outputs) * 40)
    # Each swap moves two tokens; a swapped pair is not drawn again.
    assert 0.25 < share < 0.4
    assert all(abs(o.index(t) - SEQUENCE.index(t)) <= 1 for o in outputs for t in o)


def test_masking_rate_and_reproducibility() -> None:
    outputs = _apply(Augmentation(mask=0.3))
    masked = sum(t == MASK for o in outputs for t in o) / (len(outputs) * 40)
    assert abs(masked - 0.3) < 0.02
    assert all(o[0] == CLS and o[-1] == SEP for o in outputs)
    assert outputs == _apply(Augmentation(mask=0.3))
    no_mask_token = Augmentation(mask=1.0).apply(SEQUENCE, protected=SPECIAL, mask_id=None)
    assert no_mask_token == SEQUENCE


def test_classification_augments_training_batches_only(
    make_context: Callable[..., TrialContext],
    builtin_config: Callable[..., dict[str, Any]],
    tiny_params: dict[str, Any],
) -> None:
    # A learning rate this small leaves the weights as they are: validation must not
    # move. An untrained head is nearly uniform, so training losses differ only a
    # little, but CPU runs are bitwise repeatable: any difference is the noise.
    config = builtin_config(n_train=64, n_validation=40, max_steps=2)
    params = {**tiny_params, "learning_rate": 1e-12}
    plain = [run(make_context(config=config, params=params)) for _ in range(2)]
    assert plain[0]["train_loss"] == plain[1]["train_loss"]
    for knob in ("augment_deletion", "augment_swap", "augment_mask"):
        noisy = run(make_context(config=config, params={**params, knob: 0.5}))
        assert noisy["val_loss"] == pytest.approx(plain[0]["val_loss"], rel=1e-6), knob
        assert noisy["train_loss"] != plain[0]["train_loss"], knob
