"""Root of the test suite: real Keycloak (`keycloak`) and real PostgreSQL (`postgres_url`, `postgres_server`)
fixtures are available to every module; each starts only when a test asks for it."""

pytest_plugins = [
    "tests.conftest_keycloak",
    "tests.postgres",
    "tests.conftest_s3",
    "tests.conftest_idp",
    "tests.conftest_catalogue",
    "tests.conftest_traces",
    "tests.conftest_accounting",
]
