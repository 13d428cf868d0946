"""The culler service against the real hub: each server gets its profile's idle timeout and maximum runtime,
activity through the proxy keeps a server alive (but not past its maximum runtime), and each cull is recorded
with its reason for the spawn page's notice."""

import datetime
import os
import threading
import time

import pytest
import requests

from desp_hub.culls import cull_notice, last_cull
from tests.e2e.hubclient import HubSession
from tests.e2e.stack import start_hub

pytestmark = pytest.mark.timeout(300)

IDLE_TIMEOUT = 6  # standard: seconds without activity (room for slow spawns on a loaded machine)
MAX_RUNTIME = 20  # power: seconds of running at most, active or not (longer than a spawn under load)

SEED = f"""
profiles:
  - {{slug: standard, display_name: Standard, image: img, cpu_guarantee: 0.5, cpu_limit: 1, mem_guarantee: 1G,
     mem_limit: 2G, allowed_groups: [desp-users], idle_timeout: {IDLE_TIMEOUT}, default: true, order: 10}}
  - {{slug: power, display_name: Power, image: img, cpu_guarantee: 0.5, cpu_limit: 1, mem_guarantee: 1G,
     mem_limit: 2G, allowed_groups: [power-users], idle_timeout: 3600, max_runtime: {MAX_RUNTIME}, order: 20}}
"""

# The hub learns about activity from two sources, both every 300 s by default: the single-user server's own
# report (JUPYTERHUB_ACTIVITY_INTERVAL) and the hub's poll of the proxy's routes (last_activity_interval).
# Every second here, so that a server in use never looks idle for IDLE_TIMEOUT seconds.
# The culler itself is installed by the hub's configuration; it makes a pass every second here.
CONFIG = """
c.JupyterHub.last_activity_interval = 1
c.Spawner.environment = {"JUPYTERHUB_ACTIVITY_INTERVAL": "1"}
"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("culler")
    seed = data_dir / "profiles.yaml"
    seed.write_text(SEED)
    running = start_hub(str(data_dir), extra_args=["--profiles", str(seed)], extra_config=CONFIG,
                        extra_env={"DESP_CULLER_INTERVAL": "1"})
    running.db_url = f"sqlite:///{data_dir / 'hub' / 'profiles.sqlite'}"
    yield running
    running.stop()


def started(hub, username, profile):
    """Log in, start `profile`, wait until ready; returns (session, user token, time the spawn was asked)."""
    session = HubSession(hub.url, username, f"{username}-demo")
    session.login()
    token = session.new_token()
    asked = time.monotonic()
    response = session.post_spawn_form(profile)
    assert response.status_code == 200, response.text
    session.wait_ready()
    return session, token, asked


def running(session):
    return bool(session.api("GET", f"/users/{session.username}").json().get("servers"))


def wait_stopped(session, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not running(session):
            return time.monotonic()
        time.sleep(0.25)
    raise AssertionError(f"the server of {session.username} was not culled within {timeout} s")


def recorded_cull(hub, username, newer_than=None, timeout=10):
    """The user's latest cull, once recorded (the culler records it right after the hub stopped the server)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        cull = last_cull(hub.db_url, username)
        if cull is not None and (newer_than is None or cull["id"] != newer_than["id"]):
            return cull
        time.sleep(0.25)
    raise AssertionError(f"the culler stopped the server of {username} but recorded nothing")


class KeepActive:
    """Use the server through the proxy (list the home directory) every half second, as a person at work would."""

    def __init__(self, hub, username, token):
        self.url = f"{hub.url}/user/{username}/api/contents"
        self.headers = {"Authorization": f"token {token}"}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self.done.wait(0.5):
            try:
                requests.get(self.url, headers=self.headers, timeout=5)
            except requests.RequestException:
                pass  # the server is going away

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc_info):
        self.done.set()
        self.thread.join()


def test_idle_server_is_stopped_and_the_cull_recorded(hub):
    session, _token, _asked = started(hub, "researcher", "standard")
    wait_stopped(session, timeout=IDLE_TIMEOUT + 60)

    cull = recorded_cull(hub, "researcher")
    assert (cull["server"], cull["profile"], cull["reason"], cull["limit"]) == ("", "standard", "idle", IDLE_TIMEOUT)
    assert cull_notice(cull) == (
        f"Your last server (Standard) was stopped after {IDLE_TIMEOUT} seconds without activity, "
        "the profile&#x27;s idle limit."
    )
    # The spawner shows the notice for a cull at or after the stopped server's last_activity minus a minute:
    # the hub stamps last_activity when the stop completes, and the culler takes `at` just before asking for it.
    stopped = session.api("GET", "/users/researcher", params={"include_stopped_servers": "1"}).json()
    stop_stamp = datetime.datetime.fromisoformat(stopped["servers"][""]["last_activity"])
    assert cull["at"] <= stop_stamp < cull["at"] + datetime.timedelta(minutes=1)
    assert last_cull(hub.db_url, "researcher", since=stop_stamp - datetime.timedelta(minutes=1), server="") == cull
    spawn_page = session.http.get(f"{hub.url}/hub/spawn", timeout=30).text  # the user sees why
    assert "desp-cull-notice" in spawn_page and "without activity" in spawn_page
    with open(os.path.join(hub.data_dir, "logs", "hub.log")) as log:  # the culler logs one line per cull
        assert f"Culled researcher/ (profile standard): idle limit of {IDLE_TIMEOUT} s reached" in log.read()


def test_active_server_within_limits_is_left_alone(hub):
    session, token, _asked = started(hub, "researcher", "standard")
    with KeepActive(hub, "researcher", token):
        for _ in range(2 * IDLE_TIMEOUT):  # twice the idle limit of steady use
            time.sleep(1)
            assert running(session), "an active server within its limits was culled"
    before = last_cull(hub.db_url, "researcher")
    wait_stopped(session, timeout=IDLE_TIMEOUT + 60)  # left alone, it goes idle and is culled
    assert recorded_cull(hub, "researcher", newer_than=before)["reason"] == "idle"


def test_server_past_its_max_runtime_is_stopped_even_while_active(hub):
    session, token, asked = started(hub, "poweruser", "power")
    with KeepActive(hub, "poweruser", token):
        stopped_at = wait_stopped(session, timeout=MAX_RUNTIME + 90)
    assert stopped_at - asked > MAX_RUNTIME

    cull = recorded_cull(hub, "poweruser")
    assert (cull["profile"], cull["profile_name"], cull["reason"], cull["limit"]) == (
        "power", "Power", "max_runtime", MAX_RUNTIME
    )
    assert f"after running for {MAX_RUNTIME} seconds, the profile&#x27;s maximum runtime" in cull_notice(cull)
