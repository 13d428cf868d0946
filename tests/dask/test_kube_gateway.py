"""The chart's gateway: DespKubeBackend meters worker-hours from what a Kubernetes gateway hears, and
`configure_gateway` makes the upstream chart's gateway DESP's.

The backend runs for real (its setup loads a kubeconfig, its informer lists and watches DaskCluster objects, its
heartbeat handler patches the cluster object, its delivery loop sends debits to the real sandbox accounting
service as the `desp-metering` client). Only the Kubernetes API server is a stand-in: `KubeApiStandIn`, an aiohttp
server on 127.0.0.1 that keeps DaskCluster and Pod objects in memory, streams watch events, applies JSON patches
and records every request.
"""

from __future__ import annotations

import asyncio
import datetime
import json
import time
import uuid

import kubernetes_asyncio
import pytest
from aiohttp import web
from traitlets.config import Config

from desp_hub.dask_gateway.chart_config import AUTHENTICATOR_CLASS, BACKEND_CLASS, configure_gateway
from desp_hub.dask_gateway.kube_backend import DespKubeBackend, DespKubeClusterConfig
from desp_hub.dask_gateway.metering import SERVICE, UsageOutbox
from desp_hub.dask_gateway.settings import apply_settings
from desp_hub.dask_gateway.sightings import WorkerSightings
from desp_lab.accounting import Accounting
from tests.conftest_accounting import unique_user
from tests.conftest_idp import METERING_CLIENT, METERING_SECRET
from tests.support import free_port

NAMESPACE = "desp"
INSTANCE = "desp-hub-dask-gateway"
GROUP_PATH = "/apis/gateway.dask.org/v1alpha1"
INTERVAL = 60  # seconds per metered interval
PRICE = 3.6  # DCU per core hour: one core for 60 s = 0.06 DCU


def k8s_time(moment: datetime.datetime) -> str:
    return moment.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def ago(seconds: float) -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC).replace(microsecond=0) - datetime.timedelta(seconds=seconds)


