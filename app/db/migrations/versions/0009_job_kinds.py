"""Job kinds: a job trains, scores a dataset (batch), builds an index or reproduces a model;
the model it reads, the blob it made, and the sweep or comparison it belongs to

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("jobs") as batch:
        batch.add_column(sa.Column("kind", sa.String(length=20), nullable=False,
                                   server_default="train"))
        batch.add_column(sa.Column("source_model_id", sa.String(length=40), nullable=True))
        batch.add_column(sa.Column("result_key", sa.String(length=255), nullable=True))
        batch.add_column(sa.Column("parent_id", sa.String(length=40), nullable=True))
    op.create_index("ix_jobs_parent_id", "jobs", ["parent_id"])
    op.create_index("ix_jobs_source_model_id", "jobs", ["source_model_id"])


def downgrade() -> None:
    op.drop_index("ix_jobs_source_model_id", table_name="jobs")
    op.drop_index("ix_jobs_parent_id", table_name="jobs")
    with op.batch_alter_table("jobs") as batch:
        batch.drop_column("parent_id")
        batch.drop_column("result_key")
        batch.drop_column("source_model_id")
        batch.drop_column("kind")
