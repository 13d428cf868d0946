"""Profiles and their audit trail.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "profiles",
        sa.Column("slug", sa.String(63), primary_key=True),
        sa.Column("data", sa.JSON, nullable=False),  # Profile.to_dict()
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "profile_audit",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("actor", sa.String(255), nullable=False),
        sa.Column("action", sa.String(16), nullable=False),  # create update disable enable delete import
        sa.Column("slug", sa.String(63), nullable=False),
        sa.Column("before", sa.JSON, nullable=True),
        sa.Column("after", sa.JSON, nullable=True),
    )
    op.create_index("ix_profile_audit_slug", "profile_audit", ["slug"])


def downgrade() -> None:
    op.drop_index("ix_profile_audit_slug", table_name="profile_audit")
    op.drop_table("profile_audit")
    op.drop_table("profiles")
