"""Install DESP's hub services into a JupyterHub configuration: one call per service adds it and its roles.

    from desp_hub.services.install import install_profiles_service
    install_profiles_service(c)

`install_culler_service` and `install_metering_service` (below) do the same for the culler and the metering
service, each with a role of only the hub API scopes it needs. The rest of this note is about the profiles service.

Scopes, least privilege first:

- The service's own role (`profiles-service`) has no scopes. The service identifies each caller with the
  caller's own token (`GET /hub/api/user`), and the hub always lets a token read its owner's name, admin flag
  and groups, which is all the service needs. It never reads other users or auth_state.
- Every user may reach the service: `access:services!service=profiles` is added to the `user` role (extending
  the scopes `jupyterhub_config.py` gives it, never replacing them). What a caller may then do is decided by the
  service: hub admins, and members of `admin_group`, may change profiles; everyone else may read the profiles
  they may start.

Call it in the main configuration file, after `c.JupyterHub.load_roles` is set. A file loaded with
`load_subconfig` gets a fresh `c` whose lists replace the main file's on merge, so from there the `user` role is
not visible: the function then only appends (lazily) a `user` role of JupyterHub's default scopes plus the access
scope and its own role. On a hub whose main file defines the `user` role, that fails loudly at start-up ("Role
user multiply defined") instead of silently dropping the main file's user scopes.
"""

from __future__ import annotations

import copy
import os
import sys
import urllib.parse
from typing import Any

from ..ports import free_port

SERVICE_NAME = "profiles"
SERVICE_ROLE = "profiles-service"
ACCESS_SCOPE = f"access:services!service={SERVICE_NAME}"
# JupyterHub's own default for the `user` role, used when the configuration does not define it
DEFAULT_USER_SCOPES = ["self"]
# PostgreSQL client settings the service inherits from the hub (a managed service gets only PATH, LANG and a few
# more): the store's password comes in PGPASSWORD, never in the URL.
INHERITED_ENV = ("PGPASSWORD", "PGPASSFILE", "PGSERVICE", "PGSERVICEFILE", "PGSSLMODE", "PGSSLROOTCERT")


class _FromHubEnvironment:
    """An `environment` value read from the hub's environment when the service starts (so no secret sits in
    the configuration object, which `desp-hub config` prints)."""

    def __init__(self, name: str):
        self.name = name

    def __call__(self, _spawner: Any) -> str:
        return os.environ.get(self.name, "")

    def __repr__(self) -> str:
        return f"<from the hub's ${self.name}>"


def _configured(section: Any, name: str) -> list | None:
    """A copy of a list trait's configured value; None when `c` does not set it (unset, or only lazily extended)."""
    value = section[name] if name in section else None
    return copy.deepcopy(list(value)) if isinstance(value, (list, tuple)) else None


def _put_service(c: Any, service: dict[str, Any]) -> None:
    """Add `service` to c.JupyterHub.services, replacing a configured one of the same name."""
    services = _configured(c.JupyterHub, "services")
    if services is None:
        c.JupyterHub.services.append(service)  # lazy: extends whatever an earlier file configured
    else:
        c.JupyterHub.services = [*(s for s in services if s.get("name") != service["name"]), service]


def with_access_scope(roles: list[dict[str, Any]], scope: str = ACCESS_SCOPE) -> list[dict[str, Any]]:
    """A copy of `roles` (c.JupyterHub.load_roles) in which the `user` role also holds `scope`.

    The `user` role keeps every scope it already has; it is created with JupyterHub's default (`self`) if absent.
    """
    roles = copy.deepcopy(roles)
    user_role = next((role for role in roles if role.get("name") == "user"), None)
    if user_role is None:
        user_role = {
            "name": "user",
            "description": "Default permissions of every user",
            "scopes": list(DEFAULT_USER_SCOPES),
        }
        roles.append(user_role)
    scopes = list(user_role.get("scopes") or DEFAULT_USER_SCOPES)
    if scope not in scopes:
        scopes.append(scope)
    user_role["scopes"] = scopes
    return roles


