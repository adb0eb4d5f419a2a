"""Python client of the hyperparameter-optimization service.

    import hpo

    client = hpo.Client()                      # HPO_API_URL, HPO_API_TOKEN
    study = client.submit("study.yaml")        # or a dict, or a StudySpec
    study.wait()                               # a progress bar until it ends
    study.best_trial.params, study.trials_dataframe()

It talks to the REST API only and needs none of the server's or the workers'
packages.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from hpo.client import Client
from hpo.errors import ApiConnectionError, ApiError, ApiTimeout, FieldError
from hpo.models import Task, Trial, Worker
from hpo.progress import Progress
from hpo.spec_files import SpecFileError, load_spec_file
from hpo.study import Study

try:
    __version__ = version("hpo-service")
except PackageNotFoundError:  # running from a source tree that was never installed
    __version__ = "0.0.0"

__all__ = [
    "ApiConnectionError",
    "ApiError",
    "ApiTimeout",
    "Client",
    "FieldError",
    "Progress",
    "SpecFileError",
    "Study",
    "Task",
    "Trial",
    "Worker",
    "__version__",
    "load_spec_file",
]
