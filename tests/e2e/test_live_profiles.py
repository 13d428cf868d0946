"""Profiles edited live through the profiles service apply at the next spawn, with no hub restart."""

import pytest
import requests

from tests.e2e.hubclient import HubSession, run_in_kernel
from tests.e2e.stack import start_hub

API = "/services/profiles/api/profiles"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    running = start_hub(str(tmp_path_factory.mktemp("live-profiles")))
    yield running
    running.stop()


def admin_headers(hub):
    admin = HubSession(hub.url, "admin", "admin-demo")
    admin.login()
    return {"Authorization": f"token {admin.new_token()}"}


def test_edit_then_spawn_uses_the_new_profile(hub):
    headers = admin_headers(hub)
    standard = requests.get(f"{hub.url}{API}/standard", headers=headers, timeout=30).json()
    changed = {key: value for key, value in standard.items() if key not in ("updated_at", "updated_by")}
    changed["mem_limit"] = 3 * 2**30
    changed["description"] = "Edited live by the admin."
    response = requests.put(f"{hub.url}{API}/standard", json=changed, headers=headers, timeout=30)
    assert response.status_code == 200, response.text

    researcher = HubSession(hub.url, "researcher", "researcher-demo")
    researcher.login()
    assert "Edited live by the admin." in researcher.http.get(hub.url + "/hub/spawn", timeout=30).text
    researcher.post_spawn_form("standard")
    researcher.wait_ready()
    token = researcher.new_token()
    assert run_in_kernel(hub.url, "researcher", token, "import os; os.environ['MEM_LIMIT']") == repr(str(3 * 2**30))
    researcher.stop_server()


def test_group_rule_change_and_disable_apply_at_next_spawn(hub):
    headers = admin_headers(hub)
    power = requests.get(f"{hub.url}{API}/power", headers=headers, timeout=30).json()
    opened = {key: value for key, value in power.items() if key not in ("updated_at", "updated_by")}
    opened["allowed_groups"] = ["desp-users"]
    response = requests.put(f"{hub.url}{API}/power", json=opened, headers=headers, timeout=30)
    assert response.status_code == 200, response.text

    executive = HubSession(hub.url, "executive", "executive-demo")
    executive.login()
    assert executive.spawn_form() == ["standard", "power"]

    disabled = requests.post(f"{hub.url}{API}/power/disable", json={"version": response.json()["version"]},
                             headers=headers, timeout=30)
    assert disabled.status_code == 200, disabled.text
    assert executive.spawn_form() == ["standard"]
    refused = executive.post_spawn_form("power")
    assert refused.status_code == 403
    assert "unavailable" in refused.text
