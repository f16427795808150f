"""model lineage: the backbone a transfer model was built on

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

JSON = sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("backbone_model_id", sa.String(40), nullable=True))
        batch.add_column(sa.Column("lineage", JSON, nullable=False, server_default=sa.text("'{}'")))
        batch.create_index("ix_models_backbone_model_id", ["backbone_model_id"])


def downgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.drop_index("ix_models_backbone_model_id")
        batch.drop_column("lineage")
        batch.drop_column("backbone_model_id")
