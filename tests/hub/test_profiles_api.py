"""The profiles service's REST API, in-process against a real store, with only the hub's identity API faked.

The service asks the hub who a token belongs to (`GET /hub/api/user`); a tiny tornado app on 127.0.0.1 answers
that, as the hub would, from a table of tokens. Everything else (HubOAuth, the handlers, the SQLite store seeded
from profiles.yaml) is the real thing. Every JSON answer is checked against the OpenAPI document. The whole stack
with the real hub, the IdP and the managed service is tested in tests/e2e/test_profiles_service.py.
"""

import asyncio
import functools
import json
import logging
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import referencing
import yaml
from jupyterhub.services.auth import HubOAuth
from tornado import web
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets
from tornado.httpclient import AsyncHTTPClient
from traitlets.config import Config

from desp_hub.profile_store import ProfileStore
from desp_hub.services import install, profiles_service
from desp_hub.services.profiles_service import (
    ApiError,
    check_import,
    is_admin,
    make_app,
    parse_limit,
    parse_version,
    profile_body,
    visible_profiles,
)
from tests.profiles_data import NEW_PROFILE
from tests.support import free_port, wait_for_http

SEED = Path(profiles_service.__file__).parent.parent / "profiles.yaml"
PREFIX = "/services/profiles/"
ACCESS = "access:services!service=profiles"

CALLERS = {
    "admin-token": {"name": "admin", "admin": True, "groups": ["desp-users", "hub-admins"]},
    "group-admin-token": {"name": "carol", "admin": False, "groups": ["desp-users", "hub-admins"]},
    "researcher-token": {"name": "researcher", "admin": False, "groups": ["desp-users"]},
    "poweruser-token": {"name": "poweruser", "admin": False, "groups": ["desp-users", "power-users"]},
    # a hub user whose token may not reach the service (no access scope)
    "stranger-token": {"name": "stranger", "admin": False, "groups": ["desp-users"], "scopes": []},
}



# --- the OpenAPI document ----------------------------------------------------------------------------------------


@functools.cache
def openapi():
    return yaml.safe_load(profiles_service.openapi_text())


def _registry(document):
    resource = referencing.Resource.from_contents(document, default_specification=referencing.jsonschema.DRAFT202012)
    return referencing.Registry().with_resource("urn:openapi", resource)


def _operation(document, method, path):
    """The OpenAPI path template and operation matching a concrete request path (under the service prefix)."""
    relative = "/" + path[len(PREFIX):].split("?")[0]
    for template, item in document["paths"].items():
        pattern = "^" + re.sub(r"\{[^}]+\}", "[^/]+", re.escape(template).replace("\\{", "{").replace("\\}", "}")) + "$"
        if re.match(pattern, relative) and method.lower() in item:
            return template, item[method.lower()]
    raise AssertionError(f"{method} {relative} is not in the OpenAPI document")


def check_against_openapi(method, path, status, content_type, body):
    """The answer's status is documented for the operation, and its JSON body matches the documented schema."""
    document = openapi()
    template, operation = _operation(document, method, path)
    responses = operation["responses"]
    assert str(status) in responses, f"{method} {template}: status {status} is not documented"
    response = responses[str(status)]
    if "$ref" in response:
        response = document["components"]["responses"][response["$ref"].rsplit("/", 1)[1]]
    if status == 204:
        assert not body
        return
    media = content_type.split(";")[0].strip()
    assert media in response["content"], f"{method} {template} {status}: {media} is not documented"
    schema = response["content"][media]["schema"]
    schema = {"$ref": "urn:openapi#/" + schema["$ref"][2:]} if "$ref" in schema else _rebase(schema)
    value = json.loads(body) if media == "application/json" else yaml.safe_load(body)
    jsonschema.Draft202012Validator(schema, registry=_registry(document)).validate(value)


def _rebase(schema):
    text = json.dumps(schema).replace('"#/components', '"urn:openapi#/components')
    return json.loads(text)


