"""pytest plugin: the sandbox accounting service, started once per session (per xdist worker), with the session's
sandbox IdP (`sandbox_idp`, tests/conftest_idp.py).

Fixture `sandbox_accounting` yields a `SandboxAccounting`:

* `.url`                the service root, `http://127.0.0.1:PORT` (what `DESP_ACCOUNTING_URL` holds)
* `.token_for(user)`    an access token of a realm user (researcher, poweruser, aiuser, admin, executive, outsider),
                        cached per user while it has more than a minute left
* `.meter_token()`      a token of the `desp-metering` service account (client credentials; role dcu-meter)
* `.admin_token()`      the token of user `admin` (role dcu-admin)
* `.idp`                the `IdpProcess`; `.process` the `AccountingProcess`; `.data_dir`

`AccountingProcess(data_dir, jwks_url, issuer, **options)` runs `python -m desp_sandbox.accounting` on a free port;
options are the CLI's (`default_mode`, `default_balance`, `default_monthly_quota`, `exit_after_commit`). `.start()`
waits for the ready line's probe, `.stop()` sends SIGTERM (returns the exit status), `.kill()` SIGKILLs it by PID,
`.returncode()` waits for an exit. A restart on the same `data_dir` keeps the ledger. Tests share the session's
service, so each uses its own user names (`unique_user()`) and idempotency keys.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest_catalogue import make_data_dir
from tests.conftest_idp import IdpProcess
from tests.support import SandboxServiceProcess


def unique_user(prefix: str = "u") -> str:
    """A user name no other test uses (accounts are created on first reference)."""
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


class AccountingProcess(SandboxServiceProcess):
    """`python -m desp_sandbox.accounting` on a free port over `data_dir` (its ledger survives restarts)."""

    service = "accounting"

    @property
    def ledger_path(self) -> Path:
        return self.data_dir / "accounting" / "ledger.sqlite"

    def kill(self) -> None:
        """SIGKILL the process by its PID (no clean shutdown)."""
        if self.process is not None and self.process.popen.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.returncode()
        self.stop()

    def returncode(self, timeout: float = 20) -> int | None:
        if self.process is None:
            return None
        try:
            return self.process.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None


@dataclass
class SandboxAccounting:
    idp: IdpProcess
    process: AccountingProcess

    @property
    def url(self) -> str:
        return self.process.url

    @property
    def data_dir(self) -> Path:
        return self.process.data_dir

    def token_for(self, user: str) -> str:
        return self.idp.token_for(user)

    def admin_token(self) -> str:
        return self.token_for("admin")

    def meter_token(self) -> str:
        return self.idp.meter_token()

    def headers(self, token: str, key: str | None = None) -> dict:
        headers = {"Authorization": f"Bearer {token}"}
        if key is not None:
            headers["Idempotency-Key"] = key
        return headers


@pytest.fixture(scope="session")
def sandbox_accounting(sandbox_idp):
    workdir = make_data_dir("desp-accounting-")
    process = None
    try:
        process = AccountingProcess(workdir / "data", sandbox_idp.jwks_url, sandbox_idp.issuer)
        process.log_path = workdir / "accounting.log"
        process.start()
        yield SandboxAccounting(sandbox_idp, process)
    finally:
        if process is not None:
            process.stop()
        shutil.rmtree(workdir, ignore_errors=True)
