"""The worker's log lines: every record names its study and trial, or ``-`` for none.

Records about a trial carry ``study`` and ``trial`` attributes: they are
logged through a :class:`logging.LoggerAdapter` that adds them
(``TrialContext.log``, the trial runner's ``log``). Records of the slot's own
machinery (claims, heartbeats, tracking) carry none and show ``-``.
"""

from __future__ import annotations

import logging

TRIAL_FIELDS = ("study", "trial")


class TrialFields(logging.Filter):
    """Gives each record the ``study`` and ``trial`` attributes the format prints."""

    def filter(self, record: logging.LogRecord) -> bool:
        for name in TRIAL_FIELDS:
            if not hasattr(record, name):
                setattr(record, name, "-")
        return True


def configure_slot_logging(slot_label: str, level: int = logging.INFO) -> None:
    """Log to stderr as ``time level [slot] study/trial logger message``."""
    logging.basicConfig(
        level=level,
        format=f"%(asctime)s %(levelname)s [{slot_label}] %(study)s/%(trial)s %(name)s %(message)s",
    )
    # On the handlers, not a logger: records of every logger reach them.
    for handler in logging.getLogger().handlers:
        handler.addFilter(TrialFields())