def test_openapi_document_is_a_valid_openapi_3_1_document():
    document = openapi()
    assert document["openapi"].startswith("3.1")
    registry = _registry(document)
    # every schema is a valid JSON Schema 2020-12 schema and every reference resolves
    for name, schema in document["components"]["schemas"].items():
        jsonschema.Draft202012Validator.check_schema(schema)
        reference = {"$ref": f"urn:openapi#/components/schemas/{name}"}
        jsonschema.Draft202012Validator(reference, registry=registry).is_valid({})
    refs = re.findall(r'"\$ref": "#/([^"]+)"', json.dumps(document))
    for ref in refs:
        node = document
        for part in ref.split("/"):
            node = node[part]
    # the served JSON is the same document
    assert json.loads(profiles_service.openapi_json()) == document


def test_openapi_profile_schemas_list_exactly_the_profile_fields():
    schemas = openapi()["components"]["schemas"]
    fields = set(profiles_service.Profile.field_names())
    assert set(schemas["Profile"]["properties"]) == fields == set(schemas["Profile"]["required"])
    assert set(schemas["ProfileInput"]["properties"]) == fields
    assert set(schemas["ProfileInput"]["required"]) == set(profiles_service.Profile.REQUIRED)
    assert set(schemas["StoredProfile"]["properties"]) == fields | {"version", "updated_at", "updated_by"}


# --- pure helpers ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("caller", "admin_group", "expected"),
    [
        ({"name": "a", "admin": True, "groups": []}, "hub-admins", True),
        ({"name": "a", "admin": False, "groups": ["hub-admins"]}, "hub-admins", True),
        ({"name": "a", "admin": False, "groups": ["hub-admins"]}, None, False),
        ({"name": "a", "admin": False, "groups": ["desp-users"]}, "hub-admins", False),
        ({"name": "a", "groups": None}, "hub-admins", False),
        ({"name": "a", "admin": "yes", "groups": []}, "hub-admins", False),
    ],
    ids=["hub-admin", "admin-group", "admin-group-off", "user", "no-groups", "admin-flag-not-bool"],
)
def test_is_admin(caller, admin_group, expected):
    assert is_admin(caller, admin_group) is expected


def _seed_dicts():
    store_dicts = yaml.safe_load(SEED.read_text())["profiles"]
    return [profiles_service.Profile.from_dict(d).to_dict() | {"version": 1} for d in store_dicts]


@pytest.mark.parametrize(
    ("caller", "expected"),
    [
        (CALLERS["admin-token"], ["standard", "power", "ai"]),
        (CALLERS["researcher-token"], ["standard"]),
        (CALLERS["poweruser-token"], ["standard", "power"]),
        ({"name": "nobody", "admin": False, "groups": []}, []),
        # realm roles come from the user_info the DESP authenticator publishes (power and ai admit `hub-admin`)
        ({"name": "role-holder", "admin": False, "groups": ["desp-users"], "user_info": {"roles": ["hub-admin"]}},
         ["standard", "power", "ai"]),
    ],
    ids=["admin", "researcher", "poweruser", "no-groups", "by-realm-role"],
)
def test_visible_profiles(caller, expected):
    assert [p["slug"] for p in visible_profiles(_seed_dicts(), caller)] == expected


def test_disabled_profiles_are_visible_to_admins_only():
    stored = [d | {"enabled": d["slug"] != "standard"} for d in _seed_dicts()]
    assert visible_profiles(stored, CALLERS["researcher-token"]) == []
    assert len(visible_profiles(stored, CALLERS["admin-token"])) == 3


@pytest.mark.parametrize(("value", "expected"), [(0, 0), (3, 3), (3.0, 3), ("7", 7), (" 12 ", 12)])
def test_parse_version_accepts_whole_numbers(value, expected):
    assert parse_version(value) == expected


