"""pytest plugin: a real, throw-away PostgreSQL from the machine's packages (Debian: `apt-get install postgresql`).

Register it in the root conftest (`pytest_plugins = ["tests.postgres"]`) or on the command line (`-p tests.postgres`).
Fixtures (session-scoped, started on first use only):

* `postgres_server`: a started `PostgresServer`; `.create_database(name=None)` makes a fresh, empty database and
  returns its SQLAlchemy URL (use one per test for isolation), `.url(database)`, `.port`, `.log_path`;
* `postgres_url`: the SQLAlchemy URL of the database `desp`, `postgresql+psycopg://postgres@127.0.0.1:PORT/desp`.

The cluster is the sandbox catalogue's own `desp_sandbox.catalogue.cluster.Cluster` (initdb and postgres from
Debian's newest `/usr/lib/postgresql/<N>/bin`, run as the `postgres` user when we are root, 127.0.0.1 on a free port,
trust authentication, durability off, stopped by its PID) in a temporary directory that is removed afterwards.

If the binaries or the `postgres` user are missing, the tests that use it are skipped with the reason; with
DESP_POSTGRES_REQUIRED=1 they fail instead. A server that is there but does not come up is always a failure.
"""

from __future__ import annotations

import itertools
import os
import shutil
import tempfile
from pathlib import Path

import pytest

from desp_sandbox.catalogue.cluster import Cluster, ClusterError

INSTALL_HINT = "install Debian's postgresql package (apt-get install -y postgresql)"


class PostgresUnavailable(Exception):
    """PostgreSQL cannot run on this machine (binaries or system user missing)."""


class PostgresServer:
    """One throw-away PostgreSQL cluster: `start()`, `create_database()`, `url()`, `stop()`."""

    def __init__(self, startup_timeout: float = 60):
        # Not under pytest's tmp_path: that is private to root, and the server runs as postgres.
        self.root = Path(tempfile.mkdtemp(prefix="desp-postgres-"))
        self.root.chmod(0o755)
        try:
            self.cluster = Cluster(self.root / "cluster", startup_timeout=startup_timeout)
        except ClusterError as error:
            self.stop()
            raise PostgresUnavailable(f"{error}: {INSTALL_HINT}") from None
        except KeyError:
            self.stop()
            raise PostgresUnavailable(f"running as root and there is no 'postgres' system user: {INSTALL_HINT}") from None
        self._names = itertools.count(1)

    @property
    def port(self) -> int | None:
        return self.cluster.port

    @property
    def log_path(self) -> Path:
        return self.cluster.log_path

    def start(self) -> PostgresServer:
        self.cluster.start()
        return self

    def url(self, database: str = "desp") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database (default: a new unique name) and return its SQLAlchemy URL."""
        import psycopg

        name = name or f"test_{next(self._names)}"
        with psycopg.connect(self.cluster.dsn(), autocommit=True, connect_timeout=5) as connection:
            # FILE_COPY: a quick directory copy of template1 (durability is off anyway).
            connection.execute(f'CREATE DATABASE "{name}" STRATEGY FILE_COPY')
        return self.url(name)

    def stop(self) -> None:
        """Fast shutdown of the postmaster (by PID), then remove the cluster's directory."""
        cluster = getattr(self, "cluster", None)
        if cluster is not None:
            cluster.stop()
            if cluster.directory != self.root / "cluster":  # relocated where the postgres user can reach it
                shutil.rmtree(cluster.directory, ignore_errors=True)
        shutil.rmtree(self.root, ignore_errors=True)


def start_postgres_or_skip(**server_kwargs) -> PostgresServer:
    try:
        server = PostgresServer(**server_kwargs)
    except PostgresUnavailable as error:
        if os.environ.get("DESP_POSTGRES_REQUIRED"):
            pytest.fail(f"PostgreSQL cannot run here (and DESP_POSTGRES_REQUIRED is set): {error}")
        pytest.skip(f"PostgreSQL cannot run here: {error}")
    try:
        return server.start()
    except BaseException:
        server.stop()
        raise


def postgres_fixture(scope="session", name=None, **server_kwargs):
    """A fixture that starts PostgreSQL once per `scope`, yields the PostgresServer and stops it afterwards."""

    @pytest.fixture(scope=scope, name=name)
    def postgres_server():
        server = start_postgres_or_skip(**server_kwargs)
        try:
            yield server
        finally:
            server.stop()

    return postgres_server


postgres_server = postgres_fixture(scope="session")


@pytest.fixture(scope="session")
def postgres_url(postgres_server) -> str:
    """SQLAlchemy URL of an empty database `desp` on the session's PostgreSQL."""
    return postgres_server.create_database("desp")
