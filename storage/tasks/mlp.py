"""``mlp-classifier``: the small image classifier used to exercise the machinery."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from storage.spec import CategoricalParam, FloatParam, IntParam
from storage.tasks import Fidelity, HyperParameter, TaskDeclaration, register


class ImageDataset(BaseModel):
    """``digits`` is scikit-learn's bundled 8x8 set; ``mnist`` reads a local copy."""

    model_config = ConfigDict(extra="forbid")
    source: Literal["builtin"] = "builtin"
    name: Literal["digits", "mnist"] = "digits"
    path: str | None = Field(
        default=None,
        description="for mnist: an mnist.npz (x_train, y_train, x_test, y_test) "
        "below one of HPO_DATASET_ROOTS",
    )

    @model_validator(mode="after")
    def _mnist_needs_path(self) -> ImageDataset:
        if self.name == "mnist" and not self.path:
            raise ValueError("the mnist dataset needs a path to a local mnist.npz")
        return self


class MlpConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")
    dataset: ImageDataset = Field(default_factory=ImageDataset)
    max_epochs: int = Field(default=10, ge=1, le=1000)
    validation_fraction: float = Field(default=0.2, gt=0, lt=1)
    limit_train_samples: int | None = Field(default=None, ge=10)


MLP_CLASSIFIER = register(
    TaskDeclaration(
        name="mlp-classifier",
        fidelity=Fidelity(unit="epochs", maximum="max_epochs"),
        description="Flattened image -> hidden_size_1 -> hidden_size_2 -> classes (ReLU, "
        "cross-entropy) on scikit-learn's 8x8 digits or a local MNIST; reports "
        "val_accuracy and val_loss each epoch.",
        metrics={"val_accuracy": "maximize", "val_loss": "minimize", "params_m": "minimize"},
        config_model=MlpConfig,
        default_objective="val_accuracy",
        hyperparameters={
            "hidden_size_1": HyperParameter(
                "int",
                128,
                "units of the first hidden layer",
                IntParam(type="int", low=32, high=256, log=True),
                bounds=(1, 8192),
            ),
            "hidden_size_2": HyperParameter(
                "int",
                64,
                "units of the second hidden layer",
                IntParam(type="int", low=16, high=128, log=True),
                bounds=(1, 8192),
            ),
            "learning_rate": HyperParameter(
                "float",
                1e-3,
                "optimizer step size",
                FloatParam(type="float", low=1e-4, high=1e-1, log=True),
                bounds=(1e-12, 100.0),
            ),
            "optimizer": HyperParameter(
                "categorical",
                "adam",
                "adam, adamw or sgd (momentum 0.9)",
                CategoricalParam(type="categorical", choices=["adam", "sgd"]),
                choices=("adam", "adamw", "sgd"),
            ),
            "dropout": HyperParameter(
                "float",
                0.0,
                "dropout after each hidden layer",
                FloatParam(type="float", low=0.0, high=0.5),
                bounds=(0.0, 0.95),
            ),
            "weight_decay": HyperParameter(
                "float",
                0.0,
                "L2 penalty",
                FloatParam(type="float", low=1e-6, high=1e-2, log=True),
                bounds=(0.0, 1.0),
            ),
            "batch_size": HyperParameter(
                "int",
                64,
                "examples per step",
                None,
                bounds=(1, 65536),
            ),
        },
    )
)
