"""The sandbox IdP, run as a real server on 127.0.0.1 and driven over HTTP like a client and a browser would."""

import base64
import hashlib
import html
import os
import re
import secrets
import subprocess
import sys
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import KeySet

from desp_sandbox.idp.realm import RealmFileError, resolve_placeholders
from tests.support import ManagedProcess, free_port, wait_for_http

REALM_FILE = Path(__file__).resolve().parents[2] / "sandbox" / "desp_sandbox" / "realm" / "desp-realm.json"
HUB_SECRET = "hub-secret-for-tests"
ADMIN_SECRET = "admin-secret-for-tests"
METERING_SECRET = "metering-secret-for-tests"
SCOPE = "openid profile email offline_access"


class Idp:
    """One sandbox IdP process with its own port and data directory."""

    def __init__(self, workdir, port=None):
        self.workdir = Path(workdir)
        self.port = port or free_port()
        self.data_dir = self.workdir / "data"
        self.log_path = self.workdir / "idp.log"
        self.base = f"http://127.0.0.1:{self.port}"
        self.issuer = f"{self.base}/realms/desp"
        self.oidc = f"{self.issuer}/protocol/openid-connect"
        self.admin = f"{self.base}/admin/realms/desp"
        self.hub_url = "http://127.0.0.1:9"  # never contacted: redirects are not followed
        self.redirect_uri = f"{self.hub_url}/hub/oauth_callback"
        self.process = None

    def env(self):
        env = dict(os.environ)
        env.update(
            DESP_HUB_CLIENT_SECRET=HUB_SECRET, DESP_ADMIN_CLIENT_SECRET=ADMIN_SECRET, DESP_HUB_URL=self.hub_url,
            DESP_METERING_CLIENT_SECRET=METERING_SECRET, DESP_STATISTICS_CLIENT_SECRET="statistics-secret-for-tests",
        )
        return env

    def start(self):
        args = [sys.executable, "-m", "desp_sandbox.idp.server", "--ip", "127.0.0.1", "--port", str(self.port),
                "--realm-file", str(REALM_FILE), "--data-dir", str(self.data_dir)]
        self.process = ManagedProcess("sandbox-idp", args, self.log_path, env=self.env())
        wait_for_http(f"{self.issuer}/.well-known/openid-configuration", timeout=30, process=self.process)

    def stop(self):
        self.process.stop()
        return self.process.popen.returncode

    def log(self):
        return self.log_path.read_text()


@pytest.fixture(scope="module")
def idp(tmp_path_factory):
    server = Idp(tmp_path_factory.mktemp("idp"))
    server.start()
    yield server
    server.stop()


# helpers: what a scripted login (or the hub) does


def pkce_pair():
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def form_action(page):
    """The login form's action URL, as a scripted Keycloak login scrapes it."""
    match = re.search(r'<form\b[^>]*\bid="kc-form-login"[^>]*\baction="([^"]+)"', page)
    assert match, page
    return html.unescape(match.group(1))


