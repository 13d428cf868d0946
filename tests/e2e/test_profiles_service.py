"""End to end: the profiles service as a managed service of the real hub (`desp-hub up`, sandbox IdP logins).

Admins create, edit, disable, delete, import and export profiles over `/services/profiles/api/`; a researcher
may only read the profiles they may start; anonymous callers get 401. The browser path (the service's OAuth
cookie, set by visiting `/services/profiles/`) is exercised too.
"""

import os
import threading

import pytest
import requests
import yaml

from tests.e2e.hubclient import HubSession
from tests.e2e.stack import FAST_REFRESH_CONFIG, start_hub
from tests.profiles_data import NEW_PROFILE
from tests.support import wait_for_http

pytestmark = pytest.mark.timeout(600)


WRITES = [
    ("POST", "profiles", NEW_PROFILE),
    ("PUT", "profiles/standard", {**NEW_PROFILE, "slug": "standard", "version": 1}),
    ("DELETE", "profiles/standard?version=1", None),
    ("POST", "profiles/standard/disable", {"version": 1}),
    ("POST", "profiles/standard/enable", {"version": 1}),
    ("GET", "profiles.yaml", None),
    ("PUT", "profiles.yaml", "profiles: []\n"),
    ("GET", "audit", None),
]


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    data_dir = str(tmp_path_factory.mktemp("hub-profiles"))
    running = start_hub(data_dir, extra_config=FAST_REFRESH_CONFIG)
    try:
        # the hub starts the managed service; wait until it answers through the proxy
        wait_for_http(f"{running.url}/services/profiles/api/openapi.json", timeout=60, ok_only=True)
    except Exception:
        running.stop()
        raise
    yield running
    running.stop()


class Client:
    """The profiles API with a hub API token."""

    def __init__(self, hub_url, token=None):
        self.base = f"{hub_url}/services/profiles/api/"
        self.headers = {"Authorization": f"token {token}"} if token else {}

    def __call__(self, method, path, body=None):
        kwargs = {"data": body} if isinstance(body, str) else {"json": body} if body is not None else {}
        return requests.request(method, self.base + path, headers=self.headers, timeout=60, **kwargs)


def token_client(hub, username):
    session = HubSession(hub.url, username, f"{username}-demo")
    session.login()
    return Client(hub.url, session.new_token()), session


@pytest.fixture(scope="module")
def admin(hub):
    return token_client(hub, "admin")[0]


@pytest.fixture(scope="module")
def researcher(hub):
    return token_client(hub, "researcher")[0]


def test_openapi_document_needs_no_login(hub):
    response = requests.get(f"{hub.url}/services/profiles/api/openapi.yaml", timeout=30)
    assert response.status_code == 200
    assert yaml.safe_load(response.text)["openapi"].startswith("3.1")


def test_store_is_seeded_in_the_data_dir(hub, admin):
    response = admin("GET", "profiles")
    assert response.status_code == 200
    assert [(p["slug"], p["version"], p["updated_by"]) for p in response.json()] == [
        ("standard", 1, "seed"), ("power", 1, "seed"), ("ai", 1, "seed")
    ]
    # next to jupyterhub.sqlite: the hub runs in <data dir>/hub
    assert os.path.exists(os.path.join(hub.data_dir, "hub", "profiles.sqlite"))


def test_anonymous_gets_401_everywhere(hub):
    anonymous = Client(hub.url)
    for method, path, body in [("GET", "profiles", None), ("GET", "profiles/standard", None), *WRITES]:
        response = anonymous(method, path, body)
        assert response.status_code == 401, (method, path, response.status_code, response.text[:200])
        assert response.json()["message"]


def test_researcher_reads_only_standard_and_may_write_nothing(hub, researcher):
    response = researcher("GET", "profiles")
    assert response.status_code == 200
    assert [p["slug"] for p in response.json()] == ["standard"]
    assert researcher("GET", "profiles/power").status_code == 404
    for method, path, body in WRITES:
        response = researcher(method, path, body)
        assert response.status_code == 403, (method, path, response.status_code, response.text[:200])
        assert "admin" in response.json()["message"]


def test_users_hold_access_to_the_service_and_keep_their_other_scopes(hub):
    session = HubSession(hub.url, "researcher", "researcher-demo")
    session.login()
    scopes = set(session.api("GET", "/user").json()["scopes"])
    assert "access:services!service=profiles" in scopes
    # the user role of jupyterhub_config.py was extended, not replaced
    assert "admin:auth_state!user=researcher" in scopes, " ".join(sorted(scopes))


