"""The hub's configuration on Kubernetes: the Helm chart's `desp` values turned into JupyterHub configuration.

The chart (helm/desp-hub) renders its `desp:` values into the ConfigMap `desp-hub-config` (`desp.yaml`, and the
profiles seed as `profiles.yaml`), which the z2jh hub pod mounts at `/usr/local/etc/desp-hub`. The hub image
adds `images/hub/desp_jupyterhub_config.py` to z2jh's `jupyterhub_config.d`, and that file only calls
`configure_from_chart(c)`. So no Python sits in YAML: the values are data, and the code is this module, in the
image, next to the one-machine configuration (`desp_hub/jupyterhub_config.py`) it mirrors:

- the same authenticator (`DespKeycloakAuthenticator`) and the same group/role policy;
- the same profiles, from the same store seeded from the same YAML, as KubeSpawner `profile_list` entries
  (`desp_hub.kube.entitled_profile_list`), with users' tokens kept out of pod specs (`store_secret_env`);
- the same metering (`DespKubeSpawner`, through `desp_hub.spawner.DespMeteringMixin`): the DCU balance checked
  before the pod is created, the profile and its price in `user_options` for the metering service, the session
  (`DESP_SESSION_ID`) opened at start and its final partial interval queued at stop;
- the same hub services, added by the same `install_*_service` functions, then made reachable from the proxy pod:
  z2jh's proxy runs in its own pod, so a service listening on 127.0.0.1 in the hub pod is out of its reach; each
  service listens on the hub pod's IP ($POD_IP, from the downward API) at the port the chart names;
- Dask Gateway: the upstream dask-gateway chart (Kubernetes backend) instead of the local one; the hub only grants
  users access to it and tells their servers where it is.

Secrets never pass through here: OAUTH_CLIENT_SECRET, PGPASSWORD, DESP_METERING_CLIENT_SECRET and
DESP_STATISTICS_CLIENT_SECRET reach the hub's environment from a Kubernetes Secret (see the chart's values.yaml).
"""

from __future__ import annotations

import asyncio
import inspect
import os
import urllib.parse
from typing import Any

import yaml
from kubespawner import KubeSpawner
from traitlets import Callable

from .authenticator import DespKeycloakAuthenticator
from .kube import entitled_profile_list, own_secret_env, store_secret_env
from .platform_endpoints import DespPlatformEndpoints
from .profile_store import seeded_store
from .services import install
from .services.install import (
    install_culler_service,
    install_dashboards_service,
    install_metering_service,
    install_profiles_service,
    install_workflows_service,
    with_access_scope,
)
from .spawner import DespMeteringMixin

__all__ = [
    "CHART_CONFIG_DIR",
    "DespKubeSpawner",
    "configure_from_chart",
    "configure_kubernetes",
    "load_chart_config",
    "profile_source",
]

# Where the hub pod mounts the ConfigMap `desp-hub-config` (jupyterhub.hub.extraVolumeMounts in values.yaml).
CHART_CONFIG_DIR = "/usr/local/etc/desp-hub"
CHART_CONFIG_DIR_ENV = "DESP_HUB_CHART_CONFIG"
# z2jh's in-cluster Service in front of the proxy: how pods reach the hub's routes.
PROXY_URL = "http://proxy-public"
# The seed shipped in the image, used when the chart's `desp.profiles.seed` is empty.
SHIPPED_SEED = os.path.join(os.path.dirname(__file__), "profiles.yaml")


def load_chart_config(directory: str) -> tuple[dict[str, Any], str]:
    """The chart's `desp` values (`desp.yaml`) and the profiles seed file to use, from the mounted ConfigMap."""
    with open(os.path.join(directory, "desp.yaml"), encoding="utf-8") as file:
        values = yaml.safe_load(file) or {}
    seed = os.path.join(directory, "profiles.yaml")
    with open(seed, encoding="utf-8") as file:
        has_profiles = bool((yaml.safe_load(file) or {}).get("profiles"))
    return values, seed if has_profiles else SHIPPED_SEED


def profile_source(db_url: str, seed_path: str):
    """The profiles as the store holds them now (read in a thread: it blocks on the database)."""

    async def source():
        store = await asyncio.to_thread(seeded_store, db_url, seed_path)
        return await asyncio.to_thread(store.profiles)

    return source


