"""The database's own identity, which the blob store records as its owner

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-01
"""

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    table = op.create_table(
        "database_identity",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    # Made here, once: the URL cannot be the identity (one database has many host names).
    op.bulk_insert(table, [{"id": f"db_{uuid.uuid4().hex}", "created_at": datetime.now(UTC)}])


def downgrade() -> None:
    op.drop_table("database_identity")
