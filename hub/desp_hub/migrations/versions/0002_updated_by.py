"""Who changed a profile last (profiles.updated_by), and an index to list the audit trail by time.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "profiles", sa.Column("updated_by", sa.String(255), nullable=False, server_default="unknown")
    )
    # Existing rows: the actor of the profile's latest audit entry, where there is one.
    op.execute(
        """
        UPDATE profiles SET updated_by = (
            SELECT a.actor FROM profile_audit a WHERE a.slug = profiles.slug ORDER BY a.id DESC LIMIT 1
        )
        WHERE EXISTS (SELECT 1 FROM profile_audit a WHERE a.slug = profiles.slug)
        """
    )
    op.create_index("ix_profile_audit_at", "profile_audit", ["at"])


def downgrade() -> None:
    op.drop_index("ix_profile_audit_at", table_name="profile_audit")
    with op.batch_alter_table("profiles") as batch:
        batch.drop_column("updated_by")
