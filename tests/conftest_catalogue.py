"""pytest plugin: the sandbox STAC catalogue + cache, started once per session (per xdist worker), with the session's
sandbox IdP (`sandbox_idp`, tests/conftest_idp.py).

Fixture `sandbox_catalogue` yields a `SandboxCatalogue`:

* `.stac_url`   STAC API root, `http://127.0.0.1:PORT/stac/v2`
* `.cache_url`  the HTTP cache root, `http://127.0.0.1:PORT/cache` (assets are `{cache_url}/<path>`)
* `.cache_dir`  `Path` of the directory the cache serves (DATA_DIR/cache, sample data already generated)
* `.token`      a currently valid bearer JWT from the IdP (client credentials of `desp-admin-cli`; refreshed when
                less than a minute of it is left, so it stays valid through a long session)
* `.token_for(username)`  an access token of a realm user (researcher, poweruser, ...) via a scripted login, cached
                          likewise
* `.issuer`, `.jwks_url`, `.token_url`, `.data_dir`, `.catalogue` (the `CatalogueProcess`), `.idp` (`IdpProcess`)

`CatalogueProcess(data_dir, jwks_url, issuer)` can also be used directly (e.g. to restart a catalogue on the same
data directory). Every process is a `ManagedProcess`, stopped by its PID.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest_idp import IdpProcess
from tests.support import ManagedProcess, free_port, wait_for_http

STARTUP_TIMEOUT = 180


def make_data_dir(prefix: str = "desp-catalogue-") -> Path:
    """A fresh directory the `postgres` system user can traverse (pytest's tmp dirs are private to root)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


class CatalogueProcess:
    """`python -m desp_sandbox.catalogue` on a free port over `data_dir` (reused if it holds an earlier run)."""

    def __init__(self, data_dir: Path, jwks_url: str, issuer: str | None = None, order_delay: float = 1.0,
                 log_name: str = "catalogue.log"):  # fmt: skip
        self.data_dir = Path(data_dir)
        self.jwks_url = jwks_url
        self.issuer = issuer
        self.order_delay = order_delay
        self.log_path = self.data_dir / log_name
        self.port: int | None = None
        self.process: ManagedProcess | None = None
        self.startup_seconds: float | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def stac_url(self) -> str:
        return f"{self.base_url}/stac/v2"

    @property
    def cache_url(self) -> str:
        return f"{self.base_url}/cache"

    def start(self) -> CatalogueProcess:
        self.port = free_port()
        args = [sys.executable, "-m", "desp_sandbox.catalogue", "--ip", "127.0.0.1", "--port", str(self.port),
                "--data-dir", str(self.data_dir), "--jwks-url", self.jwks_url,
                "--order-delay", str(self.order_delay)]  # fmt: skip
        if self.issuer:
            args += ["--issuer", self.issuer]
        started = time.monotonic()
        self.process = ManagedProcess("sandbox-catalogue", args, self.log_path)
        wait_for_http(self.stac_url, timeout=STARTUP_TIMEOUT, process=self.process, ok_only=True)
        self.startup_seconds = time.monotonic() - started
        return self

    def stop(self) -> int | None:
        if self.process is None:
            return None
        self.process.stop(timeout=30)
        return self.process.popen.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@dataclass
class SandboxCatalogue:
    idp: IdpProcess
    catalogue: CatalogueProcess

    @property
    def stac_url(self) -> str:
        return self.catalogue.stac_url

    @property
    def cache_url(self) -> str:
        return self.catalogue.cache_url

    @property
    def base_url(self) -> str:
        return self.catalogue.base_url

    @property
    def data_dir(self) -> Path:
        return self.catalogue.data_dir

    @property
    def cache_dir(self) -> Path:
        return self.catalogue.data_dir / "cache"

    @property
    def issuer(self) -> str:
        return self.idp.issuer

    @property
    def jwks_url(self) -> str:
        return self.idp.jwks_url

    @property
    def token_url(self) -> str:
        return self.idp.token_url

    @property
    def token(self) -> str:
        """A bearer JWT valid for at least another minute."""
        return self.idp.admin_client_token()

    def token_for(self, username: str) -> str:
        return self.idp.token_for(username)

    def headers(self) -> dict:
        return {"Authorization": f"Bearer {self.token}"}


def seed_cache(cache_dir: Path, tmp_path_factory) -> None:
    """Under xdist, generate the sample data once per test run and give each worker its own copy of it.

    The catalogue would generate it itself (deterministically); sharing saves every worker after the first the
    ~10 s of generation. Each worker gets a real copy, so what a test writes into its cache stays its own.
    """
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    from desp_sandbox.catalogue import sample_data

    shared = tmp_path_factory.getbasetemp().parent / "desp-sample-data"
    shared.mkdir(exist_ok=True)
    with open(shared.parent / "desp-sample-data.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one worker generates, the others wait for it
        sample_data.generate(shared)
    shutil.copytree(shared, cache_dir, ignore=shutil.ignore_patterns(".*.tmp*", "orders"))


@pytest.fixture(scope="session")
def sandbox_catalogue(sandbox_idp, tmp_path_factory):
    workdir = make_data_dir()
    data_dir = workdir / "data"
    data_dir.mkdir(mode=0o755)
    catalogue = None
    try:
        seed_cache(data_dir / "cache", tmp_path_factory)
        catalogue = CatalogueProcess(data_dir, sandbox_idp.jwks_url, sandbox_idp.issuer)
        catalogue.log_path = workdir / "catalogue.log"
        catalogue.start()
        yield SandboxCatalogue(sandbox_idp, catalogue)
    finally:
        if catalogue is not None:
            catalogue.stop()
        shutil.rmtree(workdir, ignore_errors=True)
