"""A log of changed images for other processes, and image ids that are never reused.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "changes",
        sa.Column("seq", sa.Integer(), primary_key=True),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sqlite_autoincrement=True,
    )
    # AUTOINCREMENT: a deleted image's id is never given to a new one, so an old link or
    # cached thumbnail can never show another photo.
    with op.batch_alter_table("images", recreate="always",
                              table_kwargs={"sqlite_autoincrement": True}) as batch:
        batch.alter_column("id", existing_type=sa.Integer())


def downgrade() -> None:
    op.drop_table("changes")