def test_admin_creates_edits_disables_enables_and_deletes(hub, admin, researcher):
    response = admin("POST", "profiles", NEW_PROFILE)
    assert response.status_code == 201, response.text
    created = response.json()
    assert (created["version"], created["updated_by"], created["mem_limit"]) == (1, "admin", 2**30)
    assert [p["slug"] for p in researcher("GET", "profiles").json()] == ["small", "standard"]

    response = admin("PUT", "profiles/small", {**created, "display_name": "Small (edited)"})
    assert response.status_code == 200 and response.json()["version"] == 2

    response = admin("POST", "profiles/small/disable", {"version": 2})
    assert response.status_code == 200 and response.json()["enabled"] is False
    assert [p["slug"] for p in researcher("GET", "profiles").json()] == ["standard"]
    response = admin("POST", "profiles/small/enable", {"version": 3})
    assert response.status_code == 200 and response.json()["enabled"] is True

    audit = admin("GET", "audit?slug=small").json()
    assert [(e["action"], e["actor"]) for e in audit] == [
        ("enable", "admin"), ("disable", "admin"), ("update", "admin"), ("create", "admin")
    ]

    response = admin("DELETE", "profiles/small?version=4")
    assert response.status_code == 204
    assert admin("GET", "profiles/small").status_code == 404


def test_two_edits_of_the_same_version_one_wins_one_conflicts(hub, admin):
    standard = admin("GET", "profiles/standard").json()
    results = {}

    def edit(name):
        results[name] = admin("PUT", "profiles/standard", {**standard, "description": f"edited by {name}"})

    threads = [threading.Thread(target=edit, args=(name,)) for name in ("first", "second")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    statuses = sorted(response.status_code for response in results.values())
    assert statuses == [200, 409], [r.text for r in results.values()]
    conflict = next(r for r in results.values() if r.status_code == 409).json()
    assert conflict["field"] == "version"
    assert conflict["current_version"] == standard["version"] + 1
    assert "admin" in conflict["message"]


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "field"),
    [
        ("POST", "profiles", {**NEW_PROFILE, "colour": "red"}, 422, "colour"),
        ("POST", "profiles", {**NEW_PROFILE, "mem_guarantee": "8G"}, 422, "mem_guarantee"),
        ("POST", "profiles", {**NEW_PROFILE, "slug": "Has Spaces"}, 422, "slug"),
        ("POST", "profiles", "{not json", 400, "body"),
        ("PUT", "profiles/standard", {"display_name": "x"}, 400, "version"),
        ("POST", "profiles/standard/disable", {"version": "latest"}, 400, "version"),
        ("DELETE", "profiles/standard", None, 400, "version"),
        ("PUT", "profiles.yaml", "profiles: [", 400, "body"),
        ("PUT", "profiles.yaml", "profiles:\n  - {slug: x}\n", 422, "profiles[0].display_name"),
    ],
)
def test_bad_requests_are_4xx_naming_the_field(hub, admin, method, path, body, status, field):
    response = admin(method, path, body)
    assert response.status_code == status, response.text
    assert response.json()["field"] == field
    assert response.json()["message"]


def test_export_and_import(hub, admin, researcher):
    response = admin("GET", "profiles.yaml")
    assert response.status_code == 200
    document = yaml.safe_load(response.text)
    assert [p["slug"] for p in document["profiles"]] == ["standard", "power", "ai"]

    document["profiles"].append({**NEW_PROFILE, "slug": "imported"})
    response = admin("PUT", "profiles.yaml", yaml.safe_dump(document))
    assert response.status_code == 200, response.text
    assert [p["slug"] for p in response.json()] == ["imported", "standard", "power", "ai"]
    assert "imported" in [p["slug"] for p in researcher("GET", "profiles").json()]

    document["profiles"] = document["profiles"][:-1]
    assert admin("PUT", "profiles.yaml", yaml.safe_dump(document)).status_code == 200
    assert [p["slug"] for p in admin("GET", "profiles").json()] == ["standard", "power", "ai"]


def test_browser_logs_in_through_the_hub_and_uses_the_cookie(hub):
    session = HubSession(hub.url, "researcher", "researcher-demo")
    session.login()
    page = session.http.get(f"{hub.url}/services/profiles/", timeout=60)  # OAuth with the hub, no consent page
    assert page.status_code == 200, page.text[:300]
    assert page.url.startswith(f"{hub.url}/services/profiles/")
    listed = session.http.get(f"{hub.url}/services/profiles/api/profiles", timeout=30)
    assert listed.status_code == 200 and [p["slug"] for p in listed.json()] == ["standard"]
    # a write with the cookie but without the XSRF token is not authenticated (cross-site request forgery)
    forged = session.http.post(f"{hub.url}/services/profiles/api/profiles", json=NEW_PROFILE, timeout=30)
    assert forged.status_code == 401
