"""Executors run one attempt of a workflow run: papermill on the run's notebook with its typed parameters.

The runner (`desp_hub.workflows.runner`) decides what runs when; an executor only starts an attempt, tells whether
it ended, and kills it. Swappable: `LocalProcessExecutor` (here: a child process on this machine) and the
Kubernetes Job of `desp_hub.workflows.kube_job` (the cluster).

The local executor runs

    python -m papermill input.ipynb output.ipynb -f parameters.yaml -k <kernel> --cwd <run dir> --log-output

in the run's directory, in a process group of its own, with a clean environment: only the locale, PATH, the
platform endpoints (`DESP_*` URLs) and the run's identity. Never the service's hub token or client secret, which
the notebook's code must not see. Parameters go through a YAML file that papermill reads back into the same
Python values and writes into the notebook as literals (`translate`), so a string value is only ever a string.

Note: the local executor runs notebooks under the service's own account, as the local spawner runs servers;
isolation between users is the Kubernetes executor's (one pod per run, non-root, the profile's limits).
"""

from __future__ import annotations

import ctypes
import dataclasses
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Protocol

import psutil
import yaml
from traitlets import Dict, Float, List, Unicode
from traitlets.config import LoggingConfigurable

__all__ = ["Executor", "LocalProcessExecutor", "ProcessHandle", "RunSpec"]

# Environment variables a run inherits from the service (if set); everything else is left out on purpose.
INHERITED_ENV = (
    "PATH", "LANG", "LC_ALL", "LC_CTYPE", "TZ", "TMPDIR", "SSL_CERT_FILE", "REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE",
    "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy", "https_proxy", "no_proxy",
)  # fmt: skip
PR_SET_PDEATHSIG = 1


@dataclasses.dataclass
class RunSpec:
    """Everything an executor needs for one attempt of a run."""

    run_id: int
    workflow_id: int
    user: str
    notebook: Mapping[str, Any]
    parameters: Mapping[str, Any]
    run_dir: Path
    profile_slug: str = "standard"
    profile: Any = None  # a desp_hub.profiles.Profile when the profile store is known (the Kubernetes executor)
    timeout_seconds: int = 600
    retries: int = 0
    attempt: int = 1
    kernel_name: str = "python3"
    env: Mapping[str, str] = dataclasses.field(default_factory=dict)
    # the run's user's DESP access token, when the service could get one (a run asked for in person); a secret:
    # the local executor puts it in the run's DESP_ACCESS_TOKEN, never in a file
    access_token: str = dataclasses.field(default="", repr=False)

    @property
    def input_notebook(self) -> Path:
        return self.run_dir / "input.ipynb"

    @property
    def output_notebook(self) -> Path:
        return self.run_dir / "output.ipynb"

    @property
    def log_path(self) -> Path:
        return self.run_dir / "run.log"


class Executor(Protocol):
    """Starts an attempt and reports on it; `poll` and `kill` do not block for long."""

    def start(self, spec: RunSpec) -> Any:
        """Start the attempt; a handle for `poll`, `wait` and `kill`."""

    def poll(self, handle: Any) -> int | None:
        """The attempt's exit code (0: the notebook ran through), or None while it runs."""

    def wait(self, handle: Any, timeout: float | None = None) -> int | None:
        """Wait up to `timeout` seconds for the attempt to end; its exit code, or None if still running."""

    def kill(self, handle: Any) -> None:
        """Stop the attempt and everything it started (kernel included)."""


@dataclasses.dataclass
class ProcessHandle:
    process: subprocess.Popen
    started: float  # time.monotonic()


