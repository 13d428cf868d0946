"""What `desp-hub` passes to JupyterHub, as pure functions of the launch options (no I/O but `masked_config`)."""

import re
from dataclasses import dataclass

SECRET_NAME = re.compile(r"(secret|token|password|key)$", re.IGNORECASE)
SECRET_ENVIRONMENT = ("OAUTH_CLIENT_SECRET", "JUPYTERHUB_CRYPT_KEY", "CONFIGPROXY_AUTH_TOKEN",
                      "DESP_METERING_CLIENT_SECRET", "DESP_STATISTICS_CLIENT_SECRET")


@dataclass(frozen=True)
class LaunchOptions:
    """Everything `desp-hub up` decides before starting processes."""

    ip: str
    port: int
    data_dir: str
    public_url: str
    iam_url: str
    sandbox_idp: bool
    realm: str
    client_id: str
    profiles_path: str
    isolate_users: bool
    keep_servers: bool
    allow_gpu_profiles_without_gpu: bool
    extra_config: str
    hub_api_port: int
    proxy_api_port: int
    catalogue_url: str = ""
    sandbox_catalogue: bool = False
    user_cache_url: str = ""
    cache_quota_bytes: int = 10 * 1024**3
    trace_url: str = ""
    sandbox_traces: bool = False
    accounting_url: str = ""
    sandbox_accounting: bool = False
    metering_interval: int = 300


def hub_arguments(options: LaunchOptions) -> list[str]:
    """JupyterHub command-line traitlets for these options (they override jupyterhub_config.py)."""
    spawner = "DespSystemUserSpawner" if options.isolate_users else "DespLocalSpawner"
    arguments = [
        f"--JupyterHub.bind_url=http://{options.ip}:{options.port}/",
        f"--JupyterHub.hub_bind_url=http://127.0.0.1:{options.hub_api_port}/",
        f"--ConfigurableHTTPProxy.api_url=http://127.0.0.1:{options.proxy_api_port}",
        f"--JupyterHub.cleanup_servers={not options.keep_servers}",
        f"--JupyterHub.spawner_class=desp_hub.spawner.{spawner}",
        f"--DespKeycloakAuthenticator.iam_url={options.iam_url}",
        f"--DespKeycloakAuthenticator.realm={options.realm}",
        f"--DespKeycloakAuthenticator.client_id={options.client_id}",
        f"--DespKeycloakAuthenticator.oauth_callback_url={options.public_url}/hub/oauth_callback",
        f"--{spawner}.allow_gpu_profiles_without_gpu={options.allow_gpu_profiles_without_gpu}",
        f"--DespPlatformEndpoints.catalogue_url={options.catalogue_url}",
        f"--DespPlatformEndpoints.user_cache_url={options.user_cache_url}",
        f"--DespPlatformEndpoints.cache_quota_bytes={options.cache_quota_bytes}",
        f"--DespPlatformEndpoints.trace_url={options.trace_url}",
        f"--DespPlatformEndpoints.accounting_url={options.accounting_url}",
        f"--DespMetering.accounting_url={options.accounting_url}",
        f"--DespMetering.interval_seconds={options.metering_interval}",
        f"--DespMetering.token_url={options.iam_url}/realms/{options.realm}/protocol/openid-connect/token",
    ]
    return arguments


def hub_environment(options: LaunchOptions) -> dict[str, str]:
    """Settings jupyterhub_config.py reads from the environment (they feed both the spawner and a service)."""
    return {"DESP_PROFILES_SEED": options.profiles_path} if options.profiles_path else {}


URL_PASSWORD = re.compile(r"(://[^/:@]*:)[^@/]*@")


def mask(name: str, value):
    """`***` for a non-empty value whose name says it is a secret, and for passwords inside URLs."""
    if value and SECRET_NAME.search(name):
        return "***"
    if isinstance(value, str):
        return URL_PASSWORD.sub(r"\1***@", value)
    return value


def masked_config(config_file: str, options: LaunchOptions, environ) -> str:
    """The effective configuration (file + command line + derived endpoints), secrets masked."""
    from jupyterhub.app import JupyterHub

    # The singleton, as in a running hub: the config file reads the command line from it (metering's settings).
    app = JupyterHub.instance()
    try:
        return _effective_config(app, config_file, options, environ)
    finally:
        JupyterHub.clear_instance()


def _effective_config(app, config_file: str, options: LaunchOptions, environ) -> str:
    from traitlets.config.loader import DeferredConfig, LazyConfigValue

    from .authenticator import DespKeycloakAuthenticator
    from .metering import DespMetering
    from .platform_endpoints import DespPlatformEndpoints
    from .spawner import DespLocalSpawner, DespSystemUserSpawner

    app.parse_command_line(["-f", config_file, *hub_arguments(options)])
    app.load_config_file(app.config_file)
    app.update_config(app.cli_config)
    classes = {cls.__name__: cls for cls in [*app.classes, DespKeycloakAuthenticator, DespLocalSpawner,
                                             DespSystemUserSpawner, DespPlatformEndpoints, DespMetering]}
    lines = [f"# {config_file} with the command line of `desp-hub up`"]
    for section in sorted(app.config):
        for name in sorted(app.config[section]):
            value = app.config[section][name]
            if isinstance(value, DeferredConfig) and section in classes:
                value = value.get_value(classes[section].class_traits()[name])
            if isinstance(value, LazyConfigValue) and section in classes:
                value = value.get_value(classes[section].class_traits()[name].default())
            lines.append(f"c.{section}.{name} = {mask(name, value)!r}")
    authenticator = DespKeycloakAuthenticator(config=app.config, use_discovery=False)
    lines.append("# derived from iam_url and realm")
    for name in ("issuer", "authorize_url", "token_url", "userdata_url", "end_session_endpoint", "jwks_uri",
                 "post_logout_redirect_url"):
        lines.append(f"#   {name} = {getattr(authenticator, name)}")
    lines.append("# secrets from the environment")
    for name in SECRET_ENVIRONMENT:
        lines.append(f"#   {name}: {'set' if environ.get(name) else 'not set'}")
    return "\n".join(lines)
