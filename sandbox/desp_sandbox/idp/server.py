"""Command line and tornado application of the sandbox IdP, a development stand-in for DESP's Keycloak.

    python -m desp_sandbox.idp.server --ip 127.0.0.1 --port 8180 \\
        --realm-file sandbox/desp_sandbox/realm/desp-realm.json --data-dir /tmp/desp-idp

Not a security boundary: demo passwords live in the realm file, and nothing here has had the review a
real identity provider needs. It binds only to the address it is given.
"""

import argparse
import asyncio
import logging
import os
import signal
import sys
from importlib import resources
from urllib.parse import urlsplit

from tornado import web

from . import admin, handlers
from .provider import Provider
from .realm import Realm, RealmFileError
from .store import StateFileError, Store
from .tokens import Signer, load_or_create_signing_key

log = logging.getLogger("desp_sandbox.idp")
access_log = logging.getLogger("desp_sandbox.idp.access")

REALM = r"/realms/(?P<realm>[^/]+)"
ADMIN = r"/admin/realms/(?P<realm>[^/]+)"
OIDC = REALM + "/protocol/openid-connect"


def default_realm_file():
    """The realm export shipped with the sandbox."""
    return str(resources.files("desp_sandbox") / "realm" / "desp-realm.json")


def log_request(handler):
    """One line per request: status, method, path (never the query string: it carries codes and tokens)."""
    status = handler.get_status()
    level = logging.INFO if status < 400 else logging.WARNING if status < 500 else logging.ERROR
    request = handler.request
    access_log.log(level, "%d %s %s (%s) %.1fms", status, request.method, request.path, request.remote_ip,
                   1000 * request.request_time())


def make_app(provider, path_prefix="", secure_cookies=False):
    """The tornado application serving `provider` under `path_prefix` (the public URL's path)."""
    routes = [
        (REALM, handlers.RealmInfoHandler),
        (REALM + r"/\.well-known/openid-configuration", handlers.DiscoveryHandler),
        (OIDC + "/auth", handlers.AuthorizationHandler),
        (OIDC + "/token", handlers.TokenHandler),
        (OIDC + "/userinfo", handlers.UserinfoHandler),
        (OIDC + "/certs", handlers.CertsHandler),
        (OIDC + "/logout", handlers.LogoutHandler),
        (REALM + "/login-actions/authenticate", handlers.LoginActionHandler),
        (ADMIN + "/users", admin.UsersHandler),
        (ADMIN + "/users/(?P<user_id>[^/]+)", admin.UserHandler),
        (ADMIN + "/users/(?P<user_id>[^/]+)/groups", admin.UserGroupsHandler),
        (ADMIN + "/users/(?P<user_id>[^/]+)/groups/(?P<group_id>[^/]+)", admin.UserGroupHandler),
        (ADMIN + "/groups", admin.GroupsHandler),
        (ADMIN + "/groups/(?P<group_id>[^/]+)", admin.GroupHandler),
    ]
    return web.Application(
        [(path_prefix + pattern, handler) for pattern, handler in routes],
        provider=provider,
        path_prefix=path_prefix,
        secure_cookies=secure_cookies,
        template_path=str(resources.files(__package__) / "templates"),
        default_handler_class=handlers.NotFoundHandler,
        log_function=log_request,
    )


def build_provider(realm_file, data_dir, public_url, access_token_lifespan=None, environ=None):
    """Load the realm, the signing key and the saved state; raises RealmFileError or StateFileError."""
    realm = Realm.from_file(realm_file, os.environ if environ is None else environ)
    os.makedirs(data_dir, mode=0o700, exist_ok=True)
    issuer = f"{public_url}/realms/{realm.name}"
    signer = Signer(load_or_create_signing_key(data_dir), issuer)
    store = Store(os.path.join(data_dir, "state.json"), realm.sso_idle_timeout, realm.sso_max_lifespan)
    return Provider(realm, store, signer, access_token_lifespan=access_token_lifespan)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        prog="desp-sandbox-idp",
        description="Keycloak-shaped OpenID Connect provider for local development (not a security boundary).",
    )
    parser.add_argument("--ip", default="127.0.0.1", help="Address to bind to, and only to it (default: %(default)s).")
    parser.add_argument("--port", type=int, default=8180, help="TCP port (default: %(default)s).")
    parser.add_argument("--realm-file", default=None,
                        help="Keycloak realm export to serve; ${NAME} / ${NAME:default} placeholders are filled "
                             "from the environment (default: the sandbox's desp-realm.json).")
    parser.add_argument("--data-dir", required=True,
                        help="Directory for the signing key, sessions and user changes (created if missing).")
    parser.add_argument("--public-url", default=None,
                        help="URL clients use to reach this server, without /realms (default: http://IP:PORT). "
                             "Its path, if any, is also the prefix served (like Keycloak's --http-relative-path).")
    parser.add_argument("--access-token-lifespan", type=int, default=None, metavar="SECONDS",
                        help="Override the realm's accessTokenLifespan (tests use a few seconds).")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    if args.public_url is None:
        host = f"[{args.ip}]" if ":" in args.ip else args.ip
        args.public_url = f"http://{host}:{args.port}"
    args.public_url = args.public_url.rstrip("/")
    parts = urlsplit(args.public_url)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        parser.error(f"--public-url must be an http(s) URL without query or fragment, not {args.public_url!r}")
    if args.access_token_lifespan is not None and args.access_token_lifespan <= 0:
        parser.error("--access-token-lifespan must be a positive number of seconds")
    return args


async def serve(app, ip, port):
    """Serve until SIGTERM or SIGINT, then close connections and return."""
    server = app.listen(port, address=ip)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    log.info("listening on %s:%d", ip, port)
    await stopping.wait()
    log.info("stopping")
    server.stop()
    try:
        await asyncio.wait_for(server.close_all_connections(), timeout=5)
    except TimeoutError:
        log.warning("some connections did not close within 5s")


def main(argv=None):
    """Entry point of `desp-sandbox-idp` and `python -m desp_sandbox.idp[.server]`; returns the exit status."""
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        provider = build_provider(args.realm_file or default_realm_file(), args.data_dir, args.public_url,
                                  args.access_token_lifespan)
    except (RealmFileError, StateFileError) as error:
        log.error("%s", error)
        return 2
    path_prefix = urlsplit(args.public_url).path
    app = make_app(provider, path_prefix, secure_cookies=args.public_url.startswith("https:"))
    log.info("realm %r, issuer %s (development stand-in for Keycloak; not a security boundary)",
             provider.realm.name, provider.issuer)
    try:
        asyncio.run(serve(app, args.ip, args.port))
    except OSError as error:
        log.error("cannot listen on %s:%d: %s", args.ip, args.port, error.strerror or error)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
