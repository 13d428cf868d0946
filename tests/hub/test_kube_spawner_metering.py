"""DespKubeSpawner meters Kubernetes servers as the local spawners meter theirs (DespMeteringMixin).

What is real: DespKubeSpawner and KubeSpawner (their `start`, `load_user_options`, `get_pod_manifest`, pod reflector
and `stop`, through kubernetes_asyncio over HTTP), the profile store, the hub's ORM spawner row (`started` and
`user_options`, as the hub sets and persists them), the metering outbox (SQLite), the sandbox accounting service and
its identity provider (balance check and delivery of the debits), the metering service's reading of a server model.

What is faked, and only that: the Kubernetes API server. `KubeApiStandIn` serves on 127.0.0.1 the few calls
KubeSpawner makes (list/watch/create/delete pods, create/patch secrets), records them, and reports every created pod
as running at once: no cluster and no kubelet here. `FakeUser` (tests/hub/test_kube_manifests.py) gives what the
hub's User object gives a spawner (name, groups, auth_state with realm roles).
"""

from __future__ import annotations

import asyncio
import datetime
import json
import logging
import uuid
from decimal import Decimal

import pytest
import yaml
from aiohttp import web as aioweb
from jupyterhub import orm
from jupyterhub.objects import Hub
from tornado import web
from traitlets.config import Config

from desp_hub.kube import entitled_profile_list, own_secret_env, store_secret_env
from desp_hub.kube_config import DespKubeSpawner, configure_kubernetes, profile_source
from desp_hub.metering import ClientCredentials, MeteringOutbox, deliver_pending, session_id
from desp_hub.profiles import Profile, load_profiles
from desp_hub.services.metering_service import running_session
from desp_hub.spawner import DespLocalSpawner
from desp_lab.accounting import Accounting
from tests.conftest_accounting import unique_user
from tests.conftest_idp import METERING_CLIENT, METERING_SECRET
from tests.hub.test_kube_manifests import SEED, FakeUser, kubeconfig  # noqa: F401  (kubeconfig: a fixture)
from tests.support import free_port

INTERVAL = 60  # seconds per metering interval
RAN_FOR = 130  # seconds a started server has run when it is stopped: two complete intervals and a partial one
VALUES = SEED.parents[2] / "helm" / "desp-hub" / "values.yaml"


