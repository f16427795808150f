"""Nearest-neighbour indexes of embeddings

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "indexes",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("project", sa.String(length=100), nullable=False),
        sa.Column("model_id", sa.String(length=40), nullable=False),
        sa.Column("dataset_id", sa.String(length=40), nullable=False),
        sa.Column("job_id", sa.String(length=40), nullable=False),
        sa.Column("metric", sa.String(length=20), nullable=False),
        sa.Column("n_rows", sa.Integer(), nullable=True),
        sa.Column("dim", sa.Integer(), nullable=True),
        sa.Column("params", sa.JSON().with_variant(JSONB(), "postgresql"), nullable=False),
        sa.Column("id_column", sa.String(length=255), nullable=True),
        sa.Column("label_column", sa.String(length=255), nullable=True),
        sa.Column("blob_key", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_indexes_project", "indexes", ["project"])
    op.create_index("ix_indexes_model_id", "indexes", ["model_id"])
    op.create_index("ix_indexes_job_id", "indexes", ["job_id"])


def downgrade() -> None:
    op.drop_index("ix_indexes_job_id", table_name="indexes")
    op.drop_index("ix_indexes_model_id", table_name="indexes")
    op.drop_index("ix_indexes_project", table_name="indexes")
    op.drop_table("indexes")
