"""The dashboards service's own account at the IdP: an access token by the OAuth 2 client credentials grant.

The public executive panels show platform-wide DCU aggregates to every signed-in user, not only to holders of the
`executive-statistics` role. The accounting service answers platform-wide only to that role, so the dashboards
service reads it as a service account that holds the role and nothing else (client `desp-statistics` in the
realm), and the views keep the public pages to aggregates (no user names). The secret comes only from the
environment (`DESP_STATISTICS_CLIENT_SECRET`, set by the hub when it starts the service) and is never logged.
"""

from __future__ import annotations

import desp_lab.credentials


class ServiceAccountUnavailable(Exception):
    """No token: the IdP did not answer or refused the client (the message names neither secret nor token)."""


class ClientCredentials(desp_lab.credentials.ClientCredentials):
    """`token()` (or calling the object): a current access token of `client_id`, shared by every session (the
    cached client credentials grant of `desp_lab.credentials`); no token is a `ServiceAccountUnavailable`."""

    def unavailable(self, reason: str) -> Exception:
        return ServiceAccountUnavailable(f"the identity provider {reason}")


def from_environ(environ) -> ClientCredentials | None:
    """The statistics service account the hub configured (DESP_STATISTICS_TOKEN_URL, _CLIENT_ID, _CLIENT_SECRET),
    or None when any of them is missing."""
    url = environ.get("DESP_STATISTICS_TOKEN_URL", "")
    client = environ.get("DESP_STATISTICS_CLIENT_ID", "") or "desp-statistics"
    secret = environ.get("DESP_STATISTICS_CLIENT_SECRET", "")
    if not url or not secret:
        return None
    return ClientCredentials(url, client, secret)
