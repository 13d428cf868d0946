"""The catalogue's private PostgreSQL + PostGIS cluster: initdb once into a directory, start on a free port, stop.

PostgreSQL refuses to run as root, so when we are root the cluster runs as the `postgres` system user (Popen's own
user/group switch, no `su`). Authentication is `trust` on 127.0.0.1 only: the cluster holds nothing but sample
metadata and listens on no other address. The postmaster is stopped by its PID (SIGINT: fast shutdown); it also gets
SIGINT if this process dies without cleaning up (Linux parent-death signal), so no postgres is left orphaned.
"""

from __future__ import annotations

import ctypes
import glob
import hashlib
import logging
import os
import pwd
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

log = logging.getLogger("desp_sandbox.catalogue.cluster")

PR_SET_PDEATHSIG = 1


class ClusterError(RuntimeError):
    """The cluster could not be created or started; the message says why."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port nothing listens on right now (the kernel's choice for port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def find_bindir() -> Path:
    """Debian's newest /usr/lib/postgresql/N/bin, else the directory of `postgres` on PATH."""
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(Path(p).parts[-3]))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("postgres")
    if on_path and shutil.which("initdb"):
        return Path(on_path).parent
    raise ClusterError("PostgreSQL server binaries not found: apt-get install postgresql postgis")


def _die_with_parent() -> None:  # runs in the child between fork and exec
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGINT)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _remove_orphans(parent: Path, keep: Path) -> None:
    """Delete relocated clusters whose data dir is gone (e.g. a test's temporary directory) and that do not run."""
    for directory in parent.iterdir():
        owner = directory / "data-dir"
        if directory == keep or not owner.is_file():
            continue
        link = Path(owner.read_text().strip())
        if link.is_symlink() or link.exists():
            continue
        pid_file = directory / "data" / "postmaster.pid"
        try:
            if pid_file.exists() and _pid_alive(int(pid_file.read_text().split()[0])):
                continue
        except (OSError, ValueError, IndexError):
            continue
        shutil.rmtree(directory, ignore_errors=True)
        log.info("removed the cluster of the deleted data dir %s", link)


class Cluster:
    """A PostgreSQL cluster in `directory` (created by initdb on first start, reused afterwards)."""

    def __init__(self, directory: Path, startup_timeout: float = 60):
        self.directory = Path(directory)
        self.data = self.directory / "data"
        self.log_path = self.directory / "postgres.log"
        self.startup_timeout = startup_timeout
        self.bindir = find_bindir()
        self.user = pwd.getpwnam("postgres") if os.geteuid() == 0 else None
        self.port: int | None = None
        self.process: subprocess.Popen | None = None

    def _as_user(self) -> dict:
        if self.user is None:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}

    def dsn(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def _prepare_directory(self) -> None:
        if self.user is not None and self.directory.is_symlink():
            self._use_directory(self.directory.resolve())  # placed beside the postgres home earlier (below)
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.user is None:
            return
        os.chown(self.directory, self.user.pw_uid, self.user.pw_gid)
        os.chmod(self.directory, 0o700)
        if not self._postgres_can_write(self.directory):
            self._relocate()

    def _postgres_can_write(self, directory: Path) -> bool:
        return subprocess.run(["test", "-w", str(directory)], **self._as_user()).returncode == 0

    def _use_directory(self, directory: Path) -> None:
        self.directory = directory
        self.data = directory / "data"
        self.log_path = directory / "postgres.log"

    def _relocate(self) -> None:
        """The postgres user cannot enter a parent of the data dir (a private home, a 0700 temporary directory).

        Keep the cluster under the postgres user's home instead, in a directory named after the data dir, and
        leave a symlink in the data dir so later starts (and people) find it there.
        """
        link = self.directory
        if any(link.iterdir()):
            raise ClusterError(f"the postgres user cannot reach {link}, which already holds files; move the data dir "
                               "somewhere whose parent directories others may traverse (chmod o+x)")
        digest = hashlib.sha256(str(link.resolve()).encode()).hexdigest()[:16]
        target = Path(self.user.pw_dir) / "desp-sandbox" / digest
        target.mkdir(parents=True, exist_ok=True)
        for directory in (target.parent, target):
            os.chown(directory, self.user.pw_uid, self.user.pw_gid)
            os.chmod(directory, 0o700)
        if not self._postgres_can_write(target):
            raise ClusterError(f"the postgres user can reach neither {link} nor {target}")
        (target / "data-dir").write_text(str(link))  # whose cluster this is, for the clean-up below
        _remove_orphans(target.parent, keep=target)
        link.rmdir()
        link.symlink_to(target, target_is_directory=True)
        log.warning("the postgres user cannot reach %s; the cluster lives in %s (symlinked from there)", link, target)
        self._use_directory(target)

    def initdb(self) -> bool:
        """Create the cluster unless it exists; True when it was created now."""
        self._prepare_directory()
        if (self.data / "PG_VERSION").exists():
            return False
        partial = self.directory / "data.initdb"
        shutil.rmtree(partial, ignore_errors=True)
        result = subprocess.run(
            [self.bindir / "initdb", "-D", partial, "-U", "postgres", "--auth=trust", "--encoding=UTF8",
             "--no-locale", "--no-sync"],
            cwd=self.directory, capture_output=True, text=True, timeout=180, **self._as_user(),
        )  # fmt: skip
        if result.returncode:
            raise ClusterError(f"initdb failed ({result.returncode}): {result.stderr or result.stdout}")
        partial.rename(self.data)  # a half-made cluster is never mistaken for a complete one
        return True

    def start(self) -> Cluster:
        """initdb if needed, then start the postmaster on a fresh free port and wait until it accepts connections."""
        self.initdb()
        self.port = free_port()
        with open(self.log_path, "ab") as log_file:
            if self.user is not None:
                os.chown(self.log_path, self.user.pw_uid, self.user.pw_gid)
            self.process = subprocess.Popen(
                [self.bindir / "postgres", "-D", self.data, "-p", str(self.port), "-k", self.directory,
                 "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off", "-c", "synchronous_commit=off",
                 "-c", "full_page_writes=off", "-c", "max_connections=40"],
                cwd=self.directory, stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT,
                start_new_session=True, preexec_fn=_die_with_parent, **self._as_user(),
            )  # fmt: skip
        log.info("postgres pid %d on 127.0.0.1:%d (%s)", self.process.pid, self.port, self.data)
        self._wait_ready()
        return self

    def _wait_ready(self) -> None:
        import psycopg

        deadline = time.monotonic() + self.startup_timeout
        while True:
            if self.process.poll() is not None:
                raise ClusterError(f"postgres exited with {self.process.returncode}: {self.log_tail()}")
            try:
                psycopg.connect(self.dsn(), connect_timeout=2).close()
                return
            except psycopg.OperationalError as error:
                if time.monotonic() > deadline:
                    raise ClusterError(f"postgres not ready in {self.startup_timeout}s: {error}; {self.log_tail()}")
                time.sleep(0.1)

    def log_tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self, timeout: float = 30) -> None:
        """Fast shutdown of the postmaster we started, by its PID."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=10)
        log.info("postgres pid %d stopped", self.process.pid)
