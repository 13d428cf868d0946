"""The admin web pages of the `profiles` service, at `/services/profiles/` (next to its REST API).

- `/services/profiles/`: the table of profiles. Admins see all of them with Edit, Disable/Enable and Delete
  buttons; everyone else sees the profiles they may start, read-only.
- `new` and `edit/<slug>`: a form with every profile field. A POST is validated exactly as the API validates
  (`check_profile`, then the store); an invalid field re-renders the form with the input kept and the message next
  to the field (HTTP 422); a version conflict keeps the input and shows who changed the profile (HTTP 409).
- `delete/<slug>`: a confirmation page; `enable/<slug>` and `disable/<slug>`: small POST forms.
- `audit`: the audit log, with a before/after diff of the fields each change touched.

The handlers reuse the API's (`BaseHandler`: identity through HubOAuth, `is_admin`, `call_store`), so a page and
the API always agree on who may do what. Every form carries the hub's XSRF token (`xsrf_form_html()`); a POST
authenticated by the browser's cookie without a valid token is refused. Templates are Jinja2 with autoescape on,
styled by linking the hub's own stylesheet.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from collections.abc import Callable, Mapping
from functools import cache
from pathlib import Path
from typing import Any

import jinja2
import yaml
from jupyterhub.utils import url_path_join
from markupsafe import Markup
from tornado import httputil, web

from desp_hub.profiles import Profile
from desp_hub.services.profiles_service import (
    ApiError,
    BaseHandler,
    call_store,
    check_profile,
    is_admin,
    parse_limit,
    parse_version,
    visible_profiles,
)

TEMPLATES = Path(__file__).with_name("templates")
FLASH_COOKIE = "desp-profiles-flash"
AUDIT_PAGE_LIMIT = 200

# A ProfileError's message starts with where the problem is ("profile 'x', field 'y': "); next to the field,
# only the rest is shown.
_WHERE_PREFIX = re.compile(r"^profile(?: '[^']*')?(?:, field '[^']*')?: ")


@dataclasses.dataclass(frozen=True)
class FormField:
    """One input of the profile form: its profile field, label, input kind and help text."""

    name: str
    label: str
    kind: str  # text, optional, textarea, number, integer, size, names, mapping, list, flag
    help: str = ""
    required: bool = False


FORM_FIELDS = (
    FormField("slug", "Slug", "text", "URL-safe id: lower-case letters, digits and inner dashes. "
              "It cannot change once created.", required=True),
    FormField("display_name", "Display name", "text", "The name on the spawn form.", required=True),
    FormField("description", "Description", "textarea", "One line shown under the name on the spawn form."),
    FormField("image", "Image", "text", "Container image of the user server (Kubernetes).", required=True),
    FormField("cpu_guarantee", "CPU guarantee (cores)", "number", "Cores reserved; at most the limit.",
              required=True),
    FormField("cpu_limit", "CPU limit (cores)", "number", "Cores at most.", required=True),
    FormField("mem_guarantee", "Memory guarantee", "size", "For example 512M or 4G (powers of 1024).",
              required=True),
    FormField("mem_limit", "Memory limit", "size", "For example 4G or 32G (powers of 1024).", required=True),
    FormField("gpus", "GPUs", "integer", "Whole GPUs; more than 0 needs a GPU node selector or toleration."),
    FormField("gpu_type", "GPU type", "optional", "GPU class shown to users (only with GPUs)."),
    FormField("node_selector", "Node selector", "mapping", "YAML or JSON mapping of node label to value."),
    FormField("tolerations", "Tolerations", "list", "YAML or JSON list of Kubernetes tolerations."),
    FormField("allowed_groups", "Allowed groups", "names", "Comma-separated Keycloak groups."),
    FormField("allowed_roles", "Allowed realm roles", "names",
              "Comma-separated Keycloak realm roles. No groups and no roles: every user."),
    FormField("dcu_per_hour", "DCU per hour", "number", "Price in DESP Compute Units per running hour."),
    FormField("idle_timeout", "Idle timeout (seconds)", "integer", "Inactivity before the server is culled."),
    FormField("max_runtime", "Maximum runtime (seconds)", "integer", "0: no limit."),
    FormField("order", "Order", "integer", "Position on the spawn form, ascending."),
    FormField("default", "Default", "flag", "Preselected on the spawn form (one profile at most)."),
    FormField("enabled", "Enabled", "flag", "Disabled profiles are hidden and refuse spawns."),
)
FORM_FIELD_NAMES = frozenset(field.name for field in FORM_FIELDS)


# --- pure helpers: values as shown and as typed -------------------------------------------------------------------


def format_size(value: Any) -> str:
    """Bytes as the form spells them: 4294967296 → "4G" (exact suffixes only; otherwise the number of bytes)."""
    if isinstance(value, bool) or not isinstance(value, int):
        return "" if value is None else str(value)
    for suffix, unit in (("T", 2**40), ("G", 2**30), ("M", 2**20), ("K", 2**10)):
        if value and value % unit == 0:
            return f"{value // unit}{suffix}"
    return str(value)


def format_number(value: Any) -> str:
    """2.0 → "2", 0.5 → "0.5"."""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return "" if value is None else str(value)


def format_duration(seconds: Any, zero: str = "no limit") -> str:
    """Seconds for people: 0 → `zero`, 7200 → "2 h", 90 → "90 s"."""
    if isinstance(seconds, bool) or not isinstance(seconds, int):
        return "" if seconds is None else str(seconds)
    if seconds == 0:
        return zero
    for unit, name in ((3600, "h"), (60, "min")):
        if seconds % unit == 0:
            return f"{seconds // unit} {name}"
    return f"{seconds} s"


def format_value(name: str, value: Any) -> str:
    """One field's value as text (audit diffs, tables)."""
    if value is None:
        return "—"
    if name in ("mem_guarantee", "mem_limit"):
        return format_size(value)
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return format_number(value)
    if isinstance(value, (list, tuple)) and all(isinstance(item, str) for item in value):
        return ", ".join(value) or "—"
    if isinstance(value, (dict, list, tuple)):
        return json.dumps(value, sort_keys=True) if value else "—"
    return str(value)


