"""pytest plugin: a real Keycloak (tests/keycloak_server.py) with the DESP realm imported.

Two ways to use it:

* the session-scoped fixture `keycloak`: register the plugin in the root conftest (`pytest_plugins =
  ["tests.conftest_keycloak"]`) or on the command line (`-p tests.conftest_keycloak`);
* another scope or other settings: `from tests.conftest_keycloak import keycloak_fixture` and, in the test module,
  `keycloak = keycloak_fixture(scope="module")` (keyword arguments go to KeycloakServer, e.g. `hub_url=...`).

The fixture yields a started KeycloakServer: `.url`, `.issuer`, `.realm`, `.hub_client_id`, `.hub_client_secret`,
`.admin_client_id`, `.admin_client_secret`, `.hub_url` / `.redirect_uri`, `.set_hub_url(url, ...)`,
`.discovery()`, `.service_account_token()`, `.master_admin_token()`, `.admin_api(method, path, ...)`,
`.user_id(username)`, `.group_id(name)`, `.log_path`, `.startup_seconds`.

If Keycloak cannot run on this machine (no JDK >= 17, distribution neither cached nor fetchable with mvn) the tests
that use it are skipped with the reason; with DESP_KEYCLOAK_REQUIRED=1 they fail instead. A Keycloak that starts
but does not come up (e.g. the realm file does not import) is always a failure.

The first start on a machine fetches and prepares Keycloak (about 2 minutes on 2 cores), longer than the suite's
default 300 s per-test timeout allows on a loaded machine: mark the modules `@pytest.mark.timeout(900)`.
"""

import os

import pytest

from tests.keycloak_server import KeycloakServer, KeycloakUnavailable


def start_keycloak_or_skip(workdir, **server_kwargs) -> KeycloakServer:
    server = KeycloakServer(workdir, **server_kwargs)
    try:
        return server.start()
    except KeycloakUnavailable as error:
        if os.environ.get("DESP_KEYCLOAK_REQUIRED"):
            pytest.fail(f"Keycloak cannot run here (and DESP_KEYCLOAK_REQUIRED is set): {error}")
        pytest.skip(f"Keycloak cannot run here: {error}")


def keycloak_fixture(scope="session", name=None, **server_kwargs):
    """A fixture that starts Keycloak once per `scope` and stops it (by its process group) afterwards."""

    @pytest.fixture(scope=scope, name=name)
    def keycloak(tmp_path_factory):
        server = start_keycloak_or_skip(tmp_path_factory.mktemp("keycloak"), **server_kwargs)
        try:
            yield server
        finally:
            server.stop()

    return keycloak


keycloak = keycloak_fixture(scope="session")
