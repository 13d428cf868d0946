"""pytest plugin: a real S3 endpoint on 127.0.0.1 (moto's server), for the cache over S3.

Registered in the root conftest (`pytest_plugins`). Fixtures:

* `s3_server` (session): a started `MotoS3Server` — `.endpoint_url`, `.access_key`, `.secret_key`, `.region`,
  `.client()` (a boto3 S3 client), `.create_bucket(name=None)` (a fresh bucket, its name returned),
  `.requests()` (the HTTP request lines the server logged so far: `(method, path, status)`), `.log_path`.
* `s3_env` (function): the `AWS_*` variables s3fs and boto3 read, set with monkeypatch for one test; yields the server.

The server runs `python -m moto.server` as a child process on a free port, is stopped by its PID at the end of the
session, and keeps state in memory only.
"""

from __future__ import annotations

import re
import sys
import tempfile
import uuid
from pathlib import Path

import pytest

from tests.support import ManagedProcess, free_port, wait_for_http

# werkzeug's access log: 127.0.0.1 - - [date] "GET /bucket/key HTTP/1.1" 200 -
_REQUEST_LINE = re.compile(r'"(?P<method>[A-Z]+) (?P<path>\S+) HTTP/[0-9.]+" (?P<status>\d{3})')


class MotoS3Server:
    """moto's S3 server on 127.0.0.1, stopped by PID."""

    access_key = "desp-test-key"
    secret_key = "desp-test-secret"
    region = "us-east-1"

    def __init__(self, directory: Path):
        self.port = free_port()
        self.endpoint_url = f"http://127.0.0.1:{self.port}"
        self.log_path = directory / "moto.log"
        self.process: ManagedProcess | None = None

    def start(self) -> MotoS3Server:
        self.process = ManagedProcess(
            "moto",
            [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(self.port)],
            self.log_path,
        )
        wait_for_http(f"{self.endpoint_url}/moto-api/", timeout=60, process=self.process)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def client(self):
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint_url,
            aws_access_key_id=self.access_key,
            aws_secret_access_key=self.secret_key,
            region_name=self.region,
        )

    def create_bucket(self, name: str | None = None) -> str:
        name = name or f"desp-{uuid.uuid4().hex[:12]}"
        self.client().create_bucket(Bucket=name)
        return name

    def storage_options(self) -> dict:
        """fsspec (s3fs) options for this endpoint; keys come from the environment (`s3_env`)."""
        return {"endpoint_url": self.endpoint_url}

    def requests(self) -> list[tuple[str, str, int]]:
        """Every request the server has logged so far, oldest first."""
        text = self.log_path.read_text(errors="replace")
        return [(m["method"], m["path"], int(m["status"])) for m in _REQUEST_LINE.finditer(text)]


@pytest.fixture(scope="session")
def s3_server():
    with tempfile.TemporaryDirectory(prefix="desp-moto-") as directory:
        server = MotoS3Server(Path(directory)).start()
        try:
            yield server
        finally:
            server.stop()


@pytest.fixture
def s3_env(s3_server, monkeypatch):
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret_key)
    monkeypatch.setenv("AWS_DEFAULT_REGION", s3_server.region)
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL"):
        monkeypatch.delenv(name, raising=False)
    return s3_server
