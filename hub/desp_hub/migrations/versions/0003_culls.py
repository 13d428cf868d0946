"""Servers the culler stopped, and why (idle or max_runtime), so the hub can tell their owners.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "server_culls",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("username", sa.String(255), nullable=False),
        sa.Column("server", sa.String(255), nullable=False),  # "" : the default server
        sa.Column("profile", sa.String(63), nullable=True),  # slug; NULL when the profile was unknown
        sa.Column("profile_name", sa.String(255), nullable=True),  # display name at the time of the cull
        sa.Column("reason", sa.String(16), nullable=False),  # idle max_runtime
        sa.Column("limit_seconds", sa.Integer, nullable=False),
    )
    op.create_index("ix_server_culls_username_at", "server_culls", ["username", "at"])


def downgrade() -> None:
    op.drop_index("ix_server_culls_username_at", table_name="server_culls")
    op.drop_table("server_culls")
