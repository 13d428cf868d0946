"""HTTP handlers of the OpenID Connect endpoints, laid out as Keycloak's `/realms/{realm}/...`.

Handlers stay thin: they read parameters, call `Provider`, and shape Keycloak-like responses
(JSON errors for APIs, an HTML error page for the browser, never a redirect to an unchecked URI).
"""

import base64
import binascii
import hashlib
import json
import logging
import secrets
import uuid
from urllib.parse import unquote_plus, urlencode

from tornado import httputil, web

from .claims import ScopeError, grant_scopes
from .provider import PKCE_VALUE, TOKEN_EXCHANGE, OAuthError
from .tokens import ALGORITHM, InvalidToken

log = logging.getLogger(__name__)

# Keycloak's cookie names: the browser session of a pending login, and the SSO session.
AUTH_SESSION_COOKIE = "AUTH_SESSION_ID"
IDENTITY_COOKIE = "KEYCLOAK_IDENTITY"  # HttpOnly, holds the session secret
SESSION_COOKIE = "KEYCLOAK_SESSION"  # readable by scripts, holds only a hash of the session id

# Keycloak puts the id of the username/password form's authenticator execution into the form URL.
LOGIN_EXECUTION = str(uuid.uuid5(uuid.NAMESPACE_URL, "desp-sandbox:auth-username-password-form"))


class BaseHandler(web.RequestHandler):
    """Shared helpers; every route carries a `realm` path argument checked against the served realm."""

    @property
    def provider(self):
        return self.settings["provider"]

    @property
    def realm(self):
        return self.provider.realm

    @property
    def issuer(self):
        return self.provider.issuer

    def prepare(self):
        self.check_realm()

    def check_realm(self):
        """Answer 404 (and return False) for any realm but the one served."""
        if self.path_kwargs.get("realm") != self.realm.name:
            self.send_json({"error": "Realm does not exist"}, 404)
            return False
        return True

    def compute_etag(self):
        # every response here is dynamic (and login pages carry one-time values): no ETag
        return None

    def param(self, name):
        """A query or form parameter, unstripped (passwords and secrets may have spaces), or None."""
        return self.get_argument(name, None, strip=False)

    def send_json(self, data, status=200):
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data))

    def send_oauth_error(self, error):
        self.send_json({"error": error.error, "error_description": error.description}, error.status)

    def send_page(self, template, status=200, **values):
        """An HTML page; pages are never cached or framed by other sites."""
        self.set_status(status)
        self.set_header("Cache-Control", "no-store, must-revalidate, max-age=0")
        self.set_header("X-Frame-Options", "SAMEORIGIN")
        self.set_header("Content-Security-Policy", "frame-src 'self'; frame-ancestors 'self'; object-src 'none';")
        self.render(template, realm_name=self.realm.display_name, **values)

    def error_page(self, message, status=400):
        """Keycloak's "We are sorry..." page; used whenever redirecting back would be unsafe."""
        self.send_page("message.html", status, title="We are sorry...", message=message)

    def cookie_path(self):
        return f"{self.settings['path_prefix']}/realms/{self.realm.name}/"

    def set_realm_cookie(self, name, value, httponly=True):
        self.set_cookie(
            name,
            value,
            path=self.cookie_path(),
            httponly=httponly,
            secure=self.settings["secure_cookies"],
            samesite="Lax",
        )

    def clear_sso_cookies(self):
        for name in (IDENTITY_COOKIE, SESSION_COOKIE):
            self.clear_cookie(name, path=self.cookie_path())

    def log_exception(self, typ, value, tb):
        # Tornado's default includes the full request (query string: codes, tokens); log the path only.
        if isinstance(value, web.HTTPError):
            if value.log_message:
                log.warning("%d %s %s: %s", value.status_code, self.request.method, self.request.path,
                            value.log_message % value.args)
        else:
            log.error("uncaught exception in %s %s", self.request.method, self.request.path, exc_info=(typ, value, tb))

    def write_error(self, status_code, **kwargs):
        self.set_header("Content-Type", "application/json")
        reason = httputil.responses.get(status_code, "Unknown")
        self.finish(json.dumps({"error": "unknown_error" if status_code >= 500 else reason}))


class NotFoundHandler(BaseHandler):
    """Anything outside the known routes."""

    def prepare(self):
        self.send_json({"error": "Not Found"}, 404)


