"""The `dashboards` hub service: both Panel apps behind the hub's login, at `/services/dashboards/`.

    /services/dashboards/                           index page (links to both dashboards)
    /services/dashboards/visualisation              the visualisation dashboard (desp_dashboards.visualisation)
    /services/dashboards/executive                  the executive statistics dashboard (desp_dashboards.executive)
    /services/dashboards/executive/data/<view>.json the data of one executive view, as JSON (records) ...
    /services/dashboards/executive/data/<view>.csv  ... or CSV, under the same public/restricted rules as the page
    /services/dashboards/oauth_callback             completes the hub's OAuth login

Authentication is the hub's: `HubOAuth` identifies a browser by the cookie it sets after the hub's OAuth flow
(or a script by `Authorization: token ...`), and an unauthenticated browser is sent through the hub's login.
Every Bokeh request, the websocket included, passes the same check (`HubAuthProvider`), so no Panel session
exists without a hub user. Each session gets its own `DashboardContext`: the user's name and hub groups, whether
they may see restricted panels (membership of `--restricted-group`), the platform's URLs and a `user_token()`
that returns the user's own DESP access token. That token comes from the user's `auth_state`, read with the
user's OAuth token for this service: the service's OAuth client may issue tokens with `admin:auth_state!user`
(`oauth_client_allowed_scopes` in the service definition), which the hub narrows to the logged-in user, so the
service can read that user's tokens and nobody else's. The service's own API token (read users, groups and
servers) only feeds the executive statistics.

The session's identity never reaches the browser: the hub cookie and headers are left out of Bokeh's session
token (which the page carries), and sessions are signed so a client cannot forge one.

Run by JupyterHub as a managed service (see `desp_hub.services.install.install_dashboards_service`):

    python -m desp_dashboards.service --restricted-group executives
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import html
import importlib
import json
import logging
import os
import secrets
import signal
import threading
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from bokeh.server.auth_provider import AuthProvider
from jupyterhub.services.auth import HubOAuth, HubOAuthCallbackHandler, HubOAuthenticated
from jupyterhub.utils import url_path_join
from panel.io.server import LoginUrlMixin
from tornado import web
from tornado.httputil import url_concat

from .context import DEFAULT_RESTRICTED_GROUP, DashboardContext

log = logging.getLogger("desp_dashboards.service")

SERVICE_NAME = "dashboards"
DEFAULT_PREFIX = f"/services/{SERVICE_NAME}"
#: The apps, by path under the prefix: the module whose `create_app(context)` builds one session's page.
APPS = {
    "visualisation": "desp_dashboards.visualisation.app",
    "executive": "desp_dashboards.executive.app",
}
APP_TITLES = {"visualisation": "Visualisation", "executive": "Executive statistics"}
# Left out of the Bokeh session token, which is written into the page: the hub's cookies carry tokens.
PRIVATE_HEADERS = ["Cookie", "Authorization", "X-Xsrftoken"]


# --- settings and the per-session context (pure) ------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ServiceSettings:
    """What the service learns from the hub and its command line when it starts."""

    prefix: str = DEFAULT_PREFIX
    hub_api_url: str = "http://127.0.0.1:8081/hub/api"
    api_token: str = dataclasses.field(default="", repr=False)
    restricted_group: str = DEFAULT_RESTRICTED_GROUP
    catalogue_url: str = ""
    cache_url: str = ""
    """The user's cache area; `{username}` in it is replaced by the session's user."""
    accounting_url: str = ""
    public_url: str = ""
    """The hub's public URL, e.g. http://127.0.0.1:8000 (websocket origin, links in the page)."""
    statistics_token: Callable[[], str] | None = dataclasses.field(default=None, repr=False, compare=False)
    """The statistics service account's tokens (`service_account.ClientCredentials`), shared by all sessions."""

    @classmethod
    def from_environ(cls, environ: Mapping[str, str], restricted_group: str = DEFAULT_RESTRICTED_GROUP):
        """Settings from the environment the hub gives a managed service (JUPYTERHUB_*) and the install adds
        (DESP_CATALOGUE_URL, DESP_CACHE_URL, DESP_ACCOUNTING_URL, DESP_HUB_PUBLIC_URL, and the statistics service
        account's DESP_STATISTICS_TOKEN_URL, DESP_STATISTICS_CLIENT_ID, DESP_STATISTICS_CLIENT_SECRET)."""
        from . import service_account

        return cls(
            prefix=(environ.get("JUPYTERHUB_SERVICE_PREFIX") or DEFAULT_PREFIX).rstrip("/"),
            hub_api_url=environ.get("JUPYTERHUB_API_URL", cls.hub_api_url),
            api_token=environ.get("JUPYTERHUB_API_TOKEN", ""),
            restricted_group=restricted_group,
            catalogue_url=environ.get("DESP_CATALOGUE_URL", ""),
            cache_url=environ.get("DESP_CACHE_URL", ""),
            accounting_url=environ.get("DESP_ACCOUNTING_URL", ""),
            public_url=(environ.get("DESP_HUB_PUBLIC_URL") or "").rstrip("/"),
            statistics_token=service_account.from_environ(environ),
        )

    @property
    def websocket_origins(self) -> list[str]:
        """Hosts (host:port) a browser may open the dashboards' websockets from: the hub's public host only."""
        if not self.public_url:
            return []
        parts = urlsplit(self.public_url)
        port = parts.port or (443 if parts.scheme == "https" else 80)
        return [f"{parts.hostname}:{port}"]


