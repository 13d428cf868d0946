"""The realm as configured: a Keycloak realm export, its `${...}` placeholders resolved from the environment.

Everything here is read-only after loading. What changes at run time (users' groups, `enabled`, SSO
sessions, refresh tokens) lives in `store.Store`.
"""

import copy
import json
import logging
import os
import re
import uuid
from dataclasses import dataclass, field
from urllib.parse import urlsplit

log = logging.getLogger(__name__)

PLACEHOLDER = re.compile(r"\$\{([^{}]*)\}")

# Keycloak's built-in client scopes, used when neither the client nor the realm names any.
BUILTIN_DEFAULT_SCOPES = ("profile", "email", "roles", "web-origins", "acr", "basic")
BUILTIN_OPTIONAL_SCOPES = ("offline_access", "address", "phone", "microprofile-jwt", "organization")

# Keycloak grants every user `default-roles-{realm}`, a composite of these.
DEFAULT_ROLE_REALM_COMPOSITES = ("offline_access", "uma_authorization")
DEFAULT_ROLE_ACCOUNT_COMPOSITES = ("manage-account", "manage-account-links", "view-profile")

SUPPORTED_MAPPERS = {
    "oidc-group-membership-mapper",
    "oidc-usermodel-realm-role-mapper",
    "oidc-audience-mapper",
}


class RealmFileError(Exception):
    """The realm file cannot be used; the message says why, for the person starting the server."""


def resolve_placeholders(value, environ, where="$"):
    """Replace `${NAME}` and `${NAME:default}` in every string of a parsed realm export.

    Mirrors Keycloak's realm import (which applies JBoss' StringPropertyReplacer to each JSON string):
    `${A,B:x}` tries A then B, an `env.` prefix is accepted, `${}` is left alone. Unlike Keycloak,
    which silently keeps an unresolved `${NAME}`, an unset variable without a default is an error.
    """
    if isinstance(value, dict):
        return {key: resolve_placeholders(item, environ, f"{where}.{key}") for key, item in value.items()}
    if isinstance(value, list):
        return [resolve_placeholders(item, environ, f"{where}[{index}]") for index, item in enumerate(value)]
    if isinstance(value, str):
        return PLACEHOLDER.sub(lambda match: _resolve(match.group(1), environ, where), value)
    return value


def _resolve(expression, environ, where):
    if expression == "":
        return "${}"
    if expression == "/":
        return os.sep
    if expression == ":":
        return os.pathsep
    names, has_default, default = expression.partition(":")
    for name in names.split(","):
        name = name.strip()
        key = name[len("env.") :] if name.startswith("env.") else name
        if key in environ:
            return environ[key]
    if has_default:
        return default
    raise RealmFileError(
        f"environment variable {names} is not set and has no default "
        f"(the realm file uses ${{{expression}}} at {where})"
    )


def uri_allowed(uri, patterns):
    """Keycloak's redirect URI check: exact match, or prefix match for a pattern ending in `*`."""
    if not uri or "#" in uri or "\\" in uri:
        return False
    path = urlsplit(uri).path
    if "/../" in f"{path}/" or "/./" in f"{path}/":
        return False
    for pattern in patterns:
        if pattern.endswith("*"):
            if uri.startswith(pattern[:-1]):
                return True
        elif uri == pattern:
            return True
    return False


@dataclass(frozen=True)
class Group:
    """A realm group; `path` is `/parent/name`."""

    id: str
    name: str
    path: str
    parent_id: str | None = None


@dataclass(frozen=True)
class Client:
    """An OpenID Connect client of the realm."""

    client_id: str
    name: str
    secret: str | None
    public: bool
    standard_flow: bool
    service_accounts: bool
    redirect_uris: tuple[str, ...]
    post_logout_redirect_uris: tuple[str, ...]
    web_origins: tuple[str, ...]
    pkce_method: str | None
    default_scopes: tuple[str, ...]
    optional_scopes: tuple[str, ...]
    mappers: tuple[dict, ...] = field(default=())
    token_exchange: bool = False  # attribute `standard.token.exchange.enabled` (RFC 8693 requests allowed)

    def redirect_uri_allowed(self, uri):
        """Whether `uri` may receive authorization responses for this client."""
        return uri_allowed(uri, self.redirect_uris)

    def post_logout_redirect_uri_allowed(self, uri):
        """Whether the browser may be sent to `uri` after logout (`post.logout.redirect.uris`)."""
        return uri_allowed(uri, self.post_logout_redirect_uris)

    def allowed_origins(self):
        """The `allowed-origins` claim: `webOrigins`, with `+` meaning the origins of the redirect URIs."""
        origins = []
        for origin in self.web_origins:
            if origin == "+":
                for uri in self.redirect_uris:
                    parts = urlsplit(uri.rstrip("*"))
                    if parts.scheme and parts.netloc:
                        origins.append(f"{parts.scheme}://{parts.netloc}")
            else:
                origins.append(origin)
        return sorted(set(origins))


