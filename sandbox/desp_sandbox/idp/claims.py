"""Token and userinfo claims as Keycloak computes them: pure functions of realm, client, user and scopes.

Keycloak builds claims from client scopes (`profile`, `email`, `roles`, ...) and the client's protocol
mappers. The sandbox implements the built-in scopes and three mapper types (group membership, realm
roles, audience); see `realm.SUPPORTED_MAPPERS`.
"""

import re

# Scopes that appear in a token's `scope` claim (Keycloak's `include.in.token.scope`).
IN_TOKEN_SCOPE = ("openid", "offline_access", "profile", "email", "address", "phone", "microprofile-jwt",
                  "organization")

TARGET_FLAGS = {"access": "access.token.claim", "id": "id.token.claim", "userinfo": "userinfo.token.claim"}

_CLAIM_COMPONENT = re.compile(r"((?:\\.|[^\\.])+)")


class ScopeError(ValueError):
    """Scopes the client may not request; the message lists them."""


def grant_scopes(client, requested):
    """The scopes a request gets: `openid` if asked, the optional ones asked for, all default ones."""
    names = (requested or "").split()
    known = {"openid", *client.default_scopes, *client.optional_scopes}
    unknown = [name for name in names if name not in known]
    if unknown:
        raise ScopeError(" ".join(unknown))
    granted = ["openid"] if "openid" in names else []
    granted += [name for name in client.optional_scopes if name in names]
    granted += list(client.default_scopes)
    return list(dict.fromkeys(granted))


def scope_claim(scopes):
    """The `scope` claim / response field."""
    return " ".join(name for name in scopes if name in IN_TOKEN_SCOPE)


def split_claim_path(name):
    """`realm_access.roles` -> ["realm_access", "roles"]; `a\\.b` stays one component."""
    return [re.sub(r"\\(.)", r"\1", part) for part in _CLAIM_COMPONENT.findall(name)]


def set_claim(claims, name, value, multivalued=False):
    """Put `value` at a dotted claim path, merging lists for multivalued claims like Keycloak does."""
    *parents, leaf = split_claim_path(name)
    target = claims
    for part in parents:
        target = target.setdefault(part, {})
    if multivalued and isinstance(target.get(leaf), list):
        target[leaf] = target[leaf] + [item for item in value if item not in target[leaf]]
    else:
        target[leaf] = value


def _audience(value):
    """Keycloak writes a single audience as a string."""
    return value[0] if len(value) == 1 else value


def profile_claims(user, scopes):
    """`profile` and `email` scope claims."""
    claims = {}
    if "profile" in scopes:
        full_name = " ".join(part for part in (user.get("firstName"), user.get("lastName")) if part)
        if full_name:
            claims["name"] = full_name
        claims["preferred_username"] = user["username"]
        if user.get("firstName"):
            claims["given_name"] = user["firstName"]
        if user.get("lastName"):
            claims["family_name"] = user["lastName"]
    if "email" in scopes:
        if user.get("email"):
            claims["email"] = user["email"]
        claims["email_verified"] = bool(user.get("emailVerified"))
    return claims


def group_names(realm, user, full_path):
    """The user's groups as the group-membership mapper writes them."""
    paths = [path for path in user["groups"] if path in realm.group_ids_by_path]
    return paths if full_path else [path.rsplit("/", 1)[-1] for path in paths]


def apply_mappers(realm, client, user, target, claims):
    """Apply the client's protocol mappers that are switched on for `target` (access, id, userinfo)."""
    realm_roles, _ = realm.expand_roles(user)
    for mapper in client.mappers:
        config = mapper.get("config") or {}
        flag = config.get(TARGET_FLAGS[target])
        # Keycloak: a mapper in the ID token is also in userinfo unless userinfo says otherwise
        if target == "userinfo" and flag is None:
            flag = config.get(TARGET_FLAGS["id"])
        if flag != "true":
            continue
        kind = mapper["protocolMapper"]
        if kind == "oidc-group-membership-mapper":
            groups = group_names(realm, user, config.get("full.path") == "true")
            if groups:
                set_claim(claims, config.get("claim.name") or "groups", groups, multivalued=True)
        elif kind == "oidc-usermodel-realm-role-mapper":
            prefix = config.get("usermodel.realmRoleMapping.rolePrefix") or ""
            roles = [prefix + role for role in realm_roles]
            if roles:
                multivalued = config.get("multivalued") == "true"
                set_claim(claims, config.get("claim.name") or "realm_access.roles",
                          roles if multivalued else roles[0], multivalued)
        elif kind == "oidc-audience-mapper" and target != "userinfo":
            audience = config.get("included.client.audience") or config.get("included.custom.audience")
            if audience:
                current = claims.get("aud") or []
                current = [current] if isinstance(current, str) else list(current)
                if audience not in current:
                    current.append(audience)
                claims["aud"] = _audience(current)


def access_token_claims(realm, client, user, scopes):
    """User-dependent claims of an access token (the caller adds exp, iat, jti, iss, sid, ...)."""
    claims = {"sub": user["id"], "typ": "Bearer", "azp": client.client_id}
    if "web-origins" in scopes:
        origins = client.allowed_origins()
        if origins:
            claims["allowed-origins"] = origins
    if "roles" in scopes:
        realm_roles, client_roles = realm.expand_roles(user)
        if realm_roles:
            claims["realm_access"] = {"roles": realm_roles}
        if client_roles:
            claims["resource_access"] = {name: {"roles": roles} for name, roles in client_roles.items()}
            audiences = [name for name in client_roles if name != client.client_id]
            if audiences:
                claims["aud"] = _audience(audiences)
    claims["scope"] = scope_claim(scopes)
    claims.update(profile_claims(user, scopes))
    apply_mappers(realm, client, user, "access", claims)
    return claims


def id_token_claims(realm, client, user, scopes):
    """User-dependent claims of an ID token."""
    claims = {"aud": client.client_id, "sub": user["id"], "typ": "ID", "azp": client.client_id}
    claims.update(profile_claims(user, scopes))
    apply_mappers(realm, client, user, "id", claims)
    return claims


def userinfo_claims(realm, client, user, scopes):
    """The userinfo response, from the user's current state."""
    claims = {"sub": user["id"]}
    claims.update(profile_claims(user, scopes))
    apply_mappers(realm, client, user, "userinfo", claims)
    return claims
