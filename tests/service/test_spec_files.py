"""Spec files for the CLI: aliases are fine, alias bombs and huge files are refused unexpanded."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.cli.client import ClientError
from service.cli.spec_files import MAX_SPEC_BYTES, load_spec_file


def _write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_ordinary_aliases_and_merge_keys_load(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        "spec.yaml",
        "base: &base {low: 0.0, high: 1.0}\n"
        "name: aliases\n"
        "task: {name: mlp-classifier}\n"
        "search_space:\n"
        "  dropout: {<<: *base, type: float}\n",
    )
    spec = load_spec_file(path)
    assert spec["search_space"]["dropout"] == {"low": 0.0, "high": 1.0, "type": "float"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "a: &a [x, x, x, x, x, x, x, x, x]\n"
            + "".join(
                f"{n}: &{n} [{', '.join([f'*{p}'] * 9)}]\n"
                for p, n in zip("abcdefgh", "bcdefghi", strict=True)
            ),
            "expands to more than",
        ),
        ("a: &a [x]\n" + "".join(f"k{i}: *a\n" for i in range(101)), "more than 100 aliases"),
        ("a: &a [*a]\n", "refers to the node that contains it"),
        ("a: " + "[" * 5000 + "]" * 5000 + "\n", "nested too deeply"),
    ],
    ids=["billion-laughs", "too-many-aliases", "recursive", "deep"],
)
def test_bombs_are_refused_before_expansion(tmp_path: Path, text: str, message: str) -> None:
    # Each message comes from a check made on the parsed nodes before anything is
    # expanded (the billion laughs would be 9**9 items): no wall-clock bound needed.
    with pytest.raises(ClientError, match=message):
        load_spec_file(_write(tmp_path, "bomb.yaml", text))


def test_files_over_the_size_limit_are_not_parsed(tmp_path: Path) -> None:
    path = _write(tmp_path, "big.json", '{"name": "' + "x" * MAX_SPEC_BYTES + '"}')
    with pytest.raises(ClientError, match="larger than"):
        load_spec_file(path)
