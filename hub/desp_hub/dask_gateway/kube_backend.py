"""The gateway's backend in the cluster: dask-gateway-server's Kubernetes backend with DESP's limits and metering.

The Helm chart's gateway (the upstream dask-gateway chart, run from the hub image, which holds desp_hub) sets it up
with `desp_hub.dask_gateway.chart_config.configure_gateway` (its one line of `gateway.extraConfig`). Users get the
same options, limits per realm role and profile, and refusals as on one machine, and their workers' hours are
debited like the local backend's: the same keys, outbox and delivery (`backend.DespGatewayMixin`).

Metering. This process (the gateway's API pod) does not run workers: the controller creates their pods. What it
hears of them:

- scheduler heartbeats (`on_cluster_heartbeat`: `active_workers`; the closing and closed ones are not active),
  sent when a cluster is scaled and at least hourly (the controller runs schedulers with `--dg-heartbeat-period 0`);
- the cluster updates of its informer (`sync_cluster`: a cluster STOPPED or FAILED, with its completion time, or
  deleted);
- the worker pods themselves, when its service account may read pods (the chart grants it, see
  helm/desp-hub/templates/dask-gateway/): a worker's start is its pod's `status.startTime`, and every
  `delivery_period` the worker pods are listed, so workers are seen without waiting for a heartbeat.

A worker's first sighting is its start (the pod's start time when readable, else the sighting's time). It is
written to the outbox's database (`sightings.WorkerSightings`) before anything is queued, so a restarted API pod
keeps it. While the worker runs, its complete intervals are queued every `delivery_period`; its final partial
interval when a heartbeat no longer lists it as active, when its pod is gone (at its last sighting), or when its
cluster stops (at the cluster's completion time). Keys are per worker and interval: replays and restarts queue
nothing twice. Without pod access, a worker started between two heartbeats is first seen at the next one (up to an
hour late) and a cluster stopped before that is not metered: grant the pod access.
"""

from __future__ import annotations

import asyncio
import datetime

from dask_gateway_server.backends.kubernetes.backend import KubeBackend, KubeClusterConfig
from dask_gateway_server.models import ClusterStatus
from kubernetes_asyncio.client.rest import ApiException
from traitlets import Bool, default

from desp_hub.metering import price_text

from .backend import DespGatewayMixin
from .metering import from_millis
from .options import DespClusterConfigMixin
from .sightings import Sighting, WorkerSightings

#: The label the controller gives worker pods (`app.kubernetes.io/component`).
WORKER_COMPONENT = "dask-worker"


def _utc(value: datetime.datetime) -> datetime.datetime:
    return value.replace(tzinfo=datetime.UTC) if value.tzinfo is None else value.astimezone(datetime.UTC)


class DespKubeClusterConfig(DespClusterConfigMixin, KubeClusterConfig):
    """A cluster's configuration on Kubernetes (pods), with what DESP records with it."""


