"""`desp-hub`: start DESP Hub on one machine (`up`) or print its effective configuration (`config`).

`desp-hub up` starts the sandbox identity provider (unless an external Keycloak is given with
`--iam-url`), then JupyterHub with its proxy, all on 127.0.0.1 by default, and stops everything on
Ctrl-C or SIGTERM. All state lives in the data directory, so a restart keeps users and servers.
"""

import argparse
import json
import os
import secrets
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from importlib import resources

from .launcher_config import LaunchOptions, hub_arguments, hub_environment, masked_config
from .ports import free_port

REALM_FILE = str(resources.files("desp_sandbox") / "realm" / "desp-realm.json")
HUB_CONFIG_FILE = str(resources.files("desp_hub") / "jupyterhub_config.py")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(prog="desp-hub", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (
        ("up", "start the identity provider, the hub and its proxy; Ctrl-C stops them"),
        ("config", "print the effective hub configuration (secrets masked)"),
    ):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("--ip", default="127.0.0.1", help="address the proxy listens on (default %(default)s)")
        command.add_argument("--port", type=int, default=8000, help="port of the hub's public URL (default %(default)s)")
        command.add_argument("--data-dir", default="data", help="where all state lives (default ./%(default)s)")
        command.add_argument("--public-url", help="URL users open (default http://IP:PORT)")
        command.add_argument("--idp-port", type=int, help="port of the sandbox identity provider (default PORT+1)")
        command.add_argument("--iam-url", help="use this Keycloak (base URL, no realm) instead of the sandbox IdP")
        command.add_argument("--realm", default="desp", help="Keycloak realm (default %(default)s)")
        command.add_argument(
            "--realm-file", default=REALM_FILE, help="realm (Keycloak export format) for the sandbox IdP (default: the demo realm)"
        )
        command.add_argument("--client-id", default="desp-hub", help="OAuth client id of the hub (default %(default)s)")
        command.add_argument("--profiles", help="profiles YAML file (default: the seed shipped with desp_hub)")
        command.add_argument(
            "--isolate-users",
            action="store_true",
            help="run each user's server under its own system account (created on first spawn; needs root)",
        )
        command.add_argument(
            "--keep-servers", action="store_true", help="leave user servers running when the hub stops"
        )
        command.add_argument(
            "--allow-gpu-profiles-without-gpu",
            action="store_true",
            help="development override: start GPU profiles on a host without a GPU",
        )
        command.add_argument("--config", dest="extra_config", help="extra jupyterhub_config.py loaded last")
        command.add_argument(
            "--catalogue-url", help="use this STAC API (e.g. the Data Lake's HDA) instead of the sandbox catalogue"
        )
        command.add_argument("--catalogue-port", type=int, help="port of the sandbox catalogue (default PORT+2)")
        command.add_argument(
            "--no-catalogue", action="store_true", help="start no catalogue; servers get no DESP_CATALOGUE_URL"
        )
        command.add_argument(
            "--user-cache-url",
            help="fsspec URL of each user's cache area, with {username} (default DATA_DIR/user-cache/{username})",
        )
        command.add_argument(
            "--cache-quota-gib", type=float, default=10, help="per-user cache quota in GiB (default %(default)s)"
        )
        for prefix, service, offset, what in (("trace", "traces", 3, "traceability"),
                                              ("accounting", "accounting", 4, "accounting (DCU ledger)")):
            command.add_argument(f"--{prefix}-url", help=f"use this {what} service (root URL) instead of the sandbox's")
            command.add_argument(
                f"--{prefix}-port", type=int, help=f"port of the sandbox {what} service (default PORT+{offset})"
            )
            command.add_argument(f"--no-{service}", action="store_true", help=f"start no {what} service")
        command.add_argument(
            "--metering-interval", type=int, default=300,
            help="seconds per metered interval: each running server is debited once per interval (default %(default)s)",
        )
    return parser.parse_args(argv)


def options_from_args(args) -> LaunchOptions:
    data_dir = os.path.abspath(args.data_dir)
    ports = _internal_ports(data_dir, create=args.command == "up")
    return LaunchOptions(
        ip=args.ip,
        port=args.port,
        data_dir=data_dir,
        public_url=(args.public_url or f"http://{args.ip}:{args.port}").rstrip("/"),
        iam_url=(args.iam_url or f"http://{args.ip}:{args.idp_port or args.port + 1}").rstrip("/"),
        sandbox_idp=not args.iam_url,
        realm=args.realm,
        client_id=args.client_id,
        profiles_path=os.path.abspath(args.profiles) if args.profiles else "",
        isolate_users=args.isolate_users,
        keep_servers=args.keep_servers,
        allow_gpu_profiles_without_gpu=args.allow_gpu_profiles_without_gpu,
        extra_config=os.path.abspath(args.extra_config) if args.extra_config else "",
        hub_api_port=ports["hub_api"],
        proxy_api_port=ports["proxy_api"],
        catalogue_url="" if args.no_catalogue else (
            args.catalogue_url or f"http://{args.ip}:{args.catalogue_port or args.port + 2}/stac/v2"
        ).rstrip("/"),
        sandbox_catalogue=not (args.catalogue_url or args.no_catalogue),
        user_cache_url=args.user_cache_url or os.path.join(data_dir, "user-cache", "{username}"),
        cache_quota_bytes=int(args.cache_quota_gib * 1024**3),
        trace_url=_service_url(args.trace_url, args.no_traces, args.ip, args.trace_port or args.port + 3),
        sandbox_traces=not (args.trace_url or args.no_traces),
        accounting_url=_service_url(args.accounting_url, args.no_accounting, args.ip,
                                    args.accounting_port or args.port + 4),
        sandbox_accounting=not (args.accounting_url or args.no_accounting),
        metering_interval=args.metering_interval,
    )


def _service_url(given, disabled, ip, sandbox_port):
    """A platform service's root URL: the one given, none, or the sandbox's on `sandbox_port`."""
    if disabled:
        return ""
    return (given or f"http://{ip}:{sandbox_port}").rstrip("/")


def _internal_ports(data_dir, create):
    """Ports of the hub's internal API and the proxy's API, chosen once and kept in the data dir.

    Running servers reach the hub at its internal API, so the port must survive a hub restart.
    Without `create`, a data dir that has none yet shows 0 (chosen at the first `up`).
    """
    path = os.path.join(data_dir, "ports.json")
    if os.path.exists(path):
        with open(path) as ports_file:
            return json.load(ports_file)
    if not create:
        return {"hub_api": 0, "proxy_api": 0}
    ports = {"hub_api": free_port(), "proxy_api": free_port()}
    os.makedirs(data_dir, exist_ok=True)
    with open(path, "w") as ports_file:
        json.dump(ports, ports_file)
    return ports


def _secret(data_dir, name, nbytes=32):
    """A random secret kept in `{data_dir}/secrets/{name}` (0600), created on first use."""
    directory = os.path.join(data_dir, "secrets")
    os.makedirs(directory, mode=0o700, exist_ok=True)
    path = os.path.join(directory, name)
    if not os.path.exists(path):
        descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(descriptor, "w") as secret_file:
            secret_file.write(secrets.token_hex(nbytes))
    with open(path) as secret_file:
        return secret_file.read().strip()


def demo_logins(realm_file=REALM_FILE):
    """(username, password, groups) of the realm file's demo users."""
    with open(realm_file) as realm:
        users = json.load(realm)["users"]
    return [
        (user["username"], credential["value"], ", ".join(g.lstrip("/") for g in user.get("groups", [])) or "-")
        for user in users
        for credential in user.get("credentials", [])
        if credential.get("type") == "password"
    ]


def _wait_for(url, process, timeout):
    """Wait until `url` answers 200 (the proxy answers other codes before the hub's route is in)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise SystemExit(f"desp-hub: {url} did not come up: its process exited with {process.returncode}")
        try:
            urllib.request.urlopen(url, timeout=5)
            return
        except OSError:  # connection refused, or an HTTP error status
            time.sleep(0.2)
    raise SystemExit(f"desp-hub: {url} did not answer within {timeout} s")


class Stack:
    """The processes of one `desp-hub up`, stopped in reverse order, each by its PID."""

    def __init__(self):
        self.processes = []

    def start(self, name, args, env, cwd, log_path):
        log = open(log_path, "ab")
        process = subprocess.Popen(args, env=env, cwd=cwd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        self.processes.append((name, process))
        return process

    def stop(self, timeout=30):
        for name, process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout)
                except subprocess.TimeoutExpired:
                    print(f"desp-hub: {name} did not stop in {timeout} s; killing it", flush=True)
            try:
                os.killpg(process.pid, signal.SIGKILL)  # whatever its process group left behind
            except ProcessLookupError:
                pass
            process.wait()


def up(options: LaunchOptions, realm_file=REALM_FILE):
    data_dir = options.data_dir
    for sub in ("hub", "idp", "logs"):
        os.makedirs(os.path.join(data_dir, sub), exist_ok=True)
    base_env = dict(os.environ)
    base_env.pop("JUPYTERHUB_API_TOKEN", None)
    stack = Stack()
    stopping = []

    def request_stop(signum, frame):
        stopping.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, request_stop)
    try:
        hub_env = dict(base_env, JUPYTERHUB_CRYPT_KEY=_secret(data_dir, "jupyterhub_crypt_key"))
        if options.sandbox_idp:
            hub_client_secret = _secret(data_dir, "hub_client_secret")
            idp_env = dict(
                base_env,
                DESP_HUB_CLIENT_SECRET=hub_client_secret,
                DESP_HUB_URL=options.public_url,
                DESP_ADMIN_CLIENT_SECRET=_secret(data_dir, "admin_client_secret"),
                DESP_METERING_CLIENT_SECRET=_secret(data_dir, "metering_client_secret"),
                DESP_STATISTICS_CLIENT_SECRET=_secret(data_dir, "statistics_client_secret"),
            )
            idp_port = int(options.iam_url.rsplit(":", 1)[1])
            idp = stack.start(
                "identity provider",
                [sys.executable, "-m", "desp_sandbox.idp.server", "--ip", options.ip, "--port", str(idp_port),
                 "--realm-file", realm_file, "--data-dir", os.path.join(data_dir, "idp")],
                idp_env, data_dir, os.path.join(data_dir, "logs", "idp.log"),
            )
            _wait_for(f"{options.iam_url}/realms/{options.realm}/.well-known/openid-configuration", idp, 60)
            hub_env["OAUTH_CLIENT_SECRET"] = hub_client_secret
            hub_env["DESP_METERING_CLIENT_SECRET"] = idp_env["DESP_METERING_CLIENT_SECRET"]
            hub_env["DESP_STATISTICS_CLIENT_SECRET"] = idp_env["DESP_STATISTICS_CLIENT_SECRET"]
        elif not hub_env.get("OAUTH_CLIENT_SECRET"):
            raise SystemExit("desp-hub: with --iam-url, put the hub client's secret in OAUTH_CLIENT_SECRET")
        if options.sandbox_catalogue:
            start_sandbox_catalogue(stack, options, base_env)
        if options.sandbox_traces:
            start_sandbox_service(stack, options, base_env, "traces", options.trace_url)
        if options.sandbox_accounting:
            start_sandbox_service(stack, options, base_env, "accounting", options.accounting_url)
        if options.extra_config:
            hub_env["DESP_HUB_EXTRA_CONFIG"] = options.extra_config
        hub_env.update(hub_environment(options))
        hub = stack.start(
            "hub",
            [sys.executable, "-m", "jupyterhub", "-f", HUB_CONFIG_FILE, *hub_arguments(options)],
            hub_env, os.path.join(data_dir, "hub"), os.path.join(data_dir, "logs", "hub.log"),
        )
        _wait_for(f"{options.public_url}/hub/api/", hub, 120)
        print(banner(options, realm_file), flush=True)
        while hub.poll() is None:
            time.sleep(0.5)
        print(f"desp-hub: the hub exited with {hub.returncode}; see {data_dir}/logs/hub.log", flush=True)
        return hub.returncode or 1
    except KeyboardInterrupt:
        print("\ndesp-hub: stopping", flush=True)
        return 0
    finally:
        stack.stop()
        _stop_orphaned_proxy(os.path.join(data_dir, "hub", "jupyterhub-proxy.pid"))


def start_sandbox_catalogue(stack, options, env):
    """The sandbox STAC API and cache (desp_sandbox.catalogue); its first start creates the database and data."""
    port = urllib.parse.urlsplit(options.catalogue_url).port
    realm_url = f"{options.iam_url}/realms/{options.realm}"
    catalogue = stack.start(
        "catalogue",
        [sys.executable, "-m", "desp_sandbox.catalogue", "--ip", options.ip, "--port", str(port),
         "--data-dir", options.data_dir, "--jwks-url", f"{realm_url}/protocol/openid-connect/certs",
         "--issuer", realm_url],
        env, options.data_dir, os.path.join(options.data_dir, "logs", "catalogue.log"),
    )
    _wait_for(options.catalogue_url, catalogue, 300)
    return catalogue


def start_sandbox_service(stack, options, env, name, url):
    """A sandbox platform service (`desp_sandbox.traces`, `desp_sandbox.accounting`): FastAPI on SQLite in DATA_DIR."""
    realm_url = f"{options.iam_url}/realms/{options.realm}"
    service = stack.start(
        name,
        [sys.executable, "-m", f"desp_sandbox.{name}", "--ip", options.ip,
         "--port", str(urllib.parse.urlsplit(url).port), "--data-dir", options.data_dir,
         "--jwks-url", f"{realm_url}/protocol/openid-connect/certs", "--issuer", realm_url],
        env, options.data_dir, os.path.join(options.data_dir, "logs", f"{name}.log"),
    )
    _wait_for(f"{url}/api/status", service, 60)
    return service


def _stop_orphaned_proxy(pid_file):
    """If the hub died without stopping its proxy, stop the proxy by the PID the hub recorded."""
    try:
        with open(pid_file) as pid_text:
            pid = int(pid_text.read().strip())
        os.kill(pid, signal.SIGTERM)
        print(f"desp-hub: stopped the proxy (pid {pid}) the hub left behind", flush=True)
    except (OSError, ValueError):
        return


def banner(options: LaunchOptions, realm_file=REALM_FILE) -> str:
    lines = [
        "",
        f"DESP Hub is running at {options.public_url}/",
        f"Dashboards: {options.public_url}/services/dashboards/",
        f"Identity provider: {options.iam_url}/realms/{options.realm}"
        + (" (sandbox, for development only)" if options.sandbox_idp else ""),
    ]
    if options.catalogue_url:
        lines.append(f"Catalogue (STAC API): {options.catalogue_url}"
                     + (" (sandbox sample data)" if options.sandbox_catalogue else ""))
    if options.trace_url:
        lines.append(f"Traceability: {options.trace_url}" + (" (sandbox)" if options.sandbox_traces else ""))
    if options.accounting_url:
        lines.append(f"Accounting: {options.accounting_url}" + (" (sandbox)" if options.sandbox_accounting else "")
                     + f"; servers are metered every {options.metering_interval} s")
    if options.sandbox_idp:
        lines.append("Demo logins (username / password / groups):")
        lines += [f"  {name:<11} {password:<16} {groups}" for name, password, groups in demo_logins(realm_file)]
    lines += [f"Logs and state: {options.data_dir}", "Press Ctrl-C to stop.", ""]
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    options = options_from_args(args)
    if args.command == "config":
        if options.extra_config:
            os.environ["DESP_HUB_EXTRA_CONFIG"] = options.extra_config
        os.environ.update(hub_environment(options))
        print(masked_config(HUB_CONFIG_FILE, options, os.environ))
        return 0
    return up(options, os.path.abspath(args.realm_file))


if __name__ == "__main__":
    sys.exit(main())