@pytest.mark.parametrize("value", [-1, 1.5, True, None, "", "x", "1e3", "²", "١", 2**31, [1]])
def test_parse_version_rejects_everything_else(value):
    with pytest.raises(ApiError) as error:
        parse_version(value)
    assert (error.value.status_code, error.value.field) == (400, "version")


@pytest.mark.parametrize("value", ["0", "1001", "-1", "ten", "", "1.5"])
def test_parse_limit_rejects_out_of_range(value):
    with pytest.raises(ApiError) as error:
        parse_limit(value)
    assert error.value.field == "limit"


def test_parse_limit_default_and_value():
    assert parse_limit(None) == 100
    assert parse_limit("1000") == 1000


@pytest.mark.parametrize(
    ("body", "kwargs", "status", "field"),
    [
        ([], {}, 400, "body"),
        ({**NEW_PROFILE, "colour": "red"}, {}, 422, "colour"),
        ({**NEW_PROFILE, "version": 1}, {}, 422, "version"),
        ({k: v for k, v in NEW_PROFILE.items() if k != "image"}, {}, 422, "image"),
        ({**NEW_PROFILE, "mem_guarantee": "2G"}, {}, 422, "mem_guarantee"),
        ({**NEW_PROFILE, "mem_limit": "9" * 30}, {}, 422, "mem_limit"),
        ({**NEW_PROFILE, "display_name": "a\x00b"}, {}, 422, "display_name"),
        ({**NEW_PROFILE, "description": "\ud800"}, {}, 422, "description"),
        ({**NEW_PROFILE, "slug": "Not OK"}, {}, 422, "slug"),
        (NEW_PROFILE, {"slug": "small", "with_version": True}, 400, "version"),
        ({**NEW_PROFILE, "version": "one"}, {"slug": "small", "with_version": True}, 400, "version"),
        ({**NEW_PROFILE, "version": 1}, {"slug": "other", "with_version": True}, 422, "slug"),
    ],
    ids=["not-an-object", "unknown-key", "version-on-create", "missing-image", "guarantee-over-limit", "huge-number",
         "nul-character", "lone-surrogate", "bad-slug", "missing-version", "bad-version", "slug-differs-from-url"],
)
def test_profile_body_rejects_naming_the_field(body, kwargs, status, field):
    with pytest.raises(ApiError) as error:
        profile_body(body, **kwargs)
    assert (error.value.status_code, error.value.field) == (status, field)
    assert error.value.message


def test_profile_body_put_fills_slug_and_drops_read_only_fields():
    body = {k: v for k, v in NEW_PROFILE.items() if k != "slug"}
    body.update(version=3, updated_at="2026-01-01T00:00:00Z", updated_by="someone")
    data, version = profile_body(body, slug="small", with_version=True)
    assert version == 3
    assert data == NEW_PROFILE


@pytest.mark.parametrize(
    ("text", "status", "field"),
    [
        ("profiles: [", 400, "body"),
        ("- a\n- b\n", 422, "profiles"),
        ("profiles: {}\n", 422, "profiles"),
        ("profiles: [1]\n", 422, "profiles[0]"),
        ("profiles:\n  - {slug: a}\n", 422, "profiles[0].display_name"),
        (yaml.safe_dump({"profiles": [NEW_PROFILE, NEW_PROFILE]}), 422, "profiles.slug"),
    ],
    ids=["bad-yaml", "not-a-mapping", "not-a-list", "entry-not-a-mapping", "missing-field", "duplicate-slug"],
)
def test_check_import_names_the_field(text, status, field):
    with pytest.raises(ApiError) as error:
        check_import(text)
    assert (error.value.status_code, error.value.field) == (status, field)


# --- install_profiles_service ------------------------------------------------------------------------------------


def _config_with_user_role():
    c = Config()
    c.JupyterHub.load_roles = [{"name": "user", "description": "d", "scopes": ["self", "admin:auth_state!user"]}]
    c.JupyterHub.services = [{"name": "other", "api_token": "x"}]
    return c