class KubeApiStandIn:
    """The parts of the Kubernetes API the gateway's API pod uses: DaskClusters (list, watch, JSON patch) and Pods
    (read, list by label), in memory, every request recorded as (method, path, query, body)."""

    def __init__(self):
        self.requests: list[tuple[str, str, dict, object]] = []
        self.clusters: dict[tuple[str, str], dict] = {}
        self.pods: dict[tuple[str, str], dict] = {}
        self.pods_forbidden = False
        self.version = 1
        self.events: list[tuple[int, str, dict]] = []
        self.changed = asyncio.Condition()
        app = web.Application()
        app.router.add_get(f"{GROUP_PATH}/daskclusters", self.list_or_watch_clusters)
        app.router.add_patch(f"{GROUP_PATH}/namespaces/{{ns}}/daskclusters/{{name}}", self.patch_cluster)
        app.router.add_get("/api/v1/namespaces/{ns}/pods", self.list_pods)
        app.router.add_get("/api/v1/namespaces/{ns}/pods/{name}", self.read_pod)
        self.runner = web.AppRunner(app)
        self.port = free_port()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self):
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", self.port).start()

    async def stop(self):
        await self.runner.cleanup()

    def _record(self, request, body=None):
        self.requests.append((request.method, request.path, dict(request.query), body))

    async def put_cluster(self, name: str, username: str, config: dict, phase: str = "Running", **status):
        """Create or update a DaskCluster (a watch event follows)."""
        key = (NAMESPACE, name)
        old = self.clusters.get(key)
        obj = old or {
            "apiVersion": "gateway.dask.org/v1alpha1",
            "kind": "DaskCluster",
            "metadata": {"name": name, "namespace": NAMESPACE, "creationTimestamp": k8s_time(ago(600)),
                         "labels": {"gateway.dask.org/instance": INSTANCE, "gateway.dask.org/cluster": name}},
            "spec": {"username": username, "options": {}, "config": config, "active": True, "replicas": 0},
        }  # fmt: skip
        obj["status"] = {"phase": phase, **status}
        await self._changed("MODIFIED" if old else "ADDED", key, obj)

    async def _changed(self, kind, key, obj):
        async with self.changed:
            self.version += 1
            obj["metadata"]["resourceVersion"] = str(self.version)
            self.clusters[key] = obj
            self.events.append((self.version, kind, json.loads(json.dumps(obj))))
            self.changed.notify_all()

    def put_pod(self, cluster: str, name: str, started: datetime.datetime | None, phase="Running"):
        labels = {"gateway.dask.org/instance": INSTANCE, "gateway.dask.org/cluster": cluster,
                  "app.kubernetes.io/component": "dask-worker"}  # fmt: skip
        status = {"phase": phase, **({"startTime": k8s_time(started)} if started else {})}
        self.pods[(NAMESPACE, name)] = {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": name, "namespace": NAMESPACE, "labels": labels,
                         "creationTimestamp": k8s_time(started or ago(0))},
            "spec": {"containers": [{"name": "dask-worker", "image": "ghcr.io/desp-hub/singleuser:0.1.0"}]},
            "status": status,
        }  # fmt: skip

    async def list_or_watch_clusters(self, request):
        self._record(request)
        if request.query.get("watch") in ("true", "True", "1"):
            return await self._watch(request)
        return web.json_response({"apiVersion": "gateway.dask.org/v1alpha1", "kind": "DaskClusterList",
                                  "metadata": {"resourceVersion": str(self.version)},
                                  "items": list(self.clusters.values())})  # fmt: skip

    async def _watch(self, request):
        since = int(request.query.get("resourceVersion") or 0)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        deadline = time.monotonic() + min(float(request.query.get("timeoutSeconds") or 2), 2)
        try:
            while True:
                for version, kind, obj in [e for e in self.events if e[0] > since]:
                    await response.write(json.dumps({"type": kind, "object": obj}).encode() + b"\n")
                    since = version
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                async with self.changed:
                    try:
                        await asyncio.wait_for(self.changed.wait(), left)
                    except TimeoutError:
                        pass
            await response.write_eof()
        except ConnectionError:  # the gateway stopped watching
            pass
        return response

    async def patch_cluster(self, request):
        patch = await request.json()
        self._record(request, patch)
        obj = self.clusters.get((request.match_info["ns"], request.match_info["name"]))
        if obj is None:
            return web.json_response({"kind": "Status", "code": 404, "reason": "NotFound"}, status=404)
        for operation in patch:  # only what the gateway sends: add /spec/<field>
            obj["spec"][operation["path"].rsplit("/", 1)[1]] = operation["value"]
        return web.json_response(obj)

    def _forbidden(self):
        return web.json_response({"kind": "Status", "code": 403, "reason": "Forbidden"}, status=403)

    async def list_pods(self, request):
        self._record(request)
        if self.pods_forbidden:
            return self._forbidden()
        wanted = dict(part.split("=", 1) for part in request.query.get("labelSelector", "").split(",") if part)
        items = [pod for (ns, _), pod in self.pods.items() if ns == request.match_info["ns"]
                 and all(pod["metadata"]["labels"].get(k) == v for k, v in wanted.items())]  # fmt: skip
        return web.json_response({"apiVersion": "v1", "kind": "PodList", "metadata": {"resourceVersion": "1"},
                                  "items": items})  # fmt: skip

    async def read_pod(self, request):
        self._record(request)
        if self.pods_forbidden:
            return self._forbidden()
        pod = self.pods.get((request.match_info["ns"], request.match_info["name"]))
        if pod is None:
            return web.json_response({"kind": "Status", "code": 404, "reason": "NotFound"}, status=404)
        return web.json_response(pod)


KUBECONFIG = """\
apiVersion: v1
kind: Config
clusters:
- name: stand-in
  cluster: {{server: "{url}"}}
users:
- name: gateway
  user: {{token: stand-in-token}}
contexts:
- name: stand-in
  context: {{cluster: stand-in, user: gateway, namespace: desp}}
current-context: stand-in
"""


@pytest.fixture
async def kube_api(tmp_path, monkeypatch):
    api = KubeApiStandIn()
    await api.start()
    path = tmp_path / "kubeconfig"
    path.write_text(KUBECONFIG.format(url=api.url))
    monkeypatch.setenv("KUBECONFIG", str(path))
    # kubernetes_asyncio reads KUBECONFIG once, at import time, into this default (as tests/hub/test_kube_manifests)
    monkeypatch.setattr(kubernetes_asyncio.config.kube_config, "KUBE_CONFIG_DEFAULT_LOCATION", str(path))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)  # not in a pod: no in-cluster config
    try:
        yield api
    finally:
        await api.stop()


