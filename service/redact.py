"""Keeping tokens out of logs, even when a client puts one where it does not belong."""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

_PATTERNS = (
    re.compile(r"hpo_[A-Za-z0-9_\-]{16,}"),  # our tokens, wherever they appear
    re.compile(r"(?i)((?:api_)?token|access_token|key|secret|password)=[^&\s\"]+"),
)


_TRACEBACKS = logging.Formatter()


def redact(text: str) -> str:
    text = _PATTERNS[0].sub("hpo_[redacted]", text)
    return _PATTERNS[1].sub(r"\1=[redacted]", text)


class RedactTokens(logging.Filter):
    """Replaces secrets in each record's message and arguments, keeping their shape.

    Formatters read the arguments themselves (uvicorn's access formatter
    unpacks five of them, the status code as a number), so a record keeps
    as many arguments as it had; only those that hold a secret are replaced
    by their redacted text.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_arg(arg) for arg in record.args)
        elif isinstance(record.args, Mapping):
            record.args = {key: _redact_arg(value) for key, value in record.args.items()}
        if record.exc_info and not record.exc_text:
            # Formatters reuse exc_text: a traceback that quotes a request is cleaned too.
            record.exc_text = redact(_TRACEBACKS.formatException(record.exc_info))
        return True


def _redact_arg(arg: object) -> object:
    if isinstance(arg, bool | int | float) or arg is None:
        return arg
    text = str(arg)
    cleaned = redact(text)
    return arg if cleaned == text else cleaned


def install_redaction() -> None:
    """Filter the access log and every root handler (uvicorn logs request lines)."""
    redactor = RedactTokens()
    for name in ("uvicorn.access", "uvicorn.error", ""):
        logger = logging.getLogger(name)
        logger.addFilter(redactor)
        for handler in logger.handlers:
            handler.addFilter(redactor)
