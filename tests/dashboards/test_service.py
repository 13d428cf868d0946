"""The dashboards service: settings and per-session context (pure), its installation into the hub configuration,
and, through a real `desp-hub up`, the hub login in front of it, the user's own token it gets, and the executive
data endpoints' public/restricted rules."""

import base64
import csv
import io
import json
import re
from urllib.parse import urljoin

import pytest
import requests
from traitlets.config import Config

from desp_dashboards.context import DashboardContext
from desp_dashboards.service import ServiceSettings, build_context
from desp_hub.services import install
from tests.e2e.hubclient import HubSession
from tests.e2e.stack import start_hub

BASE = "/services/dashboards"
USERS = ("researcher", "executive", "admin", "poweruser")

# --- settings and context (pure) ----------------------------------------------------------------------------------

HUB_ENV = {
    "JUPYTERHUB_SERVICE_PREFIX": "/services/dashboards/",
    "JUPYTERHUB_API_URL": "http://127.0.0.1:8081/hub/api",
    "JUPYTERHUB_API_TOKEN": "service-token",
    "DESP_CATALOGUE_URL": "http://127.0.0.1:8002/stac/v2",
    "DESP_CACHE_URL": "/srv/cache/{username}",
    "DESP_ACCOUNTING_URL": "http://127.0.0.1:8004",
    "DESP_HUB_PUBLIC_URL": "http://127.0.0.1:8000/",
}


def test_settings_come_from_the_environment_the_hub_gives_the_service():
    settings = ServiceSettings.from_environ(HUB_ENV, restricted_group="esa")
    assert settings == ServiceSettings(
        prefix="/services/dashboards",
        hub_api_url="http://127.0.0.1:8081/hub/api",
        api_token="service-token",
        restricted_group="esa",
        catalogue_url="http://127.0.0.1:8002/stac/v2",
        cache_url="/srv/cache/{username}",
        accounting_url="http://127.0.0.1:8004",
        public_url="http://127.0.0.1:8000",
    )
    assert "service-token" not in repr(settings)


@pytest.mark.parametrize(
    ("public_url", "origins"),
    [
        ("http://127.0.0.1:8000", ["127.0.0.1:8000"]),
        ("https://hub.desp.example", ["hub.desp.example:443"]),
        ("http://hub.desp.example", ["hub.desp.example:80"]),
        ("", []),
    ],
    ids=["loopback-port", "https-default-port", "http-default-port", "unset"],
)
def test_websockets_are_accepted_from_the_hubs_public_host_only(public_url, origins):
    assert ServiceSettings(public_url=public_url).websocket_origins == origins


@pytest.mark.parametrize(
    ("user", "may_see_restricted"),
    [
        ({"name": "executive", "groups": ["desp-users", "executives"]}, True),
        ({"name": "researcher", "groups": ["desp-users"]}, False),
        ({"name": "nogroups"}, False),
        (None, False),
    ],
    ids=["member", "non-member", "no-groups", "anonymous"],
)
def test_context_of_a_session(user, may_see_restricted):
    settings = ServiceSettings.from_environ(HUB_ENV)
    context = build_context(settings, user, lambda: "user-token")
    assert isinstance(context, DashboardContext)
    assert context.may_see_restricted is may_see_restricted
    assert context.restricted_group == "executives"
    assert context.hub_api_url == "http://127.0.0.1:8081/hub/api"
    assert context.hub_api_token == "service-token"
    assert context.catalogue_url == "http://127.0.0.1:8002/stac/v2"
    assert context.accounting_url == "http://127.0.0.1:8004"
    assert context.public_url == "http://127.0.0.1:8000/services/dashboards"
    if user is None:
        assert (context.user, context.groups, context.user_token, context.cache_url) == (None, frozenset(), None, "")
    else:
        assert context.user == user["name"]
        assert context.groups == frozenset(user.get("groups", ()))
        assert context.user_token() == "user-token"
        assert context.cache_url == f"/srv/cache/{user['name']}"
    assert "service-token" not in repr(context) and "user-token" not in repr(context)


def test_restricted_needs_the_configured_group():
    user = {"name": "executive", "groups": ["executives"]}
    settings = ServiceSettings(restricted_group="esa-ec")
    assert not build_context(settings, user, None).may_see_restricted
    assert build_context(settings, {"name": "e", "groups": ["esa-ec"]}, None).may_see_restricted


# --- installation into the hub configuration -----------------------------------------------------------------------


def _config_with_user_role():
    c = Config()
    c.JupyterHub.load_roles = [{"name": "user", "description": "d", "scopes": ["self", "admin:auth_state!user"]}]
    c.JupyterHub.services = [{"name": "other", "api_token": "x"}]
    return c