def profiles_service(
    *,
    db_url: str,
    seed_path: str,
    port: int,
    admin_group: str = "hub-admins",
    python: str = sys.executable,
    inherit_env: tuple[str, ...] = (),
) -> dict[str, Any]:
    """The `c.JupyterHub.services` entry of the profiles service (a managed service on 127.0.0.1:port).

    `inherit_env` names hub environment variables the service gets too (read when it starts).
    """
    return {
        "name": SERVICE_NAME,
        "display": True,
        "url": f"http://127.0.0.1:{port}",
        "command": [
            python,
            "-m",
            "desp_hub.services.profiles_service",
            "--db-url",
            db_url,
            "--seed",
            seed_path,
            "--admin-group",
            admin_group,
        ],
        "environment": {name: _FromHubEnvironment(name) for name in inherit_env},
        # users reach it from the hub's pages: no "authorize this service" page on top of the hub login
        "oauth_no_confirm": True,
    }


def install_profiles_service(
    c: Any,
    *,
    db_url: str | None = None,
    seed_path: str | None = None,
    port: int | None = None,
    admin_group: str = "hub-admins",
) -> None:
    """Add the profiles service, its (scope-less) role, and access to it for every user, to the hub config `c`.

    - `db_url`: SQLAlchemy URL of the profile store. Default: `profiles.sqlite` in the hub's working directory,
      next to `jupyterhub.sqlite` (`<data dir>/hub` under `desp-hub up`); resolved now, as an absolute path.
    - `seed_path`: profiles YAML copied into the store when it is empty. Default: the seed shipped with desp_hub.
    - `port`: where the service listens on 127.0.0.1 (the hub's proxy routes `/services/profiles/` to it).
      Default: a port free right now.
    - `admin_group`: members of this hub group may change profiles, as hub admins may ('' : only hub admins).

    The service inherits the hub's PostgreSQL client variables (`PGPASSWORD`, ...; see INHERITED_ENV) when set.

    Existing services and roles are kept; called twice on a main configuration, it leaves one service.
    """
    db_url = db_url or f"sqlite:///{os.path.join(os.getcwd(), 'profiles.sqlite')}"
    seed_path = seed_path or os.path.join(os.path.dirname(os.path.dirname(__file__)), "profiles.yaml")
    service = profiles_service(
        db_url=db_url,
        seed_path=seed_path,
        port=port or free_port(),
        admin_group=admin_group,
        inherit_env=tuple(name for name in INHERITED_ENV if name in os.environ),
    )

    service_role = {
        "name": SERVICE_ROLE,
        "description": "The profiles service: identifies callers with their own tokens, needs no hub API scope",
        "scopes": [],
        "services": [SERVICE_NAME],
    }
    _put_service(c, service)
    roles = _configured(c.JupyterHub, "load_roles")
    if roles is None:
        c.JupyterHub.load_roles.extend([*with_access_scope([]), service_role])
    else:
        roles = [r for r in roles if r.get("name") != SERVICE_ROLE]
        c.JupyterHub.load_roles = with_access_scope([*roles, service_role])


CULLER_NAME = "culler"
CULLER_ROLE = "culler-service"
# Least privilege for the culler: list the users (`list:users`), read their server models (`read:servers`: each
# server's user_options, started and last_activity, nothing of its state or the user's tokens) and stop servers
# (`delete:servers`). It needs no user-level activity (`read:users:activity`: the server model has its own
# last_activity), no admin and no access to the servers themselves.
CULLER_SCOPES = ["list:users", "read:servers", "delete:servers"]


