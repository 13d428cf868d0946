"""The local gateway's state outlives its process: clusters in a file, its encryption key made once, a fixed port.

The end-to-end behaviour (a SIGKILLed gateway and a restarted hub keep the cluster, billed once) is in
tests/e2e/test_dask_gateway_restart.py; these check the pieces it rests on.
"""

import os
import stat
import subprocess
import sys

from cryptography.fernet import Fernet
from traitlets.config import Config

import desp_hub
from desp_hub.dask_gateway.backend import DespLocalBackend, read_or_create_key
from desp_hub.services.install import install_dask_gateway_service

GATEWAY_CONFIG = os.path.join(os.path.dirname(desp_hub.__file__), "dask_gateway", "gateway_config.py")


def test_the_key_is_made_once_readable_only_by_its_owner(tmp_path):
    path = tmp_path / "secrets" / "key"
    key = read_or_create_key(str(path))
    Fernet(key)  # a valid Fernet key
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert read_or_create_key(str(path)) == key  # read, not made anew


def test_the_backend_encrypts_its_file_database_with_that_key(tmp_path, monkeypatch):
    monkeypatch.delenv("DASK_GATEWAY_ENCRYPT_KEYS", raising=False)
    key_file = tmp_path / "secrets" / "key"
    backend = DespLocalBackend(db_url=f"sqlite:///{tmp_path}/state.sqlite", db_encrypt_key_file=str(key_file))
    assert backend.db_encrypt_keys == [key_file.read_bytes().strip()]
    again = DespLocalBackend(db_url=f"sqlite:///{tmp_path}/state.sqlite", db_encrypt_key_file=str(key_file))
    assert again.db_encrypt_keys == backend.db_encrypt_keys  # the next gateway reads what the first one wrote


def test_an_operators_keys_win_and_no_file_is_made(tmp_path, monkeypatch):
    operator_key = Fernet.generate_key()
    monkeypatch.setenv("DASK_GATEWAY_ENCRYPT_KEYS", operator_key.decode())
    key_file = tmp_path / "key"
    backend = DespLocalBackend(db_url=f"sqlite:///{tmp_path}/state.sqlite", db_encrypt_key_file=str(key_file))
    assert backend.db_encrypt_keys == [operator_key]
    assert not key_file.exists()


def gateway_settings(tmp_path, **env):
    """What gateway_config.py configures, loaded in a fresh process with the service environment `env`."""
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("DESP_DASK_", "DASK_GATEWAY_"))}
    environment.update(JUPYTERHUB_SERVICE_URL="http://127.0.0.1:8765", **env)
    code = (
        "from traitlets.config.loader import PyFileConfigLoader\n"
        f"c = PyFileConfigLoader({GATEWAY_CONFIG!r}).load_config()\n"
        "b = c.DespLocalBackend\n"
        "print(repr((b.db_url, b.db_encrypt_key_file, b.stop_clusters_on_shutdown)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=environment, cwd=tmp_path, capture_output=True, text=True,
                         check=True)  # fmt: skip
    return eval(out.stdout)  # noqa: S307


def test_the_gateway_keeps_its_clusters_in_a_file_and_stops_them_unless_told_to_keep_them(tmp_path):
    db_url, key_file, stop_clusters = gateway_settings(tmp_path)
    assert db_url == f"sqlite:///{tmp_path}/dask-gateway.sqlite"
    assert key_file == f"{tmp_path}/secrets/dask_gateway_encrypt_key"
    assert stop_clusters is True
    given = gateway_settings(tmp_path, DESP_DASK_DB_URL="sqlite:////elsewhere/state.sqlite",
                             DESP_DASK_ENCRYPT_KEY_FILE="/elsewhere/key", DESP_DASK_KEEP_CLUSTERS="true")  # fmt: skip
    assert given == ("sqlite:////elsewhere/state.sqlite", "/elsewhere/key", False)


def service(data_dir, **options):
    c = Config()
    install_dask_gateway_service(c, data_dir=str(data_dir), **options)
    (entry,) = c.JupyterHub.services.get_value([])
    return entry


def test_the_service_keeps_its_port_and_state_in_the_data_dir(tmp_path):
    first = service(tmp_path)
    assert service(tmp_path)["url"] == first["url"]  # the next hub start: the same port
    assert (tmp_path / "dask-gateway.port").read_text().strip() == first["url"].rsplit(":", 1)[1]
    environment = first["environment"]
    assert environment["DESP_DASK_DB_URL"] == f"sqlite:///{tmp_path}/dask-gateway.sqlite"
    assert environment["DESP_DASK_ENCRYPT_KEY_FILE"] == f"{tmp_path}/secrets/dask_gateway_encrypt_key"
    assert service(tmp_path, port=8765)["url"] == "http://127.0.0.1:8765"  # a given port wins


def test_clusters_are_kept_as_the_hub_keeps_servers(tmp_path):
    assert service(tmp_path, keep_clusters=True)["environment"]["DESP_DASK_KEEP_CLUSTERS"] == "true"
    assert service(tmp_path, keep_clusters=False)["environment"]["DESP_DASK_KEEP_CLUSTERS"] == "false"
    # by default read from the running hub when the gateway starts (a fresh process: JupyterHub is a singleton)
    code = (
        "from traitlets.config import Config\n"
        "from jupyterhub.app import JupyterHub\n"
        "from desp_hub.services.install import install_dask_gateway_service\n"
        "c = Config()\n"
        f"install_dask_gateway_service(c, data_dir={str(tmp_path)!r})\n"
        "keep = c.JupyterHub.services.get_value([])[0]['environment']['DESP_DASK_KEEP_CLUSTERS']\n"
        "before = keep(None)\n"
        "hub = JupyterHub.instance()\n"
        "answers = []\n"
        "for cleanup_servers in (True, False):\n"
        "    hub.cleanup_servers = cleanup_servers\n"
        "    answers.append(keep(None))\n"
        "print(repr((before, answers)))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=tmp_path)
    assert eval(out.stdout) == ("false", ["false", "true"])  # noqa: S307
