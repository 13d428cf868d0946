"""The dashboards service's own account at the IdP: an access token by the OAuth 2 client credentials grant.

The public executive panels show platform-wide DCU aggregates to every signed-in user, not only to holders of the
`executive-statistics` role. The accounting service answers platform-wide only to that role, so the dashboards
service reads it as a service account that holds the role and nothing else (client `desp-statistics` in the
realm), and the views keep the public pages to aggregates (no user names). The secret comes only from the
environment (`DESP_STATISTICS_CLIENT_SECRET`, set by the hub when it starts the service) and is never logged.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import requests

HTTP_TIMEOUT_SECONDS = 10.0


class ServiceAccountUnavailable(Exception):
    """No token: the IdP did not answer or refused the client (the message names neither secret nor token)."""


class ClientCredentials:
    """`token()` (or calling the object): a current access token of `client_id`, shared by every session.

    A token is reused until `margin` seconds (at most half its lifetime) before it expires, so the IdP sees one
    request per token lifetime, not one per page.
    """

    def __init__(self, token_url: str, client_id: str, secret: str, *, margin: float = 30.0,
                 timeout: float = HTTP_TIMEOUT_SECONDS, clock: Callable[[], float] = time.monotonic):  # fmt: skip
        self.token_url = token_url
        self.client_id = client_id
        self._secret = secret
        self.margin = margin
        self.timeout = timeout
        self._clock = clock
        self._lock = threading.Lock()
        self._token = ""
        self._expires = 0.0

    def __repr__(self) -> str:
        return f"ClientCredentials({self.token_url!r}, {self.client_id!r})"

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
        try:
            response = requests.post(self.token_url, data={"grant_type": "client_credentials"},
                                     auth=(self.client_id, self._secret), timeout=self.timeout)  # fmt: skip
        except requests.RequestException as error:
            raise ServiceAccountUnavailable(f"the identity provider did not answer ({type(error).__name__})") from None
        if response.status_code != 200:
            raise ServiceAccountUnavailable(
                f"the identity provider refused client {self.client_id!r} (HTTP {response.status_code})")
        try:
            body = response.json()
            return str(body["access_token"]), float(body.get("expires_in") or 60)
        except (ValueError, KeyError, TypeError):
            raise ServiceAccountUnavailable("the identity provider's answer held no access token") from None


def from_environ(environ) -> ClientCredentials | None:
    """The statistics service account the hub configured (DESP_STATISTICS_TOKEN_URL, _CLIENT_ID, _CLIENT_SECRET),
    or None when any of them is missing."""
    url = environ.get("DESP_STATISTICS_TOKEN_URL", "")
    client = environ.get("DESP_STATISTICS_CLIENT_ID", "") or "desp-statistics"
    secret = environ.get("DESP_STATISTICS_CLIENT_SECRET", "")
    if not url or not secret:
        return None
    return ClientCredentials(url, client, secret)
