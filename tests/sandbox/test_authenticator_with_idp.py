"""The authenticator's fallback for realm roles: read from the access token, verified with the IdP's keys.

Used when the userinfo response carries no roles (a realm without the role mapper in userinfo)."""

from desp_hub.authenticator import DespKeycloakAuthenticator
from tests.sandbox.test_idp import idp, tokens_for  # noqa: F401  (idp is a fixture)


def access_token_for(idp, username):  # noqa: F811
    _browser, tokens = tokens_for(idp, username)
    return tokens["access_token"]


def authenticator_for(idp):  # noqa: F811
    return DespKeycloakAuthenticator(iam_url=idp.base, realm="desp", client_id="desp-hub", discovery_timeout=5)


def test_roles_come_from_the_verified_access_token(idp):  # noqa: F811
    access_token = access_token_for(idp, "admin")
    roles = authenticator_for(idp)._roles_from_access_token(access_token)
    assert {"desp-user", "hub-admin"} <= roles


def test_a_tampered_access_token_gives_no_roles(idp):  # noqa: F811
    header, payload, signature = access_token_for(idp, "researcher").split(".")
    forged = ".".join([header, payload, signature[::-1]])
    assert authenticator_for(idp)._roles_from_access_token(forged) == set()


async def test_userinfo_without_roles_falls_back_to_the_access_token(idp):  # noqa: F811
    model = {"name": "admin", "admin": None, "auth_state": {
        "access_token": access_token_for(idp, "admin"), "oauth_user": {"preferred_username": "admin", "groups": []}}}
    model = await authenticator_for(idp).update_auth_model(model)
    assert "hub-admin" in model["auth_state"]["roles"]