def build_context(
    settings: ServiceSettings, user: Mapping[str, Any] | None, user_token: Callable[[], str] | None
) -> DashboardContext:
    """The DashboardContext of a session of hub user `user` (a hub user model; None: anonymous)."""
    name = user.get("name") if user else None
    groups = frozenset(g for g in (user.get("groups") or ()) if isinstance(g, str)) if user else frozenset()
    cache_url = settings.cache_url.replace("{username}", name) if name and settings.cache_url else ""
    return DashboardContext(
        user=name,
        groups=groups,
        restricted_group=settings.restricted_group,
        hub_api_url=settings.hub_api_url,
        hub_api_token=settings.api_token,
        user_token=user_token if name else None,
        catalogue_url=settings.catalogue_url,
        cache_url=cache_url,
        accounting_url=settings.accounting_url,
        public_url=(settings.public_url + settings.prefix) if settings.public_url else settings.prefix,
        statistics_token=settings.statistics_token if name else None,
    )


def user_token_reader(hub_api_url: str, hub_token: str, username: str) -> Callable[[], str]:
    """A `user_token()` for a session: the user's current DESP access token from their auth_state on the hub,
    read with the user's own OAuth token for this service (cached until shortly before it expires)."""
    from desp_lab.credentials import access_token

    environ = {"JUPYTERHUB_API_URL": hub_api_url, "JUPYTERHUB_API_TOKEN": hub_token, "JUPYTERHUB_USER": username}

    def user_token() -> str:
        return access_token(environ)

    return user_token


@dataclasses.dataclass(frozen=True)
class Identity:
    """Who made a request, as the hub says: the user model and the OAuth token it was read with."""

    user: dict[str, Any]
    token: str = dataclasses.field(repr=False)


# --- authentication -----------------------------------------------------------------------------------------------


async def identify(hub_auth: HubOAuth, handler: web.RequestHandler) -> Identity | None:
    """The hub user behind `handler`'s request (cookie or token), if it may use this service; else None."""
    model = await hub_auth.get_user(handler, sync=False)
    if not model or model.get("kind", "user") != "user":
        return None
    if hub_auth.access_scopes and not hub_auth.check_scopes(hub_auth.access_scopes, model):
        log.warning("%s may not use the dashboards (no access scope)", model.get("name"))
        return None
    return Identity(model, hub_auth.get_token(handler) or "")


def login_url(hub_auth: HubOAuth, handler: web.RequestHandler) -> str:
    """The hub's OAuth authorize URL for `handler`'s request, with the state (and PKCE) cookie set, coming back
    to the requested page (as `HubOAuthenticated.get_login_url`)."""
    params = {}
    code_verifier = None
    if hub_auth.pkce_enabled:
        code_verifier, params["code_challenge"], params["code_challenge_method"] = (
            hub_auth.generate_pkce_code_challenge()
        )
    params["state"] = hub_auth.set_state_cookie(handler, next_url=handler.request.uri, code_verifier=code_verifier)
    return url_concat(hub_auth.login_url, params)


class HubAuthProvider(AuthProvider):
    """Bokeh's authentication hooks over HubOAuth: every page, websocket and session request needs a hub user.

    The identity is kept on the request (`request.desp_identity`), which Bokeh hands to the new session as
    `session_context.request`, so the app factory can build the session's context from it.
    """

    def __init__(self, hub_auth: HubOAuth):
        self.hub_auth = hub_auth
        super().__init__()

    @property
    def get_user_async(self):
        async def get_user(handler: web.RequestHandler) -> str | None:
            identity = await identify(self.hub_auth, handler)
            handler.request.desp_identity = identity
            return identity.user["name"] if identity else None

        return get_user

    @property
    def get_login_url(self):
        def get_login_url(handler: web.RequestHandler) -> str:
            url = login_url(self.hub_auth, handler)
            if isinstance(handler, LoginUrlMixin):
                # Panel's page handlers put "." in front of the login URL (for its own relative login pages):
                # make "." + url lead from the page's directory back up to the hub's absolute path.
                url = "/" + "../" * (handler.request.path.count("/") - 1) + url.lstrip("/")
            return url

        return get_login_url


