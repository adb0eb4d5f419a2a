"""Worker log lines name the study and trial of each record, or ``-``."""

from __future__ import annotations

import logging

from workers.logs import TrialFields


def _format(record: logging.LogRecord) -> str:
    TrialFields().filter(record)
    return logging.Formatter("%(study)s/%(trial)s %(message)s").format(record)


def test_records_show_their_study_and_trial_or_a_dash() -> None:
    logger = logging.getLogger("workers.test")
    plain = logger.makeRecord(logger.name, logging.INFO, __file__, 1, "claimed", (), None)
    assert _format(plain) == "-/- claimed"
    tagged = logger.makeRecord(
        logger.name,
        logging.INFO,
        __file__,
        1,
        "started",
        (),
        None,
        extra={"study": "bert", "trial": 3},
    )
    assert _format(tagged) == "bert/3 started"