class KubeApiStandIn:
    """A recording stand-in for the Kubernetes API server (core/v1 pods and secrets), served on 127.0.0.1.

    Created pods are Running and ready at once (with a pod IP), so KubeSpawner's start completes; deleted pods
    vanish at once. Watchers of pods (KubeSpawner's reflector) get ADDED/DELETED events as a real API sends them,
    from the resourceVersion they ask for.
    """

    def __init__(self):
        self.calls: list[tuple[str, str]] = []  # (method, path)
        self.pods: dict[str, dict] = {}  # name -> pod as last returned
        self.created_pods: list[dict] = []  # every pod body KubeSpawner posted
        self.version = 1
        self.events: list[dict] = []  # every watch event sent, in order (a watch resumes from a resourceVersion)
        self.watchers: list[asyncio.Queue] = []
        self.runner = None
        self.url = ""

    async def start(self):
        app = aioweb.Application()
        app.router.add_route("*", "/{path:.*}", self.handle)
        self.runner = aioweb.AppRunner(app, shutdown_timeout=0.5)
        await self.runner.setup()
        port = free_port()
        await aioweb.TCPSite(self.runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"
        return self

    async def stop(self):
        for queue in self.watchers:
            queue.put_nowait(None)
        await self.runner.cleanup()

    def _next_version(self) -> str:
        self.version += 1
        return str(self.version)

    def _notify(self, kind: str, pod: dict) -> None:
        self.events.append({"type": kind, "object": pod})
        for queue in self.watchers:
            queue.put_nowait({"type": kind, "object": pod})

    async def handle(self, request: aioweb.Request) -> aioweb.StreamResponse:
        self.calls.append((request.method, request.path))
        parts = request.path.strip("/").split("/")  # api v1 namespaces NS KIND [NAME]
        if parts[:3] != ["api", "v1", "namespaces"] or len(parts) < 5:
            return aioweb.json_response({"kind": "Status", "code": 404, "message": "not here"}, status=404)
        namespace, kind, name = parts[3], parts[4], (parts[5] if len(parts) > 5 else None)
        if kind == "secrets":
            body = await request.json() if request.can_read_body else {}
            status = 201 if request.method == "POST" else 200
            return aioweb.json_response({"kind": "Secret", "apiVersion": "v1", **body}, status=status)
        if kind != "pods":
            return aioweb.json_response({"kind": "Status", "code": 404, "message": "not here"}, status=404)
        if request.method == "GET" and name is None:
            if request.query.get("watch", "").lower() in ("true", "1"):
                return await self.watch(request)
            return aioweb.json_response(
                {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": str(self.version)},
                 "items": list(self.pods.values())}  # fmt: skip
            )
        if request.method == "POST":
            pod = await request.json()
            self.created_pods.append(json.loads(json.dumps(pod)))
            pod["metadata"].update(namespace=namespace, uid=str(uuid.uuid4()), resourceVersion=self._next_version())
            pod["status"] = {
                "phase": "Running",
                "podIP": "10.1.2.3",
                "containerStatuses": [
                    {"name": c["name"], "image": c["image"], "imageID": "", "ready": True, "restartCount": 0}
                    for c in pod["spec"]["containers"]
                ],
            }
            self.pods[pod["metadata"]["name"]] = pod
            self._notify("ADDED", pod)
            return aioweb.json_response(pod, status=201)
        if request.method == "DELETE" and name:
            pod = self.pods.pop(name, None)
            if pod is None:
                return aioweb.json_response({"kind": "Status", "code": 404, "message": "gone"}, status=404)
            pod["metadata"]["resourceVersion"] = self._next_version()
            self._notify("DELETED", pod)
            return aioweb.json_response(pod)
        if request.method == "GET" and name:
            if name in self.pods:
                return aioweb.json_response(self.pods[name])
            return aioweb.json_response({"kind": "Status", "code": 404, "message": "gone"}, status=404)
        return aioweb.json_response({"kind": "Status", "code": 405, "message": "not served"}, status=405)

    async def watch(self, request: aioweb.Request) -> aioweb.StreamResponse:
        """A watch: one JSON event per line, until the client's timeoutSeconds or the stand-in stops."""
        response = aioweb.StreamResponse()
        await response.prepare(request)
        queue: asyncio.Queue = asyncio.Queue()
        since = int(request.query.get("resourceVersion") or 0)
        for event in self.events:  # what happened between the client's list and this watch, as the API replays it
            if int(event["object"]["metadata"]["resourceVersion"]) > since:
                queue.put_nowait(event)
        self.watchers.append(queue)
        timeout = float(request.query.get("timeoutSeconds") or 30)
        try:
            while True:
                try:
                    event = await asyncio.wait_for(queue.get(), timeout)
                except TimeoutError:
                    break
                if event is None:
                    break
                await response.write(json.dumps(event).encode() + b"\n")
        except (ConnectionResetError, asyncio.CancelledError):
            pass
        finally:
            self.watchers.remove(queue)
        return response


@pytest.fixture
async def kube_api():
    api = await KubeApiStandIn().start()
    yield api
    await api.stop()


@pytest.fixture
def hub_db():
    """The hub's own database (JupyterHub's ORM, in memory), where it keeps each spawner's started/user_options."""
    db = orm.new_session_factory("sqlite://")()
    yield db
    db.close()


@pytest.fixture
def metering_env(monkeypatch):
    monkeypatch.setenv("DESP_METERING_CLIENT_SECRET", METERING_SECRET)


def metering_config(tmp_path, accounting_url, token_url, **settings) -> Config:
    config = Config()
    config.DespMetering.accounting_url = accounting_url
    config.DespMetering.token_url = token_url
    config.DespMetering.db_url = f"sqlite:///{tmp_path / 'metering.sqlite'}"
    config.DespMetering.interval_seconds = INTERVAL
    for name, value in settings.items():
        setattr(config.DespMetering, name, value)
    return config


class Servers:
    """Builds DespKubeSpawners as the hub does (config, ORM row, user) against the stand-in API, and stops the
    pod reflectors they started (KubeSpawner shares them on the class, per namespace)."""

    def __init__(self, api, db, tmp_path):
        self.api, self.db, self.tmp_path = api, db, tmp_path
        self.namespace = f"desp-{uuid.uuid4().hex[:8]}"
        self.store_url = f"sqlite:///{tmp_path / 'profiles.sqlite'}"

    def spawner(self, config: Config, demo_user: str = "poweruser") -> DespKubeSpawner:
        user = FakeUser(demo_user)
        user.name = user.escaped_name = unique_user("kube")  # the sandbox ledger is shared by the session's tests
        orm_user = orm.User(name=user.name)
        self.db.add(orm_user)
        self.db.commit()
        orm_spawner = orm.Spawner(user=orm_user, name="")
        self.db.add(orm_spawner)
        self.db.commit()
        source = profile_source(self.store_url, str(SEED))
        return DespKubeSpawner(
            config=config,
            hub=Hub(ip="hub", port=8081, base_url="/hub/"),
            user=user,
            orm_spawner=orm_spawner,
            api_token="hub-api-token",
            oauth_client_id=f"jupyterhub-user-{user.name}",
            namespace=self.namespace,
            k8s_api_host=self.api.url,
            events_enabled=False,
            start_timeout=60,
            profile_list=entitled_profile_list(source),
            profile_source=source,
            modify_pod_hook=store_secret_env,
            after_pod_created_hook=own_secret_env,
        )

    def hub_starts(self, spawner, options, ran_for=0):
        """What the hub does before `spawner.start()`: the options, and `started` (`ran_for` seconds ago)."""
        now = datetime.datetime.now(datetime.UTC).replace(tzinfo=None)  # the hub's naive UTC
        spawner.orm_spawner.started = now - datetime.timedelta(seconds=ran_for)
        spawner.orm_spawner.user_options = dict(options)
        spawner.user_options = dict(options)
        self.db.commit()

    async def hub_stops(self, spawner):
        """What the hub does to stop a server: stop, forget `started`, run the post-stop hook."""
        await spawner.stop()
        spawner.orm_spawner.started = None
        self.db.commit()
        await spawner.run_post_stop_hook()

    async def close(self):
        for key, reflector in list(DespKubeSpawner.reflectors.items()):
            if getattr(reflector, "namespace", None) == self.namespace:
                DespKubeSpawner.reflectors.pop(key, None)
                await reflector.stop()


@pytest.fixture
async def servers(kube_api, hub_db, tmp_path, kubeconfig):  # noqa: F811
    made = Servers(kube_api, hub_db, tmp_path)
    yield made
    await made.close()


def pod_posts(api):
    return [call for call in api.calls if call[0] == "POST" and call[1].endswith("/pods")]


def transactions(sandbox_accounting, user, session):
    admin = Accounting(sandbox_accounting.url, token=sandbox_accounting.admin_token)
    return admin.transactions(user, session=session, limit=1000)["transactions"]


async def test_started_server_is_metered_and_its_last_interval_debited_once(servers, sandbox_accounting, tmp_path,
                                                                           metering_env):  # fmt: skip
    idp = sandbox_accounting.idp
    spawner = servers.spawner(metering_config(tmp_path, sandbox_accounting.url, idp.token_url))
    servers.hub_starts(spawner, {"profile": "power"}, ran_for=RAN_FOR)

    url = await spawner.start()

    assert url.startswith("http://10.1.2.3:")
    # the price goes with the server, where the metering service reads it (same keys as local servers)
    assert spawner.user_options == {"profile": "power", "dcu_per_hour": 4}
    assert spawner.orm_spawner.user_options == {"profile": "power", "dcu_per_hour": 4}
    model = {"ready": True, "name": "", "started": spawner.orm_spawner.started.isoformat() + "Z",
             "user_options": spawner.orm_spawner.user_options}  # fmt: skip
    seen = running_session(spawner.user.name, model)
    assert (seen["profile"], seen["dcu_per_hour"]) == ("power", 4)
    # the session is open, at the profile's price, and the pod carries its id
    session = spawner.session_id()
    assert session == session_id(spawner.user.name, "", spawner.orm_spawner.started)
    outbox = MeteringOutbox(spawner.metering.db_url)
    opened = outbox.session(session)
    assert (opened.profile, Decimal(opened.dcu_per_hour), opened.interval_seconds) == ("power", 4, INTERVAL)
    [pod] = servers.api.created_pods
    env = {var["name"]: var for var in pod["spec"]["containers"][0]["env"]}
    assert env["DESP_SESSION_ID"]["value"] == session
    assert "value" not in env["JUPYTERHUB_API_TOKEN"]  # still moved to the pod's Secret by the hook

    await servers.hub_stops(spawner)

    assert servers.api.pods == {}
    rows = outbox.rows(session)
    assert [row.idempotency_key.rsplit(":", 1)[1] for row in rows] == ["0", "1", "final"]
    assert outbox.session(session).stopped_at is not None
    token = ClientCredentials(idp.token_url, METERING_CLIENT, METERING_SECRET)
    accounting = Accounting(sandbox_accounting.url, token=token, retries=0)
    assert deliver_pending(outbox, accounting).delivered == 3
    # delivered again after a crash before the outbox noted it: still debited once
    from desp_hub.metering import outbox_table

    with outbox.engine.begin() as connection:
        connection.execute(outbox_table.update().values(status="pending"))
    assert deliver_pending(outbox, accounting).delivered == 3
    ledger = transactions(sandbox_accounting, spawner.user.name, session)
    assert sorted(t["idempotency_key"] for t in ledger) == sorted(row.idempotency_key for row in rows)
    assert {(t["profile"], t["service"], t["kind"]) for t in ledger} == {("power", "jupyterhub", "debit")}
    amounts = {t["idempotency_key"].rsplit(":", 1)[1]: t["amount"] for t in ledger}
    assert amounts["0"] == amounts["1"] == Decimal("0.067")  # a minute at 4 DCU per hour
    assert Decimal(0) < amounts["final"] < Decimal("0.067")  # the part of the third minute before the stop


async def test_short_balance_is_refused_with_the_local_message_before_any_pod(servers, sandbox_accounting, tmp_path,
                                                                             metering_env):  # fmt: skip
    config = metering_config(tmp_path, sandbox_accounting.url, sandbox_accounting.idp.token_url)
    spawner = servers.spawner(config)
    admin = Accounting(sandbox_accounting.url, token=sandbox_accounting.admin_token)
    account = admin.account(spawner.user.name)
    admin.record(spawner.user.name, "debit", str(account["available"]), f"spend:{uuid.uuid4()}", service="tests")
    servers.hub_starts(spawner, {"profile": "power"})

    with pytest.raises(web.HTTPError) as refused:
        await spawner.start()

    assert refused.value.status_code == 402
    local = DespLocalSpawner(config=config, user=spawner.user)
    with pytest.raises(web.HTTPError) as refused_locally:
        await local.check_dcu_balance(next(p for p in load_profiles(SEED) if p.slug == "power"))
    assert refused.value.log_message == refused_locally.value.log_message
    assert "Power profile" in refused.value.log_message
    assert pod_posts(servers.api) == []  # nothing was created in the cluster
    assert MeteringOutbox(spawner.metering.db_url).sessions(spawner.user.name) == []


@pytest.mark.parametrize("policy", ["refuse", "allow"])
async def test_accounting_down_follows_the_policy(policy, servers, sandbox_accounting, tmp_path, metering_env,
                                                  caplog):  # fmt: skip
    nobody = f"http://127.0.0.1:{free_port()}"
    config = metering_config(tmp_path, nobody, sandbox_accounting.idp.token_url, when_accounting_down=policy)
    spawner = servers.spawner(config)
    servers.hub_starts(spawner, {"profile": "power"})
    caplog.set_level(logging.WARNING)

    if policy == "refuse":
        with pytest.raises(web.HTTPError) as refused:
            await spawner.start()
        assert refused.value.status_code == 503
        assert "cannot be checked right now" in refused.value.log_message
        assert pod_posts(servers.api) == []
    else:
        await spawner.start()
        assert len(pod_posts(servers.api)) == 1
        assert spawner.user_options["dcu_per_hour"] == 4  # metered once accounting is back
        await servers.hub_stops(spawner)
    assert f"Cannot check the DCU balance of {spawner.user.name}" in caplog.text
    assert f"when_accounting_down={policy}" in caplog.text
    assert METERING_SECRET not in caplog.text


async def test_kube_and_local_spawners_give_the_metering_service_the_same_options(servers, sandbox_accounting,
                                                                                  tmp_path, metering_env):  # fmt: skip
    """A spawn naming no profile (REST API) starts the default one; both spawners record it and its price."""
    config = metering_config(tmp_path, sandbox_accounting.url, sandbox_accounting.idp.token_url)
    kube = servers.spawner(config, demo_user="researcher")
    servers.hub_starts(kube, {})
    await kube.start()
    local_config = metering_config(tmp_path, sandbox_accounting.url, sandbox_accounting.idp.token_url)
    local_config.DespLocalSpawner.profiles_path = str(SEED)
    local = DespLocalSpawner(config=local_config, user=FakeUser("researcher"))
    await local.apply_profile({})
    assert kube.user_options == local.user_options == {"profile": "standard", "dcu_per_hour": 1}
    await servers.hub_stops(kube)


async def test_without_metering_the_profile_is_still_recorded_and_nothing_is_asked(servers, tmp_path):
    spawner = servers.spawner(metering_config(tmp_path, "", ""))
    servers.hub_starts(spawner, {"profile": "power"})
    await spawner.start()
    assert spawner.user_options == {"profile": "power"}
    env = {var["name"]: var for var in servers.api.created_pods[0]["spec"]["containers"][0]["env"]}
    assert env["DESP_SESSION_ID"]["value"] == spawner.session_id()  # the session id names the server anyway
    await servers.hub_stops(spawner)
    assert MeteringOutbox(spawner.metering.db_url).sessions() == []


def test_chart_configuration_gives_the_spawner_the_profile_store(tmp_path):
    """configure_kubernetes hands DespKubeSpawner the same profile source its profile_list is built from."""
    with open(VALUES, encoding="utf-8") as file:
        values = yaml.safe_load(file)["desp"]
    values["profiles"]["databaseUrl"] = f"sqlite:///{tmp_path / 'chart.sqlite'}"
    values["endpoints"]["accountingUrl"] = "http://accounting.example"
    config = Config()
    configure_kubernetes(config, values, str(SEED))
    assert config.JupyterHub.spawner_class is DespKubeSpawner
    profiles = asyncio.run(config.DespKubeSpawner.profile_source())
    assert {p.slug: p.dcu_per_hour for p in profiles} == {p.slug: p.dcu_per_hour for p in load_profiles(SEED)}
    assert all(isinstance(p, Profile) for p in profiles)
    assert config.DespMetering.accounting_url == "http://accounting.example"
