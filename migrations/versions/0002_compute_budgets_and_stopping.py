"""compute budgets and study-level stopping

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01 20:30:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def _study_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("compute_s", sa.Float(), server_default="0", nullable=False),
        sa.Column("train_examples", sa.BigInteger(), server_default="0", nullable=False),
        sa.Column("max_compute_s", sa.Float(), nullable=True),
        sa.Column("max_train_examples", sa.BigInteger(), nullable=True),
        sa.Column("best_value", sa.Float(), nullable=True),
        sa.Column("best_at_finished", sa.Integer(), nullable=True),
        sa.Column("stop_reason", sa.Text(), nullable=True),
    ]


def _lease_columns() -> list[sa.Column[object]]:
    return [
        sa.Column("compute_s", sa.Float(), nullable=True),
        sa.Column("train_examples", sa.BigInteger(), nullable=True),
    ]


def upgrade() -> None:
    with op.batch_alter_table("hpo_studies") as batch:
        for column in _study_columns():
            batch.add_column(column)
    with op.batch_alter_table("hpo_leases") as batch:
        for column in _lease_columns():
            batch.add_column(column)


def downgrade() -> None:
    with op.batch_alter_table("hpo_leases") as batch:
        for column in reversed(_lease_columns()):
            batch.drop_column(column.name)
    with op.batch_alter_table("hpo_studies") as batch:
        for column in reversed(_study_columns()):
            batch.drop_column(column.name)
