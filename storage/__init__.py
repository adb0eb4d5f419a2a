"""Storage: the contract between the control plane and the workers.

The study spec, the service's database models and the Optuna glue live here so
that ``service`` and ``workers`` depend on ``storage`` and never on each other.
"""
