"""A small slice of Keycloak's Admin REST API (`/admin/realms/{realm}/...`): users, groups, membership.

Callers authenticate with a Bearer access token of this realm whose user holds `realm-management`
client roles, typically the `desp-admin-cli` service account (client_credentials grant):
`view-users` (or `manage-users`) to read users, `manage-users` to change them, `query-groups` (or
either of those) to list groups. `realm-admin` allows everything. Changes persist in the data dir.
"""

import json
import logging

from tornado import web

from .handlers import BaseHandler, bearer_token
from .tokens import InvalidToken

log = logging.getLogger(__name__)

REALM_ADMIN = "realm-admin"
READ_USERS = ("view-users", "manage-users")
WRITE_USERS = ("manage-users",)
READ_GROUPS = ("query-groups", "view-users", "manage-users")

# UserRepresentation fields a PUT may change, with their JSON types
EDITABLE_USER_FIELDS = {
    "enabled": bool,
    "emailVerified": bool,
    "email": (str, type(None)),
    "firstName": (str, type(None)),
    "lastName": (str, type(None)),
}


def user_representation(user):
    """Keycloak's UserRepresentation (null fields left out, as Keycloak does)."""
    rep = {
        "id": user["id"],
        "username": user["username"],
        "firstName": user.get("firstName"),
        "lastName": user.get("lastName"),
        "email": user.get("email"),
        "emailVerified": user["emailVerified"],
        "createdTimestamp": user["createdTimestamp"],
        "enabled": user["enabled"],
        "totp": False,
        "disableableCredentialTypes": [],
        "requiredActions": [],
        "notBefore": 0,
    }
    if user.get("serviceAccountClientId"):
        rep["serviceAccountClientId"] = user["serviceAccountClientId"]
    return {key: value for key, value in rep.items() if value is not None}


def group_representation(realm, group, brief=True):
    """Keycloak's GroupRepresentation, sub-groups nested."""
    children = [child for child in realm.groups.values() if child.parent_id == group.id]
    rep = {
        "id": group.id,
        "name": group.name,
        "path": group.path,
        "subGroupCount": len(children),
        "subGroups": [group_representation(realm, child, brief) for child in children],
    }
    if group.parent_id:
        rep["parentId"] = group.parent_id
    if not brief:
        rep.update({"attributes": {}, "realmRoles": [], "clientRoles": {}})
    return rep


def _page(items, first, maximum):
    first = max(int(first or 0), 0)
    maximum = int(maximum) if maximum not in (None, "") else 100
    return items[first : first + maximum] if maximum >= 0 else items[first:]


class AdminHandler(BaseHandler):
    """Authenticates the Bearer token and checks `realm-management` roles, like Keycloak's AdminRoot."""

    required_roles = READ_USERS

    def prepare(self):
        if not self.check_realm():
            return
        try:
            _, user, _ = self.provider.verify_access_token(bearer_token(self))
        except InvalidToken:
            self.set_header("WWW-Authenticate", f'Bearer realm="{self.realm.name}"')
            return self.send_json({"error": "HTTP 401 Unauthorized"}, 401)
        _, client_roles = self.realm.expand_roles(user)
        self.admin_roles = set(client_roles.get("realm-management", ()))
        self.admin_user_id = user["id"]

    def fail(self, status, body):
        """Send an error response and stop handling the request."""
        self.send_json(body, status)
        raise web.Finish()

    def require(self, roles):
        """Stop with 403 unless the caller holds one of `roles`."""
        if not self.admin_roles & {REALM_ADMIN, *roles}:
            self.fail(403, {"error": "HTTP 403 Forbidden"})

    def bool_param(self, name, default):
        value = self.get_query_argument(name, None)
        return default if value is None else value.lower() == "true"

    def int_param(self, name):
        value = self.get_query_argument(name, None)
        if value is None:
            return None
        try:
            return int(value)
        except ValueError:
            self.fail(400, {"error": f"Invalid parameter: {name}"})

    def user_or_404(self, user_id):
        user = self.provider.user(user_id)
        if user is None:
            self.fail(404, {"error": "User not found"})
        return user

    def group_or_404(self, group_id):
        group = self.realm.groups.get(group_id)
        if group is None:
            self.fail(404, {"error": "Could not find group by id"})
        return group


