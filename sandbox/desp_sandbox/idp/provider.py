"""The identity provider's behaviour, without HTTP: logins, codes, token grants, token checks, sessions.

Handlers (`handlers.py`, `admin.py`) translate requests into calls here and results into responses.
Pending logins and authorization codes live in memory (they last seconds to minutes); SSO sessions,
refresh tokens and user changes go to the `Store`.
"""

import base64
import hashlib
import re
import secrets
import time
import uuid
from dataclasses import dataclass, field

from . import claims as claim_builders
from .tokens import InvalidToken, half_hash

PKCE_VALUE = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")
TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"


class OAuthError(Exception):
    """An OAuth error response: `{"error": ..., "error_description": ...}` with an HTTP status."""

    def __init__(self, error, description, status=400):
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status


@dataclass
class LoginRequest:
    """An authorization request waiting for the user to fill in the login form (a Keycloak "tab")."""

    tab_id: str
    auth_session_id: str
    client_id: str
    redirect_uri: str
    state: str | None
    nonce: str | None
    scopes: list
    code_challenge: str | None
    code_challenge_method: str | None
    expires: float
    session_code: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    username: str = ""


@dataclass
class CodeGrant:
    """What an authorization code stands for, until it is exchanged (once) or expires."""

    client_id: str
    redirect_uri: str
    sid: str
    user_id: str
    scopes: list
    nonce: str | None
    code_challenge: str | None
    code_challenge_method: str | None
    acr: str
    expires: float