def test_install_adds_the_service_a_least_privilege_role_and_access_for_users():
    c = _config_with_user_role()
    install.install_dashboards_service(
        c, catalogue_url="http://cat/stac/v2", cache_url="/cache/{username}", accounting_url="http://acc", port=4321
    )
    install.install_dashboards_service(c, catalogue_url="http://cat/stac/v2", port=4322)  # again: replaces it

    roles = {role["name"]: role for role in c.JupyterHub.load_roles}
    assert roles["user"]["scopes"] == ["self", "admin:auth_state!user", "access:services!service=dashboards"]
    assert roles["dashboards-service"] == {
        "name": "dashboards-service",
        "description": roles["dashboards-service"]["description"],
        "scopes": ["list:users", "read:users", "list:groups", "read:groups", "read:servers"],
        "services": ["dashboards"],
    }
    assert [r["name"] for r in c.JupyterHub.load_roles].count("dashboards-service") == 1
    services = {service["name"]: service for service in c.JupyterHub.services}
    assert list(services) == ["other", "dashboards"]
    service = services["dashboards"]
    assert service["url"] == "http://127.0.0.1:4322"
    assert service["display"] is True and service["oauth_no_confirm"] is True
    assert service["oauth_client_allowed_scopes"] == ["admin:auth_state!user"]
    assert service["command"][1:] == ["-m", "desp_dashboards.service", "--restricted-group=executives"]
    environment = service["environment"]
    assert environment["DESP_CATALOGUE_URL"] == "http://cat/stac/v2"
    assert "DESP_ACCOUNTING_URL" not in environment  # the second call had none
    assert environment["CARTOPY_DATA_DIR"].endswith("natural_earth")
    assert environment["DESP_HUB_PUBLIC_URL"](None) == ""  # no hub running in this test
    assert "DESP_STATISTICS_TOKEN_URL" not in environment  # no token URL: no statistics service account


def test_install_gives_the_statistics_service_account_from_the_hub_environment(monkeypatch):
    c = _config_with_user_role()
    install.install_dashboards_service(c, accounting_url="http://acc", port=4321, token_url="http://idp/token")
    environment = {s["name"]: s for s in c.JupyterHub.services}["dashboards"]["environment"]
    assert environment["DESP_STATISTICS_TOKEN_URL"] == "http://idp/token"
    assert environment["DESP_STATISTICS_CLIENT_ID"] == "desp-statistics"
    secret = environment["DESP_STATISTICS_CLIENT_SECRET"]
    assert not isinstance(secret, str) and "s3cret" not in repr(c)  # read when the service starts, never in `c`
    monkeypatch.setenv("DESP_STATISTICS_CLIENT_SECRET", "s3cret")
    assert secret(None) == "s3cret"


# --- through the hub ------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    running = start_hub(str(tmp_path_factory.mktemp("dashboards-service")))
    yield running
    running.stop()


class Dashboards:
    """A logged-in user's browser session (requests) on the dashboards service."""

    def __init__(self, hub, username, password):
        self.hub = hub
        self.session = HubSession(hub.url, username, password)
        self.session.login()

    def get(self, path, **kwargs):
        return self.session.http.get(self.hub.url + BASE + path, timeout=60, **kwargs)

    def oauth_token(self):
        """The user's hub token for the dashboards service, from the service's login cookie (a tornado signed
        cookie: `2|key_version|timestamp|name|value|signature`, each field `length:text`)."""
        cookie = self.session.http.cookies.get("service-dashboards")
        assert cookie, "no login cookie of the dashboards service"
        value = cookie.strip('"').split("|")[4].split(":", 1)[1]
        return base64.b64decode(value).decode()


@pytest.fixture(scope="module")
def researcher(hub):
    return Dashboards(hub, "researcher", "researcher-demo")


@pytest.fixture(scope="module")
def executive(hub):
    return Dashboards(hub, "executive", "executive-demo")


def test_an_anonymous_browser_is_sent_to_the_hubs_login(hub):
    for path in ("/", "/visualisation", "/executive/", "/executive/data/users_per_group.json"):
        response = requests.get(hub.url + BASE + path, allow_redirects=False, timeout=30)
        assert response.status_code == 302, path
        target = urljoin(response.url, response.headers["Location"])
        assert target.startswith(f"{hub.url}/hub/api/oauth2/authorize?client_id=service-dashboards"), (path, target)
    websocket = requests.get(hub.url + BASE + "/visualisation/ws", allow_redirects=False, timeout=30)
    assert websocket.status_code in (302, 403)


def test_the_index_page_greets_the_user_and_links_both_dashboards(researcher):
    page = researcher.get("/")
    assert page.status_code == 200 and page.url.endswith(BASE + "/")  # OAuth with the hub, no consent page
    assert '<b id="user">researcher</b>' in page.text
    assert f'href="{BASE}/visualisation"' in page.text and f'href="{BASE}/executive"' in page.text