@pytest.fixture
def gateway_environment(tmp_path, sandbox_accounting, monkeypatch):
    """The environment the chart gives the gateway's pod (ConfigMap desp-dask-gateway-config + Secret)."""
    monkeypatch.setenv("DESP_METERING_CLIENT_SECRET", METERING_SECRET)
    return {
        "DESP_DASK_DCU_PER_CORE_HOUR": str(PRICE),
        "DESP_DASK_METERING_INTERVAL": str(INTERVAL),
        "DESP_DASK_USAGE_DB_URL": f"sqlite:///{tmp_path / 'dask-usage.sqlite'}",
        "DESP_ACCOUNTING_URL": sandbox_accounting.url,
        "DESP_METERING_TOKEN_URL": sandbox_accounting.idp.token_url,
        "DESP_METERING_CLIENT_ID": METERING_CLIENT,
    }


class Gateway:
    """DespKubeBackend configured as the chart's gateway is (configure_gateway), set up and cleaned up."""

    def __init__(self, environment):
        config = Config()
        configure_gateway(config, environment)
        config.DespKubeBackend.gateway_instance = INSTANCE
        config.DespKubeBackend.delivery_period = 0.5
        self.backend = DespKubeBackend(config=config)
        self.config = config

    async def __aenter__(self):
        await self.backend.setup(web.Application())
        return self.backend

    async def __aexit__(self, *exc):
        await self.backend.cleanup()


def cluster_config(**changes):
    """What DespKubeClusterConfig records in a DaskCluster's spec.config (the settings above apply to it)."""
    config = Config()
    apply_settings(config, {"DESP_DASK_DCU_PER_CORE_HOUR": str(PRICE), "DESP_DASK_METERING_INTERVAL": str(INTERVAL)})
    values = {k: v for k, v in DespKubeClusterConfig(config=config).to_dict().items() if isinstance(v, (int, float))}
    values.update({"cluster_max_workers": 2, "worker_cores": 1, **changes})
    return values


async def wait_for(condition, timeout=60, what="a condition"):
    deadline = time.monotonic() + timeout
    while True:
        value = await asyncio.to_thread(condition)
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        await asyncio.sleep(0.2)


def heartbeat(active, closing=(), closed=(), count=None):
    return {"count": len(active) if count is None else count, "active_workers": list(active),
            "closing_workers": list(closing), "closed_workers": list(closed)}  # fmt: skip


def ledger(sandbox_accounting, user, cluster):
    accounting = Accounting(sandbox_accounting.url, token=sandbox_accounting.admin_token(), retries=0)
    return accounting.transactions(user, session=f"{SERVICE}/{cluster}", limit=1000)["transactions"]


