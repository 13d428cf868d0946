"""Workflows: published notebooks, their versions, schedules, schedule ticks and runs.

Revision ID: w0001
Revises:
Create Date: 2026-11-26
"""

import sqlalchemy as sa
from alembic import op

revision = "w0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workflows",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("visibility", sa.String(16), nullable=False),  # private group public
        sa.Column("group_name", sa.String(255), nullable=True),
        sa.Column("allow_run_by_others", sa.Boolean, nullable=False),
        sa.Column("profile", sa.String(63), nullable=False),
        sa.Column("timeout_seconds", sa.Integer, nullable=False),
        sa.Column("retries", sa.Integer, nullable=False),
        sa.Column("outputs", sa.JSON, nullable=False),  # list of glob patterns
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("deleted_at", sa.DateTime(timezone=True), nullable=True),
    )
    # one live workflow per owner and name (a deleted one frees its name)
    op.create_index(
        "uq_workflows_owner_name_live", "workflows", ["owner", "name"], unique=True,
        sqlite_where=sa.text("deleted_at IS NULL"), postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.create_table(
        "workflow_versions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("workflow_id", sa.Integer, sa.ForeignKey("workflows.id"), nullable=False),
        sa.Column("number", sa.Integer, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("notebook", sa.JSON, nullable=False),
        sa.Column("parameters", sa.JSON, nullable=False),  # [{name, type, default}]
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("created_by", sa.String(255), nullable=False),
        sa.UniqueConstraint("workflow_id", "number", name="uq_workflow_versions_number"),
    )
    op.create_table(
        "workflow_schedules",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("workflow_id", sa.Integer, sa.ForeignKey("workflows.id"), nullable=False),
        sa.Column("cron", sa.String(255), nullable=True),
        sa.Column("timezone", sa.String(64), nullable=True),
        sa.Column("interval_seconds", sa.Integer, nullable=True),
        sa.Column("missed_policy", sa.String(16), nullable=False),  # run_once skip
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("parameters", sa.JSON, nullable=False),
        sa.Column("username", sa.String(255), nullable=False),  # whose runs (and DCUs) the ticks are
        sa.Column("next_tick", sa.DateTime(timezone=True), nullable=False),  # first tick not yet recorded
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("workflow_id", name="uq_workflow_schedules_workflow"),
    )
    op.create_table(
        "workflow_runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("workflow_id", sa.Integer, sa.ForeignKey("workflows.id"), nullable=False),
        sa.Column("version_id", sa.Integer, sa.ForeignKey("workflow_versions.id"), nullable=False),
        sa.Column("username", sa.String(255), nullable=False),  # who asked: owner of the run's DCUs
        sa.Column("parameters", sa.JSON, nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),  # manual schedule
        sa.Column("tick_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),  # queued running succeeded failed timed_out
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("profile", sa.String(63), nullable=False),
        sa.Column("timeout_seconds", sa.Integer, nullable=False),
        sa.Column("retries", sa.Integer, nullable=False),
        sa.Column("queued_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("run_seconds", sa.Float, nullable=False),  # summed over attempts
        sa.Column("error", sa.JSON(none_as_null=True), nullable=True),
        sa.Column("log_path", sa.Text, nullable=True),
        sa.Column("outputs", sa.JSON, nullable=False),  # [{name, size, trace_id?}]
        sa.Column("trace_error", sa.Text, nullable=True),
        sa.Column("dcu_per_hour", sa.String(32), nullable=True),
        sa.Column("dcu_amount", sa.String(32), nullable=True),
        sa.Column("dcu_status", sa.String(16), nullable=True),  # pending delivered rejected
        sa.Column("dcu_transaction_id", sa.String(64), nullable=True),
        sa.Column("dcu_error", sa.Text, nullable=True),
    )
    op.create_index("ix_workflow_runs_status", "workflow_runs", ["status", "id"])
    op.create_index("ix_workflow_runs_workflow", "workflow_runs", ["workflow_id", "id"])
    op.create_index("ix_workflow_runs_dcu", "workflow_runs", ["dcu_status"])
    op.create_table(
        "workflow_ticks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("schedule_id", sa.Integer, sa.ForeignKey("workflow_schedules.id", ondelete="CASCADE"),
                  nullable=False),
        sa.Column("tick_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),  # run missed
        sa.Column("run_id", sa.Integer, sa.ForeignKey("workflow_runs.id"), nullable=True),
        sa.Column("recorded_at", sa.DateTime(timezone=True), nullable=False),
        sa.UniqueConstraint("schedule_id", "tick_at", name="uq_workflow_ticks_schedule_tick"),
    )


def downgrade() -> None:
    op.drop_table("workflow_ticks")
    op.drop_index("ix_workflow_runs_dcu", table_name="workflow_runs")
    op.drop_index("ix_workflow_runs_workflow", table_name="workflow_runs")
    op.drop_index("ix_workflow_runs_status", table_name="workflow_runs")
    op.drop_table("workflow_runs")
    op.drop_table("workflow_schedules")
    op.drop_table("workflow_versions")
    op.drop_index("uq_workflows_owner_name_live", table_name="workflows")
    op.drop_table("workflows")
