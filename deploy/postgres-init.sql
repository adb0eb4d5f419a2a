-- Creates the three databases of a deployment. The postgres image runs this once,
-- as POSTGRES_USER, when its data volume is first initialised; later changes to
-- this file (or to POSTGRES_PASSWORD) do not touch an existing volume.
--
-- One database per schema owner, because the service (Alembic), Optuna and MLflow
-- each keep their own `alembic_version` table:
--   hpo    : the service's tables (hpo db upgrade)
--   optuna : Optuna's RDBStorage (hpo db upgrade)
--   mlflow : the MLflow tracking server's backend store (mlflow server)
SELECT format('CREATE DATABASE %I', wanted.name)
FROM unnest(ARRAY['hpo', 'optuna', 'mlflow']) AS wanted(name)
WHERE NOT EXISTS (SELECT 1 FROM pg_database WHERE datname = wanted.name)
\gexec