def who_may_use(profile: Mapping[str, Any]) -> str:
    groups, roles = profile.get("allowed_groups") or [], profile.get("allowed_roles") or []
    if not groups and not roles:
        return "everyone"
    parts = []
    if groups:
        parts.append("groups: " + ", ".join(groups))
    if roles:
        parts.append("roles: " + ", ".join(roles))
    return "; ".join(parts)


def form_values(profile: Mapping[str, Any]) -> dict[str, Any]:
    """A stored profile (dict) as the form's input values: text for text inputs, booleans for checkboxes."""
    values: dict[str, Any] = {}
    for field in FORM_FIELDS:
        value = profile.get(field.name)
        if field.kind == "flag":
            values[field.name] = bool(value)
        elif field.kind == "size":
            values[field.name] = format_size(value)
        elif field.kind == "names":
            values[field.name] = ", ".join(value or ())
        elif field.kind in ("mapping", "list"):
            values[field.name] = yaml.safe_dump(value, sort_keys=False, allow_unicode=True) if value else ""
        else:
            values[field.name] = "" if value is None else format_number(value)
    return values


def new_profile_values() -> dict[str, Any]:
    """The form of a new profile: the model's defaults."""
    defaults = {f.name: f.default for f in dataclasses.fields(Profile) if f.default is not dataclasses.MISSING}
    return form_values(defaults)


