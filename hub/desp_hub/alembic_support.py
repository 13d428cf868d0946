"""What the Alembic migrations of DESP's stores (profiles, workflows) share: a Config built in code (no alembic.ini
on disk) and the body of their `env.py`.

Each store keeps its own script directory and version table, so the two histories never meet in one database.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import create_engine, pool
from sqlalchemy.engine import Connection


def alembic_config(script_location: Path, version_table: str, url_or_connection: str | Connection):
    """An Alembic `Config` for the migrations in `script_location`, bound to a URL or to an open connection (used
    as is, inside its transaction)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(script_location))
    config.set_main_option("version_table", version_table)
    if isinstance(url_or_connection, str):
        # "%" is ConfigParser's interpolation character and appears in URL-encoded passwords.
        config.set_main_option("sqlalchemy.url", url_or_connection.replace("%", "%%"))
    else:
        config.attributes["connection"] = url_or_connection
    return config


def run_environment(default_version_table: str) -> None:
    """The body of a migrations directory's `env.py`: offline SQL, the given connection, or a fresh engine.

    No autogenerate target: revisions are written by hand and the tests check them against the store's metadata.
    """
    from alembic import context

    config = context.config
    options = {
        "version_table": config.get_main_option("version_table") or default_version_table,
        "render_as_batch": True,
        "target_metadata": None,
    }

    def run_migrations(connection) -> None:
        context.configure(connection=connection, **options)
        with context.begin_transaction():
            context.run_migrations()

    if context.is_offline_mode():
        context.configure(url=config.get_main_option("sqlalchemy.url"), literal_binds=True, **options)
        with context.begin_transaction():
            context.run_migrations()
        return
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
