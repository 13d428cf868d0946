# JupyterHub configuration of DESP Hub.
#
# Loaded with `jupyterhub -f <this file>` (the `desp-hub up` launcher does so, from the data
# directory, which holds the hub database and cookie secret). Deployment-specific values (ports,
# IAM URL, client id, profiles file) come as traitlets on the command line or from an operator's
# extra configuration file named by DESP_HUB_EXTRA_CONFIG, loaded last so it wins.
# Secrets never appear here: the OAuth client secret comes from OAUTH_CLIENT_SECRET and the
# auth_state key from JUPYTERHUB_CRYPT_KEY, both in the environment.
import os
import sys

from jupyterhub.app import JupyterHub
from traitlets.config import Config

from desp_hub.authenticator import DespKeycloakAuthenticator
from desp_hub.kernels import install_kernel_specs
from desp_hub.metering import hub_metering
from desp_hub.platform_endpoints import DespPlatformEndpoints
from desp_hub.services.install import (
    install_culler_service,
    install_dashboards_service,
    install_dask_gateway_service,
    install_metering_service,
    install_profiles_service,
    install_workflows_service,
)
from desp_hub.spawner import DespLocalSpawner

c = get_config()  # noqa: F821 (provided by JupyterHub when it loads this file)


def command_path(name):
    """A console script installed next to this Python (the proxy and the single-user server)."""
    return os.path.join(os.path.dirname(sys.executable), name)


c.JupyterHub.authenticator_class = DespKeycloakAuthenticator
c.JupyterHub.spawner_class = DespLocalSpawner
# The Python configurable-http-proxy, answering websocket subprotocols as the target chose (Panel/Bokeh need it).
c.ConfigurableHTTPProxy.command = [sys.executable, "-m", "desp_hub.proxy"]

# Servers outlive a hub restart (upgrade, crash): the hub finds them again from its database.
# `desp-hub up` sets cleanup_servers back to True unless --keep-servers, so Ctrl-C leaves nothing behind.
c.JupyterHub.cleanup_servers = False

# Keycloak: groups and roles decide who may log in and who is admin (desp_hub.authenticator).
c.DespKeycloakAuthenticator.allowed_groups = {"desp-users"}
c.DespKeycloakAuthenticator.admin_groups = {"hub-admins"}
c.DespKeycloakAuthenticator.admin_roles = {"hub-admin"}
# Re-read user info (and so group membership) at most every 5 minutes, and before every spawn.
c.DespKeycloakAuthenticator.auth_refresh_age = 300
c.DespKeycloakAuthenticator.refresh_pre_spawn = True

# The user's server may read its owner's auth_state (a fresh access token) with its own API token.
# A token only gets scopes its owner holds, so users hold `admin:auth_state!user` too: they may read
# their own tokens, nobody else's.
c.JupyterHub.load_roles = [
    {
        "name": "user",
        "description": "Everything a user may do to themselves, and read their own auth_state",
        "scopes": ["self", "admin:auth_state!user"],
    }
]
c.Spawner.server_token_scopes = ["users:activity!user", "access:servers!server", "admin:auth_state!user"]

c.Spawner.cmd = [command_path("jupyterhub-singleuser")]
c.Spawner.default_url = "/lab"
c.Spawner.http_timeout = 60
c.Spawner.start_timeout = 120
c.DespLocalSpawner.home_dir_template = os.path.join(os.getcwd(), "users", "{username}")
if os.geteuid() == 0:
    # DespLocalSpawner runs servers under the hub's own account; as root the server must be told it may.
    c.DespLocalSpawner.args = ["--allow-root"]

