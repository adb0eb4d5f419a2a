"""Building BERT models: from hyperparameters, or from a pretrained checkpoint."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn
from transformers import AutoConfig, BartConfig, BertConfig, PretrainedConfig

from storage.paths import PathNotAllowedError, looks_like_path, resolve_confined
from storage.tasks.text import PretrainedModel, ScratchModel
from workers.context import TrialContext
from workers.data import pretrained_tokenizer, scratch_tokenizer
from workers.data.tokenization import CLS, SEP, SPECIAL_TOKENS
from workers.errors import ModelLoadError

logger = logging.getLogger(__name__)

# Config attributes that carry dropout in BERT-family checkpoints.
_DROPOUT_ATTRIBUTES = {
    "hidden_dropout": ("hidden_dropout_prob", "dropout"),
    "attention_dropout": ("attention_probs_dropout_prob", "attention_dropout"),
}


@dataclass(frozen=True)
class TextModel:
    """A model, its tokenizer, and the longest input they take."""

    model: Any
    tokenizer: Any
    max_length: int


def build_text_model(
    spec: ScratchModel | PretrainedModel,
    *,
    model_class: Any,
    ctx: TrialContext,
    corpus: Sequence[str],
    fingerprint: str,
    max_seq_len: int,
    scratch_config: Callable[..., PretrainedConfig] | None = None,
    **head: Any,
) -> TextModel:
    """The model a task trains, with the tokenizer that feeds it.

    ``model_class`` is a ``transformers`` auto class (``AutoModelFor...``).
    Scratch: a byte-level BPE tokenizer trained on ``corpus`` (cached by the
    dataset ``fingerprint``) and a model of that class built from
    ``scratch_config`` (default :func:`scratch_bert_config`) sized by
    ``ctx.params``. Pretrained: the checkpoint's tokenizer and
    ``model_class.from_pretrained``. ``head`` (e.g. ``num_labels``) goes to
    the config in both cases.

    Raises:
        ModelLoadError: the checkpoint or its tokenizer cannot be loaded.
    """
    if isinstance(spec, ScratchModel):
        tokenizer = scratch_tokenizer(
            corpus,
            vocab_size=spec.vocab_size,
            fingerprint=fingerprint,
            cache_dir=ctx.cache_dir,
            max_length=max_seq_len,
        )
        config = (scratch_config or scratch_bert_config)(
            ctx.params,
            vocab_size=len(tokenizer),
            max_seq_len=max_seq_len,
            pad_token_id=tokenizer.pad_token_id,
            **head,
        )
        model = model_class.from_config(config, attn_implementation="sdpa")
        return TextModel(model, tokenizer, max_seq_len)
    source, local = resolve_pretrained(spec, ctx.dataset_roots)
    # The model first: its failure message explains hub access best.
    model = load_pretrained(
        model_class, source, local=local, revision=spec.revision, params=ctx.params, **head
    )
    tokenizer = pretrained_tokenizer(source, revision=spec.revision)
    limit = int(getattr(model.config, "max_position_embeddings", max_seq_len))
    if limit < max_seq_len:
        logger.info("max_seq_len %d cut to the checkpoint's %d positions", max_seq_len, limit)
    return TextModel(model, tokenizer, min(max_seq_len, limit))


def scratch_bert_config(
    params: dict[str, Any],
    *,
    vocab_size: int,
    max_seq_len: int,
    pad_token_id: int,
    **extra: Any,
) -> BertConfig:
    """A ``BertConfig`` sized by the trial's hyperparameters.

    ``hidden_size`` is rounded up to a multiple of ``num_attention_heads``
    (each head needs the same width), so every sampled pair is usable.
    """
    heads = int(params["num_attention_heads"])
    hidden = -(-int(params["hidden_size"]) // heads) * heads
    return BertConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        num_hidden_layers=int(params["num_layers"]),
        num_attention_heads=heads,
        intermediate_size=int(params["intermediate_size"]),
        hidden_dropout_prob=float(params["hidden_dropout"]),
        attention_probs_dropout_prob=float(params["attention_dropout"]),
        max_position_embeddings=max_seq_len,
        pad_token_id=pad_token_id,
        **extra,
    )


def scratch_bart_config(
    params: dict[str, Any],
    *,
    vocab_size: int,
    max_seq_len: int,
    pad_token_id: int,
    max_positions: int | None = None,
    **extra: Any,
) -> BartConfig:
    """An encoder-decoder ``BartConfig`` sized by the trial's hyperparameters.

    ``num_layers`` layers each in the encoder and the decoder. The decoder
    starts from ``[CLS]`` and stops at ``[SEP]``: the framing the scratch
    tokenizer gives every text, so targets need no other special tokens.
    """
    heads = int(params["num_attention_heads"])
    hidden = -(-int(params["hidden_size"]) // heads) * heads
    layers = int(params["num_layers"])
    cls_id, sep_id = SPECIAL_TOKENS.index(CLS), SPECIAL_TOKENS.index(SEP)
    # BART's 0.02 suits its width of 1024; small decoders started that close to
    # zero ignore the encoder for hundreds of steps (a plateau at the loss of an
    # unconditional model). 1/sqrt(width) keeps the logits' scale at any width.
    init_std = hidden**-0.5
    return BartConfig(
        vocab_size=vocab_size,
        d_model=hidden,
        encoder_layers=layers,
        decoder_layers=layers,
        encoder_attention_heads=heads,
        decoder_attention_heads=heads,
        encoder_ffn_dim=int(params["intermediate_size"]),
        decoder_ffn_dim=int(params["intermediate_size"]),
        dropout=float(params["hidden_dropout"]),
        attention_dropout=float(params["attention_dropout"]),
        max_position_embeddings=max(max_seq_len, max_positions or 0),
        pad_token_id=pad_token_id,
        bos_token_id=cls_id,
        eos_token_id=sep_id,
        decoder_start_token_id=cls_id,
        forced_eos_token_id=sep_id,
        init_std=init_std,
        **extra,
    )


def resolve_pretrained(spec: PretrainedModel, roots: list[Path]) -> tuple[str, bool]:
    """Where to load a checkpoint from, and whether that is a local folder.

    Raises:
        ModelLoadError: a local path outside the allowed roots, or missing.
    """
    if not looks_like_path(spec.name_or_path):
        return spec.name_or_path, False
    try:
        return str(resolve_confined(spec.name_or_path, roots, must_exist=True)), True
    except PathNotAllowedError as exc:
        raise ModelLoadError(f"model {exc}") from None


def load_pretrained(
    model_class: Any,
    source: str,
    *,
    local: bool,
    revision: str | None,
    params: dict[str, Any],
    **config_overrides: Any,
) -> Any:
    """``model_class.from_pretrained`` with the trial's dropouts and SDPA attention.

    Raises:
        ModelLoadError: the checkpoint cannot be loaded; for a hub id the
            message explains that the worker needs internet.
    """
    try:
        # A checkpoint's own Python code never runs here: only the built-in classes.
        config = AutoConfig.from_pretrained(
            source, revision=revision, trust_remote_code=False, **config_overrides
        )
        _set_dropouts(config, params)
        # A checkpoint's own head (another label count) is replaced, not an error.
        return model_class.from_pretrained(
            source,
            config=config,
            revision=revision,
            attn_implementation="sdpa",
            ignore_mismatched_sizes=True,
            trust_remote_code=False,
        )
    except Exception as exc:
        # Missing files, no network, a wrong architecture: all end the trial the same way.
        raise ModelLoadError(_load_failure(source, local, exc)) from None


def trainable_parameters_m(model: nn.Module) -> float:
    """Trainable parameters in millions (the ``params_m`` metric)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad) / 1e6


def _set_dropouts(config: Any, params: dict[str, Any]) -> None:
    for param, attributes in _DROPOUT_ATTRIBUTES.items():
        if param not in params:
            continue
        for attribute in attributes:
            if hasattr(config, attribute):
                setattr(config, attribute, float(params[param]))
                break


def _load_failure(source: str, local: bool, exc: Exception) -> str:
    # The libraries' messages run to several lines of advice; the first says what failed.
    first_line = next(iter(str(exc).strip().splitlines()), "")
    reason = f"{type(exc).__name__}: {first_line}"
    if local:
        return (
            f"could not load the model folder {source!r} ({reason}); it must hold a "
            "transformers checkpoint (config.json and weights)"
        )
    return (
        f"could not load {source!r} from the Hugging Face hub ({reason}). A hub id "
        "needs internet access on the worker (and HF_HUB_OFFLINE unset); on an offline "
        "machine, save the checkpoint to a folder below HPO_DATASET_ROOTS and set "
        "model.name_or_path to that folder"
    )
