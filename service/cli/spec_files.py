"""Spec files for the CLI: the client's bounded loader, its errors as one-line CLI errors."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from hpo.spec_files import MAX_SPEC_BYTES, SpecFileError
from hpo.spec_files import load_spec_file as _load
from service.cli.client import ClientError

__all__ = ["MAX_SPEC_BYTES", "load_spec_file"]


def load_spec_file(path: Path) -> dict[str, Any]:
    """Read a YAML or JSON spec (see :func:`hpo.spec_files.load_spec_file`).

    Raises:
        ClientError: the file cannot be used; the message says why and where.
    """
    try:
        return _load(path)
    except SpecFileError as exc:
        raise ClientError(exc.message) from None
