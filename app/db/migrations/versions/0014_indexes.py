"""Nearest-neighbour indexes of embeddings

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-01
"""

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # reserved: filled in by the change that adds these tables


def downgrade() -> None:
    pass