class OAuthCallbackHandler(HubOAuthCallbackHandler):
    """Completes the hub's OAuth flow and sets the service's login cookie."""

    def initialize(self, hub_auth: HubOAuth) -> None:
        self.hub_auth = hub_auth


class HubPage(HubOAuthenticated, web.RequestHandler):
    """A plain (non-Bokeh) page or endpoint of the service; short messages for errors, details in the log."""

    def initialize(self, hub_auth: HubOAuth, settings: ServiceSettings) -> None:
        self.hub_auth = hub_auth
        self.service_settings = settings
        self.identity: Identity | None = None

    async def prepare(self) -> None:
        self.identity = await identify(self.hub_auth, self)

    def get_current_user(self):
        return self.identity.user if self.identity else None

    @property
    def context(self) -> DashboardContext:
        identity = self.identity
        assert identity is not None
        reader = user_token_reader(self.service_settings.hub_api_url, identity.token, identity.user["name"])
        return build_context(self.service_settings, identity.user, reader)

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        error = kwargs.get("exc_info", (None, None, None))[1]
        message = "The dashboards service failed to answer; see its log."
        if isinstance(error, web.HTTPError) and status_code != 500:
            message = (error.log_message % error.args) if error.log_message else (error.reason or "Error")
        self.set_header("Content-Type", "application/json; charset=UTF-8")
        self.finish(json.dumps({"message": message}))


