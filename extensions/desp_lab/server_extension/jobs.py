"""Cache requests running in the background of a user's server: copy a dataset into the user's cache area.

Each request is a `CacheRequestJob` run by `desp_lab.cache.Cache.request` in a worker thread; the job records
progress (bytes done / total) from the SDK's progress callback so the REST API can be polled. Jobs live in
memory, in this server process; the copies themselves (and their manifests) live in the cache area.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from concurrent.futures import Executor
from dataclasses import dataclass, field

from desp_lab.errors import DespError

RUNNING, DONE, FAILED = "running", "done", "failed"


@dataclass
class CacheRequestJob:
    """One copy into the cache area and how far it got."""

    source: str
    name: str | None
    retention_days: float
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    status: str = RUNNING
    done_bytes: int = 0
    total_bytes: int | None = None
    message: str = "Starting the copy."
    created: float = field(default_factory=time.time)
    finished: float | None = None
    #: The SDK's manifest of the finished copy (name, source, size, created, expires), once done.
    manifest: dict | None = None
    #: DespError of a failed copy (kept so the POST handler can answer with its status).
    error: DespError | None = None

    def to_json(self) -> dict:
        """The REST shape: id, status, done_bytes, total_bytes, message, plus what was asked and the result."""
        return {
            "id": self.id,
            "status": self.status,
            "done_bytes": self.done_bytes,
            "total_bytes": self.total_bytes,
            "message": self.message,
            "source": self.source,
            "name": self.name,
            "retention_days": self.retention_days,
            "created": self.created,
            "finished": self.finished,
            "manifest": self.manifest,
        }


class CacheRequestJobs:
    """The cache requests of this server: start them on an executor, look them up, list them."""

    def __init__(self, executor: Executor, log=None):
        self._executor = executor
        self._jobs: dict[str, CacheRequestJob] = {}
        self._lock = threading.Lock()
        self._log = log

    def list(self) -> list[CacheRequestJob]:
        """All requests of this server, newest first."""
        with self._lock:
            return sorted(self._jobs.values(), key=lambda job: job.created, reverse=True)

    def get(self, job_id: str) -> CacheRequestJob | None:
        with self._lock:
            return self._jobs.get(job_id)

    def start(self, cache, source: str, name: str | None, retention_days: float) -> tuple[CacheRequestJob, asyncio.Future]:
        """Start copying `source` into `cache` in the executor.

        Returns the job and an asyncio future that resolves when the copy has begun moving bytes (first
        progress report) or has ended, whichever comes first: a caller may await it briefly so that errors
        found before any copying (bad path, quota) are answered directly rather than only by polling.
        """
        job = CacheRequestJob(source=source, name=name, retention_days=retention_days)
        with self._lock:
            self._jobs[job.id] = job
        loop = asyncio.get_running_loop()
        started = loop.create_future()

        def mark_started():
            if not started.done():
                started.set_result(job)

        def progress(done_bytes, total_bytes=None):
            job.done_bytes = int(done_bytes or 0)
            if total_bytes is not None:
                job.total_bytes = int(total_bytes)
            job.message = f"Copied {job.done_bytes} of {job.total_bytes if job.total_bytes is not None else '?'} bytes."
            loop.call_soon_threadsafe(mark_started)

        def run():
            try:
                manifest = cache.request(source, name=name, retention_days=retention_days, progress=progress)
            except DespError as error:
                job.status, job.error, job.message = FAILED, error, error.message
            except Exception as error:  # anything else the copy raised: report it, keep the server up
                # The type only: the text of an arbitrary error may carry a signed URL.
                job.status, job.message = FAILED, f"The copy failed ({type(error).__name__}); the server log has details."
                if self._log is not None:
                    self._log.warning("DESP cache request %s from %s failed", job.id, source.split("?", 1)[0], exc_info=True)
            else:
                job.manifest = dict(manifest) if manifest is not None else None
                size = (job.manifest or {}).get("size")
                if isinstance(size, int):
                    job.done_bytes = size
                    job.total_bytes = size
                job.status = DONE
                job.message = f"Copied into your cache as {(job.manifest or {}).get('name') or name}."
            finally:
                job.finished = time.time()
                loop.call_soon_threadsafe(mark_started)

        loop.run_in_executor(self._executor, run)
        return job, started
