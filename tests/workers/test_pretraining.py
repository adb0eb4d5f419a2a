"""masked-lm with objective mlm+nsp: documents, next-sentence pairs, and BERT pretraining."""

from __future__ import annotations

import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from transformers import BertForPreTraining

from storage.tasks.text import BuiltinTextDataset, PlainTextDataset
from workers.context import TrialContext
from workers.data.documents import (
    IS_NEXT,
    IS_RANDOM,
    load_documents,
    nsp_pairs,
    split_sentences,
)
from workers.errors import DatasetError
from workers.tasks.masked_lm import run
from workers.tasks.pretraining import encode_pairs
from workers.training import MODEL_DIR

CORPUS = [
    ["the cat sat.", "it purred.", "then it slept."],
    ["stocks fell today.", "markets were calm."],
    ["one lonely sentence."],
]


def _owner(sentence: str) -> int:
    return next(i for i, document in enumerate(CORPUS) if sentence in document)


def test_pairs_follow_their_document_or_come_from_another() -> None:
    pairs = nsp_pairs(CORPUS, seed=3)
    # One pair per sentence that has a successor: 2 + 1 + 0.
    assert [p.first for p in pairs] == ["the cat sat.", "it purred.", "stocks fell today."]
    for pair in pairs:
        document = CORPUS[_owner(pair.first)]
        if pair.label == IS_NEXT:
            assert pair.second == document[document.index(pair.first) + 1]
        else:
            assert pair.label == IS_RANDOM and _owner(pair.second) != _owner(pair.first)
    assert pairs == nsp_pairs(CORPUS, seed=3)


def test_half_the_pairs_are_random_and_each_document_can_be_drawn() -> None:
    documents = [[f"d{d} s{s}." for s in range(4)] for d in range(50)]
    pairs = nsp_pairs(documents, seed=0)
    assert len(pairs) == 150
    share = sum(p.label == IS_RANDOM for p in pairs) / len(pairs)
    assert 0.4 < share < 0.6
    drawn = {p.second.split()[0] for p in pairs if p.label == IS_RANDOM}
    assert len(drawn) > 30


def test_too_few_documents_or_sentences_are_refused() -> None:
    with pytest.raises(DatasetError, match="at least two documents"):
        nsp_pairs([["a.", "b."]], seed=0)
    with pytest.raises(DatasetError, match="two or more sentences"):
        nsp_pairs([["a."], ["b."]], seed=0)


def test_documents_from_text_files_tables_and_the_builtin_set(tmp_path: Path) -> None:
    text = tmp_path / "corpus.txt"
    text.write_text("first doc line one\nline two\n\n\nsecond doc\nits line\n\nthird\n")
    spec = PlainTextDataset(source="text", path=str(text), validation_fraction=0.3)
    documents = load_documents(spec, [tmp_path.resolve()])
    assert sorted(map(tuple, documents.train + documents.validation)) == sorted(
        [("first doc line one", "line two"), ("second doc", "its line"), ("third",)]
    )
    assert len(documents.validation) == 1
    single = tmp_path / "one.txt"
    single.write_text("no blank line\nanywhere\n")
    with pytest.raises(DatasetError, match="blank line"):
        load_documents(PlainTextDataset(source="text", path=str(single)), [tmp_path.resolve()])
    assert split_sentences("It rained. We stayed in! Why? no") == [
        "It rained.",
        "We stayed in!",
        "Why?",
        "no",
    ]
    builtin = load_documents(BuiltinTextDataset(n_train=300, n_validation=60), [])
    assert all(2 <= len(d) <= 5 for d in builtin.train)
    assert len(builtin.train_sentences) >= 300


def test_pairs_are_encoded_as_two_segments(
    make_context: Callable[..., TrialContext],
    builtin_config: Callable[..., dict[str, Any]],
    tiny_params: dict[str, Any],
) -> None:
    config = builtin_config(n_train=200, n_validation=60, max_steps=2, objective="mlm+nsp")
    ctx = make_context("masked-lm", config=config, params=tiny_params, objective="val_loss")
    metrics = run(ctx)
    assert {"val_mlm_loss", "val_nsp_loss", "val_nsp_accuracy", "val_perplexity"} <= set(metrics)
    assert isinstance(
        BertForPreTraining.from_pretrained(ctx.work_dir / MODEL_DIR), BertForPreTraining
    )
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(ctx.work_dir / MODEL_DIR)
    [(ids, types)] = encode_pairs(tokenizer, nsp_pairs(CORPUS, seed=3)[:1], 64)
    tokens = tokenizer.convert_ids_to_tokens(ids)
    assert tokens[0] == "[CLS]" and tokens.count("[SEP]") == 2 and tokens[-1] == "[SEP]"
    first_sep = tokens.index("[SEP]")
    assert set(types[: first_sep + 1]) == {0} and set(types[first_sep + 1 :]) == {1}


def test_a_short_mlm_nsp_run_lowers_both_losses(
    make_context: Callable[..., TrialContext], tiny_params: dict[str, Any], tmp_path: Path
) -> None:
    # Each document draws its words from its own 3 of 30: a sentence that follows
    # shares them, one from another document mostly does not.
    rng = random.Random(0)
    vocabulary = [c + v for c in "kmnprst" for v in "aeiou"][:30]
    documents = []
    for _ in range(600):
        words = rng.sample(vocabulary, 3)
        documents.append(
            "\n".join(" ".join(rng.choice(words) for _ in range(5)) + "." for _ in range(4))
        )
    corpus = tmp_path / "documents.txt"
    corpus.write_text("\n\n".join(documents))
    config = {
        "dataset": {"source": "text", "path": str(corpus), "validation_fraction": 0.2},
        "model": {"source": "scratch", "vocab_size": 400},
        "objective": "mlm+nsp",
        "max_seq_len": 32,
        "max_epochs": 20,
        "max_steps": 250,
        "eval_every_steps": 50,
    }
    params = {**tiny_params, "learning_rate": 2e-3, "lr_schedule": "constant"}
    ctx = make_context("masked-lm", config=config, params=params, objective="val_nsp_accuracy")
    reports: list[dict[str, float]] = []
    ctx.report_hooks.append(lambda step, metrics: reports.append(dict(metrics)))
    run(ctx)
    first, last = reports[0], reports[-1]
    assert last["val_mlm_loss"] < 0.9 * first["val_mlm_loss"], reports
    assert last["val_nsp_loss"] < first["val_nsp_loss"] - 0.03, reports
    assert last["val_nsp_accuracy"] > 0.6, reports
    assert ctx.info["n_train_documents"] == 480
