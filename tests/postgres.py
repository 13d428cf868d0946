"""pytest plugin: a real, throw-away PostgreSQL from the machine's packages (Debian: `apt-get install postgresql`).

Register it in the root conftest (`pytest_plugins = ["tests.postgres"]`) or on the command line (`-p tests.postgres`).
Fixtures (session-scoped, started on first use only):

* `postgres_server`: a started `PostgresServer`; `.create_database(name=None)` makes a fresh, empty database and
  returns its SQLAlchemy URL (use one per test for isolation), `.url(database)`, `.port`, `.log_path`;
* `postgres_url`: the SQLAlchemy URL of the database `desp`, `postgresql+psycopg://postgres@127.0.0.1:PORT/desp`.

The server runs initdb + postgres from `/usr/lib/postgresql/<newest>/bin` (or `initdb`/`postgres` on PATH) in a
temporary directory, listening on 127.0.0.1 on a free port with trust authentication, with durability switched off
(fsync, synchronous_commit) since the data is thrown away. As root it runs as the `postgres` system user (PostgreSQL
refuses to run as root). It is stopped by its PID (SIGINT: fast shutdown) and its directory removed.

If the binaries or the `postgres` user are missing, the tests that use it are skipped with the reason; with
DESP_POSTGRES_REQUIRED=1 they fail instead. A server that is there but does not come up is always a failure.
"""

from __future__ import annotations

import glob
import itertools
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.support import free_port

INSTALL_HINT = "install Debian's postgresql package (apt-get install -y postgresql)"


class PostgresUnavailable(Exception):
    """PostgreSQL cannot run on this machine (binaries or system user missing)."""


def find_bindir() -> Path:
    """The directory holding initdb and postgres: Debian's newest /usr/lib/postgresql/N/bin, else PATH."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(Path(p).parts[-3].split(".")[0])
    )
    if candidates:
        return Path(candidates[-1]).parent
    on_path = shutil.which("postgres")
    if on_path and shutil.which("initdb"):
        return Path(on_path).parent
    raise PostgresUnavailable(f"PostgreSQL server binaries (initdb, postgres) not found: {INSTALL_HINT}")


class PostgresServer:
    """One PostgreSQL cluster in a temporary directory; `start()`, `create_database()`, `stop()`."""

    def __init__(self, startup_timeout: float = 60):
        self.startup_timeout = startup_timeout
        self.bindir = find_bindir()
        self.user = None
        if os.geteuid() == 0:
            try:
                self.user = pwd.getpwnam("postgres")
            except KeyError:
                raise PostgresUnavailable(f"running as root and there is no 'postgres' system user: {INSTALL_HINT}")
        self.port: int | None = None
        self.process: subprocess.Popen | None = None
        self.directory: Path | None = None
        self._names = itertools.count(1)

    @property
    def log_path(self) -> Path:
        return self.directory / "postgres.log"

    def _run_as(self) -> dict:
        # Popen's own setuid/setgid/setgroups: no runuser or su needed, and no root groups kept.
        if self.user is None:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}

    def start(self) -> PostgresServer:
        # Not under pytest's tmp_path: that is private to root, and the server runs as postgres.
        self.directory = Path(tempfile.mkdtemp(prefix="desp-postgres-"))
        if self.user is not None:
            os.chown(self.directory, self.user.pw_uid, self.user.pw_gid)
        data = self.directory / "data"
        initdb = subprocess.run(
            [self.bindir / "initdb", "-D", data, "-U", "postgres", "--auth=trust", "--encoding=UTF8",
             "--no-locale", "--no-sync"],
            cwd=self.directory, capture_output=True, text=True, timeout=120, **self._run_as(),
        )  # fmt: skip
        if initdb.returncode:
            raise RuntimeError(f"initdb failed ({initdb.returncode}): {initdb.stderr or initdb.stdout}")

        self.port = free_port()
        with open(self.log_path, "wb") as log:
            if self.user is not None:
                os.chown(self.log_path, self.user.pw_uid, self.user.pw_gid)
            self.process = subprocess.Popen(
                [self.bindir / "postgres", "-D", data, "-p", str(self.port), "-k", self.directory,
                 "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
                 "-c", "full_page_writes=off", "-c", "max_connections=50"],
                cwd=self.directory, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                start_new_session=True, **self._run_as(),
            )  # fmt: skip
        self._wait_ready()
        return self

    def _connect(self, database: str = "postgres", **kwargs):
        import psycopg

        return psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname=database, connect_timeout=2, **kwargs
        )

    def _wait_ready(self) -> None:
        import psycopg

        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"postgres exited with {self.process.returncode}: {self.log_tail()}")
            try:
                self._connect().close()
                return
            except psycopg.OperationalError as error:
                if time.monotonic() > deadline:
                    raise TimeoutError(f"postgres not ready in {self.startup_timeout}s: {error}; {self.log_tail()}")
                time.sleep(0.1)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def url(self, database: str = "desp") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database (default: a new unique name) and return its SQLAlchemy URL."""
        name = name or f"test_{next(self._names)}"
        with self._connect(autocommit=True) as connection:
            # FILE_COPY: a quick directory copy of template1 (durability is off anyway).
            connection.execute(f'CREATE DATABASE "{name}" STRATEGY FILE_COPY')
        return self.url(name)

    def stop(self) -> None:
        """Fast shutdown of the postmaster we started (by PID), then remove the cluster directory."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()  # the postmaster only; its children exit when it is gone
                self.process.wait(timeout=10)
        if self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)


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
