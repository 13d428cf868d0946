"""The realm file imported into a real Keycloak gives the hub what it needs (logins driven through the HTML form)."""

import json

import pytest
import requests
from joserfc import jwt
from joserfc.jwk import KeySet

from tests.conftest_keycloak import keycloak_fixture
from tests.keycloak_server import REALM_FILE
from tests.oidc_login import (
    authorization_url,
    browser_session,
    login_with_form,
    pkce_pair,
    redirect_params,
)

pytestmark = [pytest.mark.keycloak, pytest.mark.timeout(900)]

keycloak = keycloak_fixture(scope="module")

REALM = json.loads(REALM_FILE.read_text())
USERS = {user["username"]: user for user in REALM["users"] if user.get("credentials")}
CUSTOM_ROLES = {role["name"] for role in REALM["roles"]["realm"]}


def password(username):
    return USERS[username]["credentials"][0]["value"]


def token_request(keycloak, **data):
    return requests.post(keycloak.discovery()["token_endpoint"], data=data,
                         auth=(keycloak.hub_client_id, keycloak.hub_client_secret), timeout=30)


def userinfo(keycloak, access_token):
    return requests.get(keycloak.discovery()["userinfo_endpoint"],
                        headers={"Authorization": f"Bearer {access_token}"}, timeout=30)


def login(keycloak, username, session=None):
    """Authorization code flow with PKCE S256 through the login form; returns (browser session, token response)."""
    session = session or browser_session()
    verifier, challenge = pkce_pair()
    url = authorization_url(keycloak.discovery(), keycloak.hub_client_id, keycloak.redirect_uri, challenge,
                            state="state-1")
    response = login_with_form(session, url, username, password(username))
    assert response.headers["Location"].startswith(keycloak.redirect_uri + "?")
    params = redirect_params(response)
    assert (params["state"], params["iss"]) == ("state-1", keycloak.issuer)
    tokens = token_request(keycloak, grant_type="authorization_code", code=params["code"], code_verifier=verifier,
                           redirect_uri=keycloak.redirect_uri)
    assert tokens.status_code == 200, tokens.text
    return session, tokens.json()


def verified_claims(keycloak, token):
    keys = KeySet.import_key_set(requests.get(keycloak.discovery()["jwks_uri"], timeout=30).json())
    claims = jwt.decode(token, keys, algorithms=["RS256"]).claims
    jwt.JWTClaimsRegistry(iss={"essential": True, "value": keycloak.issuer}, exp={"essential": True}).validate(claims)
    return claims


def roles_and_groups(claims):
    return set(claims["realm_access"]["roles"]), set(claims.get("groups", []))


@pytest.mark.parametrize("username", sorted(USERS))
def test_login_claims(keycloak, username):
    user = USERS[username]
    groups = {path.lstrip("/") for path in user["groups"]}
    roles = set(user["realmRoles"])
    _, tokens = login(keycloak, username)
    access = verified_claims(keycloak, tokens["access_token"])
    identity = verified_claims(keycloak, tokens["id_token"])
    info = userinfo(keycloak, tokens["access_token"]).json()
    assert access["azp"] == identity["aud"] == keycloak.hub_client_id
    for claims in (access, identity, info):
        assert claims["sub"] == user["id"]
        assert claims["preferred_username"] == username
        assert set(claims.get("groups", [])) == groups  # names, no leading slash
    for claims in (access, info):
        claim_roles, _ = roles_and_groups(claims)
        assert claim_roles & CUSTOM_ROLES == roles & CUSTOM_ROLES
        assert roles <= claim_roles  # plus the composites of default-roles-desp
    assert info["email"] == user["email"] and info["given_name"] == user["firstName"]


