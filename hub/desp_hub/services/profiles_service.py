"""The `profiles` hub service: a JSON REST API over the profile store, at `/services/profiles/api/`.

Admins (hub admins, or members of the admin group) list, create, edit, enable, disable, delete, import and
export profiles and read the audit log. Everyone else may read the profiles they may start, and nothing more.
The hub authenticates every caller (`HubOAuth`: an `Authorization: token ...` header, or the service's OAuth
cookie in a browser); the service itself holds no hub API scope, since the caller's own token is enough to learn
their name, admin flag and groups. The OpenAPI document (`profiles_openapi.yaml`) is served at
`api/openapi.yaml` and `api/openapi.json` without authentication.

Handlers are thin over `desp_hub.profile_store.ProfileStore`: they parse and check the request, call the store,
and turn its errors into JSON `{"message", "field"}` answers (400/422 validation, 404, 409 version conflict).

Run by JupyterHub as a managed service (see `desp_hub.services.install`):

    python -m desp_hub.services.profiles_service --db-url sqlite:///profiles.sqlite --seed profiles.yaml
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import signal
from collections.abc import Callable, Iterable, Mapping
from functools import cache
from importlib import resources
from typing import Any
from urllib.parse import urlparse

import yaml
from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler, HubOAuthenticated, UserNotAllowed
from jupyterhub.utils import url_path_join
from tornado import httputil, web

from desp_hub.profile_store import ProfileNotFound, ProfileStore, VersionConflict
from desp_hub.profiles import SLUG_PATTERN, Profile, ProfileError, entitled_profiles, validate_profiles

log = logging.getLogger("desp_hub.services.profiles")

SERVICE_NAME = "profiles"
DEFAULT_ADMIN_GROUP = "hub-admins"
# Read-only fields of a stored profile: a client may send them back unchanged (GET, edit, PUT); they are ignored.
READ_ONLY_FIELDS = ("updated_at", "updated_by")
AUDIT_LIMIT_MAX = 1000
# Versions and stored whole numbers must fit the database's 64-bit integers (versions: a generous 32-bit range).
VERSION_MAX = 2**31 - 1
INTEGER_MAX = 2**63 - 1
MAX_BODY_BYTES = 1024 * 1024
JSON_TYPE = "application/json; charset=UTF-8"
YAML_TYPE = "application/yaml; charset=UTF-8"


class ApiError(web.HTTPError):
    """An error answered as JSON `{"message": ..., "field": ...}`; `field` names the offending input, if any."""

    def __init__(self, status: int, message: str, *, field: str | None = None, **extra: Any):
        super().__init__(status, "%s", message)
        self.message = message
        self.field = field
        self.extra = extra


# --- pure helpers -------------------------------------------------------------------------------------------------


def is_admin(caller: Mapping[str, Any], admin_group: str | None = DEFAULT_ADMIN_GROUP) -> bool:
    """Whether the caller (a hub user model) may change profiles: a hub admin, or a member of `admin_group`.

    The DESP authenticator makes members of the `hub-admins` group and holders of the `hub-admin` realm role hub
    admins at login, so the admin flag covers both; the group check also covers a hub run without that mapping.
    """
    if caller.get("admin") is True:
        return True
    return bool(admin_group) and admin_group in (caller.get("groups") or ())


def profile_of(stored: Mapping[str, Any]) -> Profile:
    """The Profile inside a stored profile's dict (which adds version, updated_at, updated_by)."""
    return Profile.from_dict({name: stored[name] for name in Profile.field_names() if name in stored})


def visible_profiles(
    stored: Iterable[Mapping[str, Any]], caller: Mapping[str, Any], admin_group: str | None = DEFAULT_ADMIN_GROUP
) -> list[Mapping[str, Any]]:
    """The stored profiles (dicts) a caller may see: all of them for admins, else the enabled ones they may start.

    Entitlement uses the caller's hub groups and the realm roles the DESP authenticator publishes in the user's
    `user_info` (part of the model every token may read of its owner; no auth_state needed).
    """
    stored = list(stored)
    if is_admin(caller, admin_group):
        return stored
    groups = [g for g in caller.get("groups") or () if isinstance(g, str)]
    roles = [r for r in (caller.get("user_info") or {}).get("roles") or () if isinstance(r, str)]
    allowed = {p.slug for p in entitled_profiles((profile_of(s) for s in stored), groups, roles)}
    return [s for s in stored if s["slug"] in allowed]


