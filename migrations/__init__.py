"""Alembic migrations of the service's own tables (version table ``hpo_alembic_version``)."""
