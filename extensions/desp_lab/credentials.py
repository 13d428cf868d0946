"""The DESP access token inside a user's server, kept fresh by the hub.

At spawn the hub puts the current access token in `DESP_ACCESS_TOKEN`. A long-running server asks
the hub for a fresh one: the hub refreshes the user's Keycloak tokens when they are about to expire
and returns them in the user's `auth_state`, which the server's own API token may read
(scope `admin:auth_state!user`, see `Spawner.server_token_scopes` in the hub's configuration). Talks to the hub over HTTP only.
"""

import json
import os
import urllib.error
import urllib.parse
import urllib.request


class CredentialsError(RuntimeError):
    """No access token can be had (not running under the hub, or the login has expired)."""


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
