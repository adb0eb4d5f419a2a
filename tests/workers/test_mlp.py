"""mlp-classifier: the digits set, and local MNIST files read without quoting them in errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from storage.tasks.mlp import MlpConfig
from workers.errors import DatasetError
from workers.tasks.mlp import _digits_arrays, load_mnist_data


def test_mnist_from_a_local_npz(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    arrays = {
        "x_train": rng.integers(0, 255, (40, 28, 28), dtype=np.uint8),
        "y_train": rng.integers(0, 10, 40),
        "x_test": rng.integers(0, 255, (20, 28, 28), dtype=np.uint8),
        "y_test": rng.integers(0, 10, 20),
    }
    np.savez(tmp_path / "mnist.npz", **arrays)
    path = str(tmp_path / "mnist.npz")
    config = MlpConfig.model_validate({"dataset": {"name": "mnist", "path": path}})
    data = load_mnist_data(config, [tmp_path])
    assert data.x_train.shape[1] == 28 * 28 and float(data.x_train.max()) <= 1.0


def test_an_unreadable_file_is_not_quoted_in_the_error(tmp_path: Path) -> None:
    (tmp_path / "mnist.npz").write_text("secret-token-1234 is not an npz file\n")
    path = str(tmp_path / "mnist.npz")
    config = MlpConfig.model_validate({"dataset": {"name": "mnist", "path": path}})
    with pytest.raises(DatasetError) as raised:
        load_mnist_data(config, [tmp_path])
    assert "secret-token-1234" not in str(raised.value)
    assert "cannot read MNIST from" in str(raised.value)


def test_digits_read_from_the_file_are_scikit_learns_digits() -> None:
    from sklearn.datasets import load_digits

    pixels, labels = _digits_arrays()
    digits = load_digits()
    assert np.array_equal(pixels, digits.data) and np.array_equal(labels, digits.target)
