"""Keeping tokens out of logs, even when a client puts one where it does not belong."""

from __future__ import annotations

import logging
import re

_PATTERNS = (
    re.compile(r"hpo_[A-Za-z0-9_\-]{16,}"),  # our tokens, wherever they appear
    re.compile(r"(?i)((?:api_)?token|access_token|key|secret|password)=[^&\s\"]+"),
)


def redact(text: str) -> str:
    text = _PATTERNS[0].sub("hpo_[redacted]", text)
    return _PATTERNS[1].sub(r"\1=[redacted]", text)


class RedactTokens(logging.Filter):
    """Rewrites each record's message with secrets replaced."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


def install_redaction() -> None:
    """Filter the access log and every root handler (uvicorn logs request lines)."""
    redactor = RedactTokens()
    for name in ("uvicorn.access", "uvicorn.error", ""):
        logger = logging.getLogger(name)
        logger.addFilter(redactor)
        for handler in logger.handlers:
            handler.addFilter(redactor)