async def test_heartbeats_pods_and_the_clusters_stop_meter_each_worker_once_across_a_restart(
    kube_api, gateway_environment, sandbox_accounting
):
    user = unique_user("dask")
    name = uuid.uuid4().hex
    cluster = f"{NAMESPACE}.{name}"
    await kube_api.put_cluster(name, user, cluster_config())
    outbox = UsageOutbox(gateway_environment["DESP_DASK_USAGE_DB_URL"])
    first_start = ago(150)
    kube_api.put_pod(name, "worker-a", first_start)  # started 2.5 intervals ago
    kube_api.put_pod(name, "worker-b", ago(20))

    def rows(worker=None):
        return [r for r in outbox.rows(username=user) if worker is None or r.worker == worker]

    async with Gateway(gateway_environment) as backend:
        await wait_for(lambda: cluster in backend.clusters, 30, "the informer's cluster")
        await backend.on_cluster_heartbeat(cluster, heartbeat(["worker-a", "worker-b"]))
        # the upstream part still runs: the cluster object's replicas follow the heartbeat's count
        patches = [r for r in kube_api.requests if r[0] == "PATCH"]
        assert patches[-1][1:] == (f"{GROUP_PATH}/namespaces/{NAMESPACE}/daskclusters/{name}", {},
                                   [{"op": "add", "path": "/spec/replicas", "value": 2}])  # fmt: skip
        # worker-a starts at its pod's start time: its two complete intervals are queued and delivered
        await wait_for(lambda: [r.interval_index for r in rows("worker-a")] == [0, 1]
                       and all(r.status == "delivered" for r in rows()), 60, "worker-a's intervals")  # fmt: skip
        assert rows("worker-a")[0].period_start == first_start and rows("worker-b") == []
        # scaled down: worker-a closes, its final partial interval is queued once, replays change nothing
        await backend.on_cluster_heartbeat(cluster, heartbeat(["worker-b"], closing=["worker-a"]))
        await backend.on_cluster_heartbeat(cluster, heartbeat(["worker-b"], closed=["worker-a"]))
        finals = [r for r in rows("worker-a") if r.interval_index is None]
        assert len(finals) == 1 and finals[0].period_start == first_start + datetime.timedelta(seconds=2 * INTERVAL)
        sightings = {s.worker: s for s in WorkerSightings(outbox.engine).all()}
        # each worker's pod was read once, when first seen
        reads = [r[1] for r in kube_api.requests if r[0] == "GET" and "/pods/" in r[1]]
        assert sorted(reads) == [f"/api/v1/namespaces/{NAMESPACE}/pods/worker-{w}" for w in "ab"]
        assert sightings["worker-a"].stopped == finals[0].period_end and sightings["worker-b"].stopped is None

    # a new API pod (same outbox database): worker-b's start is kept; the cluster stops while it runs
    async with Gateway(gateway_environment) as backend:
        await wait_for(lambda: cluster in backend.clusters, 30, "the informer's cluster")
        await backend.on_cluster_heartbeat(cluster, heartbeat(["worker-b"]))  # seen again: not a new start
        assert WorkerSightings(outbox.engine).open(cluster)[0].started == sightings["worker-b"].started
        stopped_at = ago(0)
        await kube_api.put_cluster(name, user, cluster_config(), phase="Stopped", completionTime=k8s_time(stopped_at))
        await wait_for(lambda: [r for r in rows("worker-b") if r.interval_index is None], 30, "worker-b's final")
        await wait_for(lambda: all(r.status == "delivered" for r in rows()), 60, "the deliveries")
        [final_b] = [r for r in rows("worker-b") if r.interval_index is None]
        assert final_b.period_end == max(stopped_at, sightings["worker-b"].started)
        # replays after the stop: a late heartbeat, more delivery passes
        await backend.on_cluster_heartbeat(cluster, heartbeat(["worker-b"]))
        await asyncio.sleep(1.5)
    queued = rows()
    assert len({r.idempotency_key for r in queued}) == len(queued) == 4  # a: 0, 1, final; b: final
    debits = ledger(sandbox_accounting, user, cluster)
    assert sorted(d["idempotency_key"] for d in debits) == sorted(r.idempotency_key for r in queued)
    for debit in debits:
        assert (debit["kind"], debit["service"]) == ("debit", SERVICE) and debit["metadata"]["cluster"] == cluster
    amounts = {d["idempotency_key"]: d["amount"] for d in debits}
    assert float(amounts[f"{SERVICE}:{user}:{cluster}:worker-a:0"]) == pytest.approx(0.06)  # 60 s of one 3.6 DCU/h core


async def test_worker_pods_are_metered_between_heartbeats_and_stop_when_their_pod_is_gone(
    kube_api, gateway_environment
):
    user = unique_user("dask")
    name = uuid.uuid4().hex
    cluster = f"{NAMESPACE}.{name}"
    await kube_api.put_cluster(name, user, cluster_config(worker_cores=2))
    started = ago(130)
    kube_api.put_pod(name, "worker-c", started)
    kube_api.put_pod(name, "worker-pending", None, phase="Pending")  # not started: not metered
    outbox = UsageOutbox(gateway_environment["DESP_DASK_USAGE_DB_URL"])
    async with Gateway(gateway_environment) as backend:
        # no heartbeat at all: the delivery passes list the worker pods
        await wait_for(lambda: len(outbox.rows(username=user)) == 2, 30, "worker-c's complete intervals")
        assert [(r.worker, r.period_start, r.worker_cores) for r in outbox.rows(username=user)] == [
            ("worker-c", started, 2), ("worker-c", started + datetime.timedelta(seconds=INTERVAL), 2)]  # fmt: skip
        lists = [r for r in kube_api.requests if r[1] == f"/api/v1/namespaces/{NAMESPACE}/pods"]
        assert lists[0][2]["labelSelector"] == (
            f"gateway.dask.org/instance={INSTANCE},app.kubernetes.io/component=dask-worker"
        )
        del kube_api.pods[(NAMESPACE, "worker-c")]  # evicted, no heartbeat told
        await wait_for(lambda: any(r.interval_index is None for r in outbox.rows(username=user)), 30, "the final")
        [last] = WorkerSightings(outbox.engine).all()
        final = [r for r in outbox.rows(username=user) if r.interval_index is None][0]
        assert final.period_end == last.stopped == last.last_seen  # never beyond its last sighting
        assert backend.read_worker_pods is True
    assert all((r.worker, r.cluster) == ("worker-c", cluster) for r in outbox.rows(username=user))


