"""Small helpers shared by the test suite: free ports, waiting for HTTP, managed child processes, sandbox services."""

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from desp_hub.ports import free_port  # noqa: F401  (re-exported for the tests)


def wait_for_http(url: str, timeout: float = 60, process: "ManagedProcess | None" = None, ok_only=False) -> None:
    """Wait until `url` answers with any HTTP status (with `ok_only`: with 200). Connection refused means not yet."""
    deadline = time.monotonic() + timeout
    last_error = None
    while time.monotonic() < deadline:
        if process is not None and process.popen.poll() is not None:
            raise RuntimeError(f"{process.name} exited with {process.popen.returncode}; log: {process.log_tail()}")
        try:
            urllib.request.urlopen(url, timeout=5)
            return
        except urllib.error.HTTPError as error:
            if not ok_only:
                return
            last_error = error
            time.sleep(0.2)
        except (urllib.error.URLError, ConnectionError, OSError) as error:
            last_error = error
            time.sleep(0.2)
    raise TimeoutError(f"{url} did not answer within {timeout}s: {last_error}")


def wait_for(condition, timeout: float, what: str, poll: float = 0.5):
    """condition()'s value once truthy, polling every `poll` s; fails naming `what` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(poll)


class ManagedProcess:
    """A child process in its own process group, logging to a file, stopped by its PID (never by name)."""

    def __init__(self, name, args, log_path, env=None, cwd=None):
        self.name = name
        self.log_path = log_path
        self._log = open(log_path, "ab")
        self.popen = subprocess.Popen(
            args, stdout=self._log, stderr=subprocess.STDOUT, env=env, cwd=cwd, start_new_session=True
        )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log_tail(self, chars: int = 4000) -> str:
        with open(self.log_path, "rb") as log:
            return log.read().decode(errors="replace")[-chars:]

    def stop(self, timeout: float = 20) -> None:
        """SIGTERM the process group, then SIGKILL whatever is left after `timeout`."""
        if self.popen.poll() is None:
            try:
                os.killpg(self.popen.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.popen.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.popen.wait()
        self._log.close()


class SandboxServiceProcess:
    """`python -m desp_sandbox.<service>` on 127.0.0.1 over `data_dir`, accepting the tokens of the IdP whose JWKS is
    `jwks_url` (and, when given, whose issuer is `issuer`); further keyword `options` become CLI options
    (`default_balance=5` -> `--default-balance 5`; None leaves one out). A subclass names the `service`.

    `.start()` waits until `ready_path` answers 200, `.stop()` sends SIGTERM by PID and returns the exit status,
    `.log()` is what the service wrote (to DATA_DIR/LOG_NAME unless `log_path` is changed before the start).
    """

    service = ""  # the desp_sandbox module: "accounting", "traces"
    ready_path = "/api/status"

    def __init__(self, data_dir, jwks_url: str, issuer: str | None = None, log_name: str | None = None, **options):
        self.data_dir = Path(data_dir)
        self.jwks_url = jwks_url
        self.issuer = issuer
        self.options = options
        self.log_path = self.data_dir / (log_name or f"{self.service}.log")
        self.port: int | None = None
        self.process: ManagedProcess | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, port: int | None = None):
        """Start (again) on `port`, by default the previous port if any, else a free one."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.port = port or self.port or free_port()
        args = [sys.executable, "-m", f"desp_sandbox.{self.service}", "--ip", "127.0.0.1", "--port", str(self.port),
                "--data-dir", str(self.data_dir), "--jwks-url", self.jwks_url]  # fmt: skip
        if self.issuer:
            args += ["--issuer", self.issuer]
        for name, value in self.options.items():
            if value is not None:
                args += [f"--{name.replace('_', '-')}", str(value)]
        self.process = ManagedProcess(f"sandbox-{self.service}", args, self.log_path)
        wait_for_http(f"{self.url}{self.ready_path}", timeout=60, process=self.process, ok_only=True)
        return self

    def stop(self) -> int | None:
        if self.process is None:
            return None
        self.process.stop(timeout=20)
        return self.process.popen.returncode

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")
