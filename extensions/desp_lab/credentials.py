"""The DESP access token inside a user's server, kept fresh by the hub, and the token for data downloads.

At spawn the hub puts the current access token in `DESP_ACCESS_TOKEN`. A long-running server asks
the hub for a fresh one: the hub refreshes the user's Keycloak tokens when they are about to expire
and returns them in the user's `auth_state`, which the server's own API token may read
(scope `admin:auth_state!user`, see `Spawner.server_token_scopes` in the hub's configuration). Talks to the hub over HTTP only.

Tokens are kept in memory until shortly before they expire (`exp` claim), so the SDK can ask for one
before every request without a round trip each time, and the user never sees a refresh happen.

`data_token()` is what catalogue downloads and the cache use. Where data sits behind another realm
(the Data Lake exchanges a DESP token for its own, RFC 8693), configure the exchange with environment
variables; otherwise it is the DESP access token itself:

* `DESP_TOKEN_EXCHANGE_URL`: the token endpoint that exchanges (e.g. `.../realms/dedl/protocol/openid-connect/token`);
* `DESP_TOKEN_EXCHANGE_CLIENT_ID` (default `hda-public`), `DESP_TOKEN_EXCHANGE_AUDIENCE` (default: the client id);
* `DESP_TOKEN_EXCHANGE_SUBJECT_ISSUER` (the Data Lake uses `desp-oidc`; unset for an exchange in the same realm);
* `DESP_TOKEN_EXCHANGE_CLIENT_SECRET` (only for a confidential client).
"""

import base64
import json
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

TOKEN_EXCHANGE_GRANT = "urn:ietf:params:oauth:grant-type:token-exchange"
ACCESS_TOKEN_TYPE = "urn:ietf:params:oauth:token-type:access_token"
MIN_REMAINING_SECONDS = 60  # a cached token with less life left than this is replaced

_cache: dict[tuple, tuple[str, float]] = {}  # key -> (token, expiry as epoch seconds)
_cache_lock = threading.Lock()


class CredentialsError(RuntimeError):
    """No access token can be had (not running under the hub, or the login has expired)."""


def token_expiry(token: str) -> float | None:
    """The `exp` claim of a JWT (read, not verified: the server that receives the token verifies it), or None."""
    try:
        payload = token.split(".")[1]
        claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
        return float(claims["exp"])
    except (IndexError, ValueError, KeyError, TypeError):
        return None


def _cached(key, fetch):
    """The cached token for `key` while it has MIN_REMAINING_SECONDS left, else a fresh one from `fetch()`."""
    with _cache_lock:
        token, expiry = _cache.get(key, (None, 0.0))
    if token and expiry - time.time() > MIN_REMAINING_SECONDS:
        return token
    token = fetch()
    expiry = token_expiry(token)
    with _cache_lock:
        if expiry is None:
            _cache.pop(key, None)  # opaque token: nothing tells how long it lives, so it is never reused
        else:
            _cache[key] = (token, expiry)
    return token


def forget_cached_tokens() -> None:
    """Drop every cached token (after a logout, or when a server refused one)."""
    with _cache_lock:
        _cache.clear()


def access_token(environ=None, timeout: float = 10) -> str:
    """A currently valid DESP access token for the owner of this server."""
    environ = os.environ if environ is None else environ
    api_url = environ.get("JUPYTERHUB_API_URL")
    api_token = environ.get("JUPYTERHUB_API_TOKEN")
    username = environ.get("JUPYTERHUB_USER")
    if not (api_url and api_token and username):
        token = environ.get("DESP_ACCESS_TOKEN")
        if token:
            return token
        raise CredentialsError("Not running under DESP Hub: JUPYTERHUB_API_URL, _API_TOKEN and _USER are not set.")
    return _cached(("hub", api_url, username), lambda: _token_from_hub(api_url, api_token, username, timeout))


def bearer_token(token=None, default=None) -> str:
    """The bearer token to send now, from what an SDK client was given as `token`.

    A string is itself; a zero-argument callable is called; None asks `default()`, by default `access_token()`.
    Asked at each request, so a token the hub has refreshed is used at once. Raises CredentialsError when there
    is no token to be had; each client turns that into its own error.
    """
    if callable(token):
        return token()
    if token is not None:
        return token
    return (default or access_token)()


