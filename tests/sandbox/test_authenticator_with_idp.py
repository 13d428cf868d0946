"""The authenticator's fallback for realm roles: read from the access token, verified with the IdP's keys.

Used when the userinfo response carries no roles (a realm without the role mapper in userinfo)."""

from desp_hub.authenticator import DespKeycloakAuthenticator
from tests.sandbox.test_idp import HUB_SECRET, idp, tokens_for  # noqa: F401  (idp is a fixture)


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


class StoredUser:
    """What refresh_user needs of a hub user: its name and its stored auth_state."""

    def __init__(self, name, auth_state):
        self.name = name
        self.auth_state = auth_state

    async def get_auth_state(self):
        return self.auth_state


async def test_an_access_token_near_expiry_is_replaced_at_refresh(idp):  # noqa: F811
    _browser, tokens = tokens_for(idp, "researcher")
    authenticator = authenticator_for(idp)
    authenticator.client_secret = HUB_SECRET
    authenticator.allowed_groups = {"desp-users"}
    user = StoredUser("researcher", {"access_token": tokens["access_token"], "refresh_token": tokens["refresh_token"],
                                     "token_response": tokens})

    authenticator.access_token_min_lifetime = 1  # the token has minutes left: the stock refresh keeps it
    kept = await authenticator.refresh_user(user)
    assert kept["auth_state"]["access_token"] == tokens["access_token"]

    authenticator.access_token_min_lifetime = 24 * 3600  # every token "expires soon": replaced via the refresh token
    refreshed = await authenticator.refresh_user(user)
    assert refreshed["auth_state"]["access_token"] != tokens["access_token"]
    assert refreshed["auth_state"]["refresh_token"]
    assert refreshed["name"] == "researcher"


async def test_a_refused_refresh_token_means_login_again(idp):  # noqa: F811
    _browser, tokens = tokens_for(idp, "researcher")
    authenticator = authenticator_for(idp)
    authenticator.client_secret = HUB_SECRET
    authenticator.access_token_min_lifetime = 24 * 3600
    user = StoredUser("researcher", {"access_token": tokens["access_token"], "refresh_token": "forged",
                                     "token_response": tokens})
    assert await authenticator.refresh_user(user) is False


def test_default_minimum_lifetime_covers_the_refresh_interval():
    authenticator = DespKeycloakAuthenticator(auth_refresh_age=300)
    assert authenticator._min_token_lifetime() == 360
