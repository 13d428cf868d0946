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
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.conftest_idp import IdpProcess
from tests.support import ManagedProcess, free_port, wait_for_http


class TracesProcess:
    """`python -m desp_sandbox.traces` on a free port over `data_dir`."""

    def __init__(self, data_dir: Path, jwks_url: str, issuer: str | None = None, log_name: str = "traces.log"):
        self.data_dir = Path(data_dir)
        self.jwks_url = jwks_url
        self.issuer = issuer
        self.log_path = self.data_dir / log_name
        self.port: int | None = None
        self.process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> TracesProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        args = [sys.executable, "-m", "desp_sandbox.traces", "--ip", "127.0.0.1", "--port", str(self.port),
                "--data-dir", str(self.data_dir), "--jwks-url", self.jwks_url]  # fmt: skip
        if self.issuer:
            args += ["--issuer", self.issuer]
        self.process = ManagedProcess("sandbox-traces", args, self.log_path)
        wait_for_http(f"{self.url}/api/status", timeout=60, process=self.process, ok_only=True)
        return self

    def stop(self) -> int | None:
        if self.process is None:
            return None
        self.process.stop(timeout=20)
        return self.process.popen.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


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
