"""Alembic environment of the workflows store: run by `WorkflowStore.upgrade()` (see desp_hub.alembic_support)."""

from desp_hub.alembic_support import run_environment

run_environment(default_version_table="workflows_alembic_version")
