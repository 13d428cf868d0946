"""`desp-hub up --isolate-users`: each user's server runs under its own system account, created on first spawn."""

import os
import pwd
import subprocess

import sys

import pytest

from desp_hub.spawner import path_not_reachable_by_others
from tests.e2e.hubclient import HubSession, run_in_kernel
from tests.e2e.stack import start_hub

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="creating system accounts needs root")
BLOCKED = path_not_reachable_by_others(sys.executable)

USERNAME = "aiuser"  # a demo user; the account is removed again after the test


@pytest.fixture
def no_system_account():
    try:
        pwd.getpwnam(USERNAME)
        pytest.skip(f"a system account {USERNAME!r} already exists on this machine; not touching it")
    except KeyError:
        pass
    yield
    subprocess.run(["userdel", "--remove", USERNAME], capture_output=True)


@pytest.mark.skipif(bool(BLOCKED), reason=f"this Python ({sys.executable}) lies under {BLOCKED}, which other "
                    "accounts cannot enter, so no server can run under a user's own account here")
def test_servers_run_under_their_own_system_account(tmp_path, no_system_account):
    hub = start_hub(str(tmp_path / "data"), extra_args=["--isolate-users"])
    try:
        session = HubSession(hub.url, USERNAME, f"{USERNAME}-demo")
        session.login()
        response = session.post_spawn_form("standard")
        assert response.status_code == 200, response.text[:300]
        session.wait_ready()
        account = pwd.getpwnam(USERNAME)
        token = session.new_token()
        identity = run_in_kernel(hub.url, USERNAME, token, "import os; (os.getuid(), os.environ['HOME'])")
        assert identity == repr((account.pw_uid, account.pw_dir))
        assert account.pw_uid != 0
        session.stop_server()
    finally:
        hub.stop()


@pytest.mark.skipif(not BLOCKED, reason="this Python is reachable by every account")
def test_unreachable_installation_gets_a_clear_message(tmp_path, no_system_account):
    hub = start_hub(str(tmp_path / "data"), extra_args=["--isolate-users"])
    try:
        session = HubSession(hub.url, USERNAME, f"{USERNAME}-demo")
        session.login()
        response = session.post_spawn_form("standard")
        assert response.status_code == 500
        assert "not readable by other users" in response.text
        assert pwd.getpwnam(USERNAME).pw_uid != 0  # the account was created on first spawn
    finally:
        hub.stop()