def s256(verifier):
    """The PKCE S256 challenge of a verifier."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


class Provider:
    """One realm's OpenID Connect provider."""

    def __init__(self, realm, store, signer, access_token_lifespan=None, clock=time.time):
        self.realm = realm
        self.store = store
        self.signer = signer
        self.issuer = signer.issuer
        self.access_token_lifespan = access_token_lifespan or realm.access_token_lifespan
        self.clock = clock
        self._logins = {}
        self._codes = {}

    # users: the realm file plus the changes made through the admin API

    def user(self, user_id):
        """A user's current state (a new dict), or None."""
        base = self.realm.users.get(user_id)
        if base is None:
            return None
        user = dict(base)
        user.update(self.store.user_changes(user_id))
        return user

    def users(self):
        """All users' current state, in realm file order."""
        return [self.user(user_id) for user_id in self.realm.users]

    def user_by_username(self, username):
        """The current state of the user called `username` (case-insensitive), or None."""
        username = (username or "").strip().lower()
        for user_id, base in self.realm.users.items():
            if base["username"] == username:
                return self.user(user_id)
        return None

    def update_user(self, user_id, **fields):
        """Change a user (admin API)."""
        self.store.update_user(user_id, **fields)

    @staticmethod
    def password_matches(user, password):
        """Constant-time check of a user's password; users without one (service accounts) never match."""
        if not user.get("password") or not password:
            return False
        return secrets.compare_digest(user["password"].encode(), password.encode())

    # the browser login

    def _prune(self):
        now = self.clock()
        for pending in (self._logins, self._codes):
            for key in [key for key, value in pending.items() if value.expires <= now]:
                del pending[key]

    def start_login(self, auth_session_id, **request):
        """Remember an authorization request until the form comes back."""
        self._prune()
        login = LoginRequest(
            tab_id=secrets.token_urlsafe(8),
            auth_session_id=auth_session_id,
            expires=self.clock() + self.realm.login_lifespan,
            **request,
        )
        self._logins[login.tab_id] = login
        return login

    def login_request(self, tab_id):
        """A pending login by tab id, or None if unknown or expired."""
        self._prune()
        return self._logins.get(tab_id or "")

    def finish_login(self, tab_id):
        """Forget a pending login once it succeeded."""
        self._logins.pop(tab_id, None)

    def start_session(self, user):
        """A new SSO session for `user`; returns (session, cookie secret)."""
        return self.store.create_session(user["id"])

    def sso_session(self, cookie_secret):
        """The live SSO session of a browser cookie whose user may still log in, or None."""
        session = self.store.session_by_cookie(cookie_secret)
        if session is None:
            return None
        user = self.user(session["user_id"])
        if user is None or not user["enabled"]:
            self.store.end_session(session["id"])
            return None
        return session

    def issue_code(self, client_id, redirect_uri, session, scopes, nonce, code_challenge, code_challenge_method, acr):
        """A single-use authorization code, valid for the realm's `accessCodeLifespan`."""
        self._prune()
        code = secrets.token_urlsafe(32)
        self._codes[code] = CodeGrant(
            client_id=client_id,
            redirect_uri=redirect_uri,
            sid=session["id"],
            user_id=session["user_id"],
            scopes=list(scopes),
            nonce=nonce,
            code_challenge=code_challenge,
            code_challenge_method=code_challenge_method,
            acr=acr,
            expires=self.clock() + self.realm.code_lifespan,
        )
        return code

    def end_session(self, sid):
        """Log out: end the SSO session, revoking its refresh tokens (its access tokens then fail)."""
        return self.store.end_session(sid)

    # the token endpoint

    def authenticate_client(self, client_id, client_secret):
        """The client a token request comes from (`client_secret_basic` or `client_secret_post`)."""
        if not client_id:
            raise OAuthError("invalid_client", "Missing parameter: client_id", 401)
        client = self.realm.clients.get(client_id)
        if client is None:
            raise OAuthError("invalid_client", "Invalid client or Invalid client credentials", 401)
        if client.public:
            return client
        if not client_secret or not client.secret or not secrets.compare_digest(
            client.secret.encode(), client_secret.encode()
        ):
            raise OAuthError("unauthorized_client", "Invalid client or Invalid client credentials", 401)
        return client

    def exchange_code(self, client, code, redirect_uri, code_verifier):
        """`grant_type=authorization_code`."""
        if not code:
            raise OAuthError("invalid_request", "Missing parameter: code")
        self._prune()
        grant = self._codes.pop(code, None)  # single use, whatever happens next
        if grant is None:
            raise OAuthError("invalid_grant", "Code not valid")
        if grant.client_id != client.client_id:
            raise OAuthError("invalid_grant", "Auth error")
        if redirect_uri != grant.redirect_uri:
            raise OAuthError("invalid_grant", "Incorrect redirect_uri")
        if grant.code_challenge:
            if not code_verifier:
                raise OAuthError("invalid_grant", "PKCE code verifier not specified")
            if not PKCE_VALUE.match(code_verifier):
                raise OAuthError("invalid_grant", "PKCE invalid code verifier")
            if not secrets.compare_digest(s256(code_verifier), grant.code_challenge):
                raise OAuthError("invalid_grant", "PKCE verification failed: Code mismatch")
        elif code_verifier:
            raise OAuthError("invalid_grant", "PKCE code verifier specified but challenge not present in authorization")
        session = self.store.session(grant.sid)
        if session is None:
            raise OAuthError("invalid_grant", "Session not active")
        user = self.user(grant.user_id)
        if user is None or not user["enabled"]:
            raise OAuthError("invalid_grant", "User disabled")
        return self._token_response(client, user, session, grant.scopes, grant.nonce, grant.acr)

    def refresh(self, client, refresh_token):
        """`grant_type=refresh_token`, rotating the refresh token when the realm revokes used ones."""
        if not refresh_token:
            raise OAuthError("invalid_request", "Missing parameter: refresh_token")
        try:
            token = self.signer.verify(refresh_token, "Refresh", self.clock())
        except InvalidToken as error:
            raise OAuthError("invalid_grant", "Invalid refresh token") from error
        if token.get("azp") != client.client_id:
            raise OAuthError("invalid_grant", "Invalid refresh token. Token client and authorized client don't match")
        session = self.store.session(token.get("sid"))
        if session is None:
            raise OAuthError("invalid_grant", "Session not active")
        record = self.store.refresh_token(token.get("jti"))
        if record is None:
            raise OAuthError("invalid_grant", "Maximum allowed refresh token reuse exceeded")
        user = self.user(token["sub"])
        if user is None or not user["enabled"]:
            raise OAuthError("invalid_grant", "User disabled")
        if self.realm.revoke_refresh_token:
            self.store.use_refresh_token(token["jti"], self.realm.refresh_token_max_reuse + 1)
        self.store.touch_session(session["id"])
        session = self.store.session(session["id"])
        try:
            scopes = claim_builders.grant_scopes(client, token.get("scope"))
        except claim_builders.ScopeError as error:
            raise OAuthError("invalid_scope", f"Invalid scopes: {error}") from error
        return self._token_response(client, user, session, scopes, None, record.get("acr", "1"))

    def client_credentials(self, client, scope):
        """`grant_type=client_credentials`: an access token for the client's service-account user."""
        user = self.realm.service_account(client.client_id)
        if client.public or not client.service_accounts or user is None:
            raise OAuthError("unauthorized_client", "Client not enabled to retrieve service account")
        user = self.user(user["id"])
        if not user["enabled"]:
            raise OAuthError("invalid_grant", "User disabled")
        try:
            scopes = claim_builders.grant_scopes(client, scope)
        except claim_builders.ScopeError as error:
            raise OAuthError("invalid_scope", f"Invalid scopes: {error}") from error
        now = int(self.clock())
        access = self._access_token_claims(client, user, scopes, now, now, session=None, acr="1")
        access["client_id"] = client.client_id
        return self._access_only_response(access)

    def exchange_token(self, client, subject_token, subject_token_type, audience, subject_issuer,
                       requested_token_type):
        """RFC 8693 token exchange (`grant_type=urn:ietf:params:oauth:grant-type:token-exchange`).

        Internal-to-internal only, as Keycloak's standard token exchange: the subject token is a live access
        token of this realm, the client must have `standard.token.exchange.enabled`, and `audience` names a
        client of the realm; the answer is an access token for the same user and session, for that audience.
        External tokens (`subject_issuer`, the Data Lake's `desp-oidc`) need an identity-provider link the
        sandbox does not have: refused with a clear message rather than accepted unchecked.
        """
        if not client.token_exchange:
            raise OAuthError("unauthorized_client", "Client not allowed to exchange")
        if subject_issuer:
            raise OAuthError("invalid_request", "Exchange of external tokens (subject_issuer) is not supported here")
        if not subject_token:
            raise OAuthError("invalid_request", "Missing parameter: subject_token")
        if subject_token_type not in (None, ACCESS_TOKEN_TYPE):
            raise OAuthError("invalid_request", "Parameter 'subject_token_type' should be access token type")
        if requested_token_type not in (None, ACCESS_TOKEN_TYPE):
            raise OAuthError("invalid_request", "requested_token_type unsupported")
        try:
            claims, user, _ = self.verify_access_token(subject_token)
        except InvalidToken as error:
            raise OAuthError("invalid_token", "Invalid token") from error
        target = self.realm.clients.get(audience) if audience else client
        if target is None:
            raise OAuthError("invalid_client", f"Audience not found: {audience}")
        session = self.store.session(claims.get("sid")) if claims.get("sid") else None
        now = int(self.clock())
        access = self._access_token_claims(client, user, list(client.default_scopes), now,
                                           claims.get("auth_time", now), session, claims.get("acr", "1"))
        access["aud"] = target.client_id
        return self._access_only_response(access, issued_token_type=ACCESS_TOKEN_TYPE)

    def _access_only_response(self, access, **extra):
        """A token response carrying an access token and no refresh token (client credentials, exchange)."""
        return {
            "access_token": self.signer.sign(access),
            "expires_in": self.access_token_lifespan,
            "refresh_expires_in": 0,
            "token_type": "Bearer",
            **extra,
            "not-before-policy": 0,
            "scope": access["scope"],
        }

    def _access_token_claims(self, client, user, scopes, now, auth_time, session, acr):
        claims = {
            "exp": now + self.access_token_lifespan,
            "iat": now,
            "auth_time": auth_time,
            "jti": str(uuid.uuid4()),
            "iss": self.issuer,
        }
        claims.update(claim_builders.access_token_claims(self.realm, client, user, scopes))
        if session is not None:
            claims["sid"] = claims["session_state"] = session["id"]
        claims["acr"] = acr
        return claims

    def _token_response(self, client, user, session, scopes, nonce, acr):
        now = int(self.clock())
        access = self._access_token_claims(client, user, scopes, now, session["auth_time"], session, acr)
        access_token = self.signer.sign(access)
        refresh_exp = self.store.session_expiry(session["id"])
        refresh = {
            "exp": refresh_exp,
            "iat": now,
            "jti": str(uuid.uuid4()),
            "iss": self.issuer,
            "aud": self.issuer,
            "sub": user["id"],
            "typ": "Refresh",
            "azp": client.client_id,
            "sid": session["id"],
            "session_state": session["id"],
            "scope": access["scope"],
        }
        self.store.add_refresh_token(refresh["jti"], session["id"], client.client_id, refresh_exp, acr=acr)
        response = {
            "access_token": access_token,
            "expires_in": self.access_token_lifespan,
            "refresh_expires_in": max(refresh_exp - now, 0),
            "refresh_token": self.signer.sign(refresh),
            "token_type": "Bearer",
        }
        if "openid" in scopes:
            id_token = {
                "exp": access["exp"],
                "iat": now,
                "auth_time": session["auth_time"],
                "jti": str(uuid.uuid4()),
                "iss": self.issuer,
            }
            id_token.update(claim_builders.id_token_claims(self.realm, client, user, scopes))
            if nonce:
                id_token["nonce"] = nonce
            id_token["sid"] = id_token["session_state"] = session["id"]
            id_token["at_hash"] = half_hash(access_token)
            id_token["acr"] = acr
            response["id_token"] = self.signer.sign(id_token)
        response.update({"not-before-policy": 0, "session_state": session["id"], "scope": access["scope"]})
        return response

    # token checks (userinfo, admin API, logout)

    def verify_access_token(self, token):
        """(claims, current user, client) of a live access token; raises InvalidToken otherwise.

        Besides signature and expiry, the token's SSO session must still be live (logout ends it)
        and its user enabled: Keycloak checks both too.
        """
        claims = self.signer.verify(token, "Bearer", self.clock())
        user = self.user(claims.get("sub"))
        if user is None or not user["enabled"]:
            raise InvalidToken("User not found or disabled")
        if claims.get("sid") and self.store.session(claims["sid"]) is None:
            raise InvalidToken("User session not found")
        client = self.realm.clients.get(claims.get("azp"))
        if client is None:
            raise InvalidToken("Client not found")
        return claims, user, client

    def verify_id_token_hint(self, token):
        """Claims of an ID token this realm issued; expired ones are fine as a logout hint."""
        return self.signer.verify(token, "ID", self.clock(), check_expiry=False)

    def userinfo(self, claims, user, client):
        """The userinfo response for a verified access token, from the user's current state."""
        try:
            scopes = claim_builders.grant_scopes(client, claims.get("scope"))
        except claim_builders.ScopeError:
            scopes = list(client.default_scopes)
        return claim_builders.userinfo_claims(self.realm, client, user, scopes)
