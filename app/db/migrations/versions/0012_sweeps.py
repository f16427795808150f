"""Hyperparameter sweeps

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "sweeps",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("project", sa.String(length=100), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=True),
        sa.Column("dataset_id", sa.String(length=40), nullable=False),
        sa.Column("algorithm", sa.String(length=50), nullable=False),
        sa.Column("space", JSON, nullable=False),
        sa.Column("params", JSON, nullable=False),
        sa.Column("features", JSON, nullable=True),
        sa.Column("target", sa.String(length=255), nullable=True),
        sa.Column("metric", sa.String(length=100), nullable=False),
        sa.Column("direction", sa.String(length=10), nullable=False),
        sa.Column("trials", sa.Integer(), nullable=False),
        sa.Column("parallelism", sa.Integer(), nullable=False),
        sa.Column("sampler", sa.String(length=20), nullable=False),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("pruner", JSON, nullable=True),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("asked", sa.Integer(), nullable=False),
        sa.Column("cancel_requested", sa.Boolean(), nullable=False),
        sa.Column("best_job_id", sa.String(length=40), nullable=True),
        sa.Column("best_model_id", sa.String(length=40), nullable=True),
        sa.Column("best_value", sa.Float(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_sweeps_project", "sweeps", ["project"])
    op.create_index("ix_sweeps_dataset_id", "sweeps", ["dataset_id"])
    op.create_table(
        "sweep_trials",
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("sweep_id", sa.String(length=40), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("params", JSON, nullable=False),
        sa.Column("state", sa.String(length=20), nullable=True),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("steps", JSON, nullable=False),
        sa.Column("seconds", sa.Float(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("job_id"),
        sa.UniqueConstraint("sweep_id", "number", name="uq_sweep_trials_number"),
    )
    op.create_index("ix_sweep_trials_sweep_id", "sweep_trials", ["sweep_id"])


def downgrade() -> None:
    op.drop_index("ix_sweep_trials_sweep_id", table_name="sweep_trials")
    op.drop_table("sweep_trials")
    op.drop_index("ix_sweeps_dataset_id", table_name="sweeps")
    op.drop_index("ix_sweeps_project", table_name="sweeps")
    op.drop_table("sweeps")
