"""``python -m workers.slot``: one worker slot process (started by the supervisor)."""

from __future__ import annotations

import argparse
import os
import sys

from storage.settings import Settings
from workers.logs import configure_slot_logging
from workers.runner import SlotRunner
from workers.slot_env import SlotOptions


def parse_args(argv: list[str]) -> SlotOptions:
    parser = argparse.ArgumentParser(prog="python -m workers.slot")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--device-label", default=None)
    parser.add_argument("--slot", type=int, default=0)
    parser.add_argument("--study", action="append", default=[])
    parser.add_argument("--max-trials", type=int, default=None)
    parser.add_argument("--exit-when-idle", action="store_true")
    parser.add_argument("--wakeup-fd", type=int, default=None)
    parser.add_argument("--memory-budget", type=int, default=None)
    parser.add_argument("--share-cores", action="store_true")
    args = parser.parse_args(argv)
    return SlotOptions(
        device=args.device,
        device_label=args.device_label or args.device,
        slot=args.slot,
        studies=args.study,
        max_trials=args.max_trials,
        exit_when_idle=args.exit_when_idle,
        wakeup_fd=args.wakeup_fd,
        memory_budget=args.memory_budget,
        share_cores=args.share_cores,
    )


def main(argv: list[str] | None = None) -> int:
    options = parse_args(sys.argv[1:] if argv is None else argv)
    # Progress bars of model downloads and saves would flood the worker's log.
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "warning")
    configure_slot_logging(f"{options.device_label}/{options.slot}")
    runner = SlotRunner(Settings(), options)
    runner.install_signals()
    return runner.run()


if __name__ == "__main__":
    sys.exit(main())
