"""Hyperparameter sweeps

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-01
"""

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # reserved: filled in by the change that adds these tables


def downgrade() -> None:
    pass