# Profiles live in a store that admins edit through the profiles service (/services/profiles/); the spawner
# reads it at every spawn. The YAML seed fills an empty store. For PostgreSQL give the password in PGPASSWORD,
# not in the URL.
profiles_seed = os.environ.get("DESP_PROFILES_SEED") or os.path.join(os.path.dirname(__file__), "profiles.yaml")
profiles_url = os.environ.get("DESP_PROFILES_DB_URL") or f"sqlite:///{os.path.join(os.getcwd(), 'profiles.sqlite')}"
c.DespProfilesMixin.profiles_path = profiles_seed
c.DespProfilesMixin.profiles_url = profiles_url
install_profiles_service(c, db_url=profiles_url, seed_path=profiles_seed)
# Stops servers past their profile's idle_timeout / max_runtime and records why (desp_hub.services.culler);
# the spawn page then tells the user.
# DESP_CULLER_INTERVAL (seconds between passes, default 60) is for tests and demos with tiny limits.
install_culler_service(c, db_url=profiles_url, interval=int(os.environ.get("DESP_CULLER_INTERVAL") or 60))
# Metering (desp_hub.metering): with an accounting service (`--DespMetering.accounting_url`, as `desp-hub up` passes
# it, or $DESP_ACCOUNTING_URL) every running server is debited its profile's DCUs interval by interval, and a spawn
# the balance cannot cover is refused. The service's client secret comes from $DESP_METERING_CLIENT_SECRET.
c.DespMetering.db_url = profiles_url  # the outbox lives next to the profiles (the spawner and the service agree)
metering = hub_metering(c)
if metering.enabled:
    install_metering_service(
        c,
        accounting_url=metering.accounting_url,
        db_url=metering.db_url,
        interval_seconds=metering.interval_seconds,
        poll_seconds=metering.poll_seconds,
        token_url=metering.token_url,
        client_id=metering.client_id,
    )

# Dashboards (desp_dashboards.service, /services/dashboards/): visualisation of the platform's data with each user's
# own token, and executive statistics; members of `executives` also see the restricted panels and user names.
# The platform endpoints are the ones user servers get (`--DespPlatformEndpoints.*` from `desp-hub up`).
# (A configuration file cannot see the command line; read it from the running JupyterHub, as hub_metering does.)
endpoints_config = Config()
endpoints_config.merge(c)
if JupyterHub.initialized():
    endpoints_config.merge(JupyterHub.instance().cli_config)
endpoints = DespPlatformEndpoints(config=endpoints_config)
install_dashboards_service(
    c,
    catalogue_url=endpoints.catalogue_url,
    cache_url=endpoints.user_cache_url,
    accounting_url=endpoints.accounting_url,
    restricted_group="executives",
    # the public panels' platform-wide DCU aggregates: the `desp-statistics` service account, secret from
    # $DESP_STATISTICS_CLIENT_SECRET, at the IdP's token endpoint (the one the metering uses)
    token_url=metering.token_url,
)

# Dask Gateway (desp_hub.dask_gateway, /services/dask-gateway/): clusters of local processes on 127.0.0.1 within the
# limits of the user's realm role (stack-dask-low|medium|high) and server profile; `Gateway()` works in every
# server with no argument. Worker-hours are debited like servers (DESP_DASK_DCU_PER_CORE_HOUR, default 1 DCU/core-hour).
install_dask_gateway_service(
    c,
    accounting_url=metering.accounting_url,
    token_url=metering.token_url,
    client_id=metering.client_id,
    dcu_per_core_hour=float(os.environ.get("DESP_DASK_DCU_PER_CORE_HOUR") or 1),
    interval_seconds=metering.interval_seconds,
)

# Workflows (desp_hub.services.workflows_service, /services/workflows/): notebooks published as versioned workflows,
# run by papermill now or on a schedule, independent of users' servers; outputs traced and run time debited as the
# metering client. Runs get the servers' platform endpoints. DESP_WORKFLOWS_MAX_RUNS, DESP_WORKFLOWS_MAX_RUNS_PER_USER
# and DESP_WORKFLOWS_MISSED_GRACE (seconds after which a schedule tick counts as missed) are for tests and demos.
install_workflows_service(
    c,
    profiles_db_url=profiles_url,
    trace_url=endpoints.trace_url,
    accounting_url=metering.accounting_url,
    token_url=metering.token_url,
    client_id=metering.client_id,
    run_env=endpoints.environment("{username}"),
    max_concurrent_runs=int(os.environ.get("DESP_WORKFLOWS_MAX_RUNS") or 2),
    max_concurrent_runs_per_user=int(os.environ.get("DESP_WORKFLOWS_MAX_RUNS_PER_USER") or 2),
    missed_tick_grace_seconds=float(os.environ.get("DESP_WORKFLOWS_MISSED_GRACE") or 60),
)

# Kernel specs (kernels/: "Python 3 (DESP)" and its Dask Gateway variant) for every server: copied under the data
# directory from a source checkout (a wheel carries them as shared data) and put on the servers' JUPYTER_PATH.
install_kernel_specs(c)

extra_config = os.environ.get("DESP_HUB_EXTRA_CONFIG")
if extra_config:
    load_subconfig(extra_config)  # noqa: F821
