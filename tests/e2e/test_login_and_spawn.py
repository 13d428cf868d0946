"""End to end over HTTP against `desp-hub up`: login through the IdP's form, profiles, spawn, kernel, security.

The same tests run against the sandbox IdP and, where it can run, against a real Keycloak server
(the `idp` parameter).
"""

import time
from urllib.parse import urlparse

import pytest
import requests

from tests.e2e.hubclient import HubSession, LoginRefused, run_in_kernel
from tests.e2e.stack import IdpAdmin, start_hub
from tests.support import free_port

# the first Keycloak start on a machine fetches and prepares it (about 2 minutes on 2 cores)
pytestmark = pytest.mark.timeout(900)

DEMO_PASSWORD = "{}-demo"

ALLOWED_PROFILES = {
    "researcher": ["standard"],
    "poweruser": ["standard", "power"],
    "aiuser": ["standard", "ai"],
    "admin": ["standard", "power", "ai"],
    "executive": ["standard"],
}


@pytest.fixture(scope="module", params=["sandbox", pytest.param("keycloak", marks=pytest.mark.keycloak)])
def hub(request, tmp_path_factory):
    """A running DESP Hub, logged in through the sandbox IdP or through a real Keycloak."""
    data_dir = str(tmp_path_factory.mktemp(f"hub-{request.param}"))
    if request.param == "sandbox":
        running = start_hub(data_dir)
    else:
        keycloak = request.getfixturevalue("keycloak")
        port = free_port()
        keycloak.set_hub_url(f"http://127.0.0.1:{port}")  # the client's redirect URIs name the hub
        running = start_hub(data_dir, port=port, iam_url=keycloak.url, client_secret=keycloak.hub_client_secret,
                            admin_client_secret=keycloak.admin_client_secret)
    yield running
    running.stop()


def session_for(hub, username):
    return HubSession(hub.url, username, DEMO_PASSWORD.format(username))


def logged_in(hub, username):
    session = session_for(hub, username)
    session.login()
    return session


@pytest.mark.parametrize("username", sorted(ALLOWED_PROFILES), ids=sorted(ALLOWED_PROFILES))
def test_spawn_form_lists_only_allowed_profiles(hub, username):
    session = logged_in(hub, username)
    assert session.spawn_form() == ALLOWED_PROFILES[username]


def test_user_outside_the_platform_group_cannot_log_in(hub):
    with pytest.raises(LoginRefused) as refused:
        session_for(hub, "outsider").login()
    assert refused.value.response.status_code == 403


def test_wrong_password_stays_on_the_login_form(hub):
    session = HubSession(hub.url, "researcher", "not-the-password")
    with pytest.raises(LoginRefused) as refused:
        session.login()
    page = refused.value.response
    assert page.url.startswith(hub.iam_url)
    assert "Invalid username or password" in page.text
    assert 'name="password"' in page.text


def test_login_spawn_run_code_and_stop(hub):
    session = logged_in(hub, "researcher")
    user_info = session.api("GET", "/user").json()["user_info"]  # published for services, e.g. realm roles
    assert user_info["display_name"] == "Rita Researcher"
    assert "desp-user" in user_info["roles"] and "hub-admin" not in user_info["roles"]
    page = session.post_spawn_form("standard")
    assert page.status_code == 200, page.text[:500]
    model = session.wait_ready()
    assert model["servers"][""]["user_options"] == {"profile": "standard"}
    token = session.new_token()
    assert run_in_kernel(hub.url, "researcher", token, "1+1") == "2"
    environment = run_in_kernel(
        hub.url, "researcher", token,
        "import os; (os.environ['DESP_PROFILE'], os.environ['MEM_LIMIT'], bool(os.environ['DESP_ACCESS_TOKEN']))",
    )
    assert environment == "('standard', '4294967296', True)"
    memory_limit = run_in_kernel(hub.url, "researcher", token, "import resource; resource.getrlimit(resource.RLIMIT_DATA)")
    assert memory_limit == "(4294967296, 4294967296)"  # the profile's memory limit, enforced on server and kernels
    fresh = run_in_kernel(hub.url, "researcher", token, "from desp_lab.credentials import access_token; len(access_token().split('.'))")
    assert fresh == "3"  # a JWT, handed over by the hub
    session.stop_server()


def test_forged_form_post_of_forbidden_profile_is_refused(hub):
    session = logged_in(hub, "researcher")
    response = session.post_spawn_form("power")
    assert response.status_code == 403
    assert "power" in response.text.lower()
    model = session.api("GET", "/users/researcher").json()
    assert model["servers"] == {} and not model["pending"]