def parse_version(value: Any) -> int:
    """A profile version sent by a client (JSON number or query string); raises ApiError(400) naming `version`."""
    if isinstance(value, str) and value.strip().isdecimal() and value.strip().isascii():
        value = int(value.strip())
    elif isinstance(value, float) and value.is_integer():
        value = int(value)  # JSON Schema's "integer" includes 3.0
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= VERSION_MAX:
        raise ApiError(400, f"version must be the whole number the profile was read at, got {value!r}", field="version")
    return value


def parse_limit(value: str | None, default: int = 100) -> int:
    """The `limit` query argument of the audit log: 1 to AUDIT_LIMIT_MAX."""
    if value is None:
        return default
    text = value.strip()
    if not (text.isascii() and text.isdecimal()) or not 1 <= int(text) <= AUDIT_LIMIT_MAX:
        raise ApiError(400, f"limit must be a whole number from 1 to {AUDIT_LIMIT_MAX}, got {value!r}", field="limit")
    return int(value)


def profile_body(
    body: Any, *, slug: str | None = None, with_version: bool = False
) -> tuple[dict[str, Any], int | None]:
    """Check a create (POST) or replace (PUT) body; return (profile fields, version).

    With `slug` (PUT), the URL names the profile: the body may omit `slug` but must not name another one. With
    `with_version`, `version` (the version the client read) is required and split off; the read-only
    `updated_at` and `updated_by` are accepted and dropped. The fields are validated with `Profile.from_dict`
    (unknown keys are rejected); problems raise ApiError naming the field.
    """
    if not isinstance(body, dict):
        raise ApiError(400, "the request body must be a JSON object of profile fields", field="body")
    data = dict(body)
    version = None
    if with_version:
        if "version" not in data:
            raise ApiError(400, "version is required: send the version the profile was read at", field="version")
        version = parse_version(data.pop("version"))
        for name in READ_ONLY_FIELDS:
            data.pop(name, None)
    if slug is not None:
        if data.get("slug", slug) != slug:
            raise ApiError(
                422, f"slug cannot change (the URL names {slug!r}); create a new profile instead", field="slug"
            )
        data["slug"] = slug
    check_profile(data)
    return data, version


def check_profile(data: Mapping[str, Any], where: str = "") -> Profile:
    """`Profile.from_dict`, with its errors (and numbers too large to store) as ApiError(422) naming the field."""
    for name, value in data.items():
        check_text(value, f"{where}{name}")
    try:
        profile = Profile.from_dict(data)
    except ProfileError as error:
        raise ApiError(422, str(error), field=f"{where}{error.field or 'body'}") from None
    for name, value in profile.to_dict().items():
        if isinstance(value, int) and not isinstance(value, bool) and abs(value) > INTEGER_MAX:
            raise ApiError(422, f"{name} is too large ({value})", field=f"{where}{name}")
    return profile


def check_text(value: Any, field: str) -> None:
    """Strings must be storable: valid Unicode (no lone surrogates) without NUL characters."""
    if isinstance(value, str):
        if "\x00" in value or not _encodable(value):
            raise ApiError(422, "text must be valid Unicode without NUL characters", field=field)
    elif isinstance(value, Mapping):
        for key, item in value.items():
            check_text(key, field)
            check_text(item, field)
    elif isinstance(value, (list, tuple)):
        for item in value:
            check_text(item, field)


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_import(text: str) -> None:
    """Check an imported YAML document (`profiles:` list) before it reaches the store; ApiError names the field."""
    try:
        document = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ApiError(400, f"the request body is not valid YAML{where}", field="body") from None
    if not isinstance(document, dict) or set(document) != {"profiles"}:
        raise ApiError(422, "expected a YAML mapping with exactly one key, 'profiles'", field="profiles")
    if not isinstance(document["profiles"], list):
        raise ApiError(422, "'profiles' must be a list of profiles", field="profiles")
    profiles = []
    for index, entry in enumerate(document["profiles"]):
        if not isinstance(entry, dict):
            raise ApiError(422, "each profile must be a mapping of fields", field=f"profiles[{index}]")
        profiles.append(check_profile(entry, where=f"profiles[{index}]."))
    try:
        validate_profiles(profiles)
    except ProfileError as error:
        raise ApiError(422, str(error), field=f"profiles.{error.field}") from None


@cache
def openapi_text() -> str:
    """The service's OpenAPI document, as shipped next to this module."""
    return resources.files("desp_hub.services").joinpath("profiles_openapi.yaml").read_text(encoding="utf-8")


@cache
def openapi_json() -> str:
    return json.dumps(yaml.safe_load(openapi_text()), indent=1)


