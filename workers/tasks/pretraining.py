"""``masked-lm`` with ``objective: mlm+nsp``: BERT's pretraining, masked LM plus
next-sentence prediction, on ``BertForPreTraining``.

Each example is a sentence pair ``[CLS] A [SEP] B [SEP]`` (segment ids 0 and
1) whose B follows A in its document half the time and is a random sentence
of another document otherwise. Tokens are masked as in plain masked-lm. The
training pairs are drawn once from the trial's seed (a resumed run rebuilds
the same ones), the validation pairs and masks from fixed seeds.

Reports ``val_mlm_loss``, ``val_nsp_loss``, ``val_nsp_accuracy``,
``val_loss`` (their sum, the quantity trained) and ``val_perplexity``
(of the masked LM alone, comparable with plain masked-lm).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F  # noqa: N812
from transformers import AutoModelForPreTraining

from storage.tasks.text import MaskedLmConfig
from workers.context import TrialContext
from workers.data.documents import Documents, SentencePair, load_documents, nsp_pairs
from workers.errors import ModelLoadError
from workers.tasks.masked_lm import IGNORE_INDEX, mask_tokens
from workers.training import (
    Batch,
    TextModel,
    TrainingJob,
    TrainSettings,
    build_text_model,
    pad_sequences,
    sorted_batches,
    train,
)
from workers.training.loop import Forward
from workers.training.metrics import perplexity

VALIDATION_SEED = 1234


def run_pretraining(
    ctx: TrialContext, config: MaskedLmConfig, settings: TrainSettings
) -> dict[str, float]:
    """Train MLM+NSP on the configured corpus; the metrics listed above and ``params_m``.

    Raises:
        DatasetError: the corpus has too few documents or sentences.
        ModelLoadError: the checkpoint cannot be loaded or has no NSP head.
    """
    documents = load_documents(config.dataset, ctx.dataset_roots)
    train_pairs = nsp_pairs(documents.train, seed=ctx.seed)
    validation_pairs = nsp_pairs(documents.validation, seed=VALIDATION_SEED)
    ctx.set_info(
        dataset_fingerprint=documents.fingerprint,
        n_train=len(train_pairs),
        n_validation=len(validation_pairs),
        n_train_documents=len(documents.train),
    )
    built = _build(config, ctx, documents)
    job = _job(
        built, train_pairs, validation_pairs, ctx, settings, probability=config.mlm_probability
    )
    return train(job, settings, ctx)


def encode_pairs(tokenizer: Any, pairs: Sequence[SentencePair], max_length: int) -> list[Any]:
    """(input_ids, token_type_ids) of each pair, cut to ``max_length`` tokens."""
    encoded = tokenizer(
        [p.first for p in pairs],
        [p.second for p in pairs],
        truncation="longest_first",
        max_length=max_length,
        return_attention_mask=False,
        return_token_type_ids=True,
    )
    return list(zip(encoded["input_ids"], encoded["token_type_ids"], strict=True))


def _build(config: MaskedLmConfig, ctx: TrialContext, documents: Documents) -> TextModel:
    built = build_text_model(
        config.model,
        model_class=AutoModelForPreTraining,
        ctx=ctx,
        corpus=documents.train_sentences,
        fingerprint=documents.fingerprint,
        max_seq_len=config.max_seq_len,
    )
    head = getattr(getattr(built.model, "cls", None), "seq_relationship", None)
    if head is None:
        raise ModelLoadError(
            f"objective mlm+nsp needs a BERT-style model with a next-sentence head; "
            f"{type(built.model).__name__} has none (use objective: mlm)"
        )
    return built


def _job(
    built: TextModel,
    train_pairs: list[SentencePair],
    validation_pairs: list[SentencePair],
    ctx: TrialContext,
    settings: TrainSettings,
    *,
    probability: float,
) -> TrainingJob:
    tokenizer = built.tokenizer
    train_rows = encode_pairs(tokenizer, train_pairs, built.max_length)
    validation_rows = encode_pairs(tokenizer, validation_pairs, built.max_length)
    pad_id = int(getattr(tokenizer, "pad_token_id", 0) or 0)
    multiple = 8 if ctx.device.startswith("cuda") else 1
    special_ids = sorted(set(getattr(tokenizer, "all_special_ids", [])) | {pad_id})
    mask_id = int(getattr(tokenizer, "mask_token_id", 0))
    vocab_size = int(built.model.config.vocab_size)

    def batch_of(
        rows: list[int], data: list[Any], pairs: list[SentencePair], generator: Any
    ) -> Batch:
        input_ids, attention_mask = pad_sequences(
            [data[i][0] for i in rows], pad_id=pad_id, multiple_of=multiple
        )
        token_type_ids, _ = pad_sequences(
            [data[i][1] for i in rows], pad_id=0, multiple_of=multiple
        )
        inputs, labels = mask_tokens(
            input_ids,
            attention_mask,
            special_ids=special_ids,
            probability=probability,
            mask_id=mask_id,
            vocab_size=vocab_size,
            generator=generator,
        )
        return {
            "input_ids": inputs,
            "attention_mask": attention_mask,
            "token_type_ids": token_type_ids,
            "labels": labels,
            "next_sentence_label": torch.tensor([pairs[i].label for i in rows]),
        }

    generator = torch.Generator().manual_seed(VALIDATION_SEED)
    validation = [
        batch_of(rows, validation_rows, validation_pairs, generator)
        for rows in sorted_batches([len(r[0]) for r in validation_rows], 2 * settings.batch_size)
    ]

    def compute_loss(forward: Forward, batch: Batch) -> torch.Tensor:
        mlm, nsp, _ = _losses(forward, batch)
        return mlm + nsp

    def evaluate(forward: Forward) -> dict[str, float]:
        return _evaluate(forward, validation, torch.device(ctx.device))

    return TrainingJob(
        model=built.model,
        tokenizer=tokenizer,
        train_lengths=[len(r[0]) for r in train_rows],
        collate=lambda rows: batch_of(rows, train_rows, train_pairs, None),
        compute_loss=compute_loss,
        evaluate=evaluate,
    )


def _losses(
    forward: Forward, batch: Batch, reduction: str = "mean"
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Masked-LM loss, NSP loss and NSP logits of a batch."""
    output = forward(
        input_ids=batch["input_ids"],
        attention_mask=batch["attention_mask"],
        token_type_ids=batch["token_type_ids"],
    )
    logits = output.prediction_logits.float()
    mlm = F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]),
        batch["labels"].reshape(-1),
        ignore_index=IGNORE_INDEX,
        reduction=reduction,
    )
    nsp_logits = output.seq_relationship_logits.float()
    nsp = F.cross_entropy(nsp_logits, batch["next_sentence_label"], reduction=reduction)
    return mlm, nsp, nsp_logits


def _evaluate(forward: Forward, batches: list[Batch], device: torch.device) -> dict[str, float]:
    mlm_sum, nsp_sum, correct, predicted, pairs = 0.0, 0.0, 0, 0, 0
    for batch in batches:
        on_device = {k: v.to(device) for k, v in batch.items()}
        mlm, nsp, logits = _losses(forward, on_device, reduction="sum")
        mlm_sum += float(mlm)
        nsp_sum += float(nsp)
        correct += int((logits.argmax(dim=-1) == on_device["next_sentence_label"]).sum())
        predicted += int((batch["labels"] != IGNORE_INDEX).sum())
        pairs += len(batch["next_sentence_label"])
    mlm_loss, nsp_loss = mlm_sum / max(1, predicted), nsp_sum / max(1, pairs)
    return {
        "val_loss": mlm_loss + nsp_loss,
        "val_mlm_loss": mlm_loss,
        "val_nsp_loss": nsp_loss,
        "val_nsp_accuracy": correct / max(1, pairs),
        "val_perplexity": perplexity(mlm_loss),
    }
