"""pytest plugin: the sandbox IdP, started once per session (per xdist worker) and shared by the sandbox service
fixtures (`sandbox_catalogue`, `sandbox_accounting`, `sandbox_traces`).

Fixture `sandbox_idp` yields an `IdpProcess`:

* `.issuer`, `.jwks_url`, `.token_url`, `.oidc` (the openid-connect endpoints' root)
* `.token_for(username)`    an access token of a realm user (researcher, poweruser, aiuser, admin, executive,
                            outsider) through a scripted login
* `.admin_client_token()`   a token of the `desp-admin-cli` service account (client credentials)
* `.meter_token()`          a token of the `desp-metering` service account (client credentials; role dcu-meter)
* `.statistics_token()`     a token of the `desp-statistics` service account (client credentials; role
                            executive-statistics)

Those four are cached per user or client while they have more than a minute left, so they stay valid through a
long session; `.user_token(username)` and `.client_token()` (the whole token answer) always ask the IdP anew.
`IdpProcess(workdir).start()` can also be used directly; its process is a `ManagedProcess`, stopped by its PID.
"""

from __future__ import annotations

import base64
import hashlib
import os
import re
import secrets
import shutil
import sys
import tempfile
import threading
import time
from html import unescape
from pathlib import Path

import pytest
import requests

from desp_lab.credentials import token_expiry
from tests.support import ManagedProcess, free_port, wait_for_http

ROOT = Path(__file__).resolve().parents[1]
REALM_FILE = ROOT / "sandbox" / "desp_sandbox" / "realm" / "desp-realm.json"
ADMIN_CLIENT = "desp-admin-cli"
ADMIN_SECRET = "catalogue-admin-secret-for-tests"
METERING_CLIENT = "desp-metering"
METERING_SECRET = "catalogue-metering-secret-for-tests"
STATISTICS_CLIENT = "desp-statistics"
STATISTICS_SECRET = "catalogue-statistics-secret-for-tests"
HUB_SECRET = "catalogue-hub-secret-for-tests"
MIN_REMAINING_SECONDS = 60  # a cached token with less left than this is replaced


class IdpProcess:
    """The sandbox IdP on a free port, and the tokens tests ask it for."""

    def __init__(self, workdir: Path):
        self.workdir = Path(workdir)
        self.port = free_port()
        self.issuer = f"http://127.0.0.1:{self.port}/realms/desp"
        self.oidc = f"{self.issuer}/protocol/openid-connect"
        self.jwks_url = f"{self.oidc}/certs"
        self.token_url = f"{self.oidc}/token"
        self.process: ManagedProcess | None = None
        self._tokens: dict[str, str] = {}
        self._lock = threading.Lock()  # tests ask for tokens from several threads

    def start(self) -> IdpProcess:
        env = dict(os.environ, DESP_HUB_CLIENT_SECRET=HUB_SECRET, DESP_ADMIN_CLIENT_SECRET=ADMIN_SECRET,
                   DESP_METERING_CLIENT_SECRET=METERING_SECRET, DESP_STATISTICS_CLIENT_SECRET=STATISTICS_SECRET,
                   DESP_HUB_URL="http://127.0.0.1:9")  # fmt: skip
        args = [sys.executable, "-m", "desp_sandbox.idp.server", "--ip", "127.0.0.1", "--port", str(self.port),
                "--realm-file", str(REALM_FILE), "--data-dir", str(self.workdir / "idp")]  # fmt: skip
        self.process = ManagedProcess("sandbox-idp", args, self.workdir / "idp.log", env=env)
        wait_for_http(f"{self.issuer}/.well-known/openid-configuration", timeout=60, process=self.process,
                      ok_only=True)  # fmt: skip
        return self

    def client_token(self, client: str = ADMIN_CLIENT, secret: str = ADMIN_SECRET) -> dict:
        """A new token answer (client credentials grant) for a service account, `desp-admin-cli` by default."""
        response = requests.post(self.token_url, data={"grant_type": "client_credentials"},
                                 auth=(client, secret), timeout=10)  # fmt: skip
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

    def _cached(self, key: str, fetch) -> str:
        """The cached token for `key` while its `exp` is more than a minute away, else a new one from `fetch()`."""
        with self._lock:
            token = self._tokens.get(key)
        if token and (token_expiry(token) or 0.0) - time.time() > MIN_REMAINING_SECONDS:
            return token
        token = fetch()
        with self._lock:
            self._tokens[key] = token
        return token

    def token_for(self, username: str) -> str:
        """A user's access token (cached)."""
        return self._cached(f"user:{username}", lambda: self.user_token(username))

    def admin_client_token(self) -> str:
        """A token of the `desp-admin-cli` service account (cached)."""
        return self._cached("client:admin", lambda: self.client_token()["access_token"])

    def meter_token(self) -> str:
        """A token of the `desp-metering` service account, role dcu-meter (cached)."""
        return self._cached("client:meter", lambda: self.client_token(METERING_CLIENT, METERING_SECRET)["access_token"])

    def statistics_token(self) -> str:
        """A token of the `desp-statistics` service account, role executive-statistics (cached)."""
        return self._cached("client:statistics",
                            lambda: self.client_token(STATISTICS_CLIENT, STATISTICS_SECRET)["access_token"])

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()


@pytest.fixture(scope="session")
def sandbox_idp():
    workdir = Path(tempfile.mkdtemp(prefix="desp-idp-"))
    idp = IdpProcess(workdir)
    try:
        yield idp.start()
    finally:
        idp.stop()
        shutil.rmtree(workdir, ignore_errors=True)
