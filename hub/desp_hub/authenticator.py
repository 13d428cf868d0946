"""Login through the DESP Keycloak: GenericOAuthenticator configured from an IAM base URL and a realm.

The subclass is thin. It derives every endpoint from `iam_url` + `realm` (or reads them from the
realm's discovery document), reads realm roles as well as groups, and re-checks that the user is
still allowed on every refresh, which the stock class does not do: a user removed from the
platform group loses access at the next refresh instead of keeping it until the cookie expires.
"""

import asyncio
import json
import time
import urllib.error
import urllib.request
from functools import reduce
from urllib.parse import urlencode, urlparse

import jwt
from jupyterhub.utils import url_path_join
from oauthenticator.generic import GenericOAuthenticator
from oauthenticator.oauth2 import OAuthLogoutHandler
from traitlets import Bool, Float, Set, TraitError, Unicode, default, validate


class DespLogoutHandler(OAuthLogoutHandler):
    """Log out of the hub, then end the Keycloak session (RP-initiated logout with id_token_hint)."""

    async def get(self):
        user = self.current_user
        self._end_session_url = await self.authenticator.end_session_url(user) if user else ""
        await super().get()

    async def render_logout_page(self):
        if self._end_session_url:
            self.redirect(self._end_session_url)
            return
        await super().render_logout_page()


