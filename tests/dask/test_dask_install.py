"""The gateway as a hub service: its entry, role, access scopes, servers' environment, and its own configuration."""

import os
import subprocess
import sys

from traitlets.config import Config
from traitlets.config.loader import PyFileConfigLoader

import desp_hub
from desp_hub.services.install import (
    DASK_GATEWAY_ACCESS_SCOPE,
    DASK_GATEWAY_SCOPES,
    install_dask_gateway_service,
)

GATEWAY_CONFIG = os.path.join(os.path.dirname(desp_hub.__file__), "dask_gateway", "gateway_config.py")


def installed(tmp_path, **options):
    c = Config()
    c.JupyterHub.load_roles = [{"name": "user", "scopes": ["self", "admin:auth_state!user"]}]
    c.Spawner.server_token_scopes = ["users:activity!user", "access:servers!server"]
    install_dask_gateway_service(c, port=8765, data_dir=str(tmp_path), **options)
    return c


def test_the_gateway_is_a_hub_service_with_a_read_only_role(tmp_path):
    c = installed(tmp_path, accounting_url="http://127.0.0.1:9004", token_url="http://idp/token")
    (service,) = c.JupyterHub.services.get_value([])
    assert service["name"] == "dask-gateway" and service["url"] == "http://127.0.0.1:8765"
    assert service["command"][1:] == ["-m", "dask_gateway_server", "-f", GATEWAY_CONFIG]
    environment = service["environment"]
    assert environment["DESP_DASK_USAGE_DB_URL"] == f"sqlite:///{tmp_path}/dask-usage.sqlite"
    assert environment["DESP_ACCOUNTING_URL"] == "http://127.0.0.1:9004"
    assert repr(environment["DESP_METERING_CLIENT_SECRET"]) == "<from the hub's $DESP_METERING_CLIENT_SECRET>"
    roles = {role["name"]: role for role in c.JupyterHub.load_roles}
    assert roles["dask-gateway-service"]["scopes"] == DASK_GATEWAY_SCOPES == ["read:servers"]
    # every user, and so every server token, may reach the service; the user keeps its own scopes
    assert roles["user"]["scopes"] == ["self", "admin:auth_state!user", DASK_GATEWAY_ACCESS_SCOPE]
    assert c.Spawner.server_token_scopes == ["users:activity!user", "access:servers!server", DASK_GATEWAY_ACCESS_SCOPE]


def test_servers_find_the_gateway_in_their_environment(tmp_path):
    environment = installed(tmp_path).Spawner.environment.get_value({})
    assert environment["DASK_GATEWAY__PROXY_ADDRESS"] == "gateway://127.0.0.1:8765"
    assert environment["DASK_GATEWAY__AUTH__TYPE"] == "jupyterhub"
    # read when the server starts: the hub's public URL + /services/dask-gateway
    assert environment["DASK_GATEWAY__ADDRESS"](None) == "/services/dask-gateway"


def test_without_accounting_nothing_is_metered(tmp_path):
    (service,) = installed(tmp_path).JupyterHub.services.get_value([])
    assert "DESP_ACCOUNTING_URL" not in service["environment"]


def test_the_main_hub_configuration_installs_the_gateway(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    c = PyFileConfigLoader(os.path.join(os.path.dirname(desp_hub.__file__), "jupyterhub_config.py")).load_config()
    assert "dask-gateway" in [service["name"] for service in c.JupyterHub.services.get_value([])]
    assert DASK_GATEWAY_ACCESS_SCOPE in c.Spawner.server_token_scopes


def test_the_gateway_binds_everything_to_the_loopback_and_runs_dask_scheduler_and_worker(tmp_path):
    env = dict(os.environ, JUPYTERHUB_SERVICE_URL="http://127.0.0.1:8765",
               JUPYTERHUB_SERVICE_PREFIX="/services/dask-gateway/",
               DESP_DASK_ROLE_LIMITS='{"r": {"max_workers": 1, "max_worker_cores": 1, "max_worker_memory_gib": 1,'
                                     ' "idle_timeout": 60}}')  # fmt: skip
    env.pop("DESP_ACCOUNTING_URL", None)
    code = (
        "from traitlets.config.loader import PyFileConfigLoader\n"
        f"c = PyFileConfigLoader({GATEWAY_CONFIG!r}).load_config()\n"
        "print(repr((c.DaskGateway.address, c.Proxy.address, c.Proxy.tcp_address, c.Proxy.prefix,"
        " c.DespClusterConfig.scheduler_cmd[1:], c.DespClusterConfig.worker_cmd[1:],"
        " c.DespDaskLimits.role_limits['r']['max_workers'], c.DespMetering.accounting_url)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True,
                         check=True)  # fmt: skip
    assert eval(out.stdout) == (  # noqa: S307
        "127.0.0.1:0", "127.0.0.1:8765", "127.0.0.1:8765", "/services/dask-gateway",
        ["scheduler"], ["worker", "--no-dashboard"], 1, ""
    )


def test_the_local_backend_listens_on_the_loopback_only():
    from desp_hub.dask_gateway.backend import DespLocalBackend

    assert DespLocalBackend.default_host == "127.0.0.1"


def test_limits_in_the_hubs_environment_reach_the_gateway(tmp_path, monkeypatch):
    monkeypatch.setenv("DESP_DASK_PROFILE_LIMITS", '{"standard": {"max_workers": 1}}')
    monkeypatch.delenv("DESP_DASK_ROLE_LIMITS", raising=False)
    (service,) = installed(tmp_path).JupyterHub.services.get_value([])
    assert service["environment"]["DESP_DASK_PROFILE_LIMITS"](None) == '{"standard": {"max_workers": 1}}'
    assert "DESP_DASK_ROLE_LIMITS" not in service["environment"]
    (given,) = installed(tmp_path, profile_limits={"ai": {"max_workers": 2}}).JupyterHub.services.get_value([])
    assert given["environment"]["DESP_DASK_PROFILE_LIMITS"] == '{"ai": {"max_workers": 2}}'  # the argument wins
