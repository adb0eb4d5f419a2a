"""``mlp-classifier``: flattened image -> hidden -> hidden -> classes, ReLU, cross-entropy.

Trained on scikit-learn's bundled 8x8 digits (offline) or a local MNIST
(an ``mnist.npz`` with x_train, y_train, x_test, y_test). Reports
``val_accuracy`` and ``val_loss`` after every epoch.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
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
from workers.training.checkpoint import (
    Position,
    load_checkpoint,
    remove_checkpoint,
    save_checkpoint,
)
from workers.training.optim import make_optimizer

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class ImageData:
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor
    y_val: torch.Tensor
    num_classes: int
    fingerprint: str


def _digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's 8x8 digits (pixels 0-16, labels), read from the file it ships.

    Reading the file directly spares a slot the seconds of importing
    ``sklearn.datasets``; the loader is the fallback should the file move.
    """
    spec = importlib.util.find_spec("sklearn")
    origin = spec.origin if spec is not None else None
    path = Path(origin).parent / "datasets" / "data" / "digits.csv.gz" if origin else None
    if path is not None and path.is_file():
        table = np.loadtxt(path, delimiter=",", dtype=np.float64)
        return table[:, :-1], table[:, -1].astype(np.int64)
    from sklearn.datasets import load_digits

    digits = load_digits()
    return digits.data, digits.target


def load_digits_data(config: MlpConfig) -> ImageData:
    pixels, labels = _digits_arrays()
    x = pixels.astype(np.float32) / 16.0
    y = labels.astype(np.int64)
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


def _optimizer(model: nn.Module, params: dict[str, object]) -> torch.optim.Optimizer:
    """The trial's optimizer; ``weight_decay`` is an L2 penalty on every parameter here."""
    groups = [{"params": list(model.parameters()), "weight_decay": float(params["weight_decay"])}]  # type: ignore[arg-type]
    return make_optimizer(
        str(params["optimizer"]),
        groups,
        learning_rate=float(params["learning_rate"]),  # type: ignore[arg-type]
        momentum=0.9,
    )


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> dict[str, float]:
    model.eval()
    logits = model(x)
    loss = nn.functional.cross_entropy(logits, y).item()
    accuracy = (logits.argmax(dim=1) == y).float().mean().item()
    model.train()
    return {"val_accuracy": accuracy, "val_loss": loss}


def run(ctx: TrialContext) -> dict[str, float]:
    """Train for ``max_epochs``, reporting after each; prune when the pruner says so.

    A checkpoint after each epoch lets a retried (or continued) trial resume
    from the last epoch it finished.
    """
    config = MlpConfig.model_validate(ctx.config)
    torch.manual_seed(ctx.seed)
    if config.dataset.name == "mnist":
        data = load_mnist_data(config, list(ctx.dataset_roots))
    else:
        data = load_digits_data(config)
    model = build_model(data.x_train.shape[1], data.num_classes, ctx.params)
    optimizer = _optimizer(model, ctx.params)
    # A constant schedule: the checkpoint format keeps one.
    scheduler = torch.optim.lr_scheduler.ConstantLR(optimizer, factor=1.0, total_iters=0)
    params_m = sum(p.numel() for p in model.parameters()) / 1e6
    ctx.set_info(
        dataset_fingerprint=data.fingerprint,
        n_train=len(data.x_train),
        n_validation=len(data.x_val),
        params_m=params_m,
    )
    state = _Checkpointed(ctx, model, optimizer, scheduler, _fingerprint(ctx, data))
    ctx.declare_fidelity(config.max_epochs, 1)
    metrics: dict[str, float] = {}
    for epoch in range(state.resume() + 1, config.max_epochs + 1):
        _train_epoch(ctx, model, optimizer, data, epoch)
        metrics = evaluate(model, data.x_val, data.y_val)
        final = epoch == config.max_epochs
        if not final:
            state.save(epoch)
        ctx.report(epoch, metrics, final=final)
        if ctx.should_prune():
            if not ctx.keep_checkpoint_when_pruned:
                state.remove()
            raise optuna.TrialPruned(f"pruned after epoch {epoch}")
    if not metrics:  # resumed from a checkpoint at the last epoch
        metrics = evaluate(model, data.x_val, data.y_val)
    save_model(model, ctx)
    state.remove()
    return {**metrics, "params_m": params_m}


def _train_epoch(
    ctx: TrialContext,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    data: ImageData,
    epoch: int,
) -> None:
    batch_size = int(ctx.params["batch_size"])
    # One shuffle per (seed, epoch): a resumed run sees the epochs it would have seen.
    generator = torch.Generator().manual_seed(ctx.seed * 1_000 + epoch)
    order = torch.randperm(len(data.x_train), generator=generator)
    model.train()
    for start in range(0, len(order), batch_size):
        index = order[start : start + batch_size]
        ctx.count_examples(len(index))
        loss = nn.functional.cross_entropy(model(data.x_train[index]), data.y_train[index])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


@dataclass
class _Checkpointed:
    """The MLP's training state in the trial folder's ``checkpoint``."""

    ctx: TrialContext
    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    fingerprint: str

    @property
    def directory(self) -> Path:
        return self.ctx.work_dir / "checkpoint"

    def resume(self) -> int:
        """Load the checkpoint if it is this run's; return the epochs it has done."""
        position = load_checkpoint(
            self.directory,
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            fingerprint=self.fingerprint,
        )
        return 0 if position is None else position.epoch

    def save(self, epoch: int) -> None:
        save_checkpoint(
            self.directory,
            model=self.model,
            optimizer=self.optimizer,
            scheduler=self.scheduler,
            position=Position(step=epoch, epoch=epoch, step_in_epoch=0),
            fingerprint=self.fingerprint,
        )

    def remove(self) -> None:
        remove_checkpoint(self.directory)


def _fingerprint(ctx: TrialContext, data: ImageData) -> str:
    facts = {"params": ctx.params, "config": ctx.config, "data": data.fingerprint}
    encoded = json.dumps(facts, sort_keys=True, default=str).encode()
    return hashlib.sha256(encoded).hexdigest()


def save_model(model: nn.Module, ctx: TrialContext) -> None:
    """The whole module (so MLflow's PyTorch flavor can log it) in the trial's folder."""
    ctx.check_before_save()
    folder = ctx.work_dir / "model"
    folder.mkdir(parents=True, exist_ok=True)
    torch.save(model.eval(), folder / "model.pt")
    ctx.set_model_dir(folder)