# --- handlers -----------------------------------------------------------------------------------------------------


def request_logger(logger: logging.Logger) -> Callable[[web.RequestHandler], None]:
    """A service's tornado `log_function`: one access log line on `logger`, without the query string (it may carry
    a token: `?token=` is accepted from websockets)."""

    def log_request(handler: web.RequestHandler) -> None:
        status = handler.get_status()
        level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
        request = handler.request
        logger.log(level, "%d %s %s (%s) %.2fms", status, request.method, request.path, request.remote_ip,
                   1000 * request.request_time())

    return log_request


log_request = request_logger(log)


class JsonErrorsMixin:
    """Every error, including tornado's own (404, 405), answered as JSON `{"message", "field"}`."""

    #: The service a handler belongs to, as its messages name it ("The profiles service failed ...").
    service_name = "profiles"

    def log_exception(self, typ, value, tb) -> None:
        if isinstance(value, web.HTTPError):
            # expected refusals: one line, no query string (the access log has the status too)
            log.debug("%d %s %s: %s", value.status_code, self.request.method, self.request.path,
                      getattr(value, "message", value.log_message))
        else:
            log.error("Uncaught exception in %s %s", self.request.method, self.request.path, exc_info=(typ, value, tb))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        body: dict[str, Any] = {"message": httputil.responses.get(status_code, "Error"), "field": None}
        if isinstance(error, ApiError):
            body.update(error.extra, message=error.message, field=error.field)
        elif isinstance(error, web.HTTPError) and status_code < 500:
            body["message"] = error.log_message % error.args if error.log_message else error.reason or body["message"]
        elif status_code >= 500:
            # details are in the log (tornado logs the traceback); the caller gets a short message
            body["message"] = f"The {self.service_name} service failed to handle this request; see the service log."
        if status_code == 405:
            self.set_header("Allow", ", ".join(self.allowed_methods()))
        self.set_header("Content-Type", JSON_TYPE)
        self.clear_header("Content-Disposition")
        self.clear_header("Content-Security-Policy")  # set by handlers serving sandboxed HTML (workflows)
        self.finish(json.dumps(body))

    def allowed_methods(self) -> list[str]:
        """The methods this handler implements (for the Allow header of a 405)."""
        return [
            method
            for method in ("GET", "POST", "PUT", "PATCH", "DELETE")
            if getattr(type(self), method.lower()) is not getattr(web.RequestHandler, method.lower())
        ]


class NotFoundHandler(JsonErrorsMixin, web.RequestHandler):
    def prepare(self):
        raise ApiError(404, f"no such resource: {self.request.path}")


class OpenApiHandler(JsonErrorsMixin, web.RequestHandler):
    """The OpenAPI document, without authentication (its path is stable: clients and tests fetch it)."""

    def get(self, extension: str):
        if extension == "json":
            self.set_header("Content-Type", JSON_TYPE)
            self.finish(openapi_json())
        else:
            self.set_header("Content-Type", YAML_TYPE)
            self.finish(openapi_text())