def install_culler_service(c: Any, *, db_url: str, interval: int = 60, fallback_idle_timeout: int = 3600) -> None:
    """Add the `culler` service (`desp_hub.services.culler`) and its least-privilege role to the hub config `c`.

    Every `interval` seconds it stops servers idle longer than their profile's `idle_timeout` (servers whose
    profile is gone: `fallback_idle_timeout`) or running longer than its `max_runtime`, and records each cull in
    the profile store at `db_url`. A managed service without a URL: the hub starts it, users never reach it.
    It inherits the hub's PostgreSQL client variables (`PGPASSWORD`, ...) when set, as the profiles service does.

    Existing services and roles are kept. Where `c` sets `services` and `load_roles` outright, calling it again
    replaces the culler; where they are only extended (as from a subconfig), call it once.
    """
    service = {
        "name": CULLER_NAME,
        "command": [
            sys.executable,
            "-m",
            "desp_hub.services.culler",
            f"--db-url={db_url}",
            f"--interval={int(interval)}",
            f"--fallback-idle-timeout={int(fallback_idle_timeout)}",
        ],
        "environment": {name: _FromHubEnvironment(name) for name in INHERITED_ENV if name in os.environ},
    }
    role = {
        "name": CULLER_ROLE,
        "description": "The culler: lists users' servers and stops those past their profile's limits",
        "scopes": list(CULLER_SCOPES),
        "services": [CULLER_NAME],
    }
    _put_service(c, service)
    roles = _configured(c.JupyterHub, "load_roles")
    if roles is None:
        c.JupyterHub.load_roles.append(role)
    else:
        c.JupyterHub.load_roles = [*(r for r in roles if r.get("name") != CULLER_ROLE), role]


METERING_NAME = "metering"
METERING_ROLE = "metering-service"
# Least privilege for the metering service: list the users (`list:users`) and read their server models
# (`read:servers`: each server's started, ready and user_options, where the spawner records the profile and its
# price). It stops nothing, reads no server state, no tokens, no auth_state.
METERING_SCOPES = ["list:users", "read:servers"]
# The hub's client secret for the accounting service, handed to the service when it starts (never in `c`).
METERING_SECRET_ENV = "DESP_METERING_CLIENT_SECRET"


def install_metering_service(
    c: Any,
    *,
    accounting_url: str,
    db_url: str,
    interval_seconds: int = 300,
    poll_seconds: float = 0,
    token_url: str = "",
    client_id: str = "desp-metering",
) -> None:
    """Add the `metering` service (`desp_hub.services.metering_service`) and its least-privilege role to `c`.

    Every `poll_seconds` (0: a fifth of `interval_seconds`, at least 1 s) it queues the complete intervals of the
    running servers in the outbox at `db_url` and delivers the queued debits to `accounting_url`, with an access
    token of `client_id` from `token_url` (client credentials; the secret is read from the hub's
    DESP_METERING_CLIENT_SECRET when the service starts). A managed service without a URL: users never reach it.
    It inherits the hub's PostgreSQL client variables (`PGPASSWORD`, ...) when set, as the culler does.

    Existing services and roles are kept; where `c` sets them outright, calling it again replaces the service.
    """
    environment = {name: _FromHubEnvironment(name) for name in INHERITED_ENV if name in os.environ}
    environment[METERING_SECRET_ENV] = _FromHubEnvironment(METERING_SECRET_ENV)
    service = {
        "name": METERING_NAME,
        "command": [
            sys.executable,
            "-m",
            "desp_hub.services.metering_service",
            f"--accounting-url={accounting_url}",
            f"--db-url={db_url}",
            f"--interval={int(interval_seconds)}",
            f"--poll={float(poll_seconds):g}",
            f"--token-url={token_url}",
            f"--client-id={client_id}",
        ],
        "environment": environment,
    }
    role = {
        "name": METERING_ROLE,
        "description": "The metering service: reads which servers run, since when and at which price",
        "scopes": list(METERING_SCOPES),
        "services": [METERING_NAME],
    }
    _put_service(c, service)
    roles = _configured(c.JupyterHub, "load_roles")
    if roles is None:
        c.JupyterHub.load_roles.append(role)
    else:
        c.JupyterHub.load_roles = [*(r for r in roles if r.get("name") != METERING_ROLE), role]


