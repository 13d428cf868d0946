"""The gateway's backend on one machine: dask-gateway-server's local backend, with DESP's limits and metering.

`DespLocalBackend` is `UnsafeLocalBackend` (schedulers and workers are processes of the gateway's own account, on
127.0.0.1: on one machine the hub, its services and the users' servers all run as one account already; in the
cluster the chart uses the Kubernetes backend) plus:

- per-user cluster options and limits (`DespDaskLimits`, `options.cluster_options`), from the realm roles the hub
  authenticator hands over and the profiles of the user's running servers; a user without a Dask role is refused;
- a scale or adapt request beyond the cluster's maximum number of workers is refused with the reason ("at most 2
  workers for role stack-dask-low (asked for 5)") instead of being silently capped, as upstream does;
- worker-hours as DCU debits: the complete intervals of running workers are queued every `delivery_period`
  seconds, a worker's final partial interval when it stops (`metering.UsageOutbox`), and the queue is delivered to
  the accounting service (`desp_hub.metering.deliver_pending`).

The outbox, its delivery loop and the limits are `DespGatewayMixin`'s, shared with the Kubernetes backend
(`kube_backend.DespKubeBackend`); each backend says which workers run and when they stopped.
"""

from __future__ import annotations

import asyncio
import datetime
import os
import re

from aiohttp import web
from cryptography.fernet import Fernet
from dask_gateway_server.backends.db_base import JobStatus
from dask_gateway_server.backends.local import UnsafeLocalBackend
from traitlets import Float, Instance, Unicode, default
from traitlets.config import LoggingConfigurable

from desp_hub.metering import DespMetering, deliver_pending

from .limits import DespDaskLimits, NoDaskRole
from .metering import UsageOutbox, from_millis
from .options import cluster_options

SCALE_PATH = re.compile(r"/api/v1/clusters/(?P<name>[^/]+)/(?P<action>scale|adapt)$")


class DespGatewayMixin(LoggingConfigurable):
    """What DESP adds to any dask-gateway backend (local here, Kubernetes in the chart: `kube_backend`): cluster
    options and limits per user, refusals with the reason beyond the number of workers, and the worker debits'
    outbox and delivery loop. A backend queues its running workers' intervals in `queue_running_workers` (called
    before every delivery) and a stopped worker's debits with `queue_worker_debits`."""

    limits = Instance(DespDaskLimits)

    usage_db_url = Unicode(
        config=True,
        help="""
        SQLAlchemy URL of the outbox of worker debits (created on first use). Empty: `dask-usage.sqlite` in the
        gateway's working directory. In a pod, a database outside it (PostgreSQL), else a restart loses what is
        queued and not delivered.
        """,
    )

    delivery_period = Float(10, min=0.5, config=True, help="Seconds between two deliveries of queued worker debits.")

    metering = Instance(DespMetering)  # where debits go (accounting_url, token_url, client_id); the secret from env

    @default("cluster_options")
    def _desp_cluster_options(self):
        return self.options_for

    @default("limits")
    def _default_limits(self):
        return DespDaskLimits(parent=self)

    async def options_for(self, user):
        """The cluster options of `user`: their limits (role, running servers' profiles) as options."""
        running_profiles = getattr(self.parent.authenticator, "running_profiles", None)
        profiles = await running_profiles(user.name) if running_profiles and ":" not in user.name else []
        try:
            limits = self.limits.limits_for(user.name, getattr(user, "roles", ()), profiles or ())
        except NoDaskRole as refusal:
            raise web.HTTPForbidden(reason=str(refusal)) from None
        return cluster_options(limits)

    @web.middleware
    async def refuse_beyond_max_workers(self, request, handler):
        """422 with the reason for a scale/adapt request beyond the cluster's `cluster_max_workers`."""
        match = SCALE_PATH.search(request.path) if request.method == "POST" else None
        if match is None:
            return await handler(request)
        cluster = await self.get_cluster(match["name"])
        if cluster is None:
            return await handler(request)
        try:
            body = await request.json()
        except ValueError:
            return await handler(request)
        asked = body.get("count") if match["action"] == "scale" else body.get("maximum")
        max_workers = cluster.config.get("cluster_max_workers")
        if isinstance(asked, int) and max_workers is not None and asked > max_workers:
            source = cluster.config.get("max_workers_source") or "this cluster"
            workers = "worker" if max_workers == 1 else "workers"
            message = f"at most {max_workers} {workers} for {source} (asked for {asked})"
            return web.json_response({"error": message}, status=422)
        return await handler(request)

    # -- metering -----------------------------------------------------------------------------------------------

    @default("metering")
    def _default_metering(self):
        return DespMetering(parent=self)

    @default("usage_db_url")
    def _default_usage_db_url(self):
        return f"sqlite:///{os.path.join(os.getcwd(), 'dask-usage.sqlite')}"

    async def setup(self, app):
        app.middlewares.append(self.refuse_beyond_max_workers)
        # the outbox before the backend starts: a backend may see workers as it starts (a restarted gateway)
        self.outbox = UsageOutbox(self.usage_db_url) if self.metering.enabled else None
        self._deliveries = asyncio.ensure_future(self._deliver_loop()) if self.outbox else None
        await super().setup(app)

    async def cleanup(self):
        await super().cleanup()  # a backend that stops its clusters queues their workers
        if getattr(self, "_deliveries", None) is not None:
            self._deliveries.cancel()
            await self._deliver_once()  # best effort; what is left is delivered at the next start

    async def queue_running_workers(self):
        """Queue the complete intervals of the running workers (each backend knows its workers)."""

    async def queue_worker_debits(self, *, username, cluster, worker, worker_cores, dcu_per_core_hour,
                                  interval_seconds, started, stopped=None):  # fmt: skip
        """Queue a worker's debits not queued yet (with `stopped`: its final partial interval too); never raises."""
        if getattr(self, "outbox", None) is None:
            return
        try:
            await asyncio.to_thread(
                self.outbox.record_worker,
                username=username,
                cluster=cluster,
                worker=worker,
                worker_cores=worker_cores or 1,
                dcu_per_core_hour=dcu_per_core_hour,
                interval_seconds=interval_seconds or 300,
                started=started,
                stopped=stopped,
            )
        except Exception:
            self.log.exception("Could not queue the debits of Dask worker %s", worker)

    async def _deliver_once(self):
        try:
            result = await asyncio.to_thread(deliver_pending, self.outbox, self._accounting())
        except Exception:  # never let metering take the gateway down
            self.log.exception("Delivering Dask worker debits failed")
            return
        if result.delivered or result.rejected:
            self.log.info("Dask worker debits: %d delivered, %d rejected", result.delivered, result.rejected)
        if result.outage:
            self.log.warning("Accounting not reachable, Dask worker debits stay queued: %s", result.outage)

    def _accounting(self):
        if not hasattr(self, "_accounting_client"):
            self._accounting_client = self.metering.accounting()
        return self._accounting_client

    async def _deliver_loop(self):
        while True:
            await asyncio.sleep(self.delivery_period)
            try:
                await self.queue_running_workers()
            except Exception:
                self.log.exception("Queueing the running Dask workers' debits failed")
            await self._deliver_once()