class RealmInfoHandler(BaseHandler):
    """`GET /realms/{realm}`: Keycloak's public realm information."""

    def get(self, realm):
        self.send_json(
            {
                "realm": self.realm.name,
                "public_key": self.provider.signer.public_key_der_base64(),
                "token-service": f"{self.issuer}/protocol/openid-connect",
                "account-service": f"{self.issuer}/account",
                "tokens-not-before": 0,
            }
        )


class DiscoveryHandler(BaseHandler):
    """`/.well-known/openid-configuration`."""

    def get(self, realm):
        base = f"{self.issuer}/protocol/openid-connect"
        scopes = {"openid"}
        for client in self.realm.clients.values():
            scopes.update(client.default_scopes, client.optional_scopes)
        self.send_json(
            {
                "issuer": self.issuer,
                "authorization_endpoint": f"{base}/auth",
                "token_endpoint": f"{base}/token",
                "userinfo_endpoint": f"{base}/userinfo",
                "end_session_endpoint": f"{base}/logout",
                "jwks_uri": f"{base}/certs",
                "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials", TOKEN_EXCHANGE],
                "response_types_supported": ["code"],
                "response_modes_supported": ["query"],
                "subject_types_supported": ["public"],
                "id_token_signing_alg_values_supported": [ALGORITHM],
                "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post"],
                "code_challenge_methods_supported": ["S256"],
                "scopes_supported": sorted(scopes),
                "claims_supported": [
                    "aud", "sub", "iss", "auth_time", "name", "given_name", "family_name",
                    "preferred_username", "email", "email_verified", "acr", "sid",
                ],
                "claims_parameter_supported": False,
                "request_parameter_supported": False,
                "request_uri_parameter_supported": False,
                "authorization_response_iss_parameter_supported": True,
                "backchannel_logout_supported": False,
                "frontchannel_logout_supported": False,
            }
        )


class CertsHandler(BaseHandler):
    """`/protocol/openid-connect/certs`: the JWKS."""

    def get(self, realm):
        self.set_header("Cache-Control", "no-cache")
        self.send_json(self.provider.signer.jwks())


def add_query(uri, **params):
    """`uri` with `params` (None values dropped) appended to its query string."""
    query = urlencode({key: value for key, value in params.items() if value is not None})
    if not query:
        return uri
    return f"{uri}{'&' if '?' in uri else '?'}{query}"


class LoginFlowHandler(BaseHandler):
    """Shared by the authorization endpoint and the login form's action."""

    def render_login(self, login, error=None):
        action = f"{self.issuer}/login-actions/authenticate?" + urlencode(
            {
                "session_code": login.session_code,
                "execution": LOGIN_EXECUTION,
                "client_id": login.client_id,
                "tab_id": login.tab_id,
            }
        )
        client = self.realm.clients[login.client_id]
        self.send_page("login.html", action=action, username=login.username, error=error, client_name=client.name)

    def redirect_with_code(self, client_id, redirect_uri, state, session, scopes, nonce, challenge, method, acr):
        code = self.provider.issue_code(client_id, redirect_uri, session, scopes, nonce, challenge, method, acr)
        self.redirect(add_query(redirect_uri, state=state, session_state=session["id"], iss=self.issuer, code=code))


