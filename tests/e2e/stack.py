"""Start `desp-hub up` (the command behind `make run`) on free ports, as a test would run it."""

import os
import sys
from dataclasses import dataclass

import requests

from tests.support import ManagedProcess, free_port, wait_for_http

# Refresh user info every 2 s instead of 5 minutes, so "access lost at the next refresh" is quick to see.
FAST_REFRESH_CONFIG = "c.DespKeycloakAuthenticator.auth_refresh_age = 2\n"


@dataclass
class RunningHub:
    url: str
    iam_url: str
    realm: str
    data_dir: str
    process: ManagedProcess
    admin_client_secret: str
    trace_url: str = ""
    accounting_url: str = ""

    def stop(self):
        self.process.stop(timeout=60)


def start_hub(data_dir, port=None, idp_port=None, iam_url=None, client_secret=None, admin_client_secret=None,
              extra_args=(), extra_config=FAST_REFRESH_CONFIG, extra_env=None, with_catalogue=False,
              with_traces=False, with_accounting=False, metering_interval=None, accounting_port=None):
    """Run `python -m desp_hub.cli up` and wait until the hub answers. Reuses `data_dir` state if present.

    Without `with_catalogue` the hub starts with `--no-catalogue` (no sandbox PostgreSQL to wait for); tests of
    data access ask for the sandbox catalogue, as `make run` starts it. Likewise the sandbox traces and accounting
    services start only when asked (`with_traces`, `with_accounting`, on free ports; `accounting_port` keeps the
    same one across a restart); `metering_interval` sets `--metering-interval` (seconds).
    """
    os.makedirs(data_dir, exist_ok=True)
    port = port or free_port()
    args = [sys.executable, "-m", "desp_hub.cli", "up", "--port", str(port), "--data-dir", data_dir, *extra_args]
    if with_catalogue:
        args += ["--catalogue-port", str(free_port())]
    else:
        args += ["--no-catalogue"]
    trace_url = accounting_url = ""
    if with_traces:
        trace_port = free_port()
        args += ["--trace-port", str(trace_port)]
        trace_url = f"http://127.0.0.1:{trace_port}"
    else:
        args += ["--no-traces"]
    if with_accounting:
        accounting_port = accounting_port or free_port()
        args += ["--accounting-port", str(accounting_port)]
        accounting_url = f"http://127.0.0.1:{accounting_port}"
    else:
        args += ["--no-accounting"]
    if metering_interval is not None:
        args += ["--metering-interval", str(metering_interval)]
    env = dict(os.environ)
    env.pop("OAUTH_CLIENT_SECRET", None)
    env.update(extra_env or {})
    if iam_url:
        args += ["--iam-url", iam_url]
        env["OAUTH_CLIENT_SECRET"] = client_secret
    else:
        args += ["--idp-port", str(idp_port or free_port())]
    if extra_config:
        config_path = os.path.join(data_dir, "test_config.py")
        with open(config_path, "w") as config_file:
            config_file.write(extra_config)
        args += ["--config", config_path]
    process = ManagedProcess("desp-hub up", args, os.path.join(data_dir, "launcher.log"), env=env)
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(url + "/hub/api/", timeout=120, process=process, ok_only=True)
    except Exception:
        process.stop()
        raise
    if iam_url is None:
        with open(os.path.join(data_dir, "secrets", "admin_client_secret")) as secret:
            admin_client_secret = secret.read().strip()
        iam_url = "http://127.0.0.1:" + _arg_after(args, "--idp-port")
    return RunningHub(url, iam_url, "desp", data_dir, process, admin_client_secret, trace_url, accounting_url)


def _arg_after(args, flag):
    return args[args.index(flag) + 1]


class IdpAdmin:
    """The Keycloak Admin REST API as the `desp-admin-cli` service account (works on the sandbox IdP too)."""

    def __init__(self, iam_url, realm, client_secret, client_id="desp-admin-cli"):
        self.base = f"{iam_url}/admin/realms/{realm}"
        token = requests.post(
            f"{iam_url}/realms/{realm}/protocol/openid-connect/token",
            data={"grant_type": "client_credentials"},
            auth=(client_id, client_secret),
            timeout=30,
        )
        token.raise_for_status()
        self.headers = {"Authorization": f"Bearer {token.json()['access_token']}"}

    def user_id(self, username):
        users = requests.get(f"{self.base}/users", params={"username": username, "exact": "true"},
                             headers=self.headers, timeout=30).json()
        return users[0]["id"]

    def group_id(self, name):
        groups = requests.get(f"{self.base}/groups", headers=self.headers, timeout=30).json()
        return next(group["id"] for group in groups if group["name"] == name)

    def remove_from_group(self, username, group):
        response = requests.delete(f"{self.base}/users/{self.user_id(username)}/groups/{self.group_id(group)}",
                                   headers=self.headers, timeout=30)
        assert response.status_code == 204, response.text

    def add_to_group(self, username, group):
        response = requests.put(f"{self.base}/users/{self.user_id(username)}/groups/{self.group_id(group)}",
                                headers=self.headers, timeout=30)
        assert response.status_code == 204, response.text
