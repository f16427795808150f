"""The reproducibility record of each model

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-01
"""

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # reserved: filled in by the change that adds these tables


def downgrade() -> None:
    pass