class AuthorizationHandler(LoginFlowHandler):
    """`/protocol/openid-connect/auth`: the authorization code flow's first leg."""

    def get(self, realm):
        self.authorize()

    def post(self, realm):
        self.authorize()

    def authorize(self):
        client = self.realm.clients.get(self.param("client_id") or "")
        if client is None:
            return self.error_page("Client not found.")
        redirect_uri = self.param("redirect_uri")
        if not client.redirect_uri_allowed(redirect_uri):
            # Never redirect to an unregistered URI: that would make the IdP an open redirector.
            return self.error_page("Invalid parameter: redirect_uri")
        state = self.param("state")

        def fail(error, description):
            self.redirect(add_query(redirect_uri, error=error, error_description=description, state=state,
                                    iss=self.issuer))

        response_type = self.param("response_type")
        if not response_type:
            return fail("invalid_request", "Missing parameter: response_type")
        if response_type != "code" or not client.standard_flow:
            return fail("unsupported_response_type",
                        "Client is not allowed to initiate browser login with given response_type.")
        if self.param("response_mode") not in (None, "", "query"):
            return fail("invalid_request", "Invalid parameter: response_mode")
        try:
            scopes = grant_scopes(client, self.param("scope"))
        except ScopeError as error:
            return fail("invalid_scope", f"Invalid scopes: {error}")
        challenge, method = self.param("code_challenge"), self.param("code_challenge_method")
        if client.pkce_method or challenge or method:
            if not challenge:
                return fail("invalid_request", "Missing parameter: code_challenge")
            if method != "S256" or (client.pkce_method and client.pkce_method != method):
                return fail("invalid_request", "Invalid parameter: code challenge method is not configured one")
            if not PKCE_VALUE.match(challenge):
                return fail("invalid_request", "Invalid parameter: code_challenge")
        nonce = self.param("nonce")
        prompt = (self.param("prompt") or "").split()

        session = None if "login" in prompt else self.provider.sso_session(self.get_cookie(IDENTITY_COOKIE))
        if session is not None:
            self.provider.store.touch_session(session["id"])
            return self.redirect_with_code(client.client_id, redirect_uri, state, session, scopes, nonce,
                                           challenge, method, acr="0")
        if "none" in prompt:
            return fail("login_required", "No active SSO session")

        auth_session_id = self.get_cookie(AUTH_SESSION_COOKIE)
        if not auth_session_id or len(auth_session_id) > 100:
            auth_session_id = secrets.token_urlsafe(24)
            self.set_realm_cookie(AUTH_SESSION_COOKIE, auth_session_id)
        login = self.provider.start_login(
            auth_session_id,
            client_id=client.client_id,
            redirect_uri=redirect_uri,
            state=state,
            nonce=nonce,
            scopes=scopes,
            code_challenge=challenge,
            code_challenge_method=method,
            username=self.param("login_hint") or "",
        )
        self.render_login(login)


class LoginActionHandler(LoginFlowHandler):
    """`/login-actions/authenticate`: where the login form posts `username` and `password`."""

    def _pending_login(self):
        login = self.provider.login_request(self.param("tab_id"))
        if login is None or login.client_id != self.param("client_id"):
            self.error_page("Your login attempt timed out. Login will start from the beginning.")
            return None
        if self.get_cookie(AUTH_SESSION_COOKIE) != login.auth_session_id:
            self.error_page("Cookie not found. Please make sure cookies are enabled in your browser.")
            return None
        return login

    def get(self, realm):
        login = self._pending_login()
        if login is not None:
            self.render_login(login)

    def post(self, realm):
        login = self._pending_login()
        if login is None:
            return
        fresh_form = self.param("session_code") == login.session_code
        login.session_code = secrets.token_urlsafe(32)  # each rendering of the form gets a new one
        if not fresh_form:
            return self.render_login(login)
        username = self.get_body_argument("username", "", strip=True)
        password = self.get_body_argument("password", "", strip=False)
        login.username = username
        user = self.provider.user_by_username(username)
        if user is None or not self.provider.password_matches(user, password):
            log.info("failed login for client %s", login.client_id)
            return self.render_login(login, error="Invalid username or password.")
        if not user["enabled"]:
            return self.render_login(login, error="Account is disabled, contact your administrator.")

        session, cookie_secret = self.provider.start_session(user)
        self.set_realm_cookie(IDENTITY_COOKIE, cookie_secret)
        session_hash = base64.urlsafe_b64encode(hashlib.sha256(session["id"].encode()).digest()).rstrip(b"=")
        self.set_realm_cookie(SESSION_COOKIE, session_hash.decode(), httponly=False)
        self.provider.finish_login(login.tab_id)
        log.info("user %s logged in to client %s", user["id"], login.client_id)
        self.redirect_with_code(login.client_id, login.redirect_uri, login.state, session, login.scopes,
                                login.nonce, login.code_challenge, login.code_challenge_method, acr="1")


