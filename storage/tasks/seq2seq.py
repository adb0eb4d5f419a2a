"""``seq2seq``: encoder-decoder Transformers for translation and summarization."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator

from storage.paths import hub_id_problem
from storage.spec import CategoricalParam, FloatParam, IntParam
from storage.tasks import AnyParam, HyperParameter, TaskDeclaration, register
from storage.tasks.text import (
    TransformerConfig,
    _Strict,
    augmentation_hyperparameters,
    check_pretrained_space,
    model_source,
    shared_hyperparameters,
)


class BuiltinPairDataset(_Strict):
    """Generated sentence pairs: English clauses and their rendering in a made-up
    language with its own words and word order (subject-object-verb, adjectives
    after nouns, tense and plural as suffixes). Copying the source scores a BLEU
    near zero; a model has to learn the lexicon and the reordering."""

    source: Literal["builtin"] = "builtin"
    name: Literal["translation"] = "translation"
    n_train: int = Field(default=4000, ge=50, le=1_000_000)
    n_validation: int = Field(default=200, ge=20, le=200_000)
    seed: int = Field(default=0, ge=0)


class FilePairDataset(_Strict):
    """A local table of pairs; ``path`` must lie below one of ``HPO_DATASET_ROOTS``."""

    source: Literal["csv", "jsonl", "parquet"]
    path: str = Field(min_length=1)
    validation_path: str | None = None
    validation_fraction: float = Field(default=0.1, gt=0, lt=1)
    source_column: str = "source"
    target_column: str = "target"


class HubPairDataset(_Strict):
    """Pairs from the Hugging Face hub (needs internet on the worker)."""

    source: Literal["huggingface"]
    name: str = Field(min_length=1, max_length=200)
    subset: str | None = None
    split: str = "train"
    validation_split: str | None = None
    validation_fraction: float = Field(default=0.1, gt=0, lt=1)
    source_column: str = "source"
    target_column: str = "target"
    revision: str | None = None

    @field_validator("name")
    @classmethod
    def _hub_id(cls, name: str) -> str:
        problem = hub_id_problem(name)
        if problem:
            raise ValueError(problem)
        return name


PairDataset = Annotated[
    BuiltinPairDataset | FilePairDataset | HubPairDataset, Field(discriminator="source")
]


class Seq2SeqConfig(TransformerConfig):
    dataset: PairDataset = Field(default_factory=BuiltinPairDataset)
    max_target_len: int = Field(
        default=64, ge=4, le=4096, description="longest target, in tokens (training and generation)"
    )


def _scratch_space() -> dict[str, AnyParam]:
    # Tiny encoder-decoders trained from random weights want a high peak rate,
    # like the scratch BERTs; label smoothing is BART's and Vaswani's 0.1 region.
    return {
        "learning_rate": FloatParam(type="float", low=3e-4, high=3e-3, log=True),
        "batch_size": CategoricalParam(type="categorical", choices=[16, 32, 64]),
        "num_layers": IntParam(type="int", low=1, high=3),
        "hidden_dropout": FloatParam(type="float", low=0.0, high=0.2),
        "label_smoothing": FloatParam(type="float", low=0.0, high=0.2),
    }


def _pretrained_space() -> dict[str, AnyParam]:
    return {
        "learning_rate": FloatParam(type="float", low=1e-5, high=3e-4, log=True),
        "batch_size": CategoricalParam(type="categorical", choices=[8, 16, 32]),
        "weight_decay": FloatParam(type="float", low=0.0, high=0.1),
        "warmup_ratio": FloatParam(type="float", low=0.0, high=0.2),
        "label_smoothing": FloatParam(type="float", low=0.0, high=0.2),
    }


def _hyperparameters() -> dict[str, HyperParameter]:
    hyperparameters = shared_hyperparameters()
    hyperparameters["num_layers"] = HyperParameter(
        "int", 2, "encoder layers and decoder layers each (scratch models)", None, bounds=(1, 48)
    )
    hyperparameters["label_smoothing"] = HyperParameter(
        "float", 0.0, "label smoothing of the token cross-entropy", None, bounds=(0.0, 0.5)
    )
    hyperparameters["num_beams"] = HyperParameter(
        "int", 1, "beams when generating for evaluation (1: greedy)", None, bounds=(1, 16)
    )
    hyperparameters.update(augmentation_hyperparameters())
    return hyperparameters


def _seq2seq() -> TaskDeclaration:
    return TaskDeclaration(
        name="seq2seq",
        description="Train from scratch (BartForConditionalGeneration: self-attention in "
        "encoder and decoder, cross-attention from decoder to encoder) or fine-tune a "
        "local encoder-decoder checkpoint on source/target pairs (translation, "
        "summarization): the builtin pairs, a csv/jsonl/parquet file or a hub dataset. "
        "Evaluates loss, sacrebleu corpus BLEU and chrF, and exact match of generations.",
        metrics={
            "val_bleu": "maximize",
            "val_chrf": "maximize",
            "val_exact_match": "maximize",
            "val_loss": "minimize",
            "params_m": "minimize",
        },
        config_model=Seq2SeqConfig,
        hyperparameters=_hyperparameters(),
        default_objective="val_bleu",
        check=check_pretrained_space,
        spaces={"scratch": _scratch_space, "pretrained": _pretrained_space},
        choose_space=model_source,
    )


SEQ2SEQ = register(_seq2seq())
