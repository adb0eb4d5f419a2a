"""``text-classification`` and ``masked-lm``: BERT-style models from ``transformers``."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from storage.errors import ErrorDetail, quote
from storage.paths import hub_id_problem
from storage.spec import CategoricalParam, FloatParam, IntParam
from storage.tasks import AnyParam, HyperParameter, TaskDeclaration, register


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BuiltinTextDataset(_Strict):
    """A generated English sentiment set: negation, intensifiers, label noise."""

    source: Literal["builtin"] = "builtin"
    name: Literal["sentiment"] = "sentiment"
    n_train: int = Field(default=4000, ge=50, le=1_000_000)
    n_validation: int = Field(default=800, ge=20, le=200_000)
    label_noise: float = Field(default=0.05, ge=0.0, le=0.5)
    seed: int = Field(default=0, ge=0)


class FileTextDataset(_Strict):
    """A local table; ``path`` must lie below one of ``HPO_DATASET_ROOTS``."""

    source: Literal["csv", "jsonl", "parquet"]
    path: str = Field(min_length=1)
    validation_path: str | None = None
    validation_fraction: float = Field(default=0.1, gt=0, lt=1)
    text_column: str = "text"
    label_column: str | None = "label"


class PlainTextDataset(_Strict):
    """A local text file, one example per line (masked-lm only)."""

    source: Literal["text"]
    path: str = Field(min_length=1)
    validation_path: str | None = None
    validation_fraction: float = Field(default=0.1, gt=0, lt=1)


class HubTextDataset(_Strict):
    """A dataset from the Hugging Face hub (needs internet on the worker).

    ``name`` is a hub id, never a local folder or a builder of local files:
    those would read whatever the worker can read, outside ``HPO_DATASET_ROOTS``.
    """

    source: Literal["huggingface"]
    name: str = Field(min_length=1, max_length=200)
    subset: str | None = None
    split: str = "train"
    validation_split: str | None = None
    validation_fraction: float = Field(default=0.1, gt=0, lt=1)
    text_column: str = "text"
    label_column: str | None = "label"
    revision: str | None = None

    @field_validator("name")
    @classmethod
    def _hub_id(cls, name: str) -> str:
        problem = hub_id_problem(name)
        if problem:
            raise ValueError(problem)
        return name


class ScratchModel(_Strict):
    """A BERT built from a config; sizes come from the hyperparameters."""

    source: Literal["scratch"] = "scratch"
    vocab_size: int = Field(
        default=8000,
        ge=200,
        le=250_000,
        description="tokens of the byte-level BPE trained on the data, its 256 bytes and "
        "5 special tokens included (a smaller number still gets those 261)",
    )


class PretrainedModel(_Strict):
    """A checkpoint: a local directory (below ``HPO_DATASET_ROOTS``) or a hub id."""

    source: Literal["pretrained"]
    name_or_path: str = Field(min_length=1)
    revision: str | None = None


ModelSpec = Annotated[ScratchModel | PretrainedModel, Field(discriminator="source")]
ClassificationDataset = Annotated[
    BuiltinTextDataset | FileTextDataset | HubTextDataset, Field(discriminator="source")
]
CorpusDataset = Annotated[
    BuiltinTextDataset | FileTextDataset | PlainTextDataset | HubTextDataset,
    Field(discriminator="source"),
]


# Without max_epochs or max_steps, a trial trains until its objective stops
# improving, up to this many epochs (and its share of a max_train_examples budget).
PLATEAU_EPOCH_CAP = 20
# Without a length: the epochs a spec with early_stopping turned off gets.
DEFAULT_EPOCHS = 3


class EarlyStopping(_Strict):
    """Stop a trial once its objective has not improved for ``patience`` evaluations."""

    patience: int = Field(
        default=3, ge=1, le=1000, description="evaluations in a row without improvement"
    )
    min_delta: float = Field(
        default=0.0, ge=0, description="how much better a value must be to count as better"
    )


class TransformerConfig(_Strict):
    model: ModelSpec = Field(default_factory=ScratchModel)
    max_epochs: int = Field(
        default=DEFAULT_EPOCHS,
        ge=1,
        le=1000,
        description=f"epochs to train; when neither this nor max_steps is given, trials stop "
        f"on a plateau (early_stopping) within {PLATEAU_EPOCH_CAP} epochs",
    )
    early_stopping: EarlyStopping | None = Field(
        default=None,
        description="stop a trial when its objective stops improving (patience and "
        "min_delta over the evaluations); on by default when neither max_epochs nor "
        "max_steps is given, off with null",
    )
    eval_every_steps: int | None = Field(
        default=None, ge=1, description="evaluate every N optimizer steps (default: each epoch)"
    )
    max_seq_len: int = Field(default=128, ge=8, le=8192)
    max_steps: int | None = Field(default=None, ge=1, description="stop after N optimizer steps")
    compile: bool = Field(default=False, description="torch.compile the model (CUDA)")
    report_step: Literal["steps", "examples"] = Field(
        default="steps",
        description=(
            "the step of reported metrics (pruners, MLflow curves): optimizer steps, or "
            "training examples seen (steps x batch_size x grad_accum_steps); use examples "
            "when batch_size is searched together with a pruner"
        ),
    )

    @model_validator(mode="after")
    def _train_until_a_plateau_by_default(self) -> TransformerConfig:
        # A spec that says nothing of training length: rather than a guessed
        # number of epochs, each trial trains until it stops improving. The
        # resolved spec stores both fields, so this runs once, at submission.
        length = {"max_epochs", "max_steps", "early_stopping"}
        if not length & self.model_fields_set:
            self.early_stopping = EarlyStopping()
            self.max_epochs = PLATEAU_EPOCH_CAP
        return self


class TextClassificationConfig(TransformerConfig):
    dataset: ClassificationDataset = Field(default_factory=BuiltinTextDataset)

    @model_validator(mode="after")
    def _needs_labels(self) -> TextClassificationConfig:
        if getattr(self.dataset, "label_column", "label") is None:
            raise ValueError("dataset.label_column is required for text-classification")
        return self


class MaskedLmConfig(TransformerConfig):
    dataset: CorpusDataset = Field(default_factory=BuiltinTextDataset)
    mlm_probability: float = Field(default=0.15, gt=0, lt=1)
    objective: Literal["mlm", "mlm+nsp"] = Field(
        default="mlm",
        description=(
            "mlm: masked LM on single texts; mlm+nsp: BERT's pretraining, masked LM plus "
            "next-sentence prediction on sentence pairs (half consecutive, half random)"
        ),
    )


def shared_hyperparameters() -> dict[str, HyperParameter]:
    return {
        "learning_rate": HyperParameter(
            "float",
            5e-4,
            "peak learning rate",
            None,
            bounds=(1e-12, 10.0),
        ),
        "batch_size": HyperParameter(
            "int",
            32,
            "examples per optimizer step (before accumulation)",
            None,
            bounds=(1, 65536),
        ),
        "num_layers": HyperParameter(
            "int",
            2,
            "transformer layers (scratch models)",
            None,
            bounds=(1, 48),
        ),
        "hidden_size": HyperParameter(
            "int",
            128,
            "model width, rounded up to a multiple of the heads (scratch models)",
            None,
            bounds=(8, 8192),
        ),
        "num_attention_heads": HyperParameter(
            "int",
            2,
            "attention heads (scratch models)",
            None,
            bounds=(1, 128),
        ),
        "intermediate_size": HyperParameter(
            "int",
            512,
            "feed-forward width (scratch models)",
            None,
            bounds=(8, 32768),
        ),
        "hidden_dropout": HyperParameter(
            "float",
            0.1,
            "dropout on hidden states",
            None,
            bounds=(0.0, 0.9),
        ),
        "attention_dropout": HyperParameter(
            "float",
            0.1,
            "dropout on attention probabilities",
            None,
            bounds=(0.0, 0.9),
        ),
        "weight_decay": HyperParameter(
            "float",
            0.01,
            "decoupled weight decay (not on biases and norms)",
            None,
            bounds=(0.0, 1.0),
        ),
        "l1_penalty": HyperParameter(
            "float", 0.0, "L1 penalty on weights", None, bounds=(0.0, 1.0)
        ),
        "warmup_ratio": HyperParameter(
            "float",
            0.1,
            "share of steps spent warming up linearly",
            None,
            bounds=(0.0, 0.9),
        ),
        "lr_schedule": HyperParameter(
            "categorical",
            "linear",
            "decay after warmup",
            None,
            choices=("linear", "cosine", "constant"),
        ),
        "optimizer": HyperParameter(
            "categorical",
            "adamw",
            "adamw or sgd (momentum)",
            None,
            choices=("adamw", "sgd"),
        ),
        "momentum": HyperParameter("float", 0.9, "SGD momentum", None, bounds=(0.0, 0.999)),
        "max_grad_norm": HyperParameter(
            "float",
            1.0,
            "gradient clipping norm (0 disables)",
            None,
            bounds=(0.0, 1000.0),
        ),
        "grad_accum_steps": HyperParameter(
            "int",
            1,
            "micro-batches per optimizer step",
            None,
            bounds=(1, 1024),
        ),
    }


_ARCHITECTURE = ("num_layers", "hidden_size", "num_attention_heads", "intermediate_size")


def augmentation_hyperparameters() -> dict[str, HyperParameter]:
    """Token-level noise on training inputs (never on validation), off by default."""
    return {
        "augment_deletion": HyperParameter(
            "float", 0.0, "chance that a training token is deleted", None, bounds=(0.0, 0.5)
        ),
        "augment_swap": HyperParameter(
            "float",
            0.0,
            "chance that a training token swaps places with the next one",
            None,
            bounds=(0.0, 0.5),
        ),
        "augment_mask": HyperParameter(
            "float",
            0.0,
            "chance that a training token is replaced by the mask (or unknown) token",
            None,
            bounds=(0.0, 0.5),
        ),
    }


def check_pretrained_space(config: BaseModel, space: dict[str, AnyParam]) -> list[ErrorDetail]:
    """A pretrained checkpoint fixes the architecture: tuning it would be ignored."""
    model = getattr(config, "model", None)
    if not isinstance(model, PretrainedModel):
        return []
    return [
        ErrorDetail(("search_space", name), "a pretrained model's architecture cannot be tuned")
        for name in space
        if name in _ARCHITECTURE
    ]


# The default search spaces, per model source. Each range is one that a user
# can submit unchanged on a new dataset without trials at chance level for a
# reason the space itself causes.
#
# Scratch models start from random weights: with a few epochs on a small set
# they need a high peak learning rate and enough optimizer steps. Below ~1e-4
# their accuracy stays at chance after several epochs (benchmarks/RESULTS.md,
# pruning figures); so did every trial of batch 64 with a rate under ~3e-4 on
# 2,000 rows (about 90 steps in 3 epochs: equal-compute figures), while batches
# of 16 and 32 at 2e-4..1.5e-3 all learned. Higher rates collapse the deeper
# post-LN BERTs to the majority class (4 layers at 2.8e-3 with 2 % warmup did,
# despite clipping), and a short warmup is what lets the top of the range
# train. Larger batches pay on large sets, where a user adds them. One layer
# already learns the builtin task; more than four rarely pays on small data.
#
# Pretrained checkpoints are fine-tuned: the BERT paper's grid is 2e-5..5e-5,
# and above ~1e-4 fine-tuning collapses to the majority class (catastrophic
# forgetting), below 1e-5 a few epochs barely move the classifier head. The
# architecture is fixed by the checkpoint, so it is not searched; smaller
# batches suit the small sets people fine-tune on.
def _scratch_space() -> dict[str, AnyParam]:
    return {
        "learning_rate": FloatParam(type="float", low=3e-4, high=1.5e-3, log=True),
        "batch_size": CategoricalParam(type="categorical", choices=[16, 32]),
        "num_layers": IntParam(type="int", low=1, high=4),
        "hidden_dropout": FloatParam(type="float", low=0.0, high=0.2),
        "warmup_ratio": FloatParam(type="float", low=0.05, high=0.2),
    }


def _pretrained_space() -> dict[str, AnyParam]:
    return {
        "learning_rate": FloatParam(type="float", low=1e-5, high=1e-4, log=True),
        "batch_size": CategoricalParam(type="categorical", choices=[16, 32]),
        "weight_decay": FloatParam(type="float", low=0.0, high=0.1),
        "warmup_ratio": FloatParam(type="float", low=0.0, high=0.2),
        "hidden_dropout": FloatParam(type="float", low=0.0, high=0.2),
    }


_SPACES = {"scratch": _scratch_space, "pretrained": _pretrained_space}


def model_source(config: BaseModel) -> str:
    return (
        "pretrained" if isinstance(getattr(config, "model", None), PretrainedModel) else "scratch"
    )


def _text_classification() -> TaskDeclaration:
    hyperparameters = shared_hyperparameters()
    hyperparameters["label_smoothing"] = HyperParameter(
        "float", 0.0, "label smoothing of the cross-entropy", None, bounds=(0.0, 0.5)
    )
    hyperparameters.update(augmentation_hyperparameters())
    return TaskDeclaration(
        name="text-classification",
        description="Fine-tune or train from scratch a BERT sequence classifier "
        "(BertForSequenceClassification) on the builtin sentiment set, a local "
        "csv/jsonl/parquet file or a hub dataset.",
        metrics={
            "val_accuracy": "maximize",
            "val_f1_macro": "maximize",
            "val_loss": "minimize",
            "params_m": "minimize",
        },
        config_model=TextClassificationConfig,
        hyperparameters=hyperparameters,
        default_objective="val_accuracy",
        check=check_pretrained_space,
        spaces=_SPACES,
        choose_space=model_source,
    )


NSP_METRICS = ("val_nsp_accuracy", "val_nsp_loss", "val_mlm_loss")


def nsp_metric_problem(config: BaseModel, metric: str) -> str | None:
    """Why ``metric`` cannot be optimized with this config (NSP metrics need NSP)."""
    if metric in NSP_METRICS and getattr(config, "objective", "mlm") != "mlm+nsp":
        return f"{quote(metric)} is reported only with task.config.objective: mlm+nsp"
    return None


def _masked_lm() -> TaskDeclaration:
    return TaskDeclaration(
        name="masked-lm",
        description="Pretrain a BERT masked language model (BertForMaskedLM; 15% of "
        "tokens, 80/10/10 mask/random/keep) on the builtin corpus or local text; with "
        "objective mlm+nsp, BERT's pretraining (BertForPreTraining: masked LM plus "
        "next-sentence prediction).",
        metrics={
            "val_loss": "minimize",
            "val_perplexity": "minimize",
            "val_mlm_loss": "minimize",
            "val_nsp_loss": "minimize",
            "val_nsp_accuracy": "maximize",
            "params_m": "minimize",
        },
        config_model=MaskedLmConfig,
        hyperparameters=shared_hyperparameters(),
        default_objective="val_perplexity",
        check=check_pretrained_space,
        metric_problem=nsp_metric_problem,
        spaces=_SPACES,
        choose_space=model_source,
    )


TEXT_CLASSIFICATION = register(_text_classification())
MASKED_LM = register(_masked_lm())
