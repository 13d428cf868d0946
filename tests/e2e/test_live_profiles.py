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


def test_disabling_a_profile_never_stops_running_servers(hub):
    headers = admin_headers(hub)
    poweruser = HubSession(hub.url, "poweruser", "poweruser-demo")
    poweruser.login()
    poweruser.post_spawn_form("standard")
    poweruser.wait_ready()
    try:
        standard = requests.get(f"{hub.url}{API}/standard", headers=headers, timeout=30).json()
        disabled = requests.post(f"{hub.url}{API}/standard/disable", json={"version": standard["version"]},
                                 headers=headers, timeout=30)
        assert disabled.status_code == 200, disabled.text
        token = poweruser.new_token()
        status = requests.get(f"{hub.url}/user/poweruser/api/status", headers={"Authorization": f"token {token}"},
                              timeout=30)
        assert status.status_code == 200
        enabled = requests.post(f"{hub.url}{API}/standard/enable", json={"version": disabled.json()["version"]},
                                headers=headers, timeout=30)
        assert enabled.status_code == 200, enabled.text
    finally:
        poweruser.stop_server()


def test_hub_runs_on_a_postgresql_profile_store(tmp_path, postgres_server):
    """The same live edit, with the store in a real PostgreSQL (DESP_PROFILES_DB_URL) instead of SQLite."""
    running = start_hub(str(tmp_path / "pg-hub"), extra_env={"DESP_PROFILES_DB_URL": postgres_server.create_database()})
    try:
        headers = admin_headers(running)
        standard = requests.get(f"{running.url}{API}/standard", headers=headers, timeout=30).json()
        edited = dict(standard, description="Stored in PostgreSQL.")
        response = requests.put(f"{running.url}{API}/standard", json=edited, headers=headers, timeout=30)
        assert response.status_code == 200, response.text
        stale = requests.put(f"{running.url}{API}/standard", json=edited, headers=headers, timeout=30)
        assert stale.status_code == 409
        researcher = HubSession(running.url, "researcher", "researcher-demo")
        researcher.login()
        assert "Stored in PostgreSQL." in researcher.http.get(running.url + "/hub/spawn", timeout=30).text
    finally:
        running.stop()