async def test_without_access_to_pods_the_heartbeats_alone_meter(kube_api, gateway_environment):
    kube_api.pods_forbidden = True
    user = unique_user("dask")
    name = uuid.uuid4().hex
    cluster = f"{NAMESPACE}.{name}"
    await kube_api.put_cluster(name, user, cluster_config())
    kube_api.put_pod(name, "worker-d", ago(300))
    outbox = UsageOutbox(gateway_environment["DESP_DASK_USAGE_DB_URL"])
    async with Gateway(gateway_environment) as backend:
        await wait_for(lambda: cluster in backend.clusters, 30, "the informer's cluster")
        before = ago(0)
        await backend.on_cluster_heartbeat(cluster, heartbeat(["worker-d"]))
        assert backend.read_worker_pods is False  # refused once: no more pod requests
        [sighting] = WorkerSightings(outbox.engine).all()
        assert sighting.started >= before  # the heartbeat's time, not the pod's
        requests = len(kube_api.requests)
        await backend.on_cluster_heartbeat(cluster, heartbeat([], closed=["worker-d"]))
        assert not [r for r in kube_api.requests[requests:] if "/pods" in r[1]]
        assert WorkerSightings(outbox.engine).all()[0].stopped is not None


# -- the chart's configuration ----------------------------------------------------------------------------------

ROLE_LIMITS = {"stack-dask-low": {"max_workers": 3, "max_worker_cores": 2, "max_worker_memory_gib": 4,
                                  "idle_timeout": 600}}  # fmt: skip


def test_configure_gateway_gives_desps_backend_authenticator_limits_and_metering():
    config = Config()
    config.DaskGateway.backend_class = "dask_gateway_server.backends.kubernetes.KubeBackend"  # the chart's own
    configure_gateway(config, {
        "DESP_DASK_ROLE_LIMITS": json.dumps(ROLE_LIMITS),
        "DESP_DASK_PROFILE_LIMITS": json.dumps({"standard": {"max_worker_memory_gib": 1}}),
        "DESP_DASK_DCU_PER_CORE_HOUR": "2.5",
        "DESP_DASK_METERING_INTERVAL": "120",
        "DESP_DASK_USAGE_DB_URL": "postgresql+psycopg://gateway@db/desp_dask",
        "DESP_ACCOUNTING_URL": "https://accounting.example",
        "DESP_METERING_TOKEN_URL": "https://iam.example/token",
        "DESP_METERING_CLIENT_ID": "desp-metering",
    })  # fmt: skip
    assert config.DaskGateway.backend_class == BACKEND_CLASS == "desp_hub.dask_gateway.kube_backend.DespKubeBackend"
    assert config.DaskGateway.authenticator_class == AUTHENTICATOR_CLASS
    backend = DespKubeBackend(config=config)
    assert backend.limits.role_limits["stack-dask-low"]["max_workers"] == 3
    assert backend.limits.profile_limits == {"standard": {"max_worker_memory_gib": 1.0}}
    assert backend.usage_db_url == "postgresql+psycopg://gateway@db/desp_dask"
    assert (backend.metering.accounting_url, backend.metering.token_url) == ("https://accounting.example",
                                                                             "https://iam.example/token")  # fmt: skip
    cluster = DespKubeClusterConfig(parent=backend)
    assert (cluster.dcu_per_core_hour, cluster.metering_interval_seconds) == (2.5, 120)
    assert backend.cluster_config_class is DespKubeClusterConfig


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("DESP_DASK_ROLE_LIMITS", "{not json", r"\$DESP_DASK_ROLE_LIMITS is not valid JSON"),
        ("DESP_DASK_METERING_INTERVAL", "5m", r"\$DESP_DASK_METERING_INTERVAL must be a whole number"),
        ("DESP_DASK_DCU_PER_CORE_HOUR", "cheap", r"\$DESP_DASK_DCU_PER_CORE_HOUR must be a number"),
    ],
)
def test_a_malformed_setting_fails_with_its_variable(variable, value, message):
    with pytest.raises(ValueError, match=message):
        configure_gateway(Config(), {variable: value})


