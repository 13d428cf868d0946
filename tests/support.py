"""Small helpers shared by the test suite: free ports, waiting for HTTP, managed child processes."""

import os
import signal
import subprocess
import time
import urllib.error
import urllib.request

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