def test_install_adds_service_role_and_extends_the_user_role():
    c = _config_with_user_role()
    configured_roles = c.JupyterHub.load_roles
    install.install_profiles_service(c, db_url="sqlite:////data/p.sqlite", seed_path="/seed.yaml", port=4321)

    roles = {role["name"]: role for role in c.JupyterHub.load_roles}
    assert roles["user"]["scopes"] == ["self", "admin:auth_state!user", ACCESS]
    assert roles["profiles-service"] == {
        "name": "profiles-service",
        "description": roles["profiles-service"]["description"],
        "scopes": [],
        "services": ["profiles"],
    }
    assert configured_roles[0]["scopes"] == ["self", "admin:auth_state!user"]  # the configured list is not mutated
    services = {service["name"]: service for service in c.JupyterHub.services}
    assert set(services) == {"other", "profiles"}
    service = services["profiles"]
    assert service["url"] == "http://127.0.0.1:4321"
    assert service["oauth_no_confirm"] is True
    assert service["command"][1:] == [
        "-m", "desp_hub.services.profiles_service",
        "--db-url", "sqlite:////data/p.sqlite", "--seed", "/seed.yaml", "--admin-group", "hub-admins",
    ]


def test_install_passes_the_postgresql_password_at_start_not_in_the_config(monkeypatch):
    monkeypatch.setenv("PGPASSWORD", "at-config-time")
    monkeypatch.delenv("PGSSLMODE", raising=False)
    c = _config_with_user_role()
    install.install_profiles_service(c, db_url="postgresql+psycopg://hub@db/hub", port=1)
    environment = c.JupyterHub.services[-1]["environment"]
    assert set(environment) == {"PGPASSWORD"}
    assert "at-config-time" not in repr(c)
    monkeypatch.setenv("PGPASSWORD", "at-start")
    assert environment["PGPASSWORD"](None) == "at-start"


def test_install_twice_leaves_one_service_and_one_access_scope():
    c = _config_with_user_role()
    install.install_profiles_service(c, port=1)
    install.install_profiles_service(c, port=2)
    assert [s["name"] for s in c.JupyterHub.services] == ["other", "profiles"]
    assert c.JupyterHub.services[1]["url"] == "http://127.0.0.1:2"
    user_role = next(r for r in c.JupyterHub.load_roles if r["name"] == "user")
    assert user_role["scopes"].count(ACCESS) == 1
    assert [r["name"] for r in c.JupyterHub.load_roles].count("profiles-service") == 1