def _client_from_rep(rep, realm_rep):
    attributes = rep.get("attributes") or {}
    redirect_uris = tuple(rep.get("redirectUris") or ())
    post_logout = []
    for value in (attributes.get("post.logout.redirect.uris") or "").split("##"):
        value = value.strip()
        if value == "+":
            post_logout.extend(redirect_uris)
        elif value and value != "-":
            post_logout.append(value)
    default_scopes = rep.get("defaultClientScopes")
    if default_scopes is None:
        default_scopes = realm_rep.get("defaultDefaultClientScopes") or BUILTIN_DEFAULT_SCOPES
    optional_scopes = rep.get("optionalClientScopes")
    if optional_scopes is None:
        optional_scopes = realm_rep.get("defaultOptionalClientScopes") or BUILTIN_OPTIONAL_SCOPES
    mappers = []
    for mapper in rep.get("protocolMappers") or ():
        if mapper.get("protocolMapper") in SUPPORTED_MAPPERS:
            mappers.append(copy.deepcopy(mapper))
        else:
            log.warning(
                "client %s: protocol mapper %r (%s) is not supported by the sandbox IdP and is ignored",
                rep["clientId"],
                mapper.get("name"),
                mapper.get("protocolMapper"),
            )
    return Client(
        client_id=rep["clientId"],
        name=rep.get("name") or rep["clientId"],
        secret=rep.get("secret"),
        public=bool(rep.get("publicClient", False)),
        standard_flow=bool(rep.get("standardFlowEnabled", True)),
        service_accounts=bool(rep.get("serviceAccountsEnabled", False)),
        redirect_uris=redirect_uris,
        post_logout_redirect_uris=tuple(post_logout),
        web_origins=tuple(rep.get("webOrigins") or ()),
        pkce_method=attributes.get("pkce.code.challenge.method") or None,
        default_scopes=tuple(default_scopes),
        optional_scopes=tuple(optional_scopes),
        mappers=tuple(mappers),
        token_exchange=attributes.get("standard.token.exchange.enabled") == "true",
    )


