"""Alembic environment of the workflows store: run by `WorkflowStore.upgrade()` on its own connection.

`desp_hub.workflows.store.alembic_config(...)` builds the Config: either `config.attributes["connection"]` (an
open connection, used as is, inside its transaction) or the `sqlalchemy.url` option (offline SQL or a fresh engine).
"""

from alembic import context
from sqlalchemy import create_engine, pool

config = context.config
VERSION_TABLE = config.get_main_option("version_table") or "workflows_alembic_version"
# No autogenerate target: revisions are written by hand and checked against store.metadata by the tests.
OPTIONS = {"version_table": VERSION_TABLE, "render_as_batch": True, "target_metadata": None}


def run_migrations_offline() -> None:
    context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True, **OPTIONS)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations(connection) -> None:
    context.configure(connection=connection, **OPTIONS)
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        run_migrations(connection)
        return
    engine = create_engine(config.get_main_option("sqlalchemy.url"), poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            run_migrations(connection)
            connection.commit()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