def test_install_without_user_role_keeps_jupyterhubs_default_scopes(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    main = Config()
    main.merge(_installed_in_a_fresh_config())
    roles = main.JupyterHub.load_roles.get_value([])
    user_role = next(r for r in roles if r["name"] == "user")
    assert user_role["scopes"] == ["self", ACCESS]
    command = main.JupyterHub.services.get_value([])[0]["command"]
    assert command[command.index("--db-url") + 1] == f"sqlite:///{tmp_path}/profiles.sqlite"
    assert Path(command[command.index("--seed") + 1]) == SEED


def _installed_in_a_fresh_config():
    sub = Config()  # what a file loaded with load_subconfig gets
    install.install_profiles_service(sub, port=1)
    return sub


def test_install_from_a_subconfig_keeps_earlier_services_and_never_drops_the_user_roles_scopes():
    main = _config_with_user_role()
    main.merge(_installed_in_a_fresh_config())
    assert [s["name"] for s in main.JupyterHub.services] == ["other", "profiles"]
    roles = main.JupyterHub.load_roles
    # the main file's user role survives untouched; JupyterHub refuses the second one loudly at start-up
    assert roles[0] == {"name": "user", "description": "d", "scopes": ["self", "admin:auth_state!user"]}
    assert [r["name"] for r in roles] == ["user", "user", "profiles-service"]


# --- the API, in-process ------------------------------------------------------------------------------------------


class FakeHubUserHandler(web.RequestHandler):
    """`GET /hub/api/user`: the model of the token's owner, with identify fields and scopes, as the hub answers."""

    def get(self):
        token = self.request.headers.get("Authorization", "").partition(" ")[2]
        model = CALLERS.get(token)
        if model is None:
            raise web.HTTPError(403)
        name = model["name"]
        identify = [f"read:users:name!user={name}", f"read:users:groups!user={name}"]
        self.write({"kind": "user", "scopes": [ACCESS, *identify], **model})


class Api:
    """An HTTP client for the in-process service; checks every answer against the OpenAPI document."""

    def __init__(self, base):
        self.base = base
        self.http = AsyncHTTPClient()

    async def __call__(self, method, path, *, token=None, body=None, raw=None, headers=None):
        headers = dict(headers or {})
        if token:
            headers["Authorization"] = f"token {token}"
        if body is not None:
            raw = json.dumps(body)
            headers.setdefault("Content-Type", "application/json")
        if raw is None and method in ("POST", "PUT"):
            raw = ""
        response = await self.http.fetch(
            self.base + path, method=method, headers=headers, body=raw, raise_error=False, follow_redirects=False
        )
        text = response.body.decode() if response.body else ""
        if path.startswith("api/"):
            check_against_openapi(method, PREFIX + path, response.code, response.headers.get("Content-Type", ""), text)
        return response.code, (json.loads(text) if "json" in response.headers.get("Content-Type", "") else text)


def listen_on_free_port(app):
    """Serve `app` on 127.0.0.1 at a port the kernel picks; returns (server, port)."""
    sockets = bind_sockets(0, "127.0.0.1")
    server = HTTPServer(app)
    server.add_sockets(sockets)
    return server, sockets[0].getsockname()[1]


@pytest.fixture
async def api(tmp_path):
    # in-process servers bind port 0 themselves: no window in which another test could take the port
    hub_server, hub_port = listen_on_free_port(web.Application([(r"/hub/api/user", FakeHubUserHandler)]))
    store = ProfileStore(f"sqlite:///{tmp_path}/profiles.sqlite")
    store.upgrade()
    store.seed_if_empty(SEED)
    hub_auth = HubOAuth(
        api_url=f"http://127.0.0.1:{hub_port}/hub/api",
        api_token="service-token",
        oauth_client_id="service-profiles",
        base_url=PREFIX,
        hub_prefix="/hub/",
        access_scopes={ACCESS},
        cache_max_age=0,
    )
    app = make_app(store, service_prefix=PREFIX, hub_auth=hub_auth)
    server, service_port = listen_on_free_port(app)
    yield Api(f"http://127.0.0.1:{service_port}{PREFIX}")
    server.stop()
    hub_server.stop()
    store.close()


async def test_openapi_is_served_without_authentication(api):
    status, text = await api("GET", "api/openapi.yaml")
    assert status == 200 and yaml.safe_load(text) == openapi()
    status, document = await api("GET", "api/openapi.json")
    assert status == 200 and document == openapi()


# Every operation only admins may call (all writes, the export and the audit log), besides the YAML import.
ADMIN_ONLY = [
    ("POST", "api/profiles", NEW_PROFILE),
    ("PUT", "api/profiles/standard", {**NEW_PROFILE, "slug": "standard", "version": 1}),
    ("DELETE", "api/profiles/standard?version=1", None),
    ("POST", "api/profiles/standard/disable", {"version": 1}),
    ("POST", "api/profiles/standard/enable", {"version": 1}),
    ("GET", "api/profiles.yaml", None),
    ("GET", "api/audit", None),
]


async def test_anonymous_gets_401_everywhere(api):
    for method, path, body in [("GET", "api/profiles", None), ("GET", "api/profiles/standard", None), *ADMIN_ONLY]:
        status, error = await api(method, path, body=body)
        assert status == 401, (method, path, status)
        assert error["message"]
    status, _ = await api("PUT", "api/profiles.yaml", raw="profiles: []\n")
    assert status == 401


async def test_unknown_token_is_anonymous_and_a_token_without_access_is_403(api):
    assert (await api("GET", "api/profiles", token="made-up"))[0] == 401
    status, error = await api("GET", "api/profiles", token="stranger-token")
    assert status == 403 and "stranger" in error["message"]


async def test_browser_without_cookie_is_sent_to_the_hub_login(api):
    status, _ = await api("GET", "")
    assert status == 302


@pytest.mark.parametrize("token", ["researcher-token", "poweruser-token"])
async def test_non_admins_get_403_on_every_write_and_admin_read(api, token):
    for method, path, body in ADMIN_ONLY:
        status, error = await api(method, path, token=token, body=body)
        assert status == 403, (method, path, status)
        assert "admin" in error["message"]
    status, _ = await api("PUT", "api/profiles.yaml", token=token, raw="profiles: []\n")
    assert status == 403


async def test_non_admins_see_only_the_profiles_they_may_start(api):
    status, profiles = await api("GET", "api/profiles", token="researcher-token")
    assert status == 200 and [p["slug"] for p in profiles] == ["standard"]
    assert profiles[0]["version"] == 1 and profiles[0]["updated_by"] == "seed"
    status, profiles = await api("GET", "api/profiles", token="poweruser-token")
    assert [p["slug"] for p in profiles] == ["standard", "power"]
    assert (await api("GET", "api/profiles/standard", token="researcher-token"))[0] == 200
    status, error = await api("GET", "api/profiles/power", token="researcher-token")
    assert (status, error["field"]) == (404, "slug")


@pytest.mark.parametrize("token", ["admin-token", "group-admin-token"])
async def test_admin_lifecycle_create_edit_disable_enable_delete(api, token):
    status, created = await api("POST", "api/profiles", token=token, body=NEW_PROFILE)
    assert status == 201
    assert created["version"] == 1 and created["mem_limit"] == 2**30 and created["updated_by"] == CALLERS[token]["name"]
    status, listed = await api("GET", "api/profiles", token=token)
    assert [p["slug"] for p in listed] == ["small", "standard", "power", "ai"]

    status, edited = await api("PUT", "api/profiles/small", token=token, body={**created, "cpu_limit": 1.5})
    assert status == 200 and edited["version"] == 2 and edited["cpu_limit"] == 1.5

    status, disabled = await api("POST", "api/profiles/small/disable", token=token, body={"version": 2})
    assert status == 200 and disabled["enabled"] is False and disabled["version"] == 3
    status, profiles = await api("GET", "api/profiles", token="researcher-token")
    assert [p["slug"] for p in profiles] == ["standard"]
    status, enabled = await api("POST", "api/profiles/small/enable", token=token, body={"version": 3})
    assert status == 200 and enabled["enabled"] is True
    status, profiles = await api("GET", "api/profiles", token="researcher-token")
    assert [p["slug"] for p in profiles] == ["small", "standard"]

    status, entries = await api("GET", "api/audit?slug=small", token=token)
    assert [e["action"] for e in entries] == ["enable", "disable", "update", "create"]
    assert entries[-1]["before"] is None and entries[-1]["after"]["slug"] == "small"

    status, error = await api("DELETE", "api/profiles/small?version=3", token=token)
    assert status == 409 and error["current_version"] == 4 and error["field"] == "version"
    status, _ = await api("DELETE", "api/profiles/small?version=4", token=token)
    assert status == 204
    assert (await api("GET", "api/profiles/small", token=token))[0] == 404
    status, entries = await api("GET", "api/audit?limit=1", token=token)
    assert [(e["action"], e["slug"], e["after"]) for e in entries] == [("delete", "small", None)]


async def test_concurrent_edits_of_one_version_one_wins_one_gets_409(api):
    status, standard = await api("GET", "api/profiles/standard", token="admin-token")
    first = {**standard, "description": "first"}
    second = {**standard, "description": "second"}
    results = await asyncio.gather(
        api("PUT", "api/profiles/standard", token="admin-token", body=first),
        api("PUT", "api/profiles/standard", token="group-admin-token", body=second),
    )
    assert sorted(status for status, _ in results) == [200, 409]
    winner = next(body for status, body in results if status == 200)
    conflict = next(body for status, body in results if status == 409)
    assert conflict["field"] == "version" and conflict["current_version"] == 2
    assert winner["updated_by"] in conflict["message"] and "version 2" in conflict["message"]


async def test_export_then_import_round_trips(api):
    status, text = await api("GET", "api/profiles.yaml", token="admin-token")
    assert status == 200 and [p["slug"] for p in yaml.safe_load(text)["profiles"]] == ["standard", "power", "ai"]
    document = yaml.safe_load(text)
    document["profiles"] = [p for p in document["profiles"] if p["slug"] != "ai"] + [NEW_PROFILE]
    status, imported = await api("PUT", "api/profiles.yaml", token="admin-token", raw=yaml.safe_dump(document))
    assert status == 200 and [p["slug"] for p in imported] == ["small", "standard", "power"]
    assert {p["slug"]: p["version"] for p in imported} == {"small": 1, "standard": 1, "power": 1}
    assert (await api("GET", "api/profiles/ai", token="admin-token"))[0] == 404


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "field"),
    [
        ("POST", "api/profiles", {**NEW_PROFILE, "colour": "red"}, 422, "colour"),
        ("POST", "api/profiles", {**NEW_PROFILE, "slug": "standard"}, 422, "slug"),
        ("POST", "api/profiles", {**NEW_PROFILE, "default": True}, 422, "default"),
        ("POST", "api/profiles", {**NEW_PROFILE, "cpu_limit": "lots"}, 422, "cpu_limit"),
        ("POST", "api/profiles", {**NEW_PROFILE, "gpus": 1}, 422, "gpus"),
        ("POST", "api/profiles", "not an object", 400, "body"),
        ("PUT", "api/profiles/standard", {"display_name": "x"}, 400, "version"),
        ("PUT", "api/profiles/standard", {**NEW_PROFILE, "version": 1}, 422, "slug"),
        ("PUT", "api/profiles/standard", {**NEW_PROFILE, "slug": "standard", "version": 1, "mem_limit": "4X"}, 422,
         "mem_limit"),
        ("PUT", "api/profiles/nope", {**NEW_PROFILE, "slug": "nope", "version": 1}, 404, "slug"),
        ("POST", "api/profiles/standard/disable", {}, 400, "version"),
        ("POST", "api/profiles/standard/disable", {"version": 1, "enabled": True}, 400, "version"),
        ("POST", "api/profiles/standard/disable", {"version": -1}, 400, "version"),
        ("POST", "api/profiles/nope/disable", {"version": 1}, 404, "slug"),
        ("DELETE", "api/profiles/standard", None, 400, "version"),
        ("DELETE", "api/profiles/standard?version=x", None, 400, "version"),
        ("DELETE", "api/profiles/Bad%20Slug?version=1", None, 404, "slug"),
        ("GET", "api/audit?limit=0", None, 400, "limit"),
        ("GET", "api/audit?slug=Not%20A%20Slug", None, 400, "slug"),
        ("GET", "api/audit?slug=", None, 400, "slug"),
    ],
)
async def test_bad_requests_are_4xx_naming_the_field(api, method, path, body, status, field):
    got, error = await api(method, path, token="admin-token", body=body)
    assert (got, error["field"]) == (status, field), error
    assert error["message"]