DASHBOARDS_NAME = "dashboards"
DASHBOARDS_ROLE = "dashboards-service"
DASHBOARDS_ACCESS_SCOPE = f"access:services!service={DASHBOARDS_NAME}"
# Least privilege for the dashboards service's own token, which feeds the executive statistics: list the users and
# read their models (`list:users`, `read:users`: name, groups, created, last_activity; not auth_state, not tokens),
# read the groups and their members (`list:groups`, `read:groups`) and the server models (`read:servers`: started,
# last_activity, user_options.profile). Nothing is changed or stopped; no admin.
DASHBOARDS_SCOPES = ["list:users", "read:users", "list:groups", "read:groups", "read:servers"]
# What a user's OAuth token for the dashboards may do besides identifying them: read that user's own auth_state
# (their DESP access token, for data access as themselves). The hub narrows `!user` to the logged-in user, and
# grants it only because every user holds it (the `user` role in jupyterhub_config.py).
DASHBOARDS_OAUTH_SCOPES = ["admin:auth_state!user"]
# The statistics service account's secret (client `desp-statistics`, realm role `executive-statistics`), handed to
# the dashboards when they start (never in `c`): platform-wide DCU usage for the public panels' aggregates.
STATISTICS_SECRET_ENV = "DESP_STATISTICS_CLIENT_SECRET"


class _HubPublicUrl:
    """The hub's public URL (`JupyterHub.public_url`, else `bind_url`) when the service starts: the dashboards
    accept websockets from that host only."""

    def __call__(self, _spawner: Any) -> str:
        from jupyterhub.app import JupyterHub

        if not JupyterHub.initialized():
            return ""
        hub = JupyterHub.instance()
        url = hub.public_url or hub.bind_url
        parts = urllib.parse.urlsplit(url)
        return f"{parts.scheme}://{parts.netloc}" if parts.netloc else ""

    def __repr__(self) -> str:
        return "<the hub's public URL>"


def install_dashboards_service(
    c: Any,
    *,
    catalogue_url: str = "",
    cache_url: str = "",
    accounting_url: str = "",
    restricted_group: str = "executives",
    port: int | None = None,
    token_url: str = "",
    statistics_client_id: str = "desp-statistics",
) -> None:
    """Add the `dashboards` service (`desp_dashboards.service`: the visualisation and executive statistics Panel
    dashboards at `/services/dashboards/`), its least-privilege role and access to it for every user, to `c`.

    - `catalogue_url`, `cache_url` (the user's cache area, `{username}` in it), `accounting_url`: the platform's
      endpoints (DespPlatformEndpoints), given to the service's environment; each dashboard session reads them
      with the user's own DESP access token.
    - `restricted_group`: members of this hub group see the restricted executive panels and user names.
    - `port`: where the service listens on 127.0.0.1. Default: a port free right now.
    - `token_url`, `statistics_client_id`: with a token URL, the service reads platform-wide DCU usage as the
      `statistics_client_id` service account (client credentials; realm role `executive-statistics`; the secret is
      read from the hub's DESP_STATISTICS_CLIENT_SECRET when the service starts), so the public executive panels
      show platform-wide aggregates to every user. Without one, only viewers holding that role see DCU figures.

    The service appears in the hub's Services menu, and users reach it without an extra "authorize" page. Its
    OAuth client may issue tokens that read the logged-in user's own auth_state (DASHBOARDS_OAUTH_SCOPES).
    Existing services and roles are kept; where `c` sets them outright, calling it again replaces the service.
    """
    environment: dict[str, Any] = {"DESP_HUB_PUBLIC_URL": _HubPublicUrl()}
    for name, value in (
        ("DESP_CATALOGUE_URL", catalogue_url),
        ("DESP_CACHE_URL", cache_url),
        ("DESP_ACCOUNTING_URL", accounting_url),
    ):
        if value:
            environment[name] = value
    if token_url:
        environment["DESP_STATISTICS_TOKEN_URL"] = token_url
        environment["DESP_STATISTICS_CLIENT_ID"] = statistics_client_id
        environment[STATISTICS_SECRET_ENV] = _FromHubEnvironment(STATISTICS_SECRET_ENV)
    # the Natural Earth files shipped with the dashboards: maps draw coastlines and borders without a download
    from desp_dashboards.natural_earth import DATA_DIR as natural_earth_dir

    environment["CARTOPY_DATA_DIR"] = str(natural_earth_dir)
    service = {
        "name": DASHBOARDS_NAME,
        "display": True,
        "url": f"http://127.0.0.1:{port or free_port()}",
        "command": [
            sys.executable,
            "-m",
            "desp_dashboards.service",
            f"--restricted-group={restricted_group}",
        ],
        "environment": environment,
        "oauth_no_confirm": True,
        "oauth_client_allowed_scopes": list(DASHBOARDS_OAUTH_SCOPES),
    }
    role = {
        "name": DASHBOARDS_ROLE,
        "description": "The dashboards: read users, groups and servers for the executive statistics",
        "scopes": list(DASHBOARDS_SCOPES),
        "services": [DASHBOARDS_NAME],
    }
    _put_service(c, service)
    roles = _configured(c.JupyterHub, "load_roles")
    if roles is None:
        c.JupyterHub.load_roles.extend([*with_access_scope([], DASHBOARDS_ACCESS_SCOPE), role])
    else:
        roles = [r for r in roles if r.get("name") != DASHBOARDS_ROLE]
        c.JupyterHub.load_roles = with_access_scope([*roles, role], DASHBOARDS_ACCESS_SCOPE)