class DespKeycloakAuthenticator(GenericOAuthenticator):
    """Authenticate DESP users against the platform's Keycloak realm."""

    logout_handler = DespLogoutHandler

    login_service = Unicode("DESP", config=True, help="Name shown on the login button.")

    iam_url = Unicode(
        config=True,
        help="""
        Base URL of the DESP identity service (Keycloak), without the realm,
        e.g. `https://auth.destine.eu`. The issuer is `{iam_url}/realms/{realm}` and every
        OpenID Connect endpoint is derived from it (or read from its discovery document).
        """,
    )

    @validate("iam_url")
    def _strip_iam_url(self, proposal):
        url = proposal.value.rstrip("/")
        if url and urlparse(url).scheme not in ("http", "https"):
            raise TraitError(f"DespKeycloakAuthenticator.iam_url must be an http(s) URL, not {url!r}")
        return url

    realm = Unicode("desp", config=True, help="Keycloak realm of the DESP platform.")

    use_discovery = Bool(
        True,
        config=True,
        help="""
        Read endpoints from `{issuer}/.well-known/openid-configuration` at start-up.
        If the document cannot be read, the endpoints follow Keycloak's URL layout.
        Explicitly configured `authorize_url`, `token_url` or `userdata_url` always win.
        """,
    )

    discovery_timeout = Float(10, config=True, help="Seconds to wait for the discovery document.")

    groups_claim = Unicode(
        "groups",
        config=True,
        help="""
        Claim of the userinfo response that lists the user's Keycloak groups
        (the platform's onboarding guide calls it `group`). Used for `allowed_groups`,
        `admin_groups` and profile entitlement.
        """,
    )

    roles_claim = Unicode(
        "realm_access.roles",
        config=True,
        help="""
        Dotted path of the claim holding the user's realm roles. Read from the userinfo response,
        or, when userinfo does not carry it, from the verified access token.
        """,
    )

    allowed_roles = Set(
        config=True,
        help="Realm roles whose members may log in (in addition to `allowed_groups` and `allowed_users`).",
    )

    admin_roles = Set(config=True, help="Realm roles whose members are hub admins.")

    post_logout_redirect_url = Unicode(
        config=True,
        help="""
        Where Keycloak sends the browser after logout. Must be registered as a post-logout redirect
        URI of the client. Defaults to the hub's home, derived from `oauth_callback_url`.
        """,
    )

    end_keycloak_session = Bool(
        True, config=True, help="On hub logout, also end the user's Keycloak session."
    )

    @property
    def issuer(self):
        return f"{self.iam_url}/realms/{self.realm}"

    def _endpoint(self, name):
        return f"{self.issuer}/protocol/openid-connect/{name}"

    @default("username_claim")
    def _username_claim_default(self):
        return "preferred_username"

    @default("manage_groups")
    def _manage_groups_default(self):
        return True

    @default("enable_auth_state")
    def _enable_auth_state_default(self):
        return True

    @default("auth_refresh_strict")
    def _auth_refresh_strict_default(self):
        # a token-authenticated request by a user whose access was revoked must fail too
        return True

    @default("auth_state_groups_key")
    def _auth_state_groups_key_default(self):
        return f"{self.user_auth_state_key}.{self.groups_claim}"

    @default("scope")
    def _scope_default(self):
        return ["openid", "profile", "email"]

    def _discovered(self):
        """The realm's discovery document, or {} if it cannot be read (read once)."""
        if not hasattr(self, "_discovery_document"):
            self._discovery_document = {}
            if self.use_discovery and self.iam_url:
                url = f"{self.issuer}/.well-known/openid-configuration"
                try:
                    with urllib.request.urlopen(url, timeout=self.discovery_timeout) as response:
                        self._discovery_document = json.load(response)
                except (urllib.error.URLError, OSError, ValueError) as error:
                    self.log.warning("No discovery document at %s (%s); using Keycloak's URL layout", url, error)
        return self._discovery_document

    @default("authorize_url")
    def _authorize_url_default(self):
        return self._discovered().get("authorization_endpoint") or self._endpoint("auth")

    @default("token_url")
    def _token_url_default(self):
        return self._discovered().get("token_endpoint") or self._endpoint("token")

    @default("userdata_url")
    def _userdata_url_default(self):
        return self._discovered().get("userinfo_endpoint") or self._endpoint("userinfo")

    @property
    def end_session_endpoint(self):
        return self._discovered().get("end_session_endpoint") or self._endpoint("logout")

    @property
    def jwks_uri(self):
        return self._discovered().get("jwks_uri") or self._endpoint("certs")

    @default("post_logout_redirect_url")
    def _post_logout_redirect_default(self):
        if not self.oauth_callback_url:
            return ""
        callback = urlparse(self.oauth_callback_url)
        hub_prefix = callback.path.rsplit("/oauth_callback", 1)[0]
        return callback._replace(path=url_path_join(hub_prefix, "/"), query="").geturl()

    async def end_session_url(self, user):
        """The Keycloak end-session URL for `user`, or "" if the session should not be ended."""
        if not self.end_keycloak_session:
            return ""
        params = {"client_id": self.client_id}
        auth_state = await user.get_auth_state() or {}
        if auth_state.get("id_token"):
            params["id_token_hint"] = auth_state["id_token"]
        if self.post_logout_redirect_url:
            params["post_logout_redirect_uri"] = self.post_logout_redirect_url
        return f"{self.end_session_endpoint}?{urlencode(params)}"

    def _roles_from_access_token(self, access_token):
        """Realm roles from the access token, verified against the realm's signing keys."""
        try:
            signing_key = jwt.PyJWKClient(self.jwks_uri, timeout=int(self.discovery_timeout)).get_signing_key_from_jwt(
                access_token
            )
            claims = jwt.decode(
                access_token,
                signing_key.key,
                algorithms=["RS256", "ES256", "PS256"],
                issuer=self.issuer,
                options={"verify_aud": False},
            )
        except jwt.PyJWTError as error:
            self.log.warning("Could not read roles from the access token: %s", error)
            return set()
        return set(_claim(claims, self.roles_claim) or [])

    async def update_auth_model(self, auth_model):
        """Record groups and realm roles in auth_state; grant admin by role."""
        auth_state = auth_model["auth_state"]
        user_info = auth_state.get(self.user_auth_state_key) or {}
        roles = _claim(user_info, self.roles_claim)
        if roles is None and auth_state.get("access_token"):
            roles = await self._async_roles_from_access_token(auth_state["access_token"])
        auth_state["roles"] = sorted(set(roles or []))
        auth_state["groups"] = sorted(await self.get_user_groups(auth_state))
        # Not secret, readable by the user's own tokens and by services acting for them (unlike auth_state):
        # the name JupyterLab shows, and the realm roles services such as the profiles service decide on.
        auth_model["user_info"] = {
            "display_name": user_info.get("name") or auth_model["name"],
            "roles": auth_state["roles"],
        }
        if self.admin_roles:
            # admin by role, by admin_users, or (decided after this hook) by admin_groups
            has_admin_role = bool(self.admin_roles & set(auth_state["roles"]))
            auth_model["admin"] = has_admin_role or auth_model["name"] in self.admin_users
        return auth_model

    async def _async_roles_from_access_token(self, access_token):
        return await asyncio.to_thread(self._roles_from_access_token, access_token)

    async def check_allowed(self, username, auth_model):
        """Allowed by the stock rules (users, groups), or by one of `allowed_roles`."""
        if await super().check_allowed(username, auth_model):
            return True
        if auth_model and self.allowed_roles:
            roles = set((auth_model.get("auth_state") or {}).get("roles", []))
            if roles & self.allowed_roles:
                return True
        return False

    access_token_min_lifetime = Float(
        None,
        allow_none=True,
        config=True,
        help="""
        At a refresh, an access token with less life left than this (seconds) is replaced through the
        refresh token, so the token the hub hands to user servers (`desp_lab.credentials`) stays valid
        until the next refresh. Default: `auth_refresh_age` + 60 s.
        """,
    )

    def _min_token_lifetime(self):
        if self.access_token_min_lifetime is not None:
            return self.access_token_min_lifetime
        return self.auth_refresh_age + 60

    async def _refresh_expiring_token(self, user, handler):
        """A fresh auth model when the stored access token is about to expire; None when it need not be."""
        auth_state = await user.get_auth_state() or {}
        refresh_token = auth_state.get("refresh_token")
        expiry = _unverified_expiry(auth_state.get("access_token"))
        if not refresh_token or expiry is None or expiry - time.time() > self._min_token_lifetime():
            return None
        self.log.debug("Access token of %s expires in %.0f s: refreshing it", user.name, expiry - time.time())
        try:
            token_info = await self.get_token_info(handler, self.build_refresh_token_request_params(refresh_token))
            token_info.setdefault("refresh_token", refresh_token)
            return await self._token_to_auth_model(token_info)
        except Exception as error:  # a refused refresh token means a new login, as in the stock class
            self.log.info("Refreshing the access token of %s failed (%s); login required", user.name, error)
            return False

    async def refresh_user(self, user, handler=None, **kwargs):
        """Refresh tokens and user info as the stock class does, then re-check that the user is still allowed.

        Unlike the stock class, an access token close to expiry is replaced before it fails."""
        auth_model = await self._refresh_expiring_token(user, handler)
        if auth_model is None:
            auth_model = await super().refresh_user(user, handler, **kwargs)
        if not isinstance(auth_model, dict):
            return auth_model
        auth_model.setdefault("name", user.name)
        if not await self.check_allowed(user.name, auth_model):
            self.log.warning("User %s is no longer allowed by the identity provider; login required", user.name)
            return False
        return auth_model

    async def pre_spawn_start(self, user, spawner):
        """Give the user's server the current access token and where to get a fresh one."""
        auth_state = await user.get_auth_state()
        if not auth_state:
            return
        spawner.environment["DESP_ACCESS_TOKEN"] = auth_state.get("access_token", "")
        spawner.environment["DESP_IAM_ISSUER"] = self.issuer


def _unverified_expiry(token):
    """The `exp` of a JWT we hold ourselves (no need to verify our own stored token), or None."""
    if not token:
        return None
    try:
        return float(jwt.decode(token, options={"verify_signature": False})["exp"])
    except (jwt.PyJWTError, KeyError, TypeError, ValueError):
        return None


def _claim(claims, dotted_path):
    """Value at a dotted path such as `realm_access.roles`, or None."""
    try:
        return reduce(lambda value, key: value[key], dotted_path.split("."), claims)
    except (KeyError, TypeError):
        return None