def parse_form(get: Callable[[str], str | None]) -> tuple[dict[str, Any], dict[str, Any], dict[str, str]]:
    """Read the profile form: `get(name)` is the submitted text of an input (None when absent).

    Returns (profile data for `Profile.from_dict`, the input as typed for re-rendering, errors by field). An empty
    optional input is left out (the model's default applies); an empty required one is None ("is required").
    """
    data: dict[str, Any] = {}
    typed: dict[str, Any] = {}
    errors: dict[str, str] = {}
    for field in FORM_FIELDS:
        raw = get(field.name)
        if field.kind == "flag":
            typed[field.name] = data[field.name] = raw is not None
            continue
        text = raw or ""
        typed[field.name] = text
        stripped = text.strip()
        if field.kind in ("text", "textarea"):
            data[field.name] = text
            continue
        if not stripped:
            if field.required:
                data[field.name] = None
            continue
        try:
            data[field.name] = _parse_text(field, stripped)
        except ValueError as error:
            errors[field.name] = str(error)
    return data, typed, errors


def _parse_text(field: FormField, text: str) -> Any:
    if field.kind == "number":
        try:
            number = float(text)
        except ValueError:
            raise ValueError(f"expected a number, got {text!r}") from None
        if not math.isfinite(number):
            raise ValueError(f"expected a finite number, got {text!r}")
        return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number
    if field.kind == "integer":
        if not re.fullmatch(r"[+-]?\d+", text):
            raise ValueError(f"expected a whole number, got {text!r}")
        return int(text)
    if field.kind == "names":
        return [name.strip() for name in text.split(",") if name.strip()]
    if field.kind in ("mapping", "list"):
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError as error:
            mark = getattr(error, "problem_mark", None)
            where = f" (line {mark.line + 1})" if mark else ""
            raise ValueError(f"not valid YAML or JSON{where}") from None
        return value if value is not None else ({} if field.kind == "mapping" else [])
    return text  # optional text, sizes (Profile.from_dict parses "4G")


def field_of(error_field: str | None) -> str | None:
    """The form input an error names: "tolerations[0]" → "tolerations"; None for anything not on the form."""
    if not error_field:
        return None
    name = error_field.split("[", 1)[0].split(".", 1)[0]
    return name if name in FORM_FIELD_NAMES else None


def short_message(message: str) -> str:
    return _WHERE_PREFIX.sub("", message, count=1)


def audit_changes(before: Mapping[str, Any] | None, after: Mapping[str, Any] | None) -> list[dict[str, str]]:
    """The fields an audited change touched, as {"field", "before", "after"} texts, in the model's field order."""
    before, after = before or {}, after or {}
    order = {name: index for index, name in enumerate(Profile.field_names())}
    names = sorted(set(before) | set(after), key=lambda name: (order.get(name, len(order)), name))
    return [
        {"field": name, "before": format_value(name, before.get(name)), "after": format_value(name, after.get(name))}
        for name in names
        if before.get(name) != after.get(name)
    ]


@cache
def jinja_environment() -> jinja2.Environment:
    """The pages' templates; autoescape is on for every template."""
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)), autoescape=True, trim_blocks=True, lstrip_blocks=True
    )
    environment.filters.update(size=format_size, number=format_number, duration=format_duration)
    environment.globals.update(who_may_use=who_may_use)
    return environment


# --- handlers -----------------------------------------------------------------------------------------------------


