"""Root of the test suite: the real Keycloak fixture (`keycloak`) is available to every module."""

pytest_plugins = ["tests.conftest_keycloak"]