class UsersHandler(AdminHandler):
    """`GET /admin/realms/{realm}/users` with `username`, `email`, `firstName`, `lastName`, `search`,
    `exact`, `enabled`, `first`, `max`. Service-account users are not listed, as in Keycloak."""

    def get(self, realm):
        self.require(READ_USERS)
        exact = self.bool_param("exact", False)
        filters = {
            name: self.get_query_argument(name, None) for name in ("username", "email", "firstName", "lastName")
        }
        search = (self.get_query_argument("search", None) or "").strip().strip("*").lower()
        enabled = self.get_query_argument("enabled", None)
        first, maximum = self.int_param("first"), self.int_param("max")
        found = []
        for user in self.provider.users():
            if user.get("serviceAccountClientId"):
                continue
            if enabled is not None and user["enabled"] != (enabled.lower() == "true"):
                continue
            if not all(self._matches(user.get(name), wanted, exact) for name, wanted in filters.items()):
                continue
            if search and not any(
                search in (user.get(name) or "").lower() for name in ("username", "email", "firstName", "lastName")
            ):
                continue
            found.append(user_representation(user))
        self.send_json(_page(found, first, maximum))

    @staticmethod
    def _matches(value, wanted, exact):
        if wanted is None:
            return True
        value, wanted = (value or "").lower(), wanted.lower()
        return value == wanted if exact else wanted in value


class UserHandler(AdminHandler):
    """`GET` and `PUT /admin/realms/{realm}/users/{id}`."""

    def get(self, realm, user_id):
        self.require(READ_USERS)
        self.send_json(user_representation(self.user_or_404(user_id)))

    def put(self, realm, user_id):
        self.require(WRITE_USERS)
        user = self.user_or_404(user_id)
        try:
            body = json.loads(self.request.body or b"{}")
        except (json.JSONDecodeError, UnicodeDecodeError):
            body = None
        if not isinstance(body, dict):
            self.fail(400, {"error": "unknown_error"})
        if "username" in body and str(body["username"]).lower() != user["username"]:
            self.fail(400, {"field": "username", "errorMessage": "error-user-attribute-read-only"})
        changes = {}
        for name, types in EDITABLE_USER_FIELDS.items():
            if name in body:
                if not isinstance(body[name], types):
                    self.fail(400, {"field": name, "errorMessage": f"Invalid value for {name}"})
                changes[name] = body[name]
        if changes:
            self.provider.update_user(user_id, **changes)
            log.info("admin %s changed %s of user %s", self.admin_user_id, ", ".join(sorted(changes)), user_id)
        self.set_status(204)
        self.finish()


class GroupsHandler(AdminHandler):
    """`GET /admin/realms/{realm}/groups` (`search`, `first`, `max`, `briefRepresentation`)."""

    def get(self, realm):
        self.require(READ_GROUPS)
        brief = self.bool_param("briefRepresentation", True)
        search = (self.get_query_argument("search", None) or "").lower()
        first, maximum = self.int_param("first"), self.int_param("max")
        top = [group for group in self.realm.groups.values() if group.parent_id is None]
        if search:
            matching = {group.path for group in self.realm.groups.values() if search in group.name.lower()}
            top = [group for group in top if any(path.startswith(group.path) for path in matching)]
        self.send_json(_page([group_representation(self.realm, group, brief) for group in top], first, maximum))


class GroupHandler(AdminHandler):
    """`GET /admin/realms/{realm}/groups/{id}`."""

    def get(self, realm, group_id):
        self.require(READ_GROUPS)
        self.send_json(group_representation(self.realm, self.group_or_404(group_id), brief=False))


class UserGroupsHandler(AdminHandler):
    """`GET /admin/realms/{realm}/users/{id}/groups`."""

    def get(self, realm, user_id):
        self.require(READ_USERS)
        user = self.user_or_404(user_id)
        ids = self.realm.group_ids_by_path
        groups = [self.realm.groups[ids[path]] for path in user["groups"] if path in ids]
        groups.sort(key=lambda group: group.name)
        self.send_json([{"id": group.id, "name": group.name, "path": group.path} for group in groups])


class UserGroupHandler(AdminHandler):
    """`PUT` (join) and `DELETE` (leave) `/admin/realms/{realm}/users/{id}/groups/{groupId}`."""

    def _change(self, user_id, group_id, join):
        self.require(WRITE_USERS)
        user, group = self.user_or_404(user_id), self.group_or_404(group_id)
        groups = [path for path in user["groups"] if path != group.path]
        if join:
            groups.append(group.path)
        if set(groups) != set(user["groups"]):
            self.provider.update_user(user_id, groups=groups)
            log.info("admin %s %s user %s %s group %s", self.admin_user_id, "added" if join else "removed",
                     user_id, "to" if join else "from", group.path)
        self.set_status(204)
        self.finish()

    def put(self, realm, user_id, group_id):
        self._change(user_id, group_id, join=True)

    def delete(self, realm, user_id, group_id):
        self._change(user_id, group_id, join=False)
