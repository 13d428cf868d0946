"""`desp-hub config`: the effective configuration, secrets masked; the launch arguments are a pure function."""

import subprocess
import sys

from desp_hub.cli import banner, demo_logins, options_from_args, parse_args
from desp_hub.launcher_config import hub_arguments, mask


def test_config_prints_effective_settings_with_secrets_masked(tmp_path):
    extra = tmp_path / "operator.py"
    extra.write_text("c.DespKeycloakAuthenticator.client_secret = 'do-not-show-me'\n"
                     "c.DespKeycloakAuthenticator.allowed_roles = {'desp-user'}\n")
    result = subprocess.run(
        [sys.executable, "-m", "desp_hub.cli", "config", "--data-dir", str(tmp_path / "data"), "--port", "8123",
         "--iam-url", "https://auth.destine.eu", "--config", str(extra)],
        capture_output=True, text=True, timeout=120, env={"PATH": "/usr/bin:/bin", "OAUTH_CLIENT_SECRET": "s3cret"},
    )
    assert result.returncode == 0, result.stderr
    output = result.stdout
    assert "do-not-show-me" not in output and "s3cret" not in output
    assert "c.DespKeycloakAuthenticator.client_secret = '***'" in output
    assert "c.DespKeycloakAuthenticator.iam_url = 'https://auth.destine.eu'" in output
    assert "c.DespKeycloakAuthenticator.allowed_roles = {'desp-user'}" in output
    assert "c.JupyterHub.bind_url = 'http://127.0.0.1:8123/'" in output
    assert "token_url = https://auth.destine.eu/realms/desp/protocol/openid-connect/token" in output
    assert "OAUTH_CLIENT_SECRET: set" in output
    assert not (tmp_path / "data").exists(), "config must not create state"


def test_launch_arguments():
    options = options_from_args(parse_args(["config", "--port", "9000", "--isolate-users", "--data-dir", "/nowhere"]))
    arguments = hub_arguments(options)
    assert "--JupyterHub.bind_url=http://127.0.0.1:9000/" in arguments
    assert "--JupyterHub.spawner_class=desp_hub.spawner.DespSystemUserSpawner" in arguments
    assert "--DespKeycloakAuthenticator.iam_url=http://127.0.0.1:9001" in arguments
    assert "--JupyterHub.cleanup_servers=True" in arguments


def test_mask():
    assert mask("client_secret", "x") == "***"
    assert mask("cookie_secret_file", "/path") == "/path"
    assert mask("api_token", "") == ""


def test_demo_logins_come_from_the_realm_file():
    logins = {name: (password, groups) for name, password, groups in demo_logins()}
    assert logins["researcher"] == ("researcher-demo", "desp-users")
    assert set(logins) >= {"researcher", "poweruser", "aiuser", "admin", "executive"}


def test_mask_hides_passwords_in_urls():
    assert mask("profiles_url", "postgresql+psycopg://desp:hunter2@db:5432/desp") == "postgresql+psycopg://desp:***@db:5432/desp"
    assert mask("profiles_url", "sqlite:////data/profiles.sqlite") == "sqlite:////data/profiles.sqlite"


def test_data_endpoints_reach_the_hub_configuration():
    options = options_from_args(parse_args(["config", "--port", "9000", "--data-dir", "/srv/desp"]))
    arguments = hub_arguments(options)
    assert options.sandbox_catalogue
    assert "--DespPlatformEndpoints.catalogue_url=http://127.0.0.1:9002/stac/v2" in arguments
    assert "--DespPlatformEndpoints.user_cache_url=/srv/desp/user-cache/{username}" in arguments
    assert f"--DespPlatformEndpoints.cache_quota_bytes={10 * 1024**3}" in arguments

    external = options_from_args(parse_args(
        ["config", "--catalogue-url", "https://hda.data.destination-earth.eu/stac/v2/", "--cache-quota-gib", "0.5",
         "--user-cache-url", "s3://desp-cache/users/{username}"]))
    assert not external.sandbox_catalogue
    assert "--DespPlatformEndpoints.catalogue_url=https://hda.data.destination-earth.eu/stac/v2" in hub_arguments(external)
    assert "--DespPlatformEndpoints.user_cache_url=s3://desp-cache/users/{username}" in hub_arguments(external)
    assert f"--DespPlatformEndpoints.cache_quota_bytes={1024**3 // 2}" in hub_arguments(external)


def test_trace_and_accounting_services_reach_servers_and_metering():
    options = options_from_args(parse_args(["config", "--port", "9000", "--metering-interval", "60"]))
    arguments = hub_arguments(options)
    assert options.sandbox_traces and options.sandbox_accounting
    assert "--DespPlatformEndpoints.trace_url=http://127.0.0.1:9003" in arguments
    assert "--DespPlatformEndpoints.accounting_url=http://127.0.0.1:9004" in arguments
    assert "--DespMetering.accounting_url=http://127.0.0.1:9004" in arguments
    assert "--DespMetering.interval_seconds=60" in arguments
    assert "--DespMetering.token_url=http://127.0.0.1:9001/realms/desp/protocol/openid-connect/token" in arguments

    external = options_from_args(parse_args(
        ["config", "--accounting-url", "https://accounting.desp.example/", "--no-traces"]))
    assert not external.sandbox_accounting and not external.sandbox_traces
    assert "--DespMetering.accounting_url=https://accounting.desp.example" in hub_arguments(external)
    assert "--DespPlatformEndpoints.trace_url=" in hub_arguments(external)

    off = options_from_args(parse_args(["config", "--no-accounting"]))
    assert "--DespMetering.accounting_url=" in hub_arguments(off)  # metering off


def test_banner_names_the_dashboards_and_the_platform_services():
    options = options_from_args(parse_args(["config", "--port", "9000", "--no-catalogue"]))
    text = banner(options)
    assert "Dashboards: http://127.0.0.1:9000/services/dashboards/" in text
    assert "Traceability: http://127.0.0.1:9003 (sandbox)" in text
    assert "Accounting: http://127.0.0.1:9004 (sandbox); servers are metered every 300 s" in text
    assert "Catalogue" not in text