class DespKubeBackend(DespGatewayMixin, KubeBackend):
    """KubeBackend with per-role and per-profile limits, clear refusals and worker-hours metering."""

    read_worker_pods = Bool(
        True,
        config=True,
        help="""
        Read the worker pods (get/list pods in the clusters' namespaces) for the workers' start times and to see
        workers between heartbeats. Turned off by itself, with a warning, when the API refuses (403): the gateway
        then meters from heartbeats only, which on Kubernetes come at scale requests and at least hourly.
        """,
    )

    @default("cluster_config_class")
    def _desp_cluster_config_class(self):
        return "desp_hub.dask_gateway.kube_backend.DespKubeClusterConfig"

    @property
    def sightings(self) -> WorkerSightings | None:
        """The workers seen, in the outbox's database (None while metering is off)."""
        if getattr(self, "_sightings", None) is None and getattr(self, "outbox", None) is not None:
            self._sightings = WorkerSightings(self.outbox.engine)
        return getattr(self, "_sightings", None)

    @staticmethod
    def _now() -> datetime.datetime:
        return datetime.datetime.now(datetime.UTC)

    # -- what the gateway hears -------------------------------------------------------------------------------

    async def on_cluster_heartbeat(self, cluster_name, msg):
        try:
            await self._meter_heartbeat(cluster_name, msg)
        except Exception:  # never let metering fail a heartbeat
            self.log.exception("Metering the heartbeat of cluster %s failed", cluster_name)
        await super().on_cluster_heartbeat(cluster_name, msg)

    async def sync_cluster(self, cluster_name):
        await super().sync_cluster(cluster_name)
        if self.sightings is None:
            return
        cluster = self.clusters.get(cluster_name)
        if cluster is not None and cluster.status < ClusterStatus.STOPPED:
            return
        try:
            stopped = self._stopped_at(cluster)
            for sighting in await asyncio.to_thread(self.sightings.open, cluster_name):
                await self._stop_worker(sighting, stopped)
        except Exception:
            self.log.exception("Metering the stop of cluster %s failed", cluster_name)

    async def queue_running_workers(self):
        """Every delivery pass: sight the worker pods, stop the workers that are gone, queue the complete intervals
        of the others."""
        if self.sightings is None or not self._informer_ready():
            return
        now = self._now()
        running_pods = await self._sight_worker_pods(now)
        for sighting in await asyncio.to_thread(self.sightings.open):
            cluster = self.clusters.get(sighting.cluster)
            if cluster is None and self.informer.get(sighting.cluster) is None:
                # its cluster is gone (deleted while no gateway ran): never debit beyond its last sighting
                self.log.warning("Cluster %s of worker %s is gone: stopped at its last sighting",
                                 sighting.cluster, sighting.worker)  # fmt: skip
                await self._stop_worker(sighting, sighting.last_seen)
            elif cluster is not None and cluster.status >= ClusterStatus.STOPPED:
                await self._stop_worker(sighting, self._stopped_at(cluster))
            elif self._pod_gone(sighting, running_pods, now):
                await self._stop_worker(sighting, sighting.last_seen)  # its pod is gone, no heartbeat said so
            else:
                await self.queue_worker_debits(**sighting.debit_fields())

    # -- metering ---------------------------------------------------------------------------------------------

    async def _meter_heartbeat(self, cluster_name, msg):
        cluster = self.clusters.get(cluster_name)
        if cluster is None or self.sightings is None or cluster.status >= ClusterStatus.STOPPED:
            return
        now = self._now()
        active = {str(name) for name in msg.get("active_workers") or ()}
        known = {sighting.worker for sighting in await asyncio.to_thread(self.sightings.open, cluster_name)}
        for worker in sorted(active):
            # a new worker's start is its pod's (read once); a known one's is kept
            started = None if worker in known else await self._pod_start(cluster_name.split(".", 1)[0], worker)
            await asyncio.to_thread(self._sight, cluster, worker, started or now, now)
        for sighting in await asyncio.to_thread(self.sightings.open, cluster_name):
            if sighting.worker not in active:  # closing, closed, or lost: stopped now
                await self._stop_worker(sighting, now)

    def _sight(self, cluster, worker: str, started: datetime.datetime, seen: datetime.datetime) -> bool:
        config = cluster.config
        return self.sightings.sight(
            username=cluster.username,
            cluster=cluster.name,
            worker=worker,
            worker_cores=int(config.get("worker_cores") or 1),
            dcu_per_core_hour=price_text(config.get("dcu_per_core_hour", 1.0)),
            interval_seconds=int(config.get("metering_interval_seconds") or 300),
            started=min(started, seen),
            seen=seen,
        )

    async def _stop_worker(self, sighting: Sighting, stopped: datetime.datetime) -> None:
        """Close the sighting first (only one pass closes it), then queue the worker's last debits."""
        closed = await asyncio.to_thread(self.sightings.close, sighting, stopped)
        if closed is not None:
            await self.queue_worker_debits(**closed.debit_fields(), stopped=closed.stopped)

    def _stopped_at(self, cluster) -> datetime.datetime:
        """When a stopped cluster stopped (its completion time), or now (deleted, or no time recorded)."""
        if cluster is not None and cluster.stop_time:
            return from_millis(cluster.stop_time)
        return self._now()

    def _informer_ready(self) -> bool:
        informer = getattr(self, "informer", None)
        return informer is not None and getattr(informer, "initialized", None) is not None and (
            informer.initialized.is_set()
        )

    # -- worker pods ------------------------------------------------------------------------------------------

    @staticmethod
    def _pod_gone(sighting: Sighting, running_pods: dict[str, set[str]] | None, listed: datetime.datetime) -> bool:
        """Whether the pods listed at `listed` show the worker gone (a worker sighted after the listing, by a
        heartbeat, is not judged by it)."""
        namespace = sighting.cluster.split(".", 1)[0]
        if running_pods is None or namespace not in running_pods or sighting.last_seen >= listed:
            return False
        return sighting.worker not in running_pods[namespace]

    def _pods_refused(self, error: ApiException) -> bool:
        if error.status in (401, 403):
            self.log.warning("May not read worker pods (HTTP %s): metering from scheduler heartbeats only; grant "
                             "get/list on pods to the gateway's service account", error.status)  # fmt: skip
            self.read_worker_pods = False
            return True
        return False

    async def _pod_start(self, namespace: str, pod_name: str) -> datetime.datetime | None:
        """A worker pod's start time (`status.startTime`), or None (not readable, not started)."""
        if not self.read_worker_pods:
            return None
        try:
            pod = await self.core_client.read_namespaced_pod(pod_name, namespace)
        except ApiException as error:
            if not self._pods_refused(error) and error.status != 404:
                self.log.warning("Reading worker pod %s/%s failed: %s", namespace, pod_name, error.reason)
            return None
        start = pod.status.start_time if pod.status is not None else None
        return _utc(start) if start else None

    async def _sight_worker_pods(self, now: datetime.datetime) -> dict[str, set[str]] | None:
        """Sight the running worker pods of the running clusters; per namespace listed, the names of its running
        worker pods (None: not listed)."""
        if not self.read_worker_pods:
            return None
        namespaces = sorted({name.split(".", 1)[0] for name, c in self.clusters.items()
                             if c.status < ClusterStatus.STOPPED})  # fmt: skip
        selector = f"{self.label_selector},app.kubernetes.io/component={WORKER_COMPONENT}"
        running: dict[str, set[str]] = {}
        for namespace in namespaces:
            try:
                pods = await self.core_client.list_namespaced_pod(namespace, label_selector=selector)
            except ApiException as error:
                if not self._pods_refused(error):
                    self.log.warning("Listing worker pods in %s failed: %s", namespace, error.reason)
                return None
            running[namespace] = set()
            for pod in pods.items:
                start = pod.status.start_time if pod.status is not None else None
                if start is None or pod.metadata.deletion_timestamp is not None:
                    continue  # not started yet, or going away
                if pod.status.phase not in ("Pending", "Running"):
                    continue
                cluster_label = (pod.metadata.labels or {}).get("gateway.dask.org/cluster")
                cluster = self.clusters.get(f"{namespace}.{cluster_label}")
                if cluster is None or cluster.status >= ClusterStatus.STOPPED:
                    continue
                running[namespace].add(pod.metadata.name)
                await asyncio.to_thread(self._sight, cluster, pod.metadata.name, _utc(start), now)
        return running