class ServicePageMixin:
    """What every HTML page of the hub's services shares (the profiles pages here, the workflows pages in
    `desp_hub.workflows.pages`), mixed in before the service's API handler so that a page and the API identify the
    caller alike: the form's XSRF token on writes, a template rendered with the hub's stylesheet and navbar links,
    errors as an HTML page, a flash message for the next page.

    A service's page handler sets `flash_cookie` and `error_template`, returns its Jinja environment from
    `templates()` (its templates extend this folder's base.html), and may add to every page's context in
    `page_context()`. The settings hold `service_prefix`.
    """

    flash_cookie: str
    error_template = "error.html"

    def templates(self) -> jinja2.Environment:
        raise NotImplementedError

    def page_context(self) -> dict[str, Any]:
        return {}

    async def prepare(self):
        await super().prepare()
        if self.request.method not in ("GET", "HEAD", "OPTIONS"):
            # a cookie-authenticated POST needs the form's XSRF token (a token-authenticated one does not);
            # HubOAuth already ignores the cookie without it, this makes the refusal explicit
            self.check_xsrf_cookie()

    @property
    def prefix(self) -> str:
        return self.settings["service_prefix"]

    def page_url(self, *parts: Any) -> str:
        return url_path_join(self.prefix, *(str(part) for part in parts))

    def render_page(self, template: str, status: int = 200, **context: Any) -> None:
        hub_prefix = self.hub_auth.hub_prefix
        caller = self._caller
        context.update(
            prefix=self.prefix,
            page_url=self.page_url,
            hub_home=url_path_join(hub_prefix, "home"),
            hub_css=url_path_join(hub_prefix, "static/css/style.min.css"),
            caller=caller,
            xsrf_form_html=Markup(self.xsrf_form_html()) if caller else Markup(""),
            **self.page_context(),
        )
        self.set_status(status)
        self.set_header("Content-Type", "text/html; charset=UTF-8")
        self.set_header("Cache-Control", "no-store")
        self.finish(self.templates().get_template(template).render(**context))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        message = httputil.responses.get(status_code, "Error")
        if isinstance(error, ApiError):
            message = error.message
        elif isinstance(error, web.HTTPError) and status_code < 500:
            message = error.log_message % error.args if error.log_message else error.reason or message
        elif status_code >= 500:
            message = f"The {self.service_name} service failed to handle this request; see the service log."
        self.clear_header("Content-Disposition")
        self.render_page(self.error_template, status=status_code, status_code=status_code, message=message)

    def flash(self, text: str) -> None:
        """A message for the next page, in a short-lived signed cookie."""
        self.set_signed_cookie(
            self.flash_cookie, text, expires_days=None, path=self.prefix, httponly=True,
            secure=self.request.protocol == "https",  # the proxy's X-Forwarded-Proto (xheaders)
        )

    def pop_flash(self) -> str | None:
        value = self.get_signed_cookie(self.flash_cookie, max_age_days=1)
        if value is not None:
            self.clear_cookie(self.flash_cookie, path=self.prefix)
        return value.decode("utf-8", "replace") if value else None


class PageHandler(ServicePageMixin, BaseHandler):
    """An HTML page of the profiles service: same identity and admin rule as the API, errors as HTML pages."""

    flash_cookie = FLASH_COOKIE

    def templates(self) -> jinja2.Environment:
        return jinja_environment()

    def page_context(self) -> dict[str, Any]:
        caller = self._caller
        return {"admin": bool(caller) and is_admin(caller, self.admin_group)}

    def back_to_list(self, message: str) -> None:
        self.flash(message)
        self.redirect(self.prefix, status=303)


class ListPage(PageHandler):
    """The profiles: all of them, with write controls, for admins; the caller's own, read-only, for others."""

    @web.authenticated
    async def get(self):
        stored = [s.to_dict() for s in await call_store(self.store.list_profiles)]
        self.render_page(
            "list.html", profiles=visible_profiles(stored, self.caller, self.admin_group), flash=self.pop_flash()
        )


