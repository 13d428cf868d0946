"""DespKeycloakAuthenticator without a network: endpoints derived from iam_url + realm, who is allowed, who is admin."""

import pytest
from traitlets import TraitError

from desp_hub.authenticator import DespKeycloakAuthenticator, _claim


def make_authenticator(**config):
    settings = dict(iam_url="https://auth.destine.eu", realm="desp", use_discovery=False, client_id="desp-hub",
                    allowed_groups={"desp-users"}, admin_groups={"hub-admins"}, admin_roles={"hub-admin"})
    settings.update(config)
    return DespKeycloakAuthenticator(**settings)


def test_endpoints_follow_keycloak_layout():
    authenticator = make_authenticator(oauth_callback_url="https://hub.example/hub/oauth_callback")
    base = "https://auth.destine.eu/realms/desp/protocol/openid-connect"
    assert authenticator.issuer == "https://auth.destine.eu/realms/desp"
    assert authenticator.authorize_url == f"{base}/auth"
    assert authenticator.token_url == f"{base}/token"
    assert authenticator.userdata_url == f"{base}/userinfo"
    assert authenticator.end_session_endpoint == f"{base}/logout"
    assert authenticator.jwks_uri == f"{base}/certs"
    assert authenticator.post_logout_redirect_url == "https://hub.example/hub/"
    assert authenticator.username_claim == "preferred_username"
    assert authenticator.auth_state_groups_key == "oauth_user.groups"
    assert authenticator.manage_groups and authenticator.enable_auth_state and authenticator.enable_pkce


def test_groups_claim_is_configurable():
    assert make_authenticator(groups_claim="group").auth_state_groups_key == "oauth_user.group"


def test_explicit_endpoint_wins_over_derived():
    authenticator = make_authenticator(token_url="https://other.example/token")
    assert authenticator.token_url == "https://other.example/token"


def test_iam_url_must_be_http():
    with pytest.raises(TraitError, match="iam_url"):
        make_authenticator(iam_url="ftp://auth.example")


def test_unreachable_discovery_falls_back_to_layout():
    authenticator = make_authenticator(iam_url="http://127.0.0.1:9", use_discovery=True, discovery_timeout=1)
    assert authenticator.authorize_url == "http://127.0.0.1:9/realms/desp/protocol/openid-connect/auth"


def auth_model(name, groups=(), roles=()):
    return {
        "name": name,
        "admin": None,
        "auth_state": {"oauth_user": {"preferred_username": name, "groups": list(groups),
                                      "realm_access": {"roles": list(roles)}}},
    }


CASES = [
    # id, groups, roles, allowed, admin
    ("platform-member", ["desp-users"], [], True, False),
    ("no-groups", [], [], False, False),
    ("other-group-only", ["power-users"], [], False, False),
    ("allowed-by-role", [], ["desp-user"], True, False),
    ("admin-by-group", ["hub-admins"], [], True, True),
    ("admin-by-role", [], ["hub-admin"], True, True),
]


@pytest.mark.parametrize("groups, roles, allowed, admin", [case[1:] for case in CASES], ids=[c[0] for c in CASES])
async def test_allowed_and_admin_truth_table(groups, roles, allowed, admin):
    authenticator = make_authenticator(allowed_roles={"desp-user"})
    model = auth_model("someone", groups, roles)
    model = await authenticator.update_auth_model(model)
    model = await authenticator._apply_managed_groups(model)
    assert model["auth_state"]["roles"] == sorted(roles)
    assert model["auth_state"]["groups"] == sorted(groups)
    assert bool(model["admin"]) is admin
    assert model["user_info"] == {"display_name": "someone", "roles": sorted(roles)}  # readable by services
    assert await authenticator.check_allowed("someone", model) is allowed


def test_claim_reads_dotted_paths():
    claims = {"realm_access": {"roles": ["a"]}, "groups": ["g"]}
    assert _claim(claims, "realm_access.roles") == ["a"]
    assert _claim(claims, "groups") == ["g"]
    assert _claim(claims, "resource_access.x.roles") is None
    assert _claim({"realm_access": "oops"}, "realm_access.roles") is None