@pytest.mark.parametrize(
    "raw",
    [b"{", b"\xff\xfe", b"[1, 2", b'{"slug": NaN}', b"[" * 100000, b""],
    ids=["truncated", "not-utf8", "unterminated", "nan", "deep", "empty"],
)
async def test_malformed_json_is_400_never_500(api, raw):
    for method, path in [
        ("POST", "api/profiles"), ("PUT", "api/profiles/standard"), ("POST", "api/profiles/standard/enable")
    ]:
        status, error = await api(method, path, token="admin-token", raw=raw)
        assert (status, error["field"]) == (400, "body") or (status, error["field"]) == (400, "version"), error


@pytest.mark.parametrize(
    ("raw", "status", "field"),
    [(b"\xff", 400, "body"), (b"profiles: [", 400, "body"), (b"profiles: 1", 422, "profiles"),
     (b"profiles:\n  - {slug: x, colour: red}\n", 422, "profiles[0].colour")],
    ids=["not-utf8", "bad-yaml", "not-a-list", "unknown-key"],
)
async def test_bad_imports_change_nothing(api, raw, status, field):
    got, error = await api("PUT", "api/profiles.yaml", token="admin-token", raw=raw)
    assert (got, error["field"]) == (status, field)
    _, profiles = await api("GET", "api/profiles", token="admin-token")
    assert [p["version"] for p in profiles] == [1, 1, 1]