class TokenHandler(BaseHandler):
    """`/protocol/openid-connect/token`."""

    def _client_credentials(self):
        """(client_id, secret) from HTTP Basic (RFC 6749 2.3.1: form-encoded parts) or the form."""
        header = self.request.headers.get("Authorization", "")
        form_client_id = self.form("client_id")
        if header[:6].lower() == "basic ":
            try:
                decoded = base64.b64decode(header[6:].strip(), validate=True).decode("utf-8")
            except (binascii.Error, UnicodeDecodeError) as error:
                raise OAuthError("invalid_client", "Invalid client or Invalid client credentials", 401) from error
            client_id, _, secret = decoded.partition(":")
            client_id, secret = unquote_plus(client_id), unquote_plus(secret)
            if form_client_id and form_client_id != client_id:
                raise OAuthError("invalid_request", "Parameter client_id does not match the authenticated client")
            return client_id, secret
        return form_client_id, self.form("client_secret")

    def form(self, name):
        """A form parameter of the token request (never the query string), unstripped, or None."""
        return self.get_body_argument(name, None, strip=False)

    def post(self, realm):
        self.set_header("Cache-Control", "no-store")
        self.set_header("Pragma", "no-cache")
        form = self.form
        try:
            client = self.provider.authenticate_client(*self._client_credentials())
            grant_type = form("grant_type")
            if not grant_type:
                raise OAuthError("invalid_request", "Missing form parameter: grant_type")
            if grant_type == "authorization_code":
                if not client.standard_flow:
                    raise OAuthError("unauthorized_client", "Client not allowed to exchange code")
                response = self.provider.exchange_code(
                    client, form("code"), form("redirect_uri"), form("code_verifier")
                )
            elif grant_type == "refresh_token":
                response = self.provider.refresh(client, form("refresh_token"))
            elif grant_type == "client_credentials":
                response = self.provider.client_credentials(client, form("scope"))
            elif grant_type == TOKEN_EXCHANGE:
                response = self.provider.exchange_token(
                    client,
                    form("subject_token"),
                    form("subject_token_type"),
                    form("audience"),
                    form("subject_issuer"),
                    form("requested_token_type"),
                )
            else:
                raise OAuthError("unsupported_grant_type", "Unsupported grant_type")
        except OAuthError as error:
            log.info("token request refused: %s (%s)", error.error, error.description)
            return self.send_oauth_error(error)
        self.send_json(response)


def bearer_token(handler):
    """The token of an `Authorization: Bearer ...` header, or None."""
    header = handler.request.headers.get("Authorization", "")
    if header[:7].lower() == "bearer ":
        return header[7:].strip() or None
    return None


class UserinfoHandler(BaseHandler):
    """`/protocol/openid-connect/userinfo` (GET and POST), from the user's current state."""

    def get(self, realm):
        self.userinfo(bearer_token(self))

    def post(self, realm):
        self.userinfo(bearer_token(self) or self.get_body_argument("access_token", None))

    def userinfo(self, token):
        try:
            claims, user, client = self.provider.verify_access_token(token)
        except InvalidToken as error:
            reason = str(error)
            kind = "invalid_request" if token is None else "invalid_token"
            self.set_header("WWW-Authenticate", f'Bearer realm="{self.realm.name}", error="{kind}", '
                                                f'error_description="{reason}"')
            return self.send_json({"error": kind, "error_description": reason}, 401)
        self.set_header("Cache-Control", "no-store")
        self.send_json(self.provider.userinfo(claims, user, client))


class LogoutHandler(BaseHandler):
    """`/protocol/openid-connect/logout`: RP-initiated logout (GET and POST)."""

    def get(self, realm):
        self.logout()

    def post(self, realm):
        self.logout()

    def logout(self):
        redirect_uri = self.param("post_logout_redirect_uri")
        hint = self.param("id_token_hint")
        client_id = self.param("client_id")
        if redirect_uri and not (hint or client_id):
            return self.error_page("Missing parameters: id_token_hint")
        client, hint_sid = None, None
        if hint:
            try:
                claims = self.provider.verify_id_token_hint(hint)
            except InvalidToken:
                return self.error_page("Invalid parameter: id_token_hint")
            client, hint_sid = self.realm.clients.get(claims.get("azp")), claims.get("sid")
            if client is None:
                return self.error_page("Invalid parameter: id_token_hint")
        if client_id:
            named = self.realm.clients.get(client_id)
            if named is None:
                return self.error_page("Invalid parameter: client_id")
            if client is not None and named is not client:
                return self.error_page("Parameter client_id differs from the client of id_token_hint")
            client = named
        if redirect_uri and not client.post_logout_redirect_uri_allowed(redirect_uri):
            return self.error_page("Invalid redirect uri")

        cookie_session = self.provider.store.session_by_cookie(self.get_cookie(IDENTITY_COOKIE))
        for sid in {hint_sid, cookie_session and cookie_session["id"]} - {None}:
            if self.provider.end_session(sid):
                log.info("session ended by logout")
        self.clear_sso_cookies()
        if redirect_uri:
            return self.redirect(add_query(redirect_uri, state=self.param("state")))
        self.send_page("message.html", title="You are logged out", message="You are logged out.")