class DespKubeSpawner(DespMeteringMixin, KubeSpawner):
    """KubeSpawner whose servers are metered as local ones are (`desp_hub.spawner.DespMeteringMixin`) and get the
    platform's endpoints (`DespPlatformEndpoints`), as local servers do.

    KubeSpawner applies the chosen `profile_list` entry in `load_user_options`, at the start of its `_start`, before
    any Kubernetes object is created; that is where this spawner finds the DESP profile behind the entry (from
    `profile_source`, the same store the entries are built from), checks the DCU balance (402/503 with the local
    messages) and records the profile and its price in `user_options`. The metering session is opened once the pod
    runs and closed, with its final partial interval, after the stop.
    """

    profile_source = Callable(
        None,
        allow_none=True,
        config=True,
        help="""
        The DESP profiles (`desp_hub.profiles.Profile`) behind `profile_list`: a callable with no argument returning
        them (or an awaitable of them), e.g. `desp_hub.kube_config.profile_source(db_url, seed_path)`. It gives the
        price of the profile a server starts with. None: servers are not checked against the DCU balance and carry
        no price (the metering service then looks the profile up in its store).
        """,
    )

    async def load_user_options(self):
        """Apply the chosen profile (KubeSpawner: refuses a profile the user is not entitled to), then check the
        balance for its DESP profile and record it; raising here leaves no pod or volume behind."""
        await super().load_user_options()
        if self.profile_source is None:
            return
        profiles = self.profile_source()
        if inspect.isawaitable(profiles):
            profiles = await profiles
        profile = await self.entitled_profile(profiles, (self.user_options or {}).get("profile"))
        await self.check_dcu_balance(profile)
        self.record_profile(profile)

    def get_env(self):
        env = super().get_env()
        env.update(DespPlatformEndpoints(parent=self).environment(self.user.name))
        return env


def _serve_on(c: Any, name: str, host: str) -> None:
    """Make the configured service `name` listen on `host` (same port): the proxy pod reaches it there."""
    services = [dict(service) for service in c.JupyterHub.services]
    for service in services:
        if service.get("name") == name:
            parts = urllib.parse.urlsplit(service["url"])
            service["url"] = f"{parts.scheme}://{host}:{parts.port}"
    c.JupyterHub.services = services


def _grant_dask_gateway(c: Any, address: str, proxy_address: str) -> None:
    """Users (and their servers' tokens) may use the `dask-gateway` service the dask-gateway chart runs; servers
    find it from their environment, so `dask_gateway.Gateway()` needs no argument. The service itself (its URL and
    API token) is declared by z2jh's `hub.services.dask-gateway`."""
    scope = install.DASK_GATEWAY_ACCESS_SCOPE
    roles = [r for r in c.JupyterHub.load_roles if r.get("name") != install.DASK_GATEWAY_ROLE]
    c.JupyterHub.load_roles = with_access_scope(
        [
            *roles,
            {
                "name": install.DASK_GATEWAY_ROLE,
                "description": "The Dask Gateway: reads which profiles users' servers run, for the per-profile limits",
                "scopes": list(install.DASK_GATEWAY_SCOPES),
                "services": [install.DASK_GATEWAY_NAME],
            },
        ],
        scope,
    )
    if scope not in c.Spawner.server_token_scopes:
        c.Spawner.server_token_scopes = [*c.Spawner.server_token_scopes, scope]
    c.KubeSpawner.environment.update(
        {
            "DASK_GATEWAY__ADDRESS": address,
            "DASK_GATEWAY__PROXY_ADDRESS": proxy_address,
            "DASK_GATEWAY__AUTH__TYPE": "jupyterhub",
        }
    )