def _stable_id(realm, kind, key):
    """Ids Keycloak would pick at random on import; here stable across restarts."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"desp-sandbox:{realm}:{kind}:{key}"))


class Realm:
    """One Keycloak realm: settings, clients, groups, roles and users as the realm file gives them."""

    def __init__(self, rep):
        self.name = rep["realm"]
        self.display_name = rep.get("displayName") or self.name
        self.access_token_lifespan = int(rep.get("accessTokenLifespan", 300))
        self.code_lifespan = int(rep.get("accessCodeLifespan", 60))
        self.login_lifespan = int(rep.get("accessCodeLifespanLogin", 1800))
        self.sso_idle_timeout = int(rep.get("ssoSessionIdleTimeout", 1800))
        self.sso_max_lifespan = int(rep.get("ssoSessionMaxLifespan", 36000))
        self.revoke_refresh_token = bool(rep.get("revokeRefreshToken", False))
        self.refresh_token_max_reuse = int(rep.get("refreshTokenMaxReuse", 0))
        self.default_role = f"default-roles-{self.name}"

        self.clients = {}
        for client_rep in rep.get("clients") or ():
            if client_rep.get("enabled", True) and client_rep.get("protocol", "openid-connect") == "openid-connect":
                self.clients[client_rep["clientId"]] = _client_from_rep(client_rep, rep)

        self.groups = {}  # id -> Group, in file order, parents before children
        self._load_groups(rep.get("groups") or (), "", None)
        self.group_ids_by_path = {group.path: group.id for group in self.groups.values()}

        self.role_composites = {}  # realm role -> (realm composites, {client: client composites})
        for role in (rep.get("roles") or {}).get("realm") or ():
            composites = role.get("composites") or {}
            self.role_composites[role["name"]] = (
                tuple(composites.get("realm") or ()),
                {client: tuple(names) for client, names in (composites.get("client") or {}).items()},
            )
        self.role_composites.setdefault(
            self.default_role, (DEFAULT_ROLE_REALM_COMPOSITES, {"account": DEFAULT_ROLE_ACCOUNT_COMPOSITES})
        )

        self.users = {}  # id -> normalised user dict
        for user_rep in rep.get("users") or ():
            user = self._user_from_rep(user_rep)
            self.users[user["id"]] = user
        for client in self.clients.values():
            if client.service_accounts and self.service_account(client.client_id) is None:
                user = self._user_from_rep(
                    {"username": f"service-account-{client.client_id}", "serviceAccountClientId": client.client_id}
                )
                self.users[user["id"]] = user

    @classmethod
    def from_file(cls, path, environ):
        """Read a realm export and resolve its placeholders from `environ`."""
        try:
            with open(path, encoding="utf-8") as file:
                rep = json.load(file)
        except OSError as error:
            raise RealmFileError(f"cannot read realm file {path}: {error.strerror}") from error
        except json.JSONDecodeError as error:
            raise RealmFileError(f"realm file {path} is not valid JSON: {error}") from error
        if not isinstance(rep, dict) or "realm" not in rep:
            raise RealmFileError(f"realm file {path} has no `realm` name; is it a Keycloak realm export?")
        return cls(resolve_placeholders(rep, environ))

    def _load_groups(self, reps, parent_path, parent_id):
        for rep in reps:
            path = f"{parent_path}/{rep['name']}"
            group = Group(id=rep.get("id") or _stable_id(self.name, "group", path), name=rep["name"], path=path,
                          parent_id=parent_id)
            self.groups[group.id] = group
            self._load_groups(rep.get("subGroups") or (), path, group.id)

    def _user_from_rep(self, rep):
        username = rep["username"].lower()
        password = None
        for credential in rep.get("credentials") or ():
            if credential.get("type") == "password":
                if "value" in credential:
                    password = credential["value"]
                else:
                    log.warning("user %s: only plain `value` password credentials are supported", username)
        groups = []
        for path in rep.get("groups") or ():
            path = path if path.startswith("/") else f"/{path}"
            if path in self.group_ids_by_path:
                groups.append(path)
            else:
                log.warning("user %s: unknown group %s ignored", username, path)
        realm_roles = rep.get("realmRoles")
        return {
            "id": rep.get("id") or _stable_id(self.name, "user", username),
            "username": username,
            "enabled": bool(rep.get("enabled", True)),
            "email": rep.get("email"),
            "emailVerified": bool(rep.get("emailVerified", False)),
            "firstName": rep.get("firstName"),
            "lastName": rep.get("lastName"),
            "createdTimestamp": int(rep.get("createdTimestamp") or 0),
            "password": password,
            "groups": groups,
            "realmRoles": list(realm_roles) if realm_roles is not None else [self.default_role],
            "clientRoles": {client: list(roles) for client, roles in (rep.get("clientRoles") or {}).items()},
            "serviceAccountClientId": rep.get("serviceAccountClientId"),
        }

    def service_account(self, client_id):
        """The service-account user of a client, or None."""
        for user in self.users.values():
            if user["serviceAccountClientId"] == client_id:
                return user
        return None

    def expand_roles(self, user):
        """The user's effective roles: (sorted realm roles, {client: sorted roles}), composites expanded."""
        realm_roles, client_roles = set(), {}
        for client, roles in user["clientRoles"].items():
            client_roles.setdefault(client, set()).update(roles)
        pending = list(user["realmRoles"])
        while pending:
            role = pending.pop()
            if role in realm_roles:
                continue
            realm_roles.add(role)
            realm_composites, client_composites = self.role_composites.get(role, ((), {}))
            pending.extend(realm_composites)
            for client, roles in client_composites.items():
                client_roles.setdefault(client, set()).update(roles)
        return sorted(realm_roles), {client: sorted(roles) for client, roles in client_roles.items() if roles}