def test_pkce_s256_is_required(keycloak):
    discovery = keycloak.discovery()
    plain = {"client_id": keycloak.hub_client_id, "redirect_uri": keycloak.redirect_uri, "response_type": "code",
             "scope": "openid", "state": "s"}
    for extra in ({}, {"code_challenge": "x" * 43, "code_challenge_method": "plain"}):
        response = requests.get(discovery["authorization_endpoint"], params={**plain, **extra},
                                allow_redirects=False, timeout=30)
        assert redirect_params(response)["error"] == "invalid_request"
    session, (_verifier, challenge) = browser_session(), pkce_pair()
    response = login_with_form(session, authorization_url(discovery, keycloak.hub_client_id, keycloak.redirect_uri,
                                                          challenge), "researcher", password("researcher"))
    wrong = token_request(keycloak, grant_type="authorization_code", code=redirect_params(response)["code"],
                          code_verifier=pkce_pair()[0], redirect_uri=keycloak.redirect_uri)
    assert (wrong.status_code, wrong.json()["error"]) == (400, "invalid_grant")


def test_group_removal_reaches_userinfo_and_refreshed_tokens(keycloak):
    _, tokens = login(keycloak, "poweruser")
    user_id, group_id = keycloak.user_id("poweruser"), keycloak.group_id("power-users")
    removed = keycloak.admin_api("DELETE", f"users/{user_id}/groups/{group_id}")  # as the desp-admin-cli account
    assert removed.status_code == 204, removed.text
    try:
        assert roles_and_groups(userinfo(keycloak, tokens["access_token"]).json())[1] == {"desp-users"}
        refreshed = token_request(keycloak, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
        assert refreshed.status_code == 200, refreshed.text
        assert roles_and_groups(verified_claims(keycloak, refreshed.json()["access_token"]))[1] == {"desp-users"}
    finally:
        assert keycloak.admin_api("PUT", f"users/{user_id}/groups/{group_id}").status_code == 204
    assert "power-users" in roles_and_groups(userinfo(keycloak, tokens["access_token"]).json())[1]


def test_logout_ends_the_sso_session(keycloak):
    session, tokens = login(keycloak, "researcher")
    discovery = keycloak.discovery()
    again = authorization_url(discovery, keycloak.hub_client_id, keycloak.redirect_uri, pkce_pair()[1])
    assert "code" in redirect_params(login_with_form(session, again, "researcher", "unused: SSO session"))
    end_session = discovery["end_session_endpoint"]
    foreign = session.get(end_session, params={"id_token_hint": tokens["id_token"],
                                               "post_logout_redirect_uri": "http://127.0.0.1:9/elsewhere"},
                          allow_redirects=False, timeout=30)
    assert foreign.status_code == 400
    back_to = f"{keycloak.hub_url}/hub/logout-done"
    response = session.get(end_session, allow_redirects=False, timeout=30, params={
        "id_token_hint": tokens["id_token"], "post_logout_redirect_uri": back_to, "state": "bye"})
    assert response.status_code == 302 and response.headers["Location"] == f"{back_to}?state=bye"
    refreshed = token_request(keycloak, grant_type="refresh_token", refresh_token=tokens["refresh_token"])
    assert (refreshed.status_code, refreshed.json()["error"]) == (400, "invalid_grant")
    assert userinfo(keycloak, tokens["access_token"]).status_code == 401
    form = session.get(again, allow_redirects=False, timeout=30)  # no SSO any more: the login form again
    assert form.status_code == 200 and 'type="password"' in form.text


def test_set_hub_url_moves_the_redirect_uris(keycloak):
    old = keycloak.hub_url
    discovery = keycloak.discovery()
    keycloak.set_hub_url("http://127.0.0.1:9", "http://localhost:9")
    try:
        for redirect in ("http://127.0.0.1:9/hub/oauth_callback", "http://localhost:9/hub/oauth_callback"):
            url = authorization_url(discovery, keycloak.hub_client_id, redirect, pkce_pair()[1])
            response = login_with_form(browser_session(), url, "researcher", password("researcher"))
            assert "code" in redirect_params(response)
        stale = requests.get(authorization_url(discovery, keycloak.hub_client_id, f"{old}/hub/oauth_callback",
                                               pkce_pair()[1]), allow_redirects=False, timeout=30)
        assert stale.status_code == 400  # "Invalid parameter: redirect_uri", no redirect
    finally:
        keycloak.set_hub_url(old)
    login(keycloak, "researcher")