def test_the_users_token_for_the_service_reads_their_own_auth_state_and_nobody_elses(hub, researcher):
    headers = {"Authorization": f"token {researcher.oauth_token()}"}
    own = requests.get(f"{hub.url}/hub/api/users/researcher", headers=headers, timeout=30)
    assert own.status_code == 200
    assert own.json()["auth_state"]["access_token"]
    other = requests.get(f"{hub.url}/hub/api/users/executive", headers=headers, timeout=30)
    assert other.status_code in (403, 404)


def test_the_page_carries_no_hub_cookie_or_token_and_its_session_is_signed(researcher, executive):
    # (executive logs in first: the executive statistics cache what they read from the hub for a while)
    from bokeh.util.token import check_token_signature, get_token_payload

    page = researcher.get("/executive")
    assert page.status_code == 200
    token = re.search(r'"token":"([^"]+)"', page.text).group(1)
    payload = get_token_payload(token)
    assert not payload.get("cookies")
    assert not {"cookie", "authorization"} & {name.lower() for name in payload.get("headers", {})}
    assert researcher.oauth_token() not in json.dumps(payload) and researcher.oauth_token() not in page.text
    # signed with the service's secret: a token made up in the browser does not open a session
    assert not check_token_signature(token, secret_key=b"guessed", signed=True)


def _cells(response):
    if response.headers["Content-Type"].startswith("text/csv"):
        rows = list(csv.reader(io.StringIO(response.text)))
        return {cell for row in rows for cell in row}
    return {str(value) for record in response.json() for value in record.values()}


def test_data_endpoints_public_views_hold_no_user_names(researcher, executive):
    from desp_dashboards.executive.views import VIEWS

    answered = 0
    for spec in VIEWS:
        for extension in ("json", "csv"):
            response = researcher.get(f"/executive/data/{spec.name}.{extension}")
            if spec.restricted:
                assert response.status_code == 403, (spec.name, response.text)
                assert "executives" in response.json()["message"]
                continue
            # sources this hub does not run (accounting, catalogue) answer 503 with a short message
            assert response.status_code in (200, 503), (spec.name, response.status_code, response.text[:300])
            if response.status_code == 200:
                answered += 1
                assert not _cells(response) & set(USERS), spec.name
    assert answered >= 4  # at least the hub's own views (users, groups, servers) answered, as JSON and CSV
    groups = researcher.get("/executive/data/users_per_group.json")
    assert "executives" in {record["group"] for record in groups.json()}  # executive logged in: a group of one


def test_data_endpoints_restricted_views_show_members_the_user_names(executive, researcher):
    users = executive.get("/executive/data/users.json")
    assert users.status_code == 200, users.text
    assert {"researcher", "executive"} <= _cells(users)
    as_csv = executive.get("/executive/data/users.csv")
    assert as_csv.status_code == 200 and as_csv.headers["Content-Type"].startswith("text/csv")
    assert "researcher" in _cells(as_csv)
    assert executive.get("/executive/data/nothing.json").status_code == 404
    bad = executive.get("/executive/data/users_per_group.json", params={"colour": "red"})
    assert bad.status_code == 400 and "colour" in bad.json()["message"]


def test_the_service_stops_on_sigterm_while_it_still_imports_the_apps(tmp_path):
    """JupyterHub stops a managed service with a signal: the service must not wait for its warm-up imports (tens of
    seconds on a busy machine), which once kept orphaned services alive long after their hub."""
    import os
    import signal
    import subprocess
    import sys

    from tests.support import ManagedProcess, free_port, wait_for_http

    port = free_port()
    env = dict(os.environ, **HUB_ENV, JUPYTERHUB_SERVICE_URL=f"http://127.0.0.1:{port}",
               JUPYTERHUB_CLIENT_ID="service-dashboards", JUPYTERHUB_OAUTH_CALLBACK_URL=f"{BASE}/oauth_callback")
    service = ManagedProcess("dashboards", [sys.executable, "-m", "desp_dashboards.service"],
                             str(tmp_path / "dashboards.log"), env=env)
    try:
        wait_for_http(f"http://127.0.0.1:{port}{BASE}/", timeout=120, process=service)
        os.kill(service.pid, signal.SIGTERM)  # at once: the warm-up thread is still importing
        try:
            assert service.popen.wait(timeout=20) == 0, service.log_tail()
        except subprocess.TimeoutExpired:
            pytest.fail(f"the service did not stop within 20 s of SIGTERM: {service.log_tail()}")
        assert "Dashboards service stopping" in service.log_tail()
    finally:
        service.stop()
