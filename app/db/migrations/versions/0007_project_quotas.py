"""Per-project quotas that override the PRETRAINER_QUOTA_* settings

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

QUOTAS = ("stored_bytes", "datasets", "models", "running_jobs", "queued_jobs", "serving_requests")


def upgrade() -> None:
    op.create_table(
        "project_quotas",
        sa.Column("project", sa.String(length=100), nullable=False),
        *(sa.Column(name, sa.BigInteger(), nullable=True) for name in QUOTAS),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("project"),
    )


def downgrade() -> None:
    op.drop_table("project_quotas")
