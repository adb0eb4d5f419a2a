"""A progress bar for ``Study.wait``: tqdm's, which draws a widget in notebooks."""

from __future__ import annotations

from typing import Any

from hpo.progress import Progress, format_duration


class ProgressBar:
    """Trials finished out of ``n_trials``, with status, ETA, best value and running trials."""

    def __init__(self, name: str) -> None:
        from tqdm.auto import tqdm

        self._bar: Any = tqdm(total=None, desc=name, unit="trial", dynamic_ncols=True)
        self._note = ""

    def update(self, progress: Progress) -> None:
        bar = self._bar
        if bar.total != progress.n_trials:
            bar.total = progress.n_trials
        bar.n = progress.finished
        postfix = [progress.status, f"{progress.active} running"]
        if progress.eta is not None and not progress.done:
            postfix.append(f"ETA {format_duration(progress.eta)}")
        if progress.best is not None:
            postfix.append(f"best {progress.best:.4g}")
        running = progress.running_summary()
        if running:
            postfix.append(running)
        bar.set_postfix_str(", ".join(postfix), refresh=False)
        if progress.warning and progress.warning != self._note:
            self._note = progress.warning
            bar.write(f"{progress.name}: {progress.warning}")
        bar.refresh()

    def close(self) -> None:
        self._bar.close()