def authorize(browser, idp, challenge, **params):
    query = {
        "client_id": "desp-hub",
        "redirect_uri": idp.redirect_uri,
        "response_type": "code",
        "scope": SCOPE,
        "state": "state-123",
        "nonce": "nonce-456",
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    query.update(params)
    return browser.get(f"{idp.oidc}/auth", params=query, allow_redirects=False)


def callback_params(response, idp):
    assert response.status_code == 302, response.text
    location = response.headers["Location"]
    assert location.startswith(idp.redirect_uri + "?")
    return {key: values[0] for key, values in parse_qs(urlsplit(location).query).items()}


def login(idp, username, browser=None):
    """Browser login through the HTML form; returns (browser, callback params, PKCE verifier)."""
    browser = browser or requests.Session()
    verifier, challenge = pkce_pair()
    page = authorize(browser, idp, challenge)
    assert page.status_code == 200
    response = browser.post(form_action(page.text), data={"username": username, "password": f"{username}-demo"},
                            allow_redirects=False)
    return browser, callback_params(response, idp), verifier


def exchange(idp, code, verifier, redirect_uri=None, auth=("desp-hub", HUB_SECRET)):
    return requests.post(
        f"{idp.oidc}/token",
        data={"grant_type": "authorization_code", "code": code, "code_verifier": verifier,
              "redirect_uri": redirect_uri or idp.redirect_uri},
        auth=auth,
    )


def tokens_for(idp, username):
    browser, params, verifier = login(idp, username)
    response = exchange(idp, params["code"], verifier)
    assert response.status_code == 200, response.text
    return browser, response.json()


def refresh(idp, refresh_token):
    return requests.post(
        f"{idp.oidc}/token",
        data={"grant_type": "refresh_token", "refresh_token": refresh_token, "client_id": "desp-hub",
              "client_secret": HUB_SECRET},
    )


def userinfo(idp, access_token):
    return requests.get(f"{idp.oidc}/userinfo", headers={"Authorization": f"Bearer {access_token}"})


def verified_claims(idp, token):
    """Claims of a token checked against the published JWKS with joserfc."""
    key_set = KeySet.import_key_set(requests.get(f"{idp.oidc}/certs").json())
    decoded = jwt.decode(token, key_set, algorithms=["RS256"])
    assert decoded.header["kid"] == key_set.keys[0].kid
    jwt.JWTClaimsRegistry(iss={"essential": True, "value": idp.issuer}, exp={"essential": True}).validate(
        decoded.claims
    )
    return decoded.claims


def admin_token(idp):
    response = requests.post(f"{idp.oidc}/token", data={"grant_type": "client_credentials"},
                             auth=("desp-admin-cli", ADMIN_SECRET))
    assert response.status_code == 200, response.text
    return response.json()["access_token"]


def user_id(username):
    return {
        "researcher": "7d3d1411-c354-531c-abe3-9e1635a683a7",
        "poweruser": "4f001892-6e8b-5759-8754-c2a44e2fb82c",
        "aiuser": "44a6c881-e4f5-53f6-bc17-af1c0936bf51",
        "admin": "b24bb81b-2b87-5285-8913-e78631ca9674",
        "executive": "6873f8a6-a19b-5824-be85-0f73abbeb036",
        "outsider": "35acb02b-e0c5-52f0-a5a0-71a7d8160ba1",
    }[username]


# discovery and keys


def test_discovery_document(idp):
    config = requests.get(f"{idp.issuer}/.well-known/openid-configuration").json()
    assert config["issuer"] == idp.issuer
    for name, path in [("authorization_endpoint", "auth"), ("token_endpoint", "token"),
                       ("userinfo_endpoint", "userinfo"), ("jwks_uri", "certs"), ("end_session_endpoint", "logout")]:
        assert config[name] == f"{idp.oidc}/{path}"
    assert config["code_challenge_methods_supported"] == ["S256"]
    assert config["id_token_signing_alg_values_supported"] == ["RS256"]
    assert {"authorization_code", "refresh_token", "client_credentials"} <= set(config["grant_types_supported"])
    assert "code" in config["response_types_supported"]
    assert {"openid", "profile", "email", "offline_access"} <= set(config["scopes_supported"])
    keys = requests.get(config["jwks_uri"]).json()["keys"]
    assert [(key["kty"], key["alg"], key["use"]) for key in keys] == [("RSA", "RS256", "sig")]
    assert "d" not in keys[0]
    assert requests.get(f"{idp.base}/realms/other/.well-known/openid-configuration").status_code == 404


def test_signing_key_file_is_private(idp):
    assert (idp.data_dir / "signing-key.json").stat().st_mode & 0o777 == 0o600


# the browser login


def test_code_flow_with_pkce(idp):
    browser = requests.Session()
    verifier, challenge = pkce_pair()
    page = authorize(browser, idp, challenge)
    assert page.status_code == 200
    assert "DESP (sandbox)" in page.text
    assert 'name="username"' in page.text and 'name="password"' in page.text
    action = form_action(page.text)
    assert action.startswith(f"{idp.issuer}/login-actions/authenticate?")
    assert "tab_id=" in action and "session_code=" in action

    wrong = browser.post(action, data={"username": "researcher", "password": "nope"}, allow_redirects=False)
    assert wrong.status_code == 200
    assert "Invalid username or password." in wrong.text
    assert 'value="researcher"' in wrong.text

    right = browser.post(form_action(wrong.text), data={"username": "researcher", "password": "researcher-demo"},
                         allow_redirects=False)
    params = callback_params(right, idp)
    assert params["state"] == "state-123"
    assert params["iss"] == idp.issuer
    assert params["session_state"] and params["code"]
    assert browser.cookies.get("KEYCLOAK_IDENTITY")

    response = exchange(idp, params["code"], verifier)
    assert response.status_code == 200, response.text
    tokens = response.json()
    assert tokens["token_type"] == "Bearer"
    assert tokens["expires_in"] == 300
    assert tokens["scope"].split()[0] == "openid"
    assert {"profile", "email", "offline_access"} <= set(tokens["scope"].split())

    access = verified_claims(idp, tokens["access_token"])
    assert access["typ"] == "Bearer"
    assert access["sub"] == user_id("researcher")
    assert access["azp"] == "desp-hub"
    assert "account" in ([access["aud"]] if isinstance(access["aud"], str) else access["aud"])
    assert access["sid"] == access["session_state"] == params["session_state"] == tokens["session_state"]
    assert access["preferred_username"] == "researcher"
    assert access["email"] == "researcher@desp.example" and access["email_verified"] is True
    assert (access["name"], access["given_name"], access["family_name"]) == ("Rita Researcher", "Rita", "Researcher")
    assert access["groups"] == ["desp-users"]
    assert {"desp-user", "default-roles-desp"} <= set(access["realm_access"]["roles"])
    assert "account" in access["resource_access"]
    assert access["exp"] - access["iat"] == 300
    assert {"jti", "auth_time", "scope"} <= set(access)

    id_token = verified_claims(idp, tokens["id_token"])
    assert id_token["typ"] == "ID"
    assert id_token["aud"] == "desp-hub"
    assert id_token["nonce"] == "nonce-456"
    assert id_token["sub"] == access["sub"]
    assert id_token["groups"] == ["desp-users"]
    assert "realm_access" not in id_token  # the realm in the file keeps roles out of the ID token
    digest = hashlib.sha256(tokens["access_token"].encode()).digest()
    assert id_token["at_hash"] == base64.urlsafe_b64encode(digest[:16]).rstrip(b"=").decode()

    info = userinfo(idp, tokens["access_token"])
    assert info.status_code == 200
    assert info.json()["sub"] == user_id("researcher")
    assert info.json()["groups"] == ["desp-users"]
    assert "desp-user" in info.json()["realm_access"]["roles"]
    assert info.json()["preferred_username"] == "researcher"
    post = requests.post(f"{idp.oidc}/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert post.json() == info.json()

    # a second authorization request in the same browser skips the form (SSO)
    again = authorize(browser, idp, pkce_pair()[1], state="second")
    params_again = callback_params(again, idp)
    assert params_again["state"] == "second"
    assert params_again["session_state"] == params["session_state"]


@pytest.mark.parametrize(
    "username, groups, roles",
    [
        ("poweruser", ["desp-users", "power-users"], {"desp-user"}),
        ("admin", ["desp-users", "hub-admins"], {"desp-user", "hub-admin"}),
        ("outsider", None, {"default-roles-desp"}),
    ],
    ids=["power-user", "hub-admin", "no-groups"],
)
def test_demo_user_claims(idp, username, groups, roles):
    _, tokens = tokens_for(idp, username)
    access = verified_claims(idp, tokens["access_token"])
    assert access["sub"] == user_id(username)
    # Keycloak leaves an empty group claim out
    assert access.get("groups") == groups
    assert roles <= set(access["realm_access"]["roles"])
    assert userinfo(idp, tokens["access_token"]).json().get("groups") == groups


def test_bad_redirect_uri_is_an_error_page_not_a_redirect(idp):
    browser = requests.Session()
    challenge = pkce_pair()[1]
    for uri in ["https://evil.example/hub/oauth_callback", f"{idp.hub_url}/hub/oauth_callback/../../x", ""]:
        response = authorize(browser, idp, challenge, redirect_uri=uri)
        assert response.status_code == 400
        assert "Location" not in response.headers
        assert "Invalid parameter: redirect_uri" in response.text
    unknown = authorize(browser, idp, challenge, client_id="no-such-client")
    assert unknown.status_code == 400 and "Location" not in unknown.headers


def test_pkce_is_required_for_the_hub_client(idp):
    response = authorize(requests.Session(), idp, None, code_challenge_method=None)
    params = callback_params(response, idp)
    assert params["error"] == "invalid_request"
    assert params["state"] == "state-123"
    plain = authorize(requests.Session(), idp, "x" * 43, code_challenge_method="plain")
    assert callback_params(plain, idp)["error"] == "invalid_request"


def test_unknown_scope_is_refused(idp):
    response = authorize(requests.Session(), idp, pkce_pair()[1], scope="openid groups")
    assert callback_params(response, idp)["error"] == "invalid_scope"


def test_wrong_pkce_verifier_is_rejected(idp):
    _, params, _ = login(idp, "researcher")
    response = exchange(idp, params["code"], pkce_pair()[0])
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_code_is_single_use(idp):
    _, params, verifier = login(idp, "researcher")
    assert exchange(idp, params["code"], verifier).status_code == 200
    again = exchange(idp, params["code"], verifier)
    assert again.status_code == 400
    assert again.json()["error"] == "invalid_grant"


def test_code_needs_the_same_redirect_uri(idp):
    _, params, verifier = login(idp, "researcher")
    response = exchange(idp, params["code"], verifier, redirect_uri=idp.redirect_uri + "/other")
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_grant"


def test_client_authentication(idp):
    _, params, verifier = login(idp, "researcher")
    wrong = exchange(idp, params["code"], verifier, auth=("desp-hub", "wrong"))
    assert wrong.status_code == 401
    assert wrong.json()["error"] == "unauthorized_client"
    unknown = exchange(idp, params["code"], verifier, auth=("nobody", "x"))
    assert unknown.status_code == 401
    assert unknown.json()["error"] == "invalid_client"
    unsupported = requests.post(f"{idp.oidc}/token", data={"grant_type": "password"}, auth=("desp-hub", HUB_SECRET))
    assert unsupported.status_code == 400
    assert unsupported.json()["error"] == "unsupported_grant_type"


def test_refresh_rotates_and_rejects_reuse(idp):
    _, tokens = tokens_for(idp, "researcher")
    first = refresh(idp, tokens["refresh_token"])
    assert first.status_code == 200, first.text
    rotated = first.json()
    assert rotated["refresh_token"] != tokens["refresh_token"]
    assert verified_claims(idp, rotated["access_token"])["sid"] == tokens["session_state"]
    assert "id_token" in rotated

    reused = refresh(idp, tokens["refresh_token"])
    assert reused.status_code == 400
    assert reused.json()["error"] == "invalid_grant"

    assert refresh(idp, rotated["refresh_token"]).status_code == 200
    assert refresh(idp, "not-a-token").json()["error"] == "invalid_grant"


def test_invalid_access_token_gets_401(idp):
    for headers in [{"Authorization": "Bearer not-a-token"}, {}]:
        response = requests.get(f"{idp.oidc}/userinfo", headers=headers)
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith('Bearer realm="desp"')


# the admin API


def test_admin_api_group_change_shows_in_userinfo_at_once(idp):
    token = admin_token(idp)
    claims = verified_claims(idp, token)
    assert claims["preferred_username"] == "service-account-desp-admin-cli"
    assert "manage-users" in claims["resource_access"]["realm-management"]["roles"]
    headers = {"Authorization": f"Bearer {token}"}

    users = requests.get(f"{idp.admin}/users", params={"username": "aiuser", "exact": "true"}, headers=headers)
    assert users.status_code == 200
    [user] = users.json()
    assert user["id"] == user_id("aiuser")
    assert (user["username"], user["enabled"], user["email"]) == ("aiuser", True, "aiuser@desp.example")
    assert (user["firstName"], user["lastName"]) == ("Ada", "Intelligence")
    assert requests.get(f"{idp.admin}/users/{user['id']}", headers=headers).json()["username"] == "aiuser"

    groups = {group["name"]: group for group in requests.get(f"{idp.admin}/groups", headers=headers).json()}
    assert groups["ai-users"]["path"] == "/ai-users"
    ai_users = groups["ai-users"]["id"]

    _, tokens = tokens_for(idp, "aiuser")
    assert userinfo(idp, tokens["access_token"]).json()["groups"] == ["desp-users", "ai-users"]

    membership = f"{idp.admin}/users/{user['id']}/groups/{ai_users}"
    assert requests.delete(membership, headers=headers).status_code == 204
    assert userinfo(idp, tokens["access_token"]).json()["groups"] == ["desp-users"]
    user_groups = requests.get(f"{idp.admin}/users/{user['id']}/groups", headers=headers).json()
    assert [group["path"] for group in user_groups] == ["/desp-users"]
    refreshed = refresh(idp, tokens["refresh_token"]).json()
    assert verified_claims(idp, refreshed["access_token"])["groups"] == ["desp-users"]

    assert requests.put(membership, headers=headers).status_code == 204
    assert set(userinfo(idp, tokens["access_token"]).json()["groups"]) == {"desp-users", "ai-users"}
    unknown_group = f"{idp.admin}/users/{user['id']}/groups/00000000-0000-0000-0000-000000000000"
    assert requests.put(unknown_group, headers=headers).status_code == 404


def test_admin_api_disables_a_user(idp):
    headers = {"Authorization": f"Bearer {admin_token(idp)}"}
    url = f"{idp.admin}/users/{user_id('executive')}"
    _, tokens = tokens_for(idp, "executive")
    assert requests.put(url, json={"enabled": False}, headers=headers).status_code == 204
    assert requests.get(url, headers=headers).json()["enabled"] is False
    try:
        assert userinfo(idp, tokens["access_token"]).status_code == 401
        assert refresh(idp, tokens["refresh_token"]).json()["error"] == "invalid_grant"
        refused = requests.Session()
        page = authorize(refused, idp, pkce_pair()[1])
        response = refused.post(form_action(page.text), data={"username": "executive", "password": "executive-demo"},
                                allow_redirects=False)
        assert response.status_code == 200
        assert "Account is disabled" in response.text
    finally:
        assert requests.put(url, json={"enabled": True}, headers=headers).status_code == 204


def test_admin_api_needs_realm_management_roles(idp):
    assert requests.get(f"{idp.admin}/users").status_code == 401
    assert requests.get(f"{idp.admin}/users", headers={"Authorization": "Bearer junk"}).status_code == 401
    _, tokens = tokens_for(idp, "admin")
    response = requests.get(f"{idp.admin}/users", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert response.status_code == 403


# logout


def test_logout_ends_the_session(idp):
    browser, params, verifier = login(idp, "researcher")
    tokens = exchange(idp, params["code"], verifier).json()
    response = browser.get(
        f"{idp.oidc}/logout",
        params={"id_token_hint": tokens["id_token"], "post_logout_redirect_uri": f"{idp.hub_url}/hub/logout",
                "state": "bye"},
        allow_redirects=False,
    )
    assert response.status_code == 302
    assert response.headers["Location"] == f"{idp.hub_url}/hub/logout?state=bye"
    assert not browser.cookies.get("KEYCLOAK_IDENTITY")

    gone = userinfo(idp, tokens["access_token"])
    assert gone.status_code == 401
    assert "invalid_token" in gone.headers["WWW-Authenticate"]
    assert refresh(idp, tokens["refresh_token"]).json()["error"] == "invalid_grant"
    assert authorize(browser, idp, pkce_pair()[1]).status_code == 200  # the form again, no SSO


def test_logout_with_client_id_and_the_sso_cookie(idp):
    browser, params, verifier = login(idp, "researcher")
    tokens = exchange(idp, params["code"], verifier).json()
    response = browser.post(
        f"{idp.oidc}/logout",
        data={"client_id": "desp-hub", "post_logout_redirect_uri": f"{idp.hub_url}/"},
        allow_redirects=False,
    )
    assert response.status_code == 302
    assert response.headers["Location"] == f"{idp.hub_url}/"
    assert userinfo(idp, tokens["access_token"]).status_code == 401


def test_logout_redirect_is_validated(idp):
    _, tokens = tokens_for(idp, "researcher")
    bad = requests.get(
        f"{idp.oidc}/logout",
        params={"id_token_hint": tokens["id_token"], "post_logout_redirect_uri": "https://evil.example/"},
        allow_redirects=False,
    )
    assert bad.status_code == 400 and "Location" not in bad.headers
    anonymous = requests.get(f"{idp.oidc}/logout", params={"post_logout_redirect_uri": f"{idp.hub_url}/"},
                             allow_redirects=False)
    assert anonymous.status_code == 400 and "Location" not in anonymous.headers
    assert userinfo(idp, tokens["access_token"]).status_code == 200  # refused logouts end nothing
    plain = requests.get(f"{idp.oidc}/logout", params={"id_token_hint": tokens["id_token"]})
    assert plain.status_code == 200
    assert "You are logged out" in plain.text
    assert userinfo(idp, tokens["access_token"]).status_code == 401


def test_log_lines_carry_no_secrets(idp):
    browser, params, verifier = login(idp, "researcher")
    tokens = exchange(idp, params["code"], verifier).json()
    userinfo(idp, tokens["access_token"])
    log = idp.log()
    assert "GET /realms/desp/protocol/openid-connect/auth" in log
    for secret in [params["code"], "researcher-demo", tokens["access_token"], tokens["refresh_token"], HUB_SECRET,
                   params["state"]]:
        assert secret not in log


# start-up and restart


def test_restart_keeps_signing_key_and_sessions(tmp_path):
    server = Idp(tmp_path)
    server.start()
    try:
        _, tokens = tokens_for(server, "researcher")
        kid_before = requests.get(f"{server.oidc}/certs").json()["keys"][0]["kid"]
    finally:
        assert server.stop() == 0
    assert "stopping" in server.log()

    server.start()
    try:
        assert requests.get(f"{server.oidc}/certs").json()["keys"][0]["kid"] == kid_before
        assert verified_claims(server, tokens["access_token"])["sub"] == user_id("researcher")
        assert userinfo(server, tokens["access_token"]).status_code == 200
        assert refresh(server, tokens["refresh_token"]).status_code == 200
    finally:
        assert server.stop() == 0


def test_unset_placeholder_variable_is_named(tmp_path):
    env = Idp(tmp_path).env()
    del env["DESP_HUB_CLIENT_SECRET"]
    result = subprocess.run(
        [sys.executable, "-m", "desp_sandbox.idp", "--port", str(free_port()), "--realm-file", str(REALM_FILE),
         "--data-dir", str(tmp_path / "data")],
        env=env, capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 2
    assert "DESP_HUB_CLIENT_SECRET" in result.stderr


def test_placeholders_resolve_like_keycloak_import():
    environ = {"A": "a", "B": "b"}
    rep = {"x": "${A}/cb", "y": ["${MISSING:fallback}", "${MISSING,B}"], "z": "${env.A}${}", "n": 3}
    assert resolve_placeholders(rep, environ) == {"x": "a/cb", "y": ["fallback", "b"], "z": "a${}", "n": 3}
    with pytest.raises(RealmFileError, match=r"MISSING .*clients\[0\]\.secret"):
        resolve_placeholders({"clients": [{"secret": "${MISSING}"}]}, environ)
