"""pytest plugin: the sandbox IdP and the sandbox STAC catalogue + cache, started once per session (per xdist worker).

Fixture `sandbox_catalogue` yields a `SandboxCatalogue`:

* `.stac_url`   STAC API root, `http://127.0.0.1:PORT/stac/v2`
* `.cache_url`  the HTTP cache root, `http://127.0.0.1:PORT/cache` (assets are `{cache_url}/<path>`)
* `.cache_dir`  `Path` of the directory the cache serves (DATA_DIR/cache, sample data already generated)
* `.token`      a currently valid bearer JWT from the IdP (client credentials of `desp-admin-cli`; refreshed when
                less than a minute of it is left, so it stays valid through a long session)
* `.token_for(username)`  an access token of a realm user (researcher, poweruser, ...) via a scripted login
* `.issuer`, `.jwks_url`, `.token_url`, `.data_dir`, `.catalogue` (the `CatalogueProcess`), `.idp` (`IdpProcess`)

`CatalogueProcess(data_dir, jwks_url, issuer)` can also be used directly (e.g. to restart a catalogue on the same
data directory). Every process is a `ManagedProcess`, stopped by its PID.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import re
import secrets
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, field
from html import unescape
from pathlib import Path

import pytest
import requests

from tests.support import ManagedProcess, free_port, wait_for_http

ROOT = Path(__file__).resolve().parents[1]
REALM_FILE = ROOT / "sandbox" / "desp_sandbox" / "realm" / "desp-realm.json"
ADMIN_CLIENT = "desp-admin-cli"
ADMIN_SECRET = "catalogue-admin-secret-for-tests"
METERING_CLIENT = "desp-metering"
METERING_SECRET = "catalogue-metering-secret-for-tests"
HUB_SECRET = "catalogue-hub-secret-for-tests"
STARTUP_TIMEOUT = 180


def make_data_dir(prefix: str = "desp-catalogue-") -> Path:
    """A fresh directory the `postgres` system user can traverse (pytest's tmp dirs are private to root)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    return path


class IdpProcess:
    """The sandbox IdP on a free port."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}/realms/desp"
        self.oidc = f"{self.issuer}/protocol/openid-connect"
        self.jwks_url = f"{self.oidc}/certs"
        self.token_url = f"{self.oidc}/token"
        self.process: ManagedProcess | None = None

    def start(self) -> IdpProcess:
        env = dict(os.environ, DESP_HUB_CLIENT_SECRET=HUB_SECRET, DESP_ADMIN_CLIENT_SECRET=ADMIN_SECRET,
                   DESP_METERING_CLIENT_SECRET=METERING_SECRET,
                   DESP_HUB_URL="http://127.0.0.1:9")  # fmt: skip
        args = [sys.executable, "-m", "desp_sandbox.idp.server", "--ip", "127.0.0.1", "--port", str(self.port),
                "--realm-file", str(REALM_FILE), "--data-dir", str(self.workdir / "idp")]  # fmt: skip
        self.process = ManagedProcess("sandbox-idp", args, self.workdir / "idp.log", env=env)
        wait_for_http(f"{self.issuer}/.well-known/openid-configuration", timeout=60, process=self.process,
                      ok_only=True)  # fmt: skip
        return self

    def client_token(self) -> dict:
        response = requests.post(self.token_url, data={"grant_type": "client_credentials"},
                                 auth=(ADMIN_CLIENT, ADMIN_SECRET), timeout=10)  # fmt: skip
        response.raise_for_status()
        return response.json()

    def user_token(self, username: str, password: str | None = None) -> str:
        """A user's access token through the login form, as a scripted Keycloak login does (auth code flow)."""
        browser = requests.Session()
        redirect_uri = "http://127.0.0.1:9/hub/oauth_callback"
        verifier = secrets.token_urlsafe(48)
        challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
        page = browser.get(f"{self.oidc}/auth", params={"client_id": "desp-hub", "redirect_uri": redirect_uri,
                                                          "response_type": "code", "scope": "openid", "state": "s",
                                                          "code_challenge": challenge,
                                                          "code_challenge_method": "S256"},
                           allow_redirects=False, timeout=10)  # fmt: skip
        page.raise_for_status()
        action = unescape(re.search(r'id="kc-form-login"[^>]*\baction="([^"]+)"', page.text)[1])
        answer = browser.post(action, data={"username": username, "password": password or f"{username}-demo"},
                              allow_redirects=False, timeout=10)  # fmt: skip
        code = re.search(r"[?&]code=([^&]+)", answer.headers["Location"])[1]
        tokens = requests.post(self.token_url, data={"grant_type": "authorization_code", "code": code,
                                                     "redirect_uri": redirect_uri, "code_verifier": verifier},
                               auth=("desp-hub", HUB_SECRET), timeout=10)  # fmt: skip
        tokens.raise_for_status()
        return tokens.json()["access_token"]

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


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
    _token: dict = field(default_factory=dict)

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
        if not self._token or self._token["expires_at"] - time.time() < 60:
            answer = self.idp.client_token()
            self._token = {"access_token": answer["access_token"],
                           "expires_at": time.time() + int(answer.get("expires_in", 300))}  # fmt: skip
        return self._token["access_token"]

    def token_for(self, username: str) -> str:
        return self.idp.user_token(username)

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
def sandbox_catalogue(tmp_path_factory):
    workdir = make_data_dir()
    data_dir = workdir / "data"
    data_dir.mkdir(mode=0o755)
    idp = IdpProcess(workdir)
    catalogue = None
    try:
        idp.start()
        seed_cache(data_dir / "cache", tmp_path_factory)
        catalogue = CatalogueProcess(data_dir, idp.jwks_url, idp.issuer)
        catalogue.log_path = workdir / "catalogue.log"
        catalogue.start()
        yield SandboxCatalogue(idp, catalogue)
    finally:
        if catalogue is not None:
            catalogue.stop()
        idp.stop()
        shutil.rmtree(workdir, ignore_errors=True)
