"""A ``seq2seq`` study with the default scratch space on real pairs, against copying the source.

The study's objective is the task's default, ``val_bleu``; every trial's
saved model then generates again for the validation sources, which gives
its chrF and exact match too (the texts the worker scored, up to near ties
that batching breaks the other way: the BLEU is checked against the
trial's value) and shows what it generates: how many distinct texts, how
many copies of the source, how many training targets given back for a word
they do not translate.
"""

from __future__ import annotations

import csv
import math
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmarks import freedict
from benchmarks.equal_compute import SCRATCH as DATA_DIRS
from benchmarks.equal_compute import run_study
from benchmarks.pg import migrated_databases
from benchmarks.space_trials import describe_trial, study_trials
from storage.optuna_store import folder_root
from storage.paths import trial_folder_name
from workers.training.metrics import generation_scores

# A trial whose chrF is at most this far above copying the source has learned
# nothing useful (chrF, not BLEU: most sources are one word, and BLEU counts
# up to 4-grams).
NEAR_COPY_CHRF = 5.0
MAX_TARGET_LEN = 64  # the task's default max_target_len: tokens generated at most


def translation_spec(
    train: Path, validation: Path, trials: int, max_epochs: int | None, vocab_size: int | None
) -> dict[str, Any]:
    """A scratch BART on the pairs, no search space (the default for scratch models).

    ``max_epochs`` and ``vocab_size`` None: the task's defaults.
    """
    dataset = {"source": "csv", "path": str(train), "validation_path": str(validation)}
    model: dict[str, Any] = {"source": "scratch"}
    if vocab_size is not None:
        model["vocab_size"] = vocab_size
    config: dict[str, Any] = {
        "dataset": {**dataset, "source_column": "source", "target_column": "target"},
        "model": model,
        "max_seq_len": 64,
    }
    if max_epochs is not None:
        config["max_epochs"] = max_epochs
    return {
        "name": "freedict-scratch",
        "task": {"name": "seq2seq", "config": config},
        "objective": {"metric": "val_bleu", "direction": "maximize"},
        "sampler": {"name": "random", "seed": 3},
        "pruner": {"name": "none"},
        "budget": {"n_trials": trials, "max_concurrent_trials": 1},
    }


def read_pairs_csv(path: Path) -> list[freedict.Pair]:
    with path.open(newline="", encoding="utf-8") as handle:
        return [(row["source"], row["target"]) for row in csv.DictReader(handle)]


def saved_predictions(model_dir: Path, sources: Sequence[str]) -> list[str]:
    """Greedy generations of a saved model for ``sources``, decoded as the worker decodes them."""
    import torch
    from transformers import AutoModelForSeq2SeqLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForSeq2SeqLM.from_pretrained(model_dir).eval()
    texts: list[str] = []
    with torch.no_grad():
        for start in range(0, len(sources), 64):
            batch = tokenizer(
                list(sources[start : start + 64]),
                truncation=True,
                max_length=64,
                padding=True,
                return_tensors="pt",
                return_token_type_ids=False,
            )
            generated = model.generate(
                **batch, num_beams=1, max_new_tokens=MAX_TARGET_LEN, do_sample=False
            )
            texts += [
                t.strip() for t in tokenizer.batch_decode(generated, skip_special_tokens=True)
            ]
    return texts


def prediction_facts(
    predictions: Sequence[str], sources: Sequence[str], train_targets: Sequence[str]
) -> str:
    """Distinct generations, copies of the source, and training targets given back (shares)."""
    count = len(predictions)
    known = set(train_targets)
    distinct = len(set(predictions)) / count
    copied = sum(p == s for p, s in zip(predictions, sources, strict=True)) / count
    recalled = sum(p in known for p in predictions) / count
    return f"{distinct:.2f} / {copied:.2f} / {recalled:.2f}"


def report(
    optuna_url: str, name: str, train: list[freedict.Pair], validation: list[freedict.Pair]
) -> None:
    sources, targets = (list(side) for side in zip(*validation, strict=True))
    copy = generation_scores(sources, targets)
    near = 0
    for trial in study_trials(optuna_url, name):
        folder = DATA_DIRS / name / "trials" / name / trial_folder_name(folder_root(trial))
        scores, facts = {m: math.nan for m in copy}, "-"
        if (folder / "model").is_dir():
            predictions = saved_predictions(folder / "model", sources)
            scores = generation_scores(predictions, targets)
            facts = prediction_facts(predictions, sources, [t for _, t in train])
        at_copy = not scores["val_chrf"] > copy["val_chrf"] + NEAR_COPY_CHRF
        near += at_copy
        # Batched differently from the worker's evaluation, a model can break a
        # near tie the other way: the trial's own value is shown when it differs.
        checked = (
            ""
            if trial.value is None or math.isclose(trial.value, scores["val_bleu"], abs_tol=0.005)
            else f" (trial {trial.value:.2f})"
        )
        print(
            f"| {trial.number} | {trial.state.name} | {scores['val_bleu']:.2f}{checked} "
            f"| {scores['val_chrf']:.2f}{' (at copy)' if at_copy else ''} "
            f"| {scores['val_exact_match']:.3f} | {facts} | {describe_trial(trial, len(train))} |"
        )
    print(
        f"\n{name}: {near} trial(s) at most {NEAR_COPY_CHRF} chrF above copying the source "
        f"({copy['val_chrf']:.2f})\n"
    )


def run(
    server: str,
    trials: int,
    train: Path,
    validation: Path,
    *,
    max_epochs: int | None,
    vocab_size: int | None = None,
) -> None:
    """Print the baselines, run the study, print each trial (markdown rows)."""
    pairs = read_pairs_csv(train), read_pairs_csv(validation)
    sources, targets = (list(side) for side in zip(*pairs[1], strict=True))
    baselines = {
        "copy the source": generation_scores(sources, targets),
        "nearest spelling": generation_scores(
            freedict.nearest_neighbour_predictions(pairs[0], sources), targets
        ),
    }
    print(f"freedict: {len(pairs[0])} training and {len(pairs[1])} validation pairs")
    for label, scores in baselines.items():
        print(f"{label}: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
    print(
        "| trial | state | val_bleu | val_chrf | val_exact_match | distinct / copied / "
        "training targets | params | steps | s |\n|---|---|---|---|---|---|---|---|---|"
    )
    body = translation_spec(train, validation, trials, max_epochs, vocab_size)
    # Every trial's model is kept, to generate with it again for the report;
    # none is left from an earlier run to be mistaken for this one's.
    os.environ["HPO_KEEP_TOP_K_MODELS"] = str(max(trials, 1))
    shutil.rmtree(DATA_DIRS / body["name"], ignore_errors=True)
    with migrated_databases(server) as urls:
        run_study(urls, body, dataset_roots=[train.parent])
        report(urls[1], body["name"], pairs[0], pairs[1])
