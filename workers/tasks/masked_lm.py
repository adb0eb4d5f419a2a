"""``masked-lm``: BERT masked-language-model pretraining.

``mlm_probability`` of the tokens (special tokens and padding never) are
chosen; of those 80% become ``[MASK]``, 10% a random token and 10% stay,
and the model predicts the original. Training masks are drawn afresh every
batch (from torch's RNG, which checkpoints capture). Validation masks are
drawn once with a fixed generator, so every evaluation scores the same
positions and the perplexity curve reflects the model, not the dice.
"""

from __future__ import annotations

import torch
from transformers import AutoModelForMaskedLM

from storage.tasks.text import MaskedLmConfig
from workers.context import TrialContext
from workers.data import TextData, encode_texts, load_text_data
from workers.tasks.transformer_setup import build_task_model, start_task
from workers.training import (
    Batch,
    TextModel,
    TrainingJob,
    TrainSettings,
    pad_sequences,
    sorted_batches,
    train,
)
from workers.training.loop import Forward
from workers.training.metrics import perplexity

IGNORE_INDEX = -100  # positions the loss skips (transformers' convention)
VALIDATION_MASK_SEED = 1234


def run(ctx: TrialContext) -> dict[str, float]:
    """Pretrain a masked LM on the configured corpus; return ``val_loss``,
    ``val_perplexity`` and ``params_m`` (with ``objective: mlm+nsp`` see
    :mod:`workers.tasks.pretraining`).

    Raises:
        DatasetError: the corpus cannot be used (before any training).
        ModelLoadError: a pretrained checkpoint cannot be loaded.
        OutOfMemory: the device ran out of memory.
        optuna.TrialPruned: the pruner stopped the trial.
    """
    config, settings = start_task(ctx, MaskedLmConfig)
    if config.objective == "mlm+nsp":
        from workers.tasks.pretraining import run_pretraining

        return run_pretraining(ctx, config, settings)
    data = load_text_data(config.dataset, ctx.dataset_roots, with_labels=False)
    built = build_task_model(
        ctx,
        config,
        AutoModelForMaskedLM,
        corpus=data.train_texts,
        fingerprint=data.fingerprint,
        sizes=(len(data.train_texts), len(data.validation_texts)),
    )
    job = _job(built, data, ctx, settings, probability=config.mlm_probability)
    return train(job, settings, ctx)


def mask_tokens(
    input_ids: torch.Tensor,
    attention_mask: torch.Tensor,
    *,
    special_ids: list[int],
    probability: float,
    mask_id: int,
    vocab_size: int,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Masked inputs and labels (``IGNORE_INDEX`` where nothing is predicted).

    At least one position of the batch is always chosen, so the loss is
    defined even for a batch of very short texts.
    """
    maskable = (attention_mask == 1) & ~torch.isin(input_ids, torch.tensor(special_ids))
    chance = torch.full(input_ids.shape, probability) * maskable
    chosen = torch.bernoulli(chance, generator=generator).bool()
    if not chosen.any() and maskable.any():
        chosen.view(-1)[int(maskable.view(-1).nonzero()[0])] = True
    labels = torch.where(chosen, input_ids, IGNORE_INDEX)
    inputs = input_ids.clone()
    to_mask = torch.bernoulli(torch.full(input_ids.shape, 0.8), generator=generator).bool()
    inputs[chosen & to_mask] = mask_id
    # Half of the rest (10% overall) gets a random token; the last 10% stays as it is.
    to_random = torch.bernoulli(torch.full(input_ids.shape, 0.5), generator=generator).bool()
    random_ids = torch.randint(vocab_size, input_ids.shape, generator=generator)
    replace = chosen & ~to_mask & to_random
    inputs[replace] = random_ids[replace]
    return inputs, labels


def _job(
    built: TextModel,
    data: TextData,
    ctx: TrialContext,
    settings: TrainSettings,
    *,
    probability: float,
) -> TrainingJob:
    tokenizer, max_length = built.tokenizer, built.max_length
    train_ids = encode_texts(tokenizer, data.train_texts, max_length=max_length)
    validation_ids = encode_texts(tokenizer, data.validation_texts, max_length=max_length)
    pad_id = int(getattr(tokenizer, "pad_token_id", 0) or 0)
    multiple = 8 if ctx.device.startswith("cuda") else 1
    special_ids = sorted(set(getattr(tokenizer, "all_special_ids", [])) | {pad_id})
    mask_id = int(getattr(tokenizer, "mask_token_id", 0))
    vocab_size = int(built.model.config.vocab_size)

    def masked(sequences: list[list[int]], generator: torch.Generator | None) -> Batch:
        input_ids, attention_mask = pad_sequences(sequences, pad_id=pad_id, multiple_of=multiple)
        inputs, labels = mask_tokens(
            input_ids,
            attention_mask,
            special_ids=special_ids,
            probability=probability,
            mask_id=mask_id,
            vocab_size=vocab_size,
            generator=generator,
        )
        return {"input_ids": inputs, "attention_mask": attention_mask, "labels": labels}

    generator = torch.Generator().manual_seed(VALIDATION_MASK_SEED)
    lengths = [len(ids) for ids in validation_ids]
    validation = [
        masked([validation_ids[i] for i in rows], generator)
        for rows in sorted_batches(lengths, 2 * settings.batch_size)
    ]

    def compute_loss(forward: Forward, batch: Batch) -> torch.Tensor:
        loss: torch.Tensor = forward(**batch).loss
        return loss

    def evaluate(forward: Forward) -> dict[str, float]:
        return _evaluate(forward, validation, torch.device(ctx.device))

    return TrainingJob(
        model=built.model,
        tokenizer=tokenizer,
        train_lengths=[len(ids) for ids in train_ids],
        collate=lambda rows: masked([train_ids[i] for i in rows], None),
        compute_loss=compute_loss,
        evaluate=evaluate,
    )


def _evaluate(forward: Forward, batches: list[Batch], device: torch.device) -> dict[str, float]:
    loss_sum, predicted = 0.0, 0
    for batch in batches:
        on_device = {k: v.to(device) for k, v in batch.items()}
        count = int((batch["labels"] != IGNORE_INDEX).sum())
        # transformers averages over the predicted positions; weight by their count.
        loss_sum += float(forward(**on_device).loss.float()) * count
        predicted += count
    mean = loss_sum / max(1, predicted)
    return {"val_loss": mean, "val_perplexity": perplexity(mean)}
