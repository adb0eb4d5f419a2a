"""MLflow tracking of studies and trials, buffered so that training never waits on it.

One experiment per study with a parent run; one nested run per trial with its
params, the learning curve of every metric, final metrics, state and what
reproduces it; the best trial's model registered under the study's name with
the alias ``best``; summary plots on the parent run when the study ends.
"""

from workers.tracking.tracker import MlflowTracker

__all__ = ["MlflowTracker"]