DASK_GATEWAY_NAME = "dask-gateway"
DASK_GATEWAY_ROLE = "dask-gateway-service"
DASK_GATEWAY_ACCESS_SCOPE = f"access:services!service={DASK_GATEWAY_NAME}"
# Least privilege for the gateway's own token: read the server models (`read:servers`: each server's
# user_options.profile, for the per-profile limits). Callers are identified with their own tokens, which may read
# their owner's name, groups and user_info (the realm roles); nothing else of users, no auth_state, no tokens.
DASK_GATEWAY_SCOPES = ["read:servers"]
# Gateway settings an operator may give in the hub's environment (JSON limits, an extra gateway config file).
DASK_GATEWAY_INHERITED_ENV = ("DESP_DASK_ROLE_LIMITS", "DESP_DASK_PROFILE_LIMITS", "DESP_DASK_GATEWAY_EXTRA_CONFIG")


class _HubServiceUrl:
    """The public URL of a hub service (`{public_url}{base_url}services/{name}`), for users' servers' environment."""

    def __init__(self, name: str):
        self.name = name

    def __call__(self, spawner: Any) -> str:
        from jupyterhub.app import JupyterHub

        base = _HubPublicUrl()(spawner)
        prefix = JupyterHub.instance().base_url if JupyterHub.initialized() else "/"
        return f"{base}{prefix.rstrip('/')}/services/{self.name}"

    def __repr__(self) -> str:
        return f"<the hub's public URL>/services/{self.name}"


class _HubKeepsServers:
    """"true" when the running hub keeps users' servers across its restarts (`JupyterHub.cleanup_servers` False:
    `desp-hub up --keep-servers`, or jupyterhub_config.py on its own), read when the gateway starts: the gateway
    then keeps users' clusters across its restarts too."""

    def __call__(self, _spawner: Any) -> str:
        from jupyterhub.app import JupyterHub

        keeps = JupyterHub.initialized() and not JupyterHub.instance().cleanup_servers
        return "true" if keeps else "false"

    def __repr__(self) -> str:
        return "<true when the hub keeps servers across its restarts>"


def _kept_port(data_dir: str) -> int:
    """The gateway's port kept in `{data_dir}/dask-gateway.port`, chosen free on first use: clusters that outlive
    a hub restart keep heartbeating to it, and users' kept servers keep finding the gateway there."""
    path = os.path.join(data_dir, "dask-gateway.port")
    try:
        with open(path) as port_file:
            return int(port_file.read().strip())
    except (FileNotFoundError, ValueError):
        pass
    port = free_port()
    os.makedirs(data_dir, exist_ok=True)
    with open(path, "w") as port_file:
        port_file.write(f"{port}\n")
    return port