class FormPage(PageHandler):
    """Create (`new`) or edit (`edit/<slug>`) a profile."""

    @web.authenticated
    async def get(self, slug: str | None = None):
        self.require_admin()
        if slug is None:
            self.render_form(None, new_profile_values(), version=None)
        else:
            stored = await self.stored(slug)
            self.render_form(slug, form_values(stored), version=stored["version"])

    @web.authenticated
    async def post(self, slug: str | None = None):
        self.require_admin()
        if slug is not None:
            self.check_slug(slug)
        data, typed, errors = parse_form(lambda name: self.get_body_argument(name, None))
        version_text = self.get_body_argument("version", "")
        if errors:
            first = next(iter(errors))
            self.render_form(slug, typed, version_text, errors=errors, status=422,
                             message=f"Check the form: {errors[first]} ({first}).")
            return
        try:
            check_profile(data)
            if slug is None:
                saved = await call_store(self.store.create, data, actor=self.actor)
            else:
                version = parse_version(version_text)
                saved = await call_store(self.store.update, slug, data, expected_version=version, actor=self.actor)
        except ApiError as error:
            field = field_of(error.field)
            errors = {field: short_message(error.message)} if field else {}
            self.render_form(slug, typed, version_text, errors=errors, status=error.status_code,
                             message=error.message if error.status_code != 422 or not field else
                             f"Check the form: {short_message(error.message)} ({field}).")
            return
        verb = "created" if slug is None else "saved"
        self.back_to_list(f"Profile {saved.profile.display_name} ({saved.slug}) {verb}, version {saved.version}.")

    def render_form(self, slug, values, version, *, errors=None, status=200, message=None):
        self.render_page(
            "form.html",
            status=status,
            slug=slug,
            fields=FORM_FIELDS,
            values=values,
            version="" if version is None else version,
            errors=errors or {},
            message=message,
            action=self.page_url("new") if slug is None else self.page_url("edit", slug),
        )


class DeletePage(PageHandler):
    """GET: "Delete profile X?" with Confirm and Cancel; POST: delete it (at the version shown)."""

    @web.authenticated
    async def get(self, slug: str):
        self.require_admin()
        stored = await self.stored(slug)
        self.render_page("delete.html", profile=stored, version=stored["version"], message=None)

    @web.authenticated
    async def post(self, slug: str):
        self.require_admin()
        stored = await self.stored(slug)
        try:
            version = parse_version(self.get_body_argument("version", ""))
            await call_store(self.store.delete, slug, expected_version=version, actor=self.actor)
        except ApiError as error:
            self.render_page("delete.html", status=error.status_code, profile=stored, version=stored["version"],
                             message=error.message)
            return
        self.back_to_list(f"Profile {stored['display_name']} ({slug}) deleted.")


class EnablePage(PageHandler):
    """POST `enable/<slug>` or `disable/<slug>` with the profile's version."""

    @web.authenticated
    async def post(self, action: str, slug: str):
        self.require_admin()
        self.check_slug(slug)
        version = parse_version(self.get_body_argument("version", ""))
        updated = await call_store(
            self.store.set_enabled, slug, action == "enable", expected_version=version, actor=self.actor
        )
        self.back_to_list(f"Profile {updated.profile.display_name} ({slug}) {action}d.")


class AuditPage(PageHandler):
    """The audit log, newest first (`?slug=` one profile's, `?limit=` how many)."""

    @web.authenticated
    async def get(self):
        self.require_admin()
        limit = parse_limit(self.get_query_argument("limit", None), default=AUDIT_PAGE_LIMIT)
        slug = self.get_query_argument("slug", None) or None
        if slug is not None:
            self.check_slug(slug)
        entries = await call_store(self.store.audit, limit=limit, slug=slug)
        rows = [
            {
                "at": entry.at.strftime("%Y-%m-%d %H:%M:%S"),
                "actor": entry.actor,
                "action": entry.action,
                "slug": entry.slug,
                "changes": audit_changes(entry.before, entry.after),
                "whole": entry.before is None or entry.after is None,
            }
            for entry in entries
        ]
        self.render_page("audit.html", rows=rows, slug=slug, limit=limit)


def page_handlers(route: Callable[[str], str], args: Mapping[str, Any]) -> list[tuple]:
    """The pages' entries of the service's handler table; `route(path)` adds the service prefix."""
    args = dict(args)
    return [
        (route("new"), FormPage, args),
        (route("edit/([^/]+)"), FormPage, args),
        (route("delete/([^/]+)"), DeletePage, args),
        (route("(enable|disable)/([^/]+)"), EnablePage, args),
        (route("audit"), AuditPage, args),
        (route("").rstrip("/") + "/?", ListPage, args),
    ]