INDEX_HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1">
<title>DESP dashboards</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem auto;max-width:40rem;padding:0 1rem}}
a.card{{display:block;border:1px solid #ccd;border-radius:8px;padding:1rem;margin:1rem 0;text-decoration:none}}
a.card:hover{{background:#f4f6fb}}</style></head>
<body><h1>DESP dashboards</h1><p>Logged in as <b id="user">{user}</b>. <a href="{hub}">Back to the hub</a></p>
{cards}</body></html>
"""
APP_DESCRIPTIONS = {
    "visualisation": "Maps and time series of the platform's datasets: templates, exports, share links.",
    "executive": "Usage of the environment: users, servers, DCU use, sessions; CSV and Excel exports.",
}


class IndexHandler(HubPage):
    @web.authenticated
    def get(self) -> None:
        prefix = self.service_settings.prefix
        cards = "\n".join(
            f'<a class="card" href="{html.escape(url_path_join(prefix, name))}"><h2>{APP_TITLES[name]}</h2>'
            f"<p>{APP_DESCRIPTIONS[name]}</p></a>"
            for name in APPS
        )
        self.finish(INDEX_HTML.format(user=html.escape(self.identity.user["name"]), hub="/hub/home", cards=cards))


class ExecutiveDataHandler(HubPage):
    """`executive/data/<view>.json|.csv`: one executive view's data, with the page's public/restricted rules.

    Query arguments filter as the page's sidebar does: `start`, `end` (ISO dates, UTC), `profile`, `service`,
    `group`. A restricted view answers 403 to anyone outside the restricted group; public views hold aggregates
    only, no user names.
    """

    @web.authenticated
    async def get(self, view: str, extension: str) -> None:
        from desp_dashboards.executive.sources import Filters, SourceUnavailable
        from desp_dashboards.executive.views import view_data

        context = self.context
        query = {name: self.get_query_argument(name) for name in self.request.query_arguments}
        try:
            filters = Filters.from_query(query)
        except ValueError as error:
            raise web.HTTPError(400, "%s", str(error)) from None
        try:
            frame = await asyncio.to_thread(view_data, view, context, filters)
        except KeyError:
            raise web.HTTPError(404, "there is no executive view %r", view) from None
        except PermissionError:
            raise web.HTTPError(
                403, "the view %r is restricted to members of %r", view, context.restricted_group
            ) from None
        except SourceUnavailable as error:
            raise web.HTTPError(503, "%s", str(error)) from None
        if extension == "csv":
            self.set_header("Content-Type", "text/csv; charset=UTF-8")
            self.set_header("Content-Disposition", f'attachment; filename="{view}.csv"')
            self.finish(frame.to_csv(index=False))
        else:
            self.set_header("Content-Type", "application/json; charset=UTF-8")
            self.finish(frame.to_json(orient="records", date_format="iso"))


# --- the Panel apps -----------------------------------------------------------------------------------------------


def session_context(settings: ServiceSettings) -> DashboardContext:
    """The context of the Panel session being built (its request went through HubAuthProvider)."""
    import panel as pn

    request = pn.state.curdoc.session_context.request
    identity: Identity | None = getattr(request, "desp_identity", None)
    if identity is None:  # cannot happen behind HubAuthProvider; refuse rather than show an anonymous page
        raise web.HTTPError(403, "not logged in to the hub")
    reader = user_token_reader(settings.hub_api_url, identity.token, identity.user["name"])
    return build_context(settings, identity.user, reader)


def app_factory(name: str, settings: ServiceSettings) -> Callable[[], Any]:
    """A Panel app function: per session, `create_app(context)` of the app's module."""

    def create() -> Any:
        import panel as pn

        module = importlib.import_module(APPS[name])
        context = session_context(settings)
        try:
            return module.create_app(context)
        except Exception:
            log.exception("The %s dashboard failed to start for %s", name, context.user)
            return pn.pane.Alert(
                f"The {APP_TITLES[name].lower()} dashboard could not start; the service log has the details.",
                alert_type="danger",
            )

    create.__name__ = name
    return create


def make_server(settings: ServiceSettings, *, port: int, address: str = "127.0.0.1", hub_auth: HubOAuth | None = None):
    """The Bokeh/Panel server of the service (not started)."""
    import panel as pn

    hub_auth = hub_auth or HubOAuth(cache_max_age=60)
    page_args = {"hub_auth": hub_auth, "settings": settings}
    extra_patterns = [
        (r"/?", IndexHandler, page_args),
        (r"/oauth_callback", OAuthCallbackHandler, {"hub_auth": hub_auth}),
        (r"/executive/data/([A-Za-z0-9_-]+)\.(json|csv)", ExecutiveDataHandler, page_args),
    ]
    return pn.serve(
        {name: app_factory(name, settings) for name in APPS},
        port=port,
        address=address,
        prefix=settings.prefix,
        websocket_origin=settings.websocket_origins or None,
        extra_patterns=extra_patterns,
        auth_provider=HubAuthProvider(hub_auth),
        cookie_secret=secrets.token_hex(32),
        # sessions are signed, so a browser can only join sessions this server made for it
        sign_sessions=True,
        secret_key=secrets.token_urlsafe(32),
        generate_session_ids=True,
        exclude_headers=PRIVATE_HEADERS,
        include_cookies=[],
        title={name: f"DESP {title}" for name, title in APP_TITLES.items()},
        show=False,
        start=False,
        xheaders=True,
    )


def warm_up() -> None:
    """Import every app's module, so the first session of each starts as fast as the next ones."""
    for name, module in APPS.items():
        try:
            importlib.import_module(module)
        except Exception:
            log.exception("The %s dashboard cannot be imported", name)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m desp_dashboards.service", description=__doc__.split("\n")[0])
    parser.add_argument(
        "--restricted-group",
        default=DEFAULT_RESTRICTED_GROUP,
        help="members of this hub group see restricted panels and user names",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="[%(levelname)1.1s %(asctime)s %(name)s] %(message)s")
    settings = ServiceSettings.from_environ(os.environ, restricted_group=args.restricted_group)
    url = urlsplit(os.environ.get("JUPYTERHUB_SERVICE_URL", "http://127.0.0.1:10102"))
    if not settings.websocket_origins:
        log.warning("DESP_HUB_PUBLIC_URL is not set: the dashboards' websockets accept only same-host origins")

    async def serve() -> None:
        server = make_server(settings, port=url.port or 80, address=url.hostname or "127.0.0.1")
        server.start()
        log.info("Dashboards service listening on %s, proxied at %s/", url.geturl(), settings.prefix)
        # import the apps (Panel, HoloViews, cartopy ...) now, not in the first user's request; a daemon thread, so
        # a stop during the imports (tens of seconds on a busy machine) does not wait for them
        threading.Thread(target=warm_up, name="warm-up", daemon=True).start()
        # JupyterHub stops a managed service with SIGINT, then SIGTERM
        stop = asyncio.Event()
        for signum in (signal.SIGINT, signal.SIGTERM):
            asyncio.get_running_loop().add_signal_handler(signum, stop.set)
        await stop.wait()
        log.info("Dashboards service stopping")
        server.stop()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
