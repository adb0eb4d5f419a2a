"""masked-lm: masking rules, comparable validation, perplexity that falls."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForMaskedLM

from workers.context import TrialContext
from workers.tasks.masked_lm import IGNORE_INDEX, mask_tokens, run
from workers.training import MODEL_DIR

ContextFactory = Callable[..., TrialContext]
ConfigFactory = Callable[..., dict[str, Any]]
CLS, SEP, PAD, MASK = 2, 3, 0, 4


def _record(ctx: TrialContext) -> list[tuple[int, dict[str, float]]]:
    reports: list[tuple[int, dict[str, float]]] = []
    ctx.report_hooks.append(lambda step, metrics: reports.append((step, dict(metrics))))
    return reports


def _batch(rows: int = 400, width: int = 50) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(0)
    input_ids = torch.randint(10, 100, (rows, width), generator=generator)
    attention_mask = torch.ones_like(input_ids)
    input_ids[:, 0], input_ids[:, -1] = CLS, SEP
    input_ids[::2, 40:] = PAD  # every other row is padded
    attention_mask[::2, 40:] = 0
    return input_ids, attention_mask


def test_masking_follows_the_80_10_10_rule_and_spares_special_tokens() -> None:
    input_ids, attention_mask = _batch()
    inputs, labels = mask_tokens(
        input_ids,
        attention_mask,
        special_ids=[PAD, CLS, SEP, MASK],
        probability=0.15,
        mask_id=MASK,
        vocab_size=100,
        generator=torch.Generator().manual_seed(1),
    )
    chosen = labels != IGNORE_INDEX
    maskable = (attention_mask == 1) & (input_ids >= 10)
    assert not (chosen & ~maskable).any()
    assert abs(chosen.sum() / maskable.sum() - 0.15) < 0.01
    assert torch.equal(labels[chosen], input_ids[chosen])
    assert torch.equal(inputs[~chosen], input_ids[~chosen])
    n = int(chosen.sum())
    masked = int((inputs[chosen] == MASK).sum())
    kept = int((inputs[chosen] == input_ids[chosen]).sum())
    assert abs(masked / n - 0.8) < 0.03
    # "kept" also counts random draws that hit the same token (1 in 100 here).
    assert abs(kept / n - 0.1) < 0.03
    assert abs((n - masked - kept) / n - 0.1) < 0.03


def test_masking_is_reproducible_with_a_generator_and_never_empty() -> None:
    input_ids, attention_mask = _batch()

    def draw(seed: int) -> torch.Tensor:
        return mask_tokens(
            input_ids,
            attention_mask,
            special_ids=[PAD, CLS, SEP],
            probability=0.15,
            mask_id=MASK,
            vocab_size=100,
            generator=torch.Generator().manual_seed(seed),
        )[1]

    assert torch.equal(draw(7), draw(7)) and not torch.equal(draw(7), draw(8))
    tiny = torch.tensor([[CLS, 50, SEP]])
    _, labels = mask_tokens(
        tiny,
        torch.ones_like(tiny),
        special_ids=[PAD, CLS, SEP],
        probability=1e-9,
        mask_id=MASK,
        vocab_size=100,
    )
    assert labels.tolist() == [[IGNORE_INDEX, 50, IGNORE_INDEX]]


def test_validation_perplexity_falls(
    make_context: ContextFactory, builtin_config: ConfigFactory, tiny_params: dict[str, Any]
) -> None:
    config = builtin_config(n_train=3000, n_validation=200, max_steps=200, eval_every_steps=50)
    ctx = make_context(
        "masked-lm",
        config=config,
        params={**tiny_params, "learning_rate": 2e-3},
        objective="val_perplexity",
    )
    reports = _record(ctx)
    metrics = run(ctx)
    perplexities = [m["val_perplexity"] for _, m in reports]
    assert [step for step, _ in reports] == [50, 100, 150, 200]
    assert perplexities[-1] < 0.8 * perplexities[0], perplexities
    assert metrics["val_perplexity"] == math.exp(metrics["val_loss"])
    assert set(metrics) >= {"val_loss", "val_perplexity", "params_m"}
    model = AutoModelForMaskedLM.from_pretrained(ctx.work_dir / MODEL_DIR)
    assert model.config.num_hidden_layers == 2


def test_validation_masks_are_fixed_across_evaluations(
    make_context: ContextFactory, builtin_config: ConfigFactory, tiny_params: dict[str, Any]
) -> None:
    # A learning rate this small leaves the weights as they are: only the masks could vary.
    config = builtin_config(n_train=200, n_validation=100, max_steps=6, eval_every_steps=2)
    ctx = make_context(
        "masked-lm",
        config=config,
        params={**tiny_params, "learning_rate": 1e-12, "batch_size": 8},
        objective="val_perplexity",
    )
    reports = _record(ctx)
    run(ctx)
    losses = [m["val_loss"] for _, m in reports]
    assert len(losses) == 3 and max(losses) - min(losses) < 1e-5, losses


def test_plain_text_corpus(
    make_context: ContextFactory, tiny_params: dict[str, Any], tmp_path: Path
) -> None:
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(
        "\n".join(f"line {i} of a small corpus about cats and dogs" for i in range(100))
    )
    config = {
        "dataset": {"source": "text", "path": str(corpus)},
        "model": {"source": "scratch", "vocab_size": 300},
        "max_steps": 3,
    }
    ctx = make_context("masked-lm", config=config, params=tiny_params, objective="val_perplexity")
    metrics = run(ctx)
    assert math.isfinite(metrics["val_perplexity"])
    assert ctx.info["n_train"] == 90 and "dataset_fingerprint" in ctx.info
