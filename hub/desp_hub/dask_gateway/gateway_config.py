# dask-gateway-server configuration of DESP Hub's `dask-gateway` service.
#
# Loaded with `python -m dask_gateway_server -f <this file>`; the hub starts it as a managed service
# (desp_hub.services.install.install_dask_gateway_service), which gives it, besides JupyterHub's own
# JUPYTERHUB_API_URL/_API_TOKEN/_SERVICE_NAME/_SERVICE_URL/_SERVICE_PREFIX (the limits, price, interval, outbox and
# accounting settings are read by desp_hub.dask_gateway.settings.apply_settings, as for the chart's gateway):
#   DESP_DASK_ROLE_LIMITS, DESP_DASK_PROFILE_LIMITS   JSON: DespDaskLimits.role_limits / profile_limits (optional)
#   DESP_DASK_DCU_PER_CORE_HOUR                       price of a worker core hour (DespClusterConfig)
#   DESP_DASK_METERING_INTERVAL                       seconds per metered interval of a worker (the hub's)
#   DESP_DASK_USAGE_DB_URL, DESP_DASK_CLUSTERS_DIR    the debit outbox, the clusters' working directories
#   DESP_DASK_DB_URL, DESP_DASK_ENCRYPT_KEY_FILE      the gateway's own state (its clusters and workers) and the
#                                                     file of the key encrypting their secrets in it (created once)
#   DESP_DASK_KEEP_CLUSTERS                           "true": clusters outlive the gateway's stop (as servers
#                                                     outlive the hub's with cleanup_servers False); else stopped
#   DESP_ACCOUNTING_URL, DESP_METERING_TOKEN_URL, DESP_METERING_CLIENT_ID, DESP_METERING_CLIENT_SECRET
#                                                     where worker debits go, as the hub's metering client
#   DESP_DASK_GATEWAY_EXTRA_CONFIG                    an operator's file loaded last (it wins)
# Every listening socket is on 127.0.0.1: the gateway's API, its proxy (HTTP for the API and dashboards, and the
# schedulers' TLS traffic, on the one service port) and the schedulers and workers (the local backend's host).
import os
import sys
import urllib.parse

from desp_hub.dask_gateway.settings import apply_settings

c = get_config()  # noqa: F821 (provided by dask-gateway-server when it loads this file)

c.DaskGateway.authenticator_class = "desp_hub.dask_gateway.auth.DespJupyterHubAuthenticator"
c.DaskGateway.backend_class = "desp_hub.dask_gateway.backend.DespLocalBackend"
c.DaskGateway.address = "127.0.0.1:0"  # the private API: only the proxy talks to it

service_url = urllib.parse.urlsplit(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:8000"))
c.Proxy.address = f"127.0.0.1:{service_url.port}"
c.Proxy.tcp_address = f"127.0.0.1:{service_url.port}"
c.Proxy.prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", "/services/dask-gateway/").rstrip("/")

# The old `dask-scheduler` / `dask-worker` scripts are gone from distributed: `dask scheduler` / `dask worker`.
dask_command = os.path.join(os.path.dirname(sys.executable), "dask")
c.DespClusterConfig.scheduler_cmd = [dask_command, "scheduler"]
# Workers without their own dashboard (the scheduler's, proxied by the gateway, shows them): it starts faster.
# They keep their nanny, which enforces the memory limit per worker.
c.DespClusterConfig.worker_cmd = [dask_command, "worker", "--no-dashboard"]
# Heartbeats every 2 s: scaling and stops take effect within seconds on one machine. A cluster is given up only
# after 60 s without one (a busy machine delays heartbeats; the default, twice the period, would kill clusters).
c.DespLocalBackend.cluster_heartbeat_period = 2
c.DespLocalBackend.cluster_heartbeat_timeout = 60
c.DespLocalBackend.cluster_status_period = 5
c.DespLocalBackend.worker_status_period = 5
if os.environ.get("DESP_DASK_CLUSTERS_DIR"):
    c.DespLocalBackend.clusters_directory = os.environ["DESP_DASK_CLUSTERS_DIR"]

# The clusters live in a file, not in memory: a gateway restarted after a crash, a SIGKILL or the hub's restart
# finds its clusters again (their processes survive it) and meters their workers from their recorded start.
c.DespLocalBackend.db_url = os.environ.get("DESP_DASK_DB_URL") or f"sqlite:///{os.path.abspath('dask-gateway.sqlite')}"
c.DespLocalBackend.db_encrypt_key_file = os.environ.get("DESP_DASK_ENCRYPT_KEY_FILE") or os.path.abspath(
    os.path.join("secrets", "dask_gateway_encrypt_key")
)
# Stopping the gateway stops its clusters (their final worker intervals debited) unless the hub keeps servers
# across its restarts: then their clusters stay too, and the next gateway takes them over.
c.DespLocalBackend.stop_clusters_on_shutdown = os.environ.get("DESP_DASK_KEEP_CLUSTERS", "").lower() != "true"

# DESP's settings shared with the chart's gateway (limits, price, metering interval, debit outbox, accounting and the
# metering client, whose secret DespMetering reads from the environment itself): the same parsing for both.
apply_settings(c)

extra_config = os.environ.get("DESP_DASK_GATEWAY_EXTRA_CONFIG")
if extra_config:
    load_subconfig(extra_config)  # noqa: F821
