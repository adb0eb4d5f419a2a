"""``mlp-classifier``: flattened image -> hidden -> hidden -> classes, ReLU, cross-entropy.

Trained on scikit-learn's bundled 8x8 digits (offline) or a local MNIST
(an ``mnist.npz`` with x_train, y_train, x_test, y_test). Reports
``val_accuracy`` and ``val_loss`` after every epoch.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
import torch
from torch import nn

from storage.paths import PathNotAllowedError, resolve_confined
from storage.tasks.mlp import MlpConfig
from workers.context import TrialContext
from workers.errors import DatasetError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageData:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    num_classes: int
    fingerprint: str


def load_digits_data(config: MlpConfig) -> ImageData:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = digits.data.astype(np.float32) / 16.0
    y = digits.target.astype(np.int64)
    order = np.random.default_rng(0).permutation(len(x))  # one fixed split for every trial
    n_val = int(len(x) * config.validation_fraction)
    val, train = order[:n_val], order[n_val:]
    return _as_data(x[train], y[train], x[val], y[val], config=config, name="digits")


def load_mnist_data(config: MlpConfig, roots: list[Path]) -> ImageData:
    assert config.dataset.path is not None
    try:
        path = resolve_confined(config.dataset.path, roots, must_exist=True)
        with np.load(path) as arrays:
            x_train, y_train = arrays["x_train"], arrays["y_train"]
            x_test, y_test = arrays["x_test"], arrays["y_test"]
    except PathNotAllowedError as exc:
        raise DatasetError(str(exc)) from None
    except (OSError, KeyError, ValueError) as exc:
        # The reader's message may quote the file: its type only; the log has the rest.
        logger.warning("reading MNIST from %s failed", config.dataset.path, exc_info=True)
        raise DatasetError(
            f"cannot read MNIST from {config.dataset.path} ({type(exc).__name__}); it must be "
            "an .npz with x_train, y_train, x_test and y_test"
        ) from None
    scale = np.float32(255.0)
    return _as_data(
        x_train.reshape(len(x_train), -1) / scale,
        y_train.astype(np.int64),
        x_test.reshape(len(x_test), -1) / scale,
        y_test.astype(np.int64),
        config=config,
        name="mnist",
    )


def _as_data(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    config: MlpConfig,
    name: str,
) -> ImageData:
    if config.limit_train_samples:
        x_train, y_train = (
            x_train[: config.limit_train_samples],
            y_train[: config.limit_train_samples],
        )
    digest = hashlib.sha256(name.encode())
    for array in (x_train, y_train, x_val, y_val):
        digest.update(np.ascontiguousarray(array).tobytes())
    return ImageData(
        torch.as_tensor(x_train, dtype=torch.float32),
        torch.as_tensor(y_train),
        torch.as_tensor(x_val, dtype=torch.float32),
        torch.as_tensor(y_val),
        int(max(y_train.max(), y_val.max())) + 1,
        digest.hexdigest()[:16],
    )


def build_model(n_inputs: int, n_classes: int, params: dict[str, object]) -> nn.Module:
    h1, h2 = int(params["hidden_size_1"]), int(params["hidden_size_2"])  # type: ignore[call-overload]
    dropout = float(params["dropout"])  # type: ignore[arg-type]
    return nn.Sequential(
        nn.Linear(n_inputs, h1),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(h1, h2),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(h2, n_classes),
    )


def build_optimizer(model: nn.Module, params: dict[str, object]) -> torch.optim.Optimizer:
    lr = float(params["learning_rate"])  # type: ignore[arg-type]
    decay = float(params["weight_decay"])  # type: ignore[arg-type]
    name = params["optimizer"]
    if name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=decay)
    if name == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=decay)
    return torch.optim.Adam(model.parameters(), lr=lr, weight_decay=decay)


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    model.eval()
    logits = model(x)
    loss = nn.functional.cross_entropy(logits, y).item()
    accuracy = (logits.argmax(dim=1) == y).float().mean().item()
    model.train()
    return {"val_accuracy": accuracy, "val_loss": loss}


def run(ctx: TrialContext) -> dict[str, float]:
    """Train for ``max_epochs``, reporting after each; prune when the pruner says so."""
    config = MlpConfig.model_validate(ctx.config)
    torch.manual_seed(ctx.seed)
    if config.dataset.name == "mnist":
        data = load_mnist_data(config, list(ctx.dataset_roots))
    else:
        data = load_digits_data(config)
    model = build_model(data.x_train.shape[1], data.num_classes, ctx.params)
    optimizer = build_optimizer(model, ctx.params)
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    ctx.set_info(
        dataset_fingerprint=data.fingerprint,
        n_train=len(data.x_train),
        n_validation=len(data.x_val),
        params_m=params_m,
    )
    batch_size = int(ctx.params["batch_size"])
    generator = torch.Generator().manual_seed(ctx.seed)
    metrics: dict[str, float] = {}
    for epoch in range(1, config.max_epochs + 1):
        order = torch.randperm(len(data.x_train), generator=generator)
        for start in range(0, len(order), batch_size):
            index = order[start : start + batch_size]
            ctx.count_examples(len(index))
            loss = nn.functional.cross_entropy(model(data.x_train[index]), data.y_train[index])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        metrics = evaluate(model, data.x_val, data.y_val)
        ctx.report(epoch, metrics, final=epoch == config.max_epochs)
        if ctx.should_prune():
            raise optuna.TrialPruned(f"pruned after epoch {epoch}")
    save_model(model, ctx)
    return {**metrics, "params_m": params_m}


def save_model(model: nn.Module, ctx: TrialContext) -> None:
    """The whole module (so MLflow's PyTorch flavor can log it) in the trial's folder."""
    ctx.check_before_save()
    folder = ctx.work_dir / "model"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.eval(), folder / "model.pt")
    ctx.set_model_dir(folder)
