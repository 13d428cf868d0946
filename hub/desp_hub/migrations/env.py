"""Alembic environment of the profiles store: run by `ProfileStore.upgrade()` (see desp_hub.alembic_support)."""

from desp_hub.alembic_support import run_environment

run_environment(default_version_table="desp_profiles_alembic_version")
