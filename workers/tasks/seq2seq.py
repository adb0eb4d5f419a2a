"""``seq2seq``: an encoder-decoder Transformer for translation or summarization.

Scratch models are BARTs (self-attention in the encoder and the decoder,
cross-attention from the decoder to the encoder) built from the trial's
hyperparameters, with one lossless byte-level BPE vocabulary trained on both
sides of the pairs; pretrained ones are any local (or hub) encoder-decoder checkpoint.
Training minimizes the token cross-entropy (with ``label_smoothing``) under
teacher forcing; ``augment_*`` noise touches the training sources only.

Each evaluation reports ``val_loss`` (plain token cross-entropy, so trials
with different smoothing compare), then generates for every validation
source (greedy, or beam search with ``num_beams``) and reports sacrebleu's
corpus ``val_bleu`` and ``val_chrf`` and ``val_exact_match``.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from transformers import AutoModelForSeq2SeqLM

from storage.tasks.seq2seq import Seq2SeqConfig
from workers.context import TrialContext
from workers.data import encode_texts
from workers.data.pairs import PairData, load_pair_data
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
from workers.training.metrics import generation_scores
from workers.training.models import scratch_bart_config

IGNORE_INDEX = -100  # label positions the loss skips (transformers' convention)


def run(ctx: TrialContext) -> dict[str, float]:
    """Train on the configured pairs; return ``val_loss``, ``val_bleu``,
    ``val_chrf``, ``val_exact_match`` and ``params_m``.

    Raises:
        DatasetError: the pairs cannot be used (before any training).
        ModelLoadError: a pretrained checkpoint cannot be loaded.
        OutOfMemory: the device ran out of memory.
        optuna.TrialPruned: the pruner stopped the trial.
    """
    config, settings = start_task(ctx, Seq2SeqConfig)
    data = load_pair_data(config.dataset, ctx.dataset_roots)
    built = build_task_model(
        ctx,
        config,
        AutoModelForSeq2SeqLM,
        corpus=data.tokenizer_corpus,
        fingerprint=data.fingerprint,
        sizes=(len(data.train_sources), len(data.validation_sources)),
        scratch_config=functools.partial(
            scratch_bart_config, max_positions=config.max_target_len + 2
        ),
    )
    pairs = _encode(built, data, config.max_target_len)
    job = _job(built, pairs, ctx, settings, config)
    return train(job, settings, ctx)


@dataclass(frozen=True)
class _Pairs:
    train_sources: list[list[int]]
    train_labels: list[list[int]]
    validation_sources: list[list[int]]
    validation_labels: list[list[int]]
    validation_references: list[str]


def encode_targets(
    tokenizer: Any, model: Any, texts: Sequence[str], max_length: int
) -> list[list[int]]:
    """Label ids of each target, as the model's decoder must produce them.

    The decoder is fed the labels shifted right behind its start token; a
    tokenizer that already opens each text with that token (the scratch
    ``[CLS]``) would make it appear twice, so it is dropped from the labels.
    """
    encoded = tokenizer(
        text_target=list(texts),
        truncation=True,
        max_length=max_length + 1,
        return_attention_mask=False,
    )["input_ids"]
    start = getattr(model.config, "decoder_start_token_id", None)
    labels = [list(ids[1:]) if ids and ids[0] == start else list(ids) for ids in encoded]
    # Cut to max_length keeping the closing token: generation must learn to stop.
    return [ids if len(ids) <= max_length else [*ids[: max_length - 1], ids[-1]] for ids in labels]


def _encode(built: TextModel, data: PairData, max_target_len: int) -> _Pairs:
    tokenizer, model = built.tokenizer, built.model

    def sources(texts: list[str]) -> list[list[int]]:
        return encode_texts(tokenizer, texts, max_length=built.max_length)

    return _Pairs(
        sources(data.train_sources),
        encode_targets(tokenizer, model, data.train_targets, max_target_len),
        sources(data.validation_sources),
        encode_targets(tokenizer, model, data.validation_targets, max_target_len),
        data.validation_targets,
    )


def _job(
    built: TextModel,
    pairs: _Pairs,
    ctx: TrialContext,
    settings: TrainSettings,
    config: Seq2SeqConfig,
) -> TrainingJob:
    tokenizer, model = built.tokenizer, built.model
    pad_id = int(getattr(tokenizer, "pad_token_id", 0) or 0)
    multiple = 8 if ctx.device.startswith("cuda") else 1
    smoothing = float(ctx.params.get("label_smoothing", 0.0))
    augment = augmenter(ctx.params, tokenizer)

    def collate(indices: list[int]) -> Batch:
        sources = [augment(pairs.train_sources[i]) for i in indices]
        return _batch(sources, [pairs.train_labels[i] for i in indices], pad_id, multiple)

    validation = [
        (
            rows,
            _batch(
                [pairs.validation_sources[i] for i in rows],
                [pairs.validation_labels[i] for i in rows],
                pad_id,
                multiple,
            ),
        )
        for rows in sorted_batches(
            [len(ids) for ids in pairs.validation_sources], 2 * settings.batch_size
        )
    ]
    generation = _Generation(
        model=model,
        tokenizer=tokenizer,
        num_beams=int(ctx.params.get("num_beams", 1)),
        max_new_tokens=config.max_target_len,
    )

    def compute_loss(forward: Forward, batch: Batch) -> torch.Tensor:
        return token_loss(forward, model, batch, smoothing=smoothing)

    def evaluate(forward: Forward) -> dict[str, float]:
        device = torch.device(ctx.device)
        loss = _validation_loss(forward, model, [b for _, b in validation], device)
        predictions = generation.predict(validation, device, len(pairs.validation_references))
        return {"val_loss": loss, **generation.scores(predictions, pairs.validation_references)}

    return TrainingJob(
        model=model,
        tokenizer=tokenizer,
        train_lengths=[
            len(s) + len(t) for s, t in zip(pairs.train_sources, pairs.train_labels, strict=True)
        ],
        collate=collate,
        compute_loss=compute_loss,
        evaluate=evaluate,
    )


def token_loss(
    forward: Forward, model: Any, batch: Batch, *, smoothing: float = 0.0, reduction: str = "mean"
) -> torch.Tensor:
    """Teacher-forced cross-entropy of the labels (``IGNORE_INDEX`` skipped)."""
    labels = batch["labels"]
    decoder_input_ids = model.prepare_decoder_input_ids_from_labels(labels=labels)
    logits = forward(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        decoder_input_ids=decoder_input_ids,
    ).logits.float()
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]),
        labels.reshape(-1),
        ignore_index=IGNORE_INDEX,
        label_smoothing=smoothing,
        reduction=reduction,
    )


def _batch(
    sources: Sequence[Sequence[int]], labels: Sequence[Sequence[int]], pad_id: int, multiple: int
) -> Batch:
    input_ids, attention_mask = pad_sequences(sources, pad_id=pad_id, multiple_of=multiple)
    padded_labels, label_mask = pad_sequences(labels, pad_id=pad_id, multiple_of=multiple)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "labels": padded_labels.masked_fill(label_mask == 0, IGNORE_INDEX),
    }


def _validation_loss(
    forward: Forward, model: Any, batches: list[Batch], device: torch.device
) -> float:
    loss_sum, tokens = 0.0, 0
    for batch in batches:
        on_device = {k: v.to(device) for k, v in batch.items()}
        loss_sum += float(token_loss(forward, model, on_device, reduction="sum"))
        tokens += int((batch["labels"] != IGNORE_INDEX).sum())
    return loss_sum / max(1, tokens)


@dataclass(frozen=True)
class _Generation:
    """Generates for the validation sources and scores the texts."""

    model: Any
    tokenizer: Any
    num_beams: int
    max_new_tokens: int

    def predict(
        self, batches: list[tuple[list[int], Batch]], device: torch.device, count: int
    ) -> list[str]:
        texts = [""] * count
        for rows, batch in batches:
            generated = self.model.generate(
                input_ids=batch["input_ids"].to(device),
                attention_mask=batch["attention_mask"].to(device),
                num_beams=self.num_beams,
                max_new_tokens=self.max_new_tokens,
                do_sample=False,
            )
            decoded = self.tokenizer.batch_decode(generated, skip_special_tokens=True)
            for row, text in zip(rows, decoded, strict=True):
                texts[row] = text.strip()
        return texts

    def scores(self, predictions: list[str], references: list[str]) -> dict[str, float]:
        return generation_scores(predictions, references)
