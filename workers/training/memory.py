"""How much device memory a training run needs at its peak: estimated, then measured.

The estimate (:func:`estimate_training_bytes`) adds up what training holds
at once: fp32 weights and gradients, the optimizer's state, autocast's bf16
copies of the weights on CUDA, and the activations kept for the backward
pass of one micro-batch (``batch_size`` times the longest sequence). The
activation count per token and layer follows the usual accounting for a
Transformer block (Korthikanti et al., 2022) with fused attention, which
never materialises the sequence-by-sequence scores; eager attention adds them.
A 20 % margin covers what the count leaves out (temporaries of the backward,
allocator rounding). On CUDA the loop measures the real peak after the first
optimizer step (:func:`measured_peak_bytes`) and the reservation follows it.
"""

from __future__ import annotations

from typing import Any

import torch

from workers.training.settings import TrainSettings

MARGIN = 1.2
# The caching allocator's own slack and cuBLAS/cuDNN workspaces of one process.
CUDA_SLACK_BYTES = 256 * 2**20
# Optimizer state per trainable parameter, in fp32 values.
_STATE_VALUES = {"adamw": 2, "sgd": 1}


def estimate_training_bytes(model: Any, settings: TrainSettings, seq_len: int) -> int:
    """Peak device memory of training ``model`` with ``settings`` on ``seq_len`` tokens."""
    params = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    cuda = settings.device.startswith("cuda")
    state = _STATE_VALUES.get(settings.optimizer, 2)
    if settings.optimizer == "sgd" and settings.momentum == 0:
        state = 0
    weights = 4 * params + 4 * trainable * (1 + state) + (2 * params if cuda else 0)
    tokens = settings.batch_size * max(1, seq_len)
    activations = tokens * _bytes_per_token(model, seq_len, 2 if cuda else 4)
    return int((weights + activations) * MARGIN) + (CUDA_SLACK_BYTES if cuda else 0)


def _bytes_per_token(model: Any, seq_len: int, value_bytes: int) -> float:
    """Activation bytes kept per token for the backward pass, over the whole model."""
    config = getattr(model, "config", None)
    hidden = _first(config, ("hidden_size", "d_model", "n_embd"), 768)
    ffn = _first(config, ("intermediate_size", "d_ff", "n_inner", "ffn_dim"), 4 * hidden)
    heads = _first(config, ("num_attention_heads", "num_heads", "n_head"), 12)
    # Decoder layers also attend to the encoder: about one and a half blocks each.
    layers = _first(config, ("num_hidden_layers", "num_layers", "n_layer"), 12) + 1.5 * _first(
        config, ("num_decoder_layers",), 0
    )
    # Per block: inputs of the Q/K/V, output and FFN matmuls, layer norms (whose
    # outputs autocast keeps in fp32), GELU, dropout masks; fused attention keeps
    # only its output and row statistics.
    per_layer = 18 * hidden + 4 * ffn
    if getattr(config, "_attn_implementation", "sdpa") == "eager":
        per_layer += 3 * heads * seq_len  # scores, softmax, dropout mask
    total = (layers * per_layer + 4 * hidden) * value_bytes  # and the embeddings
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    if output is not None:
        # Language-model logits, their fp32 log-softmax and its gradient.
        total += 3 * 4 * _first(config, ("vocab_size",), 30522)
    return float(total)


def measured_peak_bytes(device: torch.device) -> int | None:
    """Peak memory the CUDA caching allocator held since the last reset; None elsewhere."""
    if device.type != "cuda":
        return None
    return int(torch.cuda.max_memory_reserved(device)) + CUDA_SLACK_BYTES


def reset_peak_memory(device: torch.device) -> None:
    """Start a new peak for :func:`measured_peak_bytes` (one per trial)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)


def _first(config: Any, names: tuple[str, ...], default: int) -> int:
    for name in names:
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    return default
