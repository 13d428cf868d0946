"""Hub metering: sessions (price and interval at first sight) and the outbox of DCU transactions to deliver.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "metering_sessions",
        sa.Column("session", sa.String(600), primary_key=True),  # {user}/{server_name}/{started}
        sa.Column("username", sa.String(255), nullable=False),
        sa.Column("server_name", sa.String(255), nullable=False),  # "" : the default server
        sa.Column("started", sa.DateTime(timezone=True), nullable=False),  # truncated to the second
        sa.Column("profile", sa.String(63), nullable=True),
        sa.Column("dcu_per_hour", sa.String(32), nullable=False),  # decimal text, as first seen
        sa.Column("interval_seconds", sa.Integer, nullable=False),  # as first seen
        sa.Column("next_index", sa.Integer, nullable=False),  # complete intervals queued so far
        sa.Column("first_seen", sa.DateTime(timezone=True), nullable=False),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),  # NULL while running
    )
    op.create_index("ix_metering_sessions_server", "metering_sessions", ["username", "server_name"])
    op.create_table(
        "metering_outbox",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("idempotency_key", sa.String(200), nullable=False),
        sa.Column("session", sa.String(600), nullable=False),
        sa.Column("username", sa.String(255), nullable=False),
        sa.Column("server_name", sa.String(255), nullable=False),
        sa.Column("profile", sa.String(63), nullable=True),
        sa.Column("dcu_per_hour", sa.String(32), nullable=False),
        sa.Column("interval_index", sa.Integer, nullable=True),  # NULL: the final partial interval
        sa.Column("period_start", sa.DateTime(timezone=True), nullable=False),
        sa.Column("period_end", sa.DateTime(timezone=True), nullable=False),
        sa.Column("amount_milli", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),  # pending delivered rejected
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("transaction_id", sa.String(64), nullable=True),
        sa.UniqueConstraint("idempotency_key", name="uq_metering_outbox_key"),
    )
    op.create_index("ix_metering_outbox_status", "metering_outbox", ["status", "id"])
    op.create_index("ix_metering_outbox_session", "metering_outbox", ["session"])


def downgrade() -> None:
    op.drop_index("ix_metering_outbox_session", table_name="metering_outbox")
    op.drop_index("ix_metering_outbox_status", table_name="metering_outbox")
    op.drop_table("metering_outbox")
    op.drop_index("ix_metering_sessions_server", table_name="metering_sessions")
    op.drop_table("metering_sessions")