class GatewayApp:
    """The gateway application a backend belongs to (`parent`): only its authenticator is used here."""

    def __init__(self, profiles):
        self.authenticator = self
        self._profiles = profiles

    async def running_profiles(self, username):
        return self._profiles


async def test_refusals_beyond_the_limits_are_the_shared_mixins_on_both_backends():
    from traitlets.config import Configurable

    from desp_hub.dask_gateway.auth import DespGatewayUser
    from desp_hub.dask_gateway.backend import DespLocalBackend

    config = Config()
    configure_gateway(config, {"DESP_DASK_ROLE_LIMITS": json.dumps(ROLE_LIMITS),
                               "DESP_DASK_PROFILE_LIMITS": json.dumps({"standard": {"max_worker_memory_gib": 1}})})

    class App(Configurable):
        pass

    answers = {}
    for kind in (DespKubeBackend, DespLocalBackend):
        app = App(config=config)
        app.authenticator = GatewayApp(["standard"])
        backend = kind(parent=app)
        options = await backend.options_for(DespGatewayUser("researcher", roles=["stack-dask-low"]))
        refusals = []
        for asked in ({"worker_cores": 3}, {"worker_memory": 2}):
            with pytest.raises(ValueError) as refusal:
                options.get_configuration(asked, DespGatewayUser("researcher"))
            refusals.append(str(refusal.value))
        accepted = options.get_configuration({"worker_cores": 2, "worker_memory": 1}, DespGatewayUser("researcher"))
        answers[kind.__name__] = refusals, accepted
        with pytest.raises(web.HTTPForbidden, match="may not create Dask clusters"):
            await backend.options_for(DespGatewayUser("outsider", roles=["desp-user"]))
    assert answers["DespKubeBackend"] == answers["DespLocalBackend"]
    refusals, accepted = answers["DespKubeBackend"]
    assert refusals == ["at most 2 cores per worker for role stack-dask-low (asked for 3)",
                        "at most 1 GiB of memory per worker for profile standard (asked for 2 GiB)"]  # fmt: skip
    assert accepted["cluster_max_workers"] == 3 and accepted["max_workers_source"] == "role stack-dask-low"


async def test_a_scale_beyond_the_clusters_maximum_is_refused_with_the_reason_on_kubernetes(kube_api, tmp_path):
    """The mixin's refusal (a 422 with the reason, where upstream silently caps) on the Kubernetes backend, through
    a real aiohttp server with the backend's middleware, for a cluster the informer knows."""
    from aiohttp.test_utils import TestClient, TestServer

    name = uuid.uuid4().hex
    await kube_api.put_cluster(name, "researcher", cluster_config(max_workers_source="role stack-dask-low"))
    config = Config()
    configure_gateway(config, {"DESP_DASK_USAGE_DB_URL": f"sqlite:///{tmp_path / 'usage.sqlite'}"})
    config.DespKubeBackend.gateway_instance = INSTANCE
    backend = DespKubeBackend(config=config)
    app = web.Application()

    async def scaled(request):
        return web.json_response({"ok": True})

    app.router.add_post("/api/v1/clusters/{name}/scale", scaled)
    await backend.setup(app)
    try:
        await wait_for(lambda: f"{NAMESPACE}.{name}" in backend.clusters, 30, "the informer's cluster")
        async with TestClient(TestServer(app, host="127.0.0.1", port=free_port())) as client:
            refused = await client.post(f"/api/v1/clusters/{NAMESPACE}.{name}/scale", json={"count": 3})
            assert refused.status == 422
            assert await refused.json() == {"error": "at most 2 workers for role stack-dask-low (asked for 3)"}
            allowed = await client.post(f"/api/v1/clusters/{NAMESPACE}.{name}/scale", json={"count": 2})
            assert allowed.status == 200
    finally:
        await backend.cleanup()
