"""Comparisons (does pretraining pay?) and webhooks

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-01
"""

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass  # reserved: filled in by the change that adds these tables


def downgrade() -> None:
    pass