def configure_kubernetes(c: Any, values: dict[str, Any], seed_path: str, pod_ip: str = "") -> None:
    """Configure the hub `c` from the chart's `desp` values (see helm/desp-hub/values.schema.json for each key).

    `seed_path`: the profiles YAML that seeds an empty store. `pod_ip`: where the hub's services listen (the hub
    pod's IP); empty leaves them on 127.0.0.1 (only for tests: the proxy pod cannot reach that).
    """
    keycloak = values["keycloak"]
    profiles = values["profiles"]
    endpoints = values["endpoints"]
    services = values["services"]

    if values["publicUrl"]:
        c.JupyterHub.public_url = values["publicUrl"]
    # Keycloak, with the policy of desp_hub/jupyterhub_config.py; the client secret is $OAUTH_CLIENT_SECRET.
    c.JupyterHub.authenticator_class = DespKeycloakAuthenticator
    c.DespKeycloakAuthenticator.iam_url = keycloak["iamUrl"]
    c.DespKeycloakAuthenticator.realm = keycloak["realm"]
    c.DespKeycloakAuthenticator.client_id = keycloak["clientId"]
    c.DespKeycloakAuthenticator.allowed_groups = set(keycloak["allowedGroups"])
    c.DespKeycloakAuthenticator.admin_groups = set(keycloak["adminGroups"])
    c.DespKeycloakAuthenticator.admin_roles = set(keycloak["adminRoles"])
    c.DespKeycloakAuthenticator.auth_refresh_age = 300
    c.DespKeycloakAuthenticator.refresh_pre_spawn = True
    # z2jh may have set services (hub.services) and roles (hub.loadRoles) already: they are kept.
    if "services" not in c.JupyterHub:
        c.JupyterHub.services = []
    configured_roles = c.JupyterHub.load_roles if "load_roles" in c.JupyterHub else []
    c.JupyterHub.load_roles = [
        *(role for role in configured_roles if role.get("name") != "user"),
        {
            "name": "user",
            "description": "Everything a user may do to themselves, and read their own auth_state",
            "scopes": ["self", "admin:auth_state!user"],
        },
    ]
    c.Spawner.server_token_scopes = ["users:activity!user", "access:servers!server", "admin:auth_state!user"]

    # Profiles: the store admins edit through the profiles service, read at every form render and spawn.
    db_url = profiles["databaseUrl"]
    c.JupyterHub.spawner_class = DespKubeSpawner
    profiles_now = profile_source(db_url, seed_path)
    c.KubeSpawner.profile_list = entitled_profile_list(profiles_now)
    c.DespKubeSpawner.profile_source = profiles_now  # each profile's price, for the DCU check and metering
    c.KubeSpawner.modify_pod_hook = store_secret_env
    c.KubeSpawner.after_pod_created_hook = own_secret_env
    c.Spawner.default_url = "/lab"

    # Where servers (and the dashboards and workflows, as each user) find the platform's data services.
    c.DespPlatformEndpoints.catalogue_url = endpoints["catalogueUrl"]
    c.DespPlatformEndpoints.user_cache_url = endpoints["userCacheUrl"]
    c.DespPlatformEndpoints.cache_quota_bytes = int(endpoints["cacheQuotaBytes"])
    c.DespPlatformEndpoints.trace_url = endpoints["traceUrl"]
    c.DespPlatformEndpoints.accounting_url = endpoints["accountingUrl"]
    c.DespPlatformEndpoints.token_exchange_url = endpoints["tokenExchangeUrl"]
    platform = DespPlatformEndpoints(config=c)

    install_profiles_service(
        c, db_url=db_url, seed_path=seed_path, port=services["profiles"]["port"], admin_group=profiles["adminGroup"]
    )
    listening = ["profiles"]
    culler = services["culler"]
    if culler["enabled"]:
        install_culler_service(
            c,
            db_url=db_url,
            interval=culler["intervalSeconds"],
            fallback_idle_timeout=culler["fallbackIdleTimeout"],
        )
    metering = services["metering"]
    token_url = metering["tokenUrl"]
    if metering["enabled"] and endpoints["accountingUrl"]:
        c.DespMetering.accounting_url = endpoints["accountingUrl"]
        c.DespMetering.db_url = db_url
        c.DespMetering.token_url = token_url
        c.DespMetering.client_id = metering["clientId"]
        c.DespMetering.interval_seconds = metering["intervalSeconds"]
        install_metering_service(
            c,
            accounting_url=endpoints["accountingUrl"],
            db_url=db_url,
            interval_seconds=metering["intervalSeconds"],
            token_url=token_url,
            client_id=metering["clientId"],
        )
    dashboards = services["dashboards"]
    if dashboards["enabled"]:
        install_dashboards_service(
            c,
            catalogue_url=platform.catalogue_url,
            cache_url=platform.user_cache_url,
            accounting_url=platform.accounting_url,
            restricted_group=dashboards["restrictedGroup"],
            port=dashboards["port"],
            token_url=token_url,
        )
        listening.append("dashboards")
    workflows = services["workflows"]
    if workflows["enabled"]:
        install_workflows_service(
            c,
            db_url=workflows["databaseUrl"],
            data_dir=workflows["dataDir"],
            profiles_db_url=db_url,
            trace_url=platform.trace_url,
            accounting_url=platform.accounting_url if metering["enabled"] else "",
            token_url=token_url,
            client_id=metering["clientId"],
            run_env=platform.environment("{username}"),
            max_concurrent_runs=workflows["maxConcurrentRuns"],
            max_concurrent_runs_per_user=workflows["maxConcurrentRunsPerUser"],
            port=workflows["port"],
        )
        listening.append("workflows")
        # servers reach the service through the proxy's in-cluster Service (z2jh's `proxy-public`)
        c.KubeSpawner.environment.update({"DESP_WORKFLOWS_URL": f"{PROXY_URL}/services/workflows/"})
    if pod_ip:
        for name in listening:
            _serve_on(c, name, pod_ip)

    gateway = values["daskGateway"]
    if gateway["enabled"]:
        _grant_dask_gateway(c, gateway["address"], gateway["proxyAddress"])


def configure_from_chart(c: Any) -> None:
    """What the hub image's `jupyterhub_config.d/desp_jupyterhub_config.py` calls: configure `c` from the chart's
    ConfigMap (at $DESP_HUB_CHART_CONFIG, default /usr/local/etc/desp-hub), services on the pod's IP ($POD_IP)."""
    directory = os.environ.get(CHART_CONFIG_DIR_ENV) or CHART_CONFIG_DIR
    values, seed_path = load_chart_config(directory)
    configure_kubernetes(c, values, seed_path, pod_ip=os.environ.get("POD_IP", ""))
