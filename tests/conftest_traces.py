"""pytest plugin: the sandbox trace service, started once per session (per xdist worker), with the session's
sandbox IdP (`sandbox_idp`, tests/conftest_idp.py).

Fixture `sandbox_traces` yields a `SandboxTraces`:

* `.url`        service root, `http://127.0.0.1:PORT` (the API is under `/api/v1/traces`; what `DESP_TRACE_URL` holds)
* `.token_for(username)`  an access token of a realm user (researcher, poweruser, ...), cached while it has more
                          than a minute left
* `.idp`        the `IdpProcess`; `.service` the `TracesProcess`; `.data_dir`

`TracesProcess(data_dir, jwks_url, issuer)` can also be used directly (e.g. to restart the service on the same
data directory). Every process is a `ManagedProcess`, stopped by its PID.
"""

from __future__ import annotations

import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest_idp import IdpProcess
from tests.support import SandboxServiceProcess


class TracesProcess(SandboxServiceProcess):
    """`python -m desp_sandbox.traces` on a free port over `data_dir` (its traces survive restarts)."""

    service = "traces"


@dataclass
class SandboxTraces:
    idp: IdpProcess
    service: TracesProcess

    @property
    def url(self) -> str:
        return self.service.url

    @property
    def data_dir(self) -> Path:
        return self.service.data_dir

    def token_for(self, username: str) -> str:
        return self.idp.token_for(username)

    def headers(self, username: str = "researcher") -> dict:
        return {"Authorization": f"Bearer {self.token_for(username)}"}


@pytest.fixture(scope="session")
def sandbox_traces(sandbox_idp):
    workdir = Path(tempfile.mkdtemp(prefix="desp-traces-"))
    service = None
    try:
        service = TracesProcess(workdir / "data", sandbox_idp.jwks_url, sandbox_idp.issuer)
        service.log_path = workdir / "traces.log"
        service.start()
        yield SandboxTraces(sandbox_idp, service)
    finally:
        if service is not None:
            service.stop()
        shutil.rmtree(workdir, ignore_errors=True)