def read_or_create_key(path: str) -> bytes:
    """The Fernet key in `path`, created (0600, in a 0700 directory) with a new random key if missing. Never logged."""
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, mode=0o700, exist_ok=True)
    try:
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        pass
    else:
        with os.fdopen(descriptor, "wb") as key_file:
            key_file.write(Fernet.generate_key())
    with open(path, "rb") as key_file:
        return key_file.read().strip()


class DespLocalBackend(DespGatewayMixin, UnsafeLocalBackend):
    """UnsafeLocalBackend with per-role and per-profile limits, clear refusals and worker-hours metering.

    Its clusters can outlive the gateway's process: with `db_url` a file (gateway_config.py puts it in the
    gateway's data directory), a restarted gateway (the hub restarts a gateway that died, or the hub itself was
    restarted) reloads its clusters, checks their scheduler and worker processes (they run in sessions of their
    own, so they survive the gateway), routes them again and meters their workers from their recorded start: the
    intervals missed while it was down are queued at its first metering pass, under the same keys, so nothing is
    debited twice. The database holds the clusters' TLS keys and tokens, encrypted with `db_encrypt_keys`; unless
    given (or in $DASK_GATEWAY_ENCRYPT_KEYS), one key is generated into `db_encrypt_key_file` on first start.
    """

    db_encrypt_key_file = Unicode(
        config=True,
        help="""
        File holding the key that encrypts the clusters' TLS keys and tokens in `db_url` when neither
        `db_encrypt_keys` nor $DASK_GATEWAY_ENCRYPT_KEYS gives one: created with a new random Fernet key (mode 0600,
        its directory 0700) on the first start, read at every later one. Losing it makes the database unreadable
        (remove both to start afresh). Empty: no file, the upstream rules apply.
        """,
    )

    @default("cluster_config_class")
    def _desp_cluster_config_class(self):
        return "desp_hub.dask_gateway.options.DespClusterConfig"

    @default("db_encrypt_keys")
    def _desp_db_encrypt_keys(self):
        if self.db_encrypt_key_file and not os.environ.get("DASK_GATEWAY_ENCRYPT_KEYS", "").strip():
            return self._db_encrypt_keys_validate({"value": [read_or_create_key(self.db_encrypt_key_file)]})
        return super()._db_encrypt_keys_default()

    # -- metering -----------------------------------------------------------------------------------------------

    async def queue_running_workers(self):
        """Queue the complete intervals of the running workers (a restarted gateway catches up: keys are fixed)."""
        for cluster in list(self.db.active_clusters()):
            for worker in list(cluster.workers.values()):
                if JobStatus.CREATED < worker.status < JobStatus.STOPPED:
                    await self._queue_worker(worker, None)

    async def _queue_worker(self, worker, stopped: datetime.datetime | None):
        """Queue a worker's debits not queued yet (with `stopped`: its final partial interval too)."""
        if not worker.start_time:
            return
        cluster = worker.cluster
        await self.queue_worker_debits(
            username=cluster.username,
            cluster=cluster.name,
            worker=worker.name,
            worker_cores=cluster.config.get("worker_cores"),
            dcu_per_core_hour=cluster.config.get("dcu_per_core_hour", 1.0),
            interval_seconds=cluster.config.get("metering_interval_seconds"),
            started=from_millis(worker.start_time),
            stopped=stopped,
        )

    async def do_stop_worker(self, worker):
        await super().do_stop_worker(worker)
        await self._queue_worker(worker, datetime.datetime.now(datetime.UTC))

    async def do_stop_cluster(self, cluster):
        await super().do_stop_cluster(cluster)
        now = datetime.datetime.now(datetime.UTC)
        for worker in list(cluster.workers.values()):  # those not stopped one by one (a failed cluster)
            if JobStatus.CREATED < worker.status < JobStatus.STOPPED:
                await self._queue_worker(worker, now)