@pytest.mark.parametrize("profile", ["ai", "power", "no-such-profile"])
def test_api_spawn_of_forbidden_profile_is_refused(hub, profile):
    session = logged_in(hub, "executive")
    token = session.new_token()
    response = requests.post(f"{hub.url}/hub/api/users/executive/server", json={"profile": profile},
                             headers={"Authorization": f"token {token}"}, timeout=60)
    assert response.status_code == 403, response.text
    assert response.json()["message"]
    assert session.api("GET", "/users/executive").json()["servers"] == {}


def test_gpu_profile_on_a_host_without_gpu_gets_a_clear_message(hub):
    session = logged_in(hub, "aiuser")
    response = session.post_spawn_form("ai")
    assert response.status_code == 409
    assert "needs a GPU" in response.text


def test_user_cannot_reach_another_users_server(hub):
    owner = logged_in(hub, "poweruser")
    owner.post_spawn_form("standard")
    owner.wait_ready()
    try:
        intruder = logged_in(hub, "researcher")
        response = intruder.http.get(f"{hub.url}/user/poweruser/api/status", timeout=60)
        assert response.status_code == 403
        token = intruder.new_token()
        response = requests.get(f"{hub.url}/user/poweruser/api/status",
                                headers={"Authorization": f"token {token}"}, timeout=60)
        assert response.status_code in (401, 403)
    finally:
        owner.stop_server()


def test_non_admin_cannot_reach_admin_page_or_admin_api(hub):
    session = logged_in(hub, "researcher")
    assert session.http.get(hub.url + "/hub/admin", timeout=30).status_code == 403
    assert session.api("GET", "/users").status_code == 403
    assert session.api("POST", "/users/someone").status_code == 403
    admin = logged_in(hub, "admin")
    assert admin.http.get(hub.url + "/hub/admin", timeout=30).status_code == 200
    assert admin.api("GET", "/users").status_code == 200


def test_oauth_state_mismatch_is_refused(hub):
    session = session_for(hub, "researcher")
    session.http.get(hub.url + "/hub/oauth_login", timeout=30)  # sets the state cookie
    response = session.http.get(hub.url + "/hub/oauth_callback", params={"code": "x", "state": "forged"}, timeout=30)
    assert response.status_code == 400


@pytest.mark.parametrize("payload", ["//evil.example", "///evil.example", "\\\\evil.example", "https://evil.example"],
                         ids=["double-slash", "triple-slash", "backslashes", "absolute"])
def test_open_redirect_payloads_stay_on_the_hub(hub, payload):
    session = session_for(hub, "researcher")
    landing = session.login(next_url=payload, check=False)  # e.g. a 404 for /hub/evil.example: still the hub
    assert urlparse(landing.url).netloc == urlparse(hub.url).netloc
    assert all(urlparse(step.headers.get("Location", "")).netloc in ("", urlparse(hub.url).netloc,
                                                                      urlparse(hub.iam_url).netloc)
               for step in landing.history)
    for path in ("/hub/login", "/hub/oauth_login"):
        response = session.http.get(hub.url + path, params={"next": payload}, allow_redirects=False, timeout=30)
        location = response.headers.get("Location", "")
        target = urlparse(requests.compat.urljoin(hub.url + path, location))
        assert target.netloc in (urlparse(hub.url).netloc, urlparse(hub.iam_url).netloc), location
        assert "evil.example" not in target.netloc


def test_group_removal_at_the_idp_loses_access_at_next_refresh(hub):
    admin = IdpAdmin(hub.iam_url, hub.realm, hub.admin_client_secret)
    session = logged_in(hub, "executive")
    token = session.new_token()
    assert session.http.get(hub.url + "/hub/home", timeout=30).url.endswith("/hub/home")
    admin.remove_from_group("executive", "desp-users")
    try:
        time.sleep(2.5)  # the test config refreshes user info every 2 s
        home = session.http.get(hub.url + "/hub/home", timeout=30)
        assert not home.url.endswith("/hub/home"), "a removed user still reaches the hub"
        api = requests.get(hub.url + "/hub/api/user", headers={"Authorization": f"token {token}"}, timeout=30)
        assert api.status_code == 403
        with pytest.raises(LoginRefused):
            session_for(hub, "executive").login()
    finally:
        admin.add_to_group("executive", "desp-users")
    assert logged_in(hub, "executive").spawn_form() == ALLOWED_PROFILES["executive"]


def test_logout_ends_the_idp_session(hub):
    session = logged_in(hub, "researcher")
    response = session.http.get(hub.url + "/hub/logout", timeout=30)
    assert urlparse(response.url).netloc == urlparse(hub.url).netloc
    # the IdP session is over: the next login asks for the password again
    page = session.http.get(hub.url + "/hub/oauth_login", timeout=30)
    assert 'name="password"' in page.text
