"""The hub authenticates the gateway's users; the DESP authenticator's realm roles come along.

dask-gateway-server's `JupyterHubAuthenticator` checks the caller's hub token (`GET /hub/api/user` with it) and
that the token may access the `dask-gateway` service. Its `User` has the name, groups and admin flag, but the Dask
limits go by Keycloak realm role, which the DESP authenticator publishes in the user's `user_info.roles`
(desp_hub.authenticator). Least privilege: the roles are read with the caller's own token, which may always read
its owner's `user_info` (scope `read:users:name` of self), so the gateway's own token needs no user-reading scope.

The profiles of the user's running servers (for the per-profile limits) are read with the gateway's own token,
which holds only `read:servers` (the server models: `user_options.profile`; nothing of auth_state or tokens).
"""

from __future__ import annotations

from dask_gateway_server.auth import JupyterHubAuthenticator, unauthorized
from dask_gateway_server.models import User


class DespGatewayUser(User):
    """A gateway user with the realm roles the hub knows for them."""

    def __init__(self, name, groups=(), admin=False, roles=()):
        super().__init__(name, groups=groups, admin=admin)
        self.roles = frozenset(roles)


def roles_of(user_model: dict) -> list[str]:
    """The realm roles in a hub user model (`user_info.roles`, set by the DESP authenticator at login)."""
    roles = (user_model.get("user_info") or {}).get("roles") or ()
    return [role for role in roles if isinstance(role, str)]


def profiles_of(user_model: dict) -> list[str]:
    """The profiles of a hub user model's running (or starting) servers (`user_options.profile`)."""
    profiles = []
    for server in (user_model.get("servers") or {}).values():
        profile = (server.get("user_options") or {}).get("profile")
        if isinstance(profile, str) and profile and (server.get("ready") or server.get("pending")):
            profiles.append(profile)
    return profiles


class DespJupyterHubAuthenticator(JupyterHubAuthenticator):
    """JupyterHubAuthenticator whose users also carry their realm roles (`DespGatewayUser.roles`)."""

    async def authenticate(self, request):
        user = await super().authenticate(request)  # the token is valid and may access this service
        if ":" in user.name:  # a service's token (`service:name`): no realm roles
            return DespGatewayUser(user.name, user.groups, user.admin)
        response = await self.session.get(
            f"{self.jupyterhub_api_url}/user",
            headers={"Authorization": f"token {self.get_token(request)}"},
            ssl=self.ssl_context,
        )
        if response.status >= 400:
            raise unauthorized("jupyterhub")
        return DespGatewayUser(user.name, user.groups, user.admin, roles_of(await response.json()))

    async def running_profiles(self, username: str) -> list[str] | None:
        """The profiles of `username`'s running servers, read with the gateway's own token; None if unreadable."""
        response = await self.session.get(
            f"{self.jupyterhub_api_url}/users/{username}",
            headers={"Authorization": f"token {self.jupyterhub_api_token}"},
            ssl=self.ssl_context,
        )
        if response.status >= 400:
            self.log.warning("Cannot read the servers of %s (HTTP %s): role limits only", username, response.status)
            return None
        return profiles_of(await response.json())