async def test_unknown_paths_and_methods_answer_json(api):
    response = await AsyncHTTPClient().fetch(api.base + "api/nothing-here", raise_error=False)
    assert response.code == 404 and json.loads(response.body)["message"]
    response = await AsyncHTTPClient().fetch(api.base + "api/profiles", method="PATCH", body="{}", raise_error=False,
                                             headers={"Authorization": "token admin-token"})
    assert response.code == 405 and json.loads(response.body)["message"]
    assert response.headers["Allow"] == "GET, POST"



# --- the service process ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_service_process_seeds_the_store_serves_and_stops_on_the_hubs_signals(tmp_path, signum):
    """As JupyterHub runs it: settings from JUPYTERHUB_* variables; stopped with SIGINT (then SIGTERM), even when
    started with SIGINT ignored (a background job of a non-interactive shell)."""
    port = free_port()
    env = dict(
        os.environ,
        JUPYTERHUB_SERVICE_URL=f"http://127.0.0.1:{port}",
        JUPYTERHUB_SERVICE_PREFIX=PREFIX,
        JUPYTERHUB_API_URL=f"http://127.0.0.1:{free_port()}/hub/api",
        JUPYTERHUB_API_TOKEN="service-token",
        JUPYTERHUB_CLIENT_ID="service-profiles",
        JUPYTERHUB_SERVICE_NAME="profiles",
    )
    db_url = f"sqlite:///{tmp_path}/profiles.sqlite"
    args = [sys.executable, "-m", "desp_hub.services.profiles_service", "--db-url", db_url, "--seed", str(SEED)]
    with open(tmp_path / "service.log", "wb") as log:
        process = subprocess.Popen(
            args, env=env, stdout=log, stderr=subprocess.STDOUT,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
        )
        try:
            wait_for_http(f"http://127.0.0.1:{port}{PREFIX}api/openapi.json", timeout=60, ok_only=True)
            store = ProfileStore(db_url)
            assert [p.slug for p in store.profiles()] == ["standard", "power", "ai"]
            store.close()
            process.send_signal(signum)
            assert process.wait(timeout=10) == 0
        finally:
            process.kill()
            process.wait()


async def test_logs_carry_no_query_strings(api, caplog):
    caplog.set_level(logging.DEBUG, logger="desp_hub.services.profiles")
    await api("GET", "api/audit?limit=5&token=not-logged", token="admin-token")
    await api("DELETE", "api/profiles/standard?version=x&token=not-logged", token="admin-token")
    lines = [record.getMessage() for record in caplog.records if record.name == "desp_hub.services.profiles"]
    assert any("GET /services/profiles/api/audit" in line for line in lines)
    assert not [line for line in lines if "not-logged" in line or "?" in line]
