"""State lives in the data dir: a hub restart keeps users and running servers; servers that died meanwhile show stopped."""

import os
import signal
import time

import pytest
import requests

from tests.e2e.hubclient import HubSession
from tests.e2e.stack import start_hub
from tests.support import free_port


def server_pid(admin_token, hub_url, username):
    model = requests.get(f"{hub_url}/hub/api/users/{username}", headers={"Authorization": f"token {admin_token}"},
                         timeout=30).json()
    return model["servers"][""]["state"]["pid"]


def test_restart_keeps_running_servers_and_notices_dead_ones(tmp_path):
    data_dir = str(tmp_path / "data")
    port, idp_port = free_port(), free_port()
    keep = ["--keep-servers"]
    hub = start_hub(data_dir, port=port, idp_port=idp_port, extra_args=keep)
    try:
        survivor = HubSession(hub.url, "researcher", "researcher-demo")
        survivor.login()
        survivor.post_spawn_form("standard")
        survivor.wait_ready()
        survivor_token = survivor.new_token()
        victim = HubSession(hub.url, "poweruser", "poweruser-demo")
        victim.login()
        victim.post_spawn_form("power")
        victim.wait_ready()
        admin = HubSession(hub.url, "admin", "admin-demo")
        admin.login()
        admin_token = admin.new_token()
        victim_pid = server_pid(admin_token, hub.url, "poweruser")
    finally:
        hub.stop()

    os.kill(victim_pid, signal.SIGKILL)  # dies while the hub is down

    hub = start_hub(data_dir, port=port, idp_port=idp_port, extra_args=[])
    try:
        status = requests.get(f"{hub.url}/user/researcher/api/status",
                              headers={"Authorization": f"token {survivor_token}"}, timeout=60)
        assert status.status_code == 200, status.text
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            model = requests.get(f"{hub.url}/hub/api/users/poweruser",
                                 headers={"Authorization": f"token {admin_token}"}, timeout=30).json()
            if not model["servers"]:
                break
            time.sleep(0.5)
        assert model["servers"] == {}, model
        # the same login cookie still works after the restart: the cookie secret is kept in the data dir
        assert survivor.http.get(f"{hub.url}/hub/home", timeout=30).url.endswith("/hub/home")
        survivor_pid = server_pid(admin_token, hub.url, "researcher")
        assert _alive(survivor_pid)
    finally:
        hub.stop()  # this start did not keep servers: the survivor is stopped with it, no orphan left
    assert not _alive(survivor_pid)
    for port in (port, idp_port):  # proxy and IdP are gone too
        with pytest.raises(requests.ConnectionError):
            requests.get(f"http://127.0.0.1:{port}/", timeout=5)


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True