class HubCallerMixin(JsonErrorsMixin, HubOAuthenticated):
    """Identifies the caller through the hub (their own token, or the service's login cookie) before every request,
    for the hub's services (profiles, workflows: `service_name` names it in refusals); JSON bodies in and out.

    `caller` is the hub's user model, or a 401 when the request carries no identity. The application's settings
    hold the service's `hub_auth` (HubOAuth).
    """

    _caller: dict[str, Any] | None = None
    #: What an empty request body reads as (None: its absence is a valid JSON `null`).
    empty_body = b""

    @property
    def hub_auth(self) -> HubOAuth:
        return self.settings["hub_auth"]

    async def prepare(self):
        # async lookup, so the event loop is not blocked while the hub answers
        model = await self.hub_auth.get_user(self, sync=False)
        if model:
            try:
                self._caller = self.check_hub_user(model)
            except UserNotAllowed:
                raise ApiError(403, f"{model.get('name')} may not use the {self.service_name} service") from None

    def get_current_user(self):
        return self._caller

    @property
    def caller(self) -> dict[str, Any]:
        if self._caller is None:
            raise ApiError(401, "log in to the hub, or send an API token: Authorization: token <token>")
        return self._caller

    def json_body(self) -> Any:
        try:
            return json.loads(self.request.body or self.empty_body, parse_constant=_reject_constant)
        except (UnicodeDecodeError, ValueError, RecursionError):
            raise ApiError(400, "the request body is not valid JSON", field="body") from None

    def write_json(self, value: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", JSON_TYPE)
        self.finish(json.dumps(value))


class BaseHandler(HubCallerMixin, web.RequestHandler):
    """The profiles API's handlers: the caller through the hub; helpers to require a user or an admin."""

    def initialize(self, store: ProfileStore, admin_group: str | None):
        self.store = store
        self.admin_group = admin_group
        self._caller = None

    @property
    def actor(self) -> str:
        return self.caller["name"]

    def require_admin(self) -> None:
        if not is_admin(self.caller, self.admin_group):
            raise ApiError(403, "only hub admins may change profiles or read their history")

    def check_slug(self, slug: str) -> None:
        """A path that cannot name a profile is a 404 before the store is asked."""
        if not SLUG_PATTERN.match(slug):
            raise ApiError(404, f"there is no profile {slug!r}", field="slug")

    async def stored(self, slug: str) -> dict[str, Any]:
        self.check_slug(slug)
        return (await call_store(self.store.get, slug)).to_dict()


def _reject_constant(name: str) -> None:
    raise ValueError(f"{name} is not a JSON number")


async def call_store(call, *args, **kwargs):
    """Call a (blocking) store method in a worker thread, turning its errors into API errors."""
    try:
        return await asyncio.to_thread(call, *args, **kwargs)
    except ProfileNotFound as error:
        raise ApiError(404, str(error), field="slug") from None
    except VersionConflict as error:
        raise ApiError(409, str(error), field="version", current_version=error.current_version) from None
    except ProfileError as error:
        raise ApiError(422, str(error), field=error.field or "body") from None


class OAuthCallbackHandler(HubOAuthCallbackHandler):
    """Completes the hub's OAuth flow and sets the service's login cookie (browsers)."""

    @property
    def hub_auth(self) -> HubOAuth:
        return self.settings["hub_auth"]


class ProfilesHandler(BaseHandler):
    async def get(self):
        caller = self.caller
        stored = [s.to_dict() for s in await call_store(self.store.list_profiles)]
        self.write_json(visible_profiles(stored, caller, self.admin_group))

    async def post(self):
        self.require_admin()
        data, _ = profile_body(self.json_body())
        created = await call_store(self.store.create, data, actor=self.actor)
        self.set_header("Location", url_path_join(self.request.path, created.to_dict()["slug"]))
        self.write_json(created.to_dict(), status=201)


class ProfileHandler(BaseHandler):
    async def get(self, slug: str):
        caller = self.caller
        stored = await self.stored(slug)
        if not visible_profiles([stored], caller, self.admin_group):
            # not entitled (or disabled): as if it did not exist, so its existence is not disclosed either
            raise ApiError(404, f"there is no profile {slug!r}", field="slug")
        self.write_json(stored)

    async def put(self, slug: str):
        self.require_admin()
        self.check_slug(slug)
        data, version = profile_body(self.json_body(), slug=slug, with_version=True)
        updated = await call_store(self.store.update, slug, data, expected_version=version, actor=self.actor)
        self.write_json(updated.to_dict())

    async def delete(self, slug: str):
        self.require_admin()
        self.check_slug(slug)
        if self.get_query_argument("version", None) is None:
            raise ApiError(400, "add ?version=N, the version of the profile being deleted", field="version")
        version = parse_version(self.get_query_argument("version"))
        await call_store(self.store.delete, slug, expected_version=version, actor=self.actor)
        self.set_status(204)
        self.finish()


class EnableHandler(BaseHandler):
    async def post(self, slug: str, action: str):
        self.require_admin()
        self.check_slug(slug)
        body = self.json_body()
        if not isinstance(body, dict) or set(body) != {"version"}:
            raise ApiError(400, 'the body must be {"version": N}, the version of the profile', field="version")
        version = parse_version(body["version"])
        updated = await call_store(
            self.store.set_enabled, slug, action == "enable", expected_version=version, actor=self.actor
        )
        self.write_json(updated.to_dict())


class YamlHandler(BaseHandler):
    """Export (GET) and import (PUT) of all profiles as one YAML document (`profiles:` list)."""

    async def get(self):
        self.require_admin()
        text = await call_store(self.store.export_yaml)
        self.set_header("Content-Type", YAML_TYPE)
        self.set_header("Content-Disposition", 'attachment; filename="profiles.yaml"')
        self.finish(text)

    async def put(self):
        self.require_admin()
        try:
            text = self.request.body.decode("utf-8")
        except UnicodeDecodeError:
            raise ApiError(400, "the request body must be UTF-8 YAML text", field="body") from None
        check_import(text)
        imported = await call_store(self.store.import_yaml, text, actor=self.actor)
        self.write_json([s.to_dict() for s in imported])


class AuditHandler(BaseHandler):
    async def get(self):
        self.require_admin()
        limit = parse_limit(self.get_query_argument("limit", None))
        slug = self.get_query_argument("slug", None)
        if slug is not None and not SLUG_PATTERN.match(slug):
            raise ApiError(400, f"{slug!r} is not a profile slug", field="slug")
        entries = await call_store(self.store.audit, limit=limit, slug=slug)
        self.write_json([entry.to_dict() for entry in entries])


def make_app(
    store: ProfileStore,
    *,
    service_prefix: str = f"/services/{SERVICE_NAME}/",
    admin_group: str | None = DEFAULT_ADMIN_GROUP,
    hub_auth: HubOAuth | None = None,
    cookie_secret: bytes | None = None,
) -> web.Application:
    """The service's tornado application; `hub_auth` defaults to HubOAuth configured from JupyterHub's env."""
    # imported here: the pages build on this module's handlers
    from desp_hub.services.profiles_pages import page_handlers

    # identities are cached for a minute: a user who lost admin rights loses them here within that time
    hub_auth = hub_auth or HubOAuth(cache_max_age=60)
    args = {"store": store, "admin_group": admin_group}

    def route(path: str) -> str:
        return url_path_join(service_prefix, path)

    handlers = [
        (route("api/openapi\\.(yaml|json)"), OpenApiHandler),
        (route("api/profiles"), ProfilesHandler, args),
        (route("api/profiles\\.yaml"), YamlHandler, args),
        (route("api/profiles/([^/]+)"), ProfileHandler, args),
        (route("api/profiles/([^/]+)/(enable|disable)"), EnableHandler, args),
        (route("api/audit"), AuditHandler, args),
        (route("oauth_callback"), OAuthCallbackHandler),
        *page_handlers(route, args),  # the admin web pages, `/services/profiles/` included
    ]
    return service_application(handlers, service_prefix=service_prefix, hub_auth=hub_auth,
                               cookie_secret=cookie_secret, log_function=log_request)  # fmt: skip


def service_application(handlers: list, *, service_prefix: str, hub_auth: HubOAuth, cookie_secret: bytes | None,
                        log_function: Callable[[web.RequestHandler], None]) -> web.Application:  # fmt: skip
    """A hub service's tornado application (profiles, workflows): JSON 404s, its access log, its HubOAuth and
    prefix in the settings (`HubCallerMixin`, the pages)."""
    return web.Application(
        handlers,
        default_handler_class=NotFoundHandler,
        log_function=log_function,
        hub_auth=hub_auth,
        service_prefix=service_prefix,
        # signs the OAuth state and token cookies; a restart logs browsers in again silently
        cookie_secret=cookie_secret or os.urandom(32),
    )


def open_store(db_url: str, seed_path: str | None) -> ProfileStore:
    """Open the store, bring its schema up to date and, when it is empty, seed it from `seed_path`."""
    store = ProfileStore(db_url)
    store.upgrade()
    if seed_path:
        seeded = store.seed_if_empty(seed_path)
        if seeded:
            log.info("Seeded the profile store with %d profiles from %s", seeded, seed_path)
    return store


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m desp_hub.services.profiles_service", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--db-url", required=True, help="SQLAlchemy URL of the profile store")
    parser.add_argument("--seed", default="", help="profiles YAML copied into the store when it is empty")
    parser.add_argument(
        "--admin-group", default=DEFAULT_ADMIN_GROUP, help="members of this hub group may change profiles ('' = none)"
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(levelname)1.1s %(asctime)s %(name)s] %(message)s")

    store = open_store(args.db_url, args.seed or None)
    # JupyterHub tells a managed service where to listen and under which prefix it is proxied
    url = urlparse(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10101"))
    prefix = os.environ.get("JUPYTERHUB_SERVICE_PREFIX", f"/services/{SERVICE_NAME}/")
    app = make_app(store, service_prefix=prefix, admin_group=args.admin_group or None)

    async def serve():
        server = app.listen(url.port or 80, url.hostname or "127.0.0.1", xheaders=True, max_body_size=MAX_BODY_BYTES)
        log.info("Profiles service listening on %s, proxied at %s", url.geturl(), prefix)
        # JupyterHub stops a managed service with SIGINT, then SIGTERM. Handle both explicitly: a process started
        # from a non-interactive shell's background job inherits an ignored SIGINT.
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
        await stop.wait()
        log.info("Profiles service stopping")
        server.stop()
        store.close()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
