"""``text-classification``: a BERT sequence classifier, from scratch or fine-tuned.

``augment_*`` noise (deletion, swap, masking) touches training batches only.
Reports ``val_accuracy``, ``val_f1_macro`` and ``val_loss`` (plain
cross-entropy, without label smoothing, so that trials with different
smoothing compare) after each evaluation; returns them with ``params_m``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F  # noqa: N812
from transformers import AutoModelForSequenceClassification

from storage.tasks.text import TextClassificationConfig
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
from workers.training.augmentation import augmenter
from workers.training.loop import Forward
from workers.training.metrics import accuracy_and_macro_f1


def run(ctx: TrialContext) -> dict[str, float]:
    """Train a classifier on the configured dataset; return its final metrics.

    Raises:
        DatasetError: the dataset cannot be used (before any training).
        ModelLoadError: a pretrained checkpoint cannot be loaded.
        OutOfMemory: the device ran out of memory.
        optuna.TrialPruned: the pruner stopped the trial.
    """
    config, settings = start_task(ctx, TextClassificationConfig)
    data = load_text_data(config.dataset, ctx.dataset_roots, with_labels=True)
    names = data.label_names or []
    built = build_task_model(
        ctx,
        config,
        AutoModelForSequenceClassification,
        corpus=data.train_texts,
        fingerprint=data.fingerprint,
        sizes=(len(data.train_texts), len(data.validation_texts)),
        info={"num_labels": data.num_labels},
        num_labels=len(names),
        id2label=dict(enumerate(names)),
        label2id={name: i for i, name in enumerate(names)},
    )
    job = _job(built, data, ctx, settings)
    return train(job, settings, ctx)


def _job(
    built: TextModel, data: TextData, ctx: TrialContext, settings: TrainSettings
) -> TrainingJob:
    tokenizer, max_length = built.tokenizer, built.max_length
    train_ids = encode_texts(tokenizer, data.train_texts, max_length=max_length)
    validation_ids = encode_texts(tokenizer, data.validation_texts, max_length=max_length)
    train_labels = data.train_labels or []
    pad_id = int(getattr(tokenizer, "pad_token_id", 0) or 0)
    # Widths in multiples of 8 keep CUDA tensor cores busy; CPUs do not care.
    multiple = 8 if ctx.device.startswith("cuda") else 1
    smoothing = float(ctx.params.get("label_smoothing", 0.0))
    augment = augmenter(ctx.params, tokenizer)

    def collate(indices: list[int]) -> Batch:
        sequences = [augment(train_ids[i]) for i in indices]
        return _batch(sequences, [train_labels[i] for i in indices], pad_id, multiple)

    validation = _validation_batches(
        validation_ids, data.validation_labels or [], 2 * settings.batch_size, pad_id, multiple
    )

    def compute_loss(forward: Forward, batch: Batch) -> torch.Tensor:
        logits = forward(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]
        ).logits
        return F.cross_entropy(logits.float(), batch["labels"], label_smoothing=smoothing)

    def evaluate(forward: Forward) -> dict[str, float]:
        return _evaluate(forward, validation, torch.device(ctx.device))

    return TrainingJob(
        model=built.model,
        tokenizer=tokenizer,
        train_lengths=[len(ids) for ids in train_ids],
        collate=collate,
        compute_loss=compute_loss,
        evaluate=evaluate,
    )


def _batch(
    sequences: Sequence[Sequence[int]], labels: Sequence[int], pad_id: int, multiple: int
) -> Batch:
    input_ids, attention_mask = pad_sequences(sequences, pad_id=pad_id, multiple_of=multiple)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": torch.tensor(labels, dtype=torch.long),
    }


def _validation_batches(
    ids: list[list[int]], labels: list[int], batch_size: int, pad_id: int, multiple: int
) -> list[Batch]:
    lengths = [len(sequence) for sequence in ids]
    return [
        _batch([ids[i] for i in rows], [labels[i] for i in rows], pad_id, multiple)
        for rows in sorted_batches(lengths, batch_size)
    ]


def _evaluate(forward: Forward, batches: list[Batch], device: torch.device) -> dict[str, float]:
    loss_sum, predictions, targets = 0.0, [], []
    for batch in batches:
        labels = batch["labels"].to(device)
        logits = forward(
            input_ids=batch["input_ids"].to(device),
            attention_mask=batch["attention_mask"].to(device),
        ).logits.float()
        loss_sum += float(F.cross_entropy(logits, labels, reduction="sum"))
        predictions.append(logits.argmax(dim=-1).cpu())
        targets.append(labels.cpu())
    predicted, actual = torch.cat(predictions), torch.cat(targets)
    accuracy, f1_macro = accuracy_and_macro_f1(predicted, actual)
    return {
        "val_accuracy": accuracy,
        "val_f1_macro": f1_macro,
        "val_loss": loss_sum / max(1, actual.numel()),
    }
