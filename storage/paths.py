"""Confinement of user-given paths to the folders the operator allows."""

from __future__ import annotations

from pathlib import Path

from storage.errors import ErrorDetail


class PathNotAllowedError(ValueError):
    """A path points outside every allowed root, or does not exist."""


def looks_like_path(value: str) -> bool:
    """True for a local path rather than a hub id (``org/name``)."""
    return value.startswith((".", "/", "~")) or "\\" in value or Path(value).exists()


def resolve_confined(path: str, roots: list[Path], *, must_exist: bool) -> Path:
    """Resolve ``path`` (relative to the working directory) inside one of ``roots``.

    Symlinks are resolved first, so a link that leads out of the roots is refused.

    Raises:
        PathNotAllowedError: outside the roots, or missing when ``must_exist``.
    """
    resolved = Path(path).expanduser().resolve()
    if not any(resolved == root or resolved.is_relative_to(root) for root in roots):
        allowed = ":".join(str(r) for r in roots)
        raise PathNotAllowedError(
            f"{path!r} is outside the allowed dataset roots ({allowed}); "
            "move the data below one of them or extend HPO_DATASET_ROOTS"
        )
    if must_exist and not resolved.exists():
        raise PathNotAllowedError(f"{path!r} does not exist")
    return resolved


def check_confined(path: str, roots: list[Path], loc: tuple[str | int, ...]) -> list[ErrorDetail]:
    try:
        resolve_confined(path, roots, must_exist=False)
    except PathNotAllowedError as exc:
        return [ErrorDetail(loc, str(exc))]
    return []