def install_dask_gateway_service(
    c: Any,
    *,
    accounting_url: str = "",
    token_url: str = "",
    client_id: str = "desp-metering",
    dcu_per_core_hour: float = 1.0,
    interval_seconds: int = 300,
    role_limits: dict | None = None,
    profile_limits: dict | None = None,
    port: int | None = None,
    data_dir: str | None = None,
    keep_clusters: bool | None = None,
) -> None:
    """Add the `dask-gateway` service (dask-gateway-server with `desp_hub.dask_gateway.gateway_config`), its
    least-privilege role, access to it for every user, and its address in every user server's environment, to `c`.

    - `accounting_url`, `token_url`, `client_id`: where worker-hours are debited (`dcu_per_core_hour` DCU per
      worker core and hour, interval by interval of `interval_seconds` as servers are), as the metering client
      (secret from the hub's DESP_METERING_CLIENT_SECRET). Without an accounting URL nothing is metered.
    - `role_limits`, `profile_limits`: `DespDaskLimits` (default: stack-dask-low|medium|high, no profile limits;
      else the hub's $DESP_DASK_ROLE_LIMITS / $DESP_DASK_PROFILE_LIMITS, JSON, when set).
    - `port`: the service's port on 127.0.0.1 (HTTP API and dashboards, which the hub proxies at
      `/services/dask-gateway/`, and the schedulers' TLS traffic). Default: the one kept in
      `{data_dir}/dask-gateway.port` (a port free at the first start), the same after every restart.
    - `data_dir`: the debit outbox (`dask-usage.sqlite`), the gateway's state (`dask-gateway.sqlite`: its clusters
      and workers, their secrets encrypted with the key in `secrets/dask_gateway_encrypt_key`, made once, 0600)
      and the clusters' working directories. Default: the hub's working directory.
    - `keep_clusters`: whether users' clusters outlive the gateway's stop (the next gateway takes them over and
      meters their workers from their start) or are stopped with it (their final intervals debited). Default: as
      the hub keeps users' servers across its restarts (`JupyterHub.cleanup_servers` False), read at the start.
      A gateway that dies (crash, SIGKILL) leaves its clusters running either way; the hub restarts it and it
      takes them over.

    Users' servers get `DASK_GATEWAY__ADDRESS`, `DASK_GATEWAY__PROXY_ADDRESS` and `DASK_GATEWAY__AUTH__TYPE`, and
    their token may access the service, so `dask_gateway.Gateway()` works with no argument. Which users may create
    clusters, and how large, the gateway decides (realm roles, see desp_hub.dask_gateway.limits).
    Existing services and roles are kept; where `c` sets them outright, calling it again replaces the service.
    """
    import json

    data_dir = os.path.abspath(data_dir or os.getcwd())
    port = port or _kept_port(data_dir)
    environment: dict[str, Any] = {
        "DESP_DASK_DCU_PER_CORE_HOUR": f"{float(dcu_per_core_hour):g}",
        "DESP_DASK_METERING_INTERVAL": str(int(interval_seconds)),
        "DESP_DASK_USAGE_DB_URL": f"sqlite:///{os.path.join(data_dir, 'dask-usage.sqlite')}",
        "DESP_DASK_CLUSTERS_DIR": os.path.join(data_dir, "dask-clusters"),
        "DESP_DASK_DB_URL": f"sqlite:///{os.path.join(data_dir, 'dask-gateway.sqlite')}",
        "DESP_DASK_ENCRYPT_KEY_FILE": os.path.join(data_dir, "secrets", "dask_gateway_encrypt_key"),
        "DESP_DASK_KEEP_CLUSTERS": _HubKeepsServers() if keep_clusters is None else str(bool(keep_clusters)).lower(),
    }
    if role_limits is not None:
        environment["DESP_DASK_ROLE_LIMITS"] = json.dumps(role_limits)
    if profile_limits is not None:
        environment["DESP_DASK_PROFILE_LIMITS"] = json.dumps(profile_limits)
    for name in DASK_GATEWAY_INHERITED_ENV:  # an operator's settings in the hub's environment, read at start
        if name in os.environ and name not in environment:
            environment[name] = _FromHubEnvironment(name)
    if accounting_url:
        environment.update(
            DESP_ACCOUNTING_URL=accounting_url,
            DESP_METERING_TOKEN_URL=token_url,
            DESP_METERING_CLIENT_ID=client_id,
            DESP_METERING_CLIENT_SECRET=_FromHubEnvironment(METERING_SECRET_ENV),
        )
    config_file = os.path.join(os.path.dirname(os.path.dirname(__file__)), "dask_gateway", "gateway_config.py")
    service = {
        "name": DASK_GATEWAY_NAME,
        "url": f"http://127.0.0.1:{port}",
        "command": [sys.executable, "-m", "dask_gateway_server", "-f", config_file],
        "cwd": data_dir,
        "environment": environment,
    }
    role = {
        "name": DASK_GATEWAY_ROLE,
        "description": "The Dask Gateway: reads which profiles users' servers run, for the per-profile limits",
        "scopes": list(DASK_GATEWAY_SCOPES),
        "services": [DASK_GATEWAY_NAME],
    }
    _put_service(c, service)
    roles = _configured(c.JupyterHub, "load_roles")
    if roles is None:
        c.JupyterHub.load_roles.extend([*with_access_scope([], DASK_GATEWAY_ACCESS_SCOPE), role])
    else:
        roles = [r for r in roles if r.get("name") != DASK_GATEWAY_ROLE]
        c.JupyterHub.load_roles = with_access_scope([*roles, role], DASK_GATEWAY_ACCESS_SCOPE)
    # the servers' own tokens may call the gateway (a token gets only scopes its owner holds: the `user` role above)
    token_scopes = _configured(c.Spawner, "server_token_scopes")
    if token_scopes is None:
        c.Spawner.server_token_scopes.append(DASK_GATEWAY_ACCESS_SCOPE)
    elif DASK_GATEWAY_ACCESS_SCOPE not in token_scopes:
        c.Spawner.server_token_scopes = [*token_scopes, DASK_GATEWAY_ACCESS_SCOPE]
    c.Spawner.environment.update(
        {
            "DASK_GATEWAY__ADDRESS": _HubServiceUrl(DASK_GATEWAY_NAME),
            "DASK_GATEWAY__PROXY_ADDRESS": f"gateway://127.0.0.1:{port}",
            "DASK_GATEWAY__AUTH__TYPE": "jupyterhub",
        }
    )