def _token_from_hub(api_url, api_token, username, timeout):
    # /users/{name} (not /user) is the model that carries auth_state; asking refreshes it if stale.
    request = urllib.request.Request(
        f"{api_url.rstrip('/')}/users/{urllib.parse.quote(username)}", headers={"Authorization": f"token {api_token}"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            model = json.load(response)
    except urllib.error.HTTPError as error:
        raise CredentialsError(f"The hub refused to give a fresh token (HTTP {error.code}); log in again.") from None
    auth_state = model.get("auth_state") or {}
    token = auth_state.get("access_token")
    if not token:
        raise CredentialsError("The hub holds no access token for this user; log in again.")
    return token


def data_token(environ=None, timeout: float = 10) -> str:
    """The bearer token for data access: the DESP access token, exchanged (RFC 8693) when so configured."""
    environ = os.environ if environ is None else environ
    exchange_url = environ.get("DESP_TOKEN_EXCHANGE_URL")
    if not exchange_url:
        return access_token(environ, timeout)
    client_id = environ.get("DESP_TOKEN_EXCHANGE_CLIENT_ID") or "hda-public"
    form = {
        "grant_type": TOKEN_EXCHANGE_GRANT,
        "subject_token": access_token(environ, timeout),
        "subject_token_type": ACCESS_TOKEN_TYPE,
        "client_id": client_id,
        "audience": environ.get("DESP_TOKEN_EXCHANGE_AUDIENCE") or client_id,
    }
    if environ.get("DESP_TOKEN_EXCHANGE_SUBJECT_ISSUER"):
        form["subject_issuer"] = environ["DESP_TOKEN_EXCHANGE_SUBJECT_ISSUER"]
    if environ.get("DESP_TOKEN_EXCHANGE_CLIENT_SECRET"):
        form["client_secret"] = environ["DESP_TOKEN_EXCHANGE_CLIENT_SECRET"]
    key = ("exchange", exchange_url, client_id, form["audience"], form["subject_token"])
    return _cached(key, lambda: _exchange(exchange_url, form, timeout))


def _exchange(url, form, timeout):
    request = urllib.request.Request(url, data=urllib.parse.urlencode(form).encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            answer = json.load(response)
    except urllib.error.HTTPError as error:
        try:
            reason = json.load(error).get("error_description") or error.reason
        except ValueError:
            reason = error.reason
        raise CredentialsError(f"The token exchange at {url} was refused (HTTP {error.code}: {reason}).") from None
    except (urllib.error.URLError, OSError) as error:
        raise CredentialsError(f"The token exchange at {url} is not reachable: {error}") from None
    token = answer.get("access_token")
    if not token:
        raise CredentialsError(f"The token exchange at {url} returned no access token.")
    return token


class ClientCredentials:
    """A service's own access token by the OAuth 2 client credentials grant: calling the object (or `token()`)
    returns a current token of `client_id`, shared by every caller (thread-safe).

    A token is reused until `margin` seconds (at most half its lifetime) before it expires, so the identity provider
    sees one request per token lifetime, not one per use. The hub's metering (`desp_hub.metering`) and the
    dashboards' statistics account (`desp_dashboards.service_account`) use it; each raises its own error through
    `unavailable(reason)` when no token can be had. The secret is never logged or shown.
    """

    def __init__(self, token_url: str, client_id: str, client_secret: str, *, margin: float = 30,
                 timeout: float = 10, clock=time.monotonic):  # fmt: skip
        self.token_url = token_url
        self.client_id = client_id
        self._secret = client_secret
        self.margin = margin
        self.timeout = timeout
        self._clock = clock
        self._token = ""
        self._expires = 0.0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.token_url!r}, {self.client_id!r}, client_secret=***)"

    def unavailable(self, reason: str) -> Exception:
        """The error raised when no token can be had; `reason` says why in a few words (never the secret)."""
        return CredentialsError(f"No access token for client {self.client_id!r} from {self.token_url}: {reason}.")

    def forget(self) -> None:
        """Drop the cached token (a service refused it): the next call asks the identity provider."""
        with self._lock:
            self._token, self._expires = "", 0.0

    def __call__(self) -> str:
        return self.token()

    def token(self) -> str:
        with self._lock:
            if self._token and self._clock() < self._expires:
                return self._token
            token, lifetime = self._fetch()
            self._token = token
            self._expires = self._clock() + max(0.0, lifetime - min(self.margin, lifetime / 2))
            return token

    def _fetch(self) -> tuple[str, float]:
        import requests

        if not self.token_url:
            raise self.unavailable("no token URL configured")
        try:
            response = requests.post(self.token_url, data={"grant_type": "client_credentials"},
                                     auth=(self.client_id, self._secret), timeout=self.timeout)  # fmt: skip
        except requests.RequestException as error:
            raise self.unavailable(f"did not answer ({type(error).__name__})") from None
        if response.status_code != 200:
            raise self.unavailable(f"refused client {self.client_id!r} (HTTP {response.status_code})")
        try:
            body = response.json()
            return str(body["access_token"]), float(body.get("expires_in") or 60)
        except (ValueError, KeyError, TypeError):
            raise self.unavailable("answered without an access token") from None
