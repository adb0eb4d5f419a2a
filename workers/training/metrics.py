"""Validation metrics computed from accumulated predictions."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

# exp(50) is ~5e21: far beyond any useful perplexity, far below float overflow.
MAX_LOG_PERPLEXITY = 50.0


def accuracy_and_macro_f1(predictions: torch.Tensor, targets: torch.Tensor) -> tuple[float, float]:
    """Accuracy and the unweighted mean F1 over the classes that occur.

    A class "occurs" when it is a target or a prediction (as in
    scikit-learn); a class with no true and no predicted example would add a
    meaningless 0 or 1.
    """
    if targets.numel() == 0:
        return math.nan, math.nan
    accuracy = float((predictions == targets).float().mean())
    scores = []
    for label in torch.unique(torch.cat([predictions, targets])).tolist():
        predicted, actual = predictions == label, targets == label
        true_positive = int((predicted & actual).sum())
        wrong = int((predicted ^ actual).sum())
        scores.append(2 * true_positive / (2 * true_positive + wrong))
    return accuracy, sum(scores) / len(scores)


def perplexity(mean_loss: float) -> float:
    """``exp(mean_loss)``, capped so that an untrained model gives a finite number."""
    if math.isnan(mean_loss):
        return math.nan
    return math.exp(min(mean_loss, MAX_LOG_PERPLEXITY))


def generation_scores(predictions: Sequence[str], references: Sequence[str]) -> dict[str, float]:
    """Corpus BLEU and chrF (sacrebleu, 0-100) and exact match (0-1) of generations.

    The texts are scored as they are: case, accents and punctuation count, so
    the numbers describe what a user of the model gets. Exact match only
    treats runs of whitespace as one space and ignores it at the ends (as
    BLEU's own tokenization does).
    """
    from sacrebleu.metrics.bleu import BLEU
    from sacrebleu.metrics.chrf import CHRF

    if not references:
        return {"val_bleu": math.nan, "val_chrf": math.nan, "val_exact_match": math.nan}
    hypotheses, refs = list(predictions), [list(references)]
    bleu = BLEU().corpus_score(hypotheses, refs)
    chrf = CHRF().corpus_score(hypotheses, refs)
    matches = sum(_spaced(p) == _spaced(r) for p, r in zip(hypotheses, references, strict=True))
    return {
        "val_bleu": float(bleu.score),
        "val_chrf": float(chrf.score),
        "val_exact_match": matches / len(references),
    }


def _spaced(text: str) -> str:
    return " ".join(text.split())