WORKFLOWS_NAME = "workflows"
WORKFLOWS_ROLE = "workflows-service"
WORKFLOWS_ACCESS_SCOPE = f"access:services!service={WORKFLOWS_NAME}"


def install_workflows_service(
    c: Any,
    *,
    db_url: str = "",
    data_dir: str = "",
    profiles_db_url: str = "",
    trace_url: str = "",
    accounting_url: str = "",
    token_url: str = "",
    client_id: str = "desp-metering",
    run_env: dict[str, str] | None = None,
    max_concurrent_runs: int = 2,
    max_concurrent_runs_per_user: int = 2,
    missed_tick_grace_seconds: float = 60,
    port: int | None = None,
) -> None:
    """Add the `workflows` service (`desp_hub.services.workflows_service`: published notebooks run by papermill, at
    `/services/workflows/`), its scope-less role, access to it for every user and every user server's token, and its
    address in every server's environment (`DESP_WORKFLOWS_URL`), to `c`.

    - `db_url`: the workflows store. Default: `workflows.sqlite` in the hub's working directory.
    - `data_dir`: where each run's files go (`runs/<run id>/`). Default: `workflows` in the hub's working directory.
    - `profiles_db_url`: the profile store (profiles a workflow may use, their DCU prices). Empty: none checked.
    - `trace_url`, `accounting_url`: where a run's outputs are traced and its time debited (nothing when empty),
      as the client `client_id` at `token_url` (secret from the hub's DESP_METERING_CLIENT_SECRET).
    - `run_env`: environment of every run (the platform endpoints; `{username}` is the run's user).
    - `max_concurrent_runs`, `max_concurrent_runs_per_user`: runs executing at once (others wait in the queue).
    - `missed_tick_grace_seconds`: a schedule tick later than this was missed (the schedule's policy applies).
    - `port`: where the service listens on 127.0.0.1. Default: a port free right now.

    The service identifies callers with their own tokens and needs no hub API scope; it inherits the hub's
    PostgreSQL client variables. Existing services and roles are kept; where `c` sets them outright, calling it
    again replaces the service.
    """
    port = port or free_port()
    db_url = db_url or f"sqlite:///{os.path.join(os.getcwd(), 'workflows.sqlite')}"
    data_dir = data_dir or os.path.join(os.getcwd(), "workflows")
    environment: dict[str, Any] = {name: _FromHubEnvironment(name) for name in INHERITED_ENV if name in os.environ}
    if trace_url or accounting_url:
        environment[METERING_SECRET_ENV] = _FromHubEnvironment(METERING_SECRET_ENV)
    command = [
        sys.executable, "-m", "desp_hub.services.workflows_service",
        f"--WorkflowsService.db_url={db_url}",
        f"--WorkflowsService.data_dir={data_dir}",
        f"--WorkflowsService.profiles_db_url={profiles_db_url}",
        f"--WorkflowRunner.trace_url={trace_url}",
        f"--WorkflowRunner.accounting_url={accounting_url}",
        f"--WorkflowRunner.token_url={token_url}",
        f"--WorkflowRunner.client_id={client_id}",
        f"--WorkflowRunner.max_concurrent_runs={int(max_concurrent_runs)}",
        f"--WorkflowRunner.max_concurrent_runs_per_user={int(max_concurrent_runs_per_user)}",
        f"--WorkflowRunner.missed_tick_grace_seconds={float(missed_tick_grace_seconds)}",
    ]  # fmt: skip
    for name, value in sorted((run_env or {}).items()):
        command.append(f"--WorkflowRunner.run_env={name}={value}")
    service = {
        "name": WORKFLOWS_NAME,
        "display": True,
        "url": f"http://127.0.0.1:{port}",
        "command": command,
        "environment": environment,
        "oauth_no_confirm": True,
        # a browser user's OAuth token may read their own auth_state: a run they ask for reads data as them
        "oauth_client_allowed_scopes": ["admin:auth_state!user"],
    }
    role = {
        "name": WORKFLOWS_ROLE,
        "description": "The workflows service: identifies callers with their own tokens, needs no hub API scope",
        "scopes": [],
        "services": [WORKFLOWS_NAME],
    }
    _put_service(c, service)
    roles = _configured(c.JupyterHub, "load_roles")
    if roles is None:
        c.JupyterHub.load_roles.extend([*with_access_scope([], WORKFLOWS_ACCESS_SCOPE), role])
    else:
        roles = [r for r in roles if r.get("name") != WORKFLOWS_ROLE]
        c.JupyterHub.load_roles = with_access_scope([*roles, role], WORKFLOWS_ACCESS_SCOPE)
    # the servers' own tokens may publish (the Lab's "Publish as workflow"); a token only gets scopes its owner holds
    token_scopes = _configured(c.Spawner, "server_token_scopes")
    if token_scopes is None:
        c.Spawner.server_token_scopes.append(WORKFLOWS_ACCESS_SCOPE)
    elif WORKFLOWS_ACCESS_SCOPE not in token_scopes:
        c.Spawner.server_token_scopes = [*token_scopes, WORKFLOWS_ACCESS_SCOPE]
    c.Spawner.environment.update({"DESP_WORKFLOWS_URL": f"http://127.0.0.1:{port}/services/{WORKFLOWS_NAME}/"})