def _die_with_parent() -> None:
    """In the child, before exec: be killed when the service dies, so no run outlives it unwatched (Linux)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
    except (OSError, AttributeError):
        pass


class LocalProcessExecutor(LoggingConfigurable):
    """Runs papermill in a child process of the service, in the run's directory."""

    python = Unicode("", config=True, help="Python with papermill installed (empty: the service's own Python).")

    extra_args = List(Unicode(), config=True, help="More papermill command-line arguments.")

    extra_env = Dict(Unicode(), config=True, help="More environment variables for every run.")

    kill_grace_seconds = Float(3.0, config=True, help="Seconds between SIGTERM and SIGKILL when a run is stopped.")

    def command(self, spec: RunSpec) -> list[str]:
        return [
            self.python or sys.executable, "-m", "papermill", str(spec.input_notebook), str(spec.output_notebook),
            "-f", str(spec.run_dir / "parameters.yaml"), "-k", spec.kernel_name, "--cwd", str(spec.run_dir),
            "--log-output", "--no-progress-bar", *self.extra_args,
        ]  # fmt: skip

    def environment(self, spec: RunSpec) -> dict[str, str]:
        env = {name: os.environ[name] for name in INHERITED_ENV if name in os.environ}
        home = spec.run_dir / ".home"
        home.mkdir(exist_ok=True)
        env.update(
            HOME=str(home),  # IPython and matplotlib keep their caches here, out of the declared outputs
            PYTHONUNBUFFERED="1",
            MPLBACKEND="Agg",
            DESP_RUN_ID=str(spec.run_id),
            DESP_WORKFLOW_ID=str(spec.workflow_id),
            DESP_RUN_USER=spec.user,
            DESP_PROFILE=spec.profile_slug,
        )
        env.update(self.extra_env)
        env.update({str(k): str(v) for k, v in spec.env.items()})
        if spec.access_token:
            env["DESP_ACCESS_TOKEN"] = spec.access_token  # desp_lab.credentials reads it outside a user's server
        return env

    def start(self, spec: RunSpec) -> ProcessHandle:
        # the values as they are: papermill loads them back with yaml and writes them as Python literals
        (spec.run_dir / "parameters.yaml").write_text(
            yaml.safe_dump(dict(spec.parameters), allow_unicode=True, sort_keys=True), encoding="utf-8"
        )
        with open(spec.log_path, "ab") as log:
            log.write(f"--- attempt {spec.attempt} at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} "
                      f"(kernel {spec.kernel_name}) ---\n".encode())  # fmt: skip
            log.flush()
            process = subprocess.Popen(
                self.command(spec), cwd=spec.run_dir, env=self.environment(spec), stdin=subprocess.DEVNULL,
                stdout=log, stderr=subprocess.STDOUT, start_new_session=True, preexec_fn=_die_with_parent,
            )  # fmt: skip
        self.log.info("Run %s attempt %s started: papermill pid %s", spec.run_id, spec.attempt, process.pid)
        return ProcessHandle(process, time.monotonic())

    def poll(self, handle: ProcessHandle) -> int | None:
        return handle.process.poll()

    def wait(self, handle: ProcessHandle, timeout: float | None = None) -> int | None:
        try:
            return handle.process.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def kill(self, handle: ProcessHandle) -> None:
        """SIGTERM to papermill's process group and every descendant (the kernel has a session of its own), then
        SIGKILL to whatever is left after `kill_grace_seconds`."""
        process = handle.process
        if process.poll() is not None:
            return
        try:
            descendants = psutil.Process(process.pid).children(recursive=True)
        except psutil.NoSuchProcess:
            descendants = []
        deadline = time.monotonic() + self.kill_grace_seconds
        _signal_all(process, descendants, signal.SIGTERM)
        _, alive = psutil.wait_procs(descendants, timeout=self.kill_grace_seconds)
        if self.wait(handle, max(0.0, deadline - time.monotonic())) is None or alive:
            _signal_all(process, alive, signal.SIGKILL)
        process.wait()
        psutil.wait_procs(alive, timeout=5)


def _signal_all(process: subprocess.Popen, descendants: list[psutil.Process], signum: int) -> None:
    if process.poll() is None:  # not reaped: its pid (the group id, by start_new_session) is still its own
        try:
            os.killpg(process.pid, signum)
        except ProcessLookupError:
            pass
    for child in descendants:
        try:
            child.send_signal(signum)
        except psutil.NoSuchProcess:
            pass
