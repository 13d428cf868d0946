"""schemathesis against the profiles service's own OpenAPI document, through the hub's proxy, as an admin:
no 5xx, and every response matches the schema (status code, content type, body)."""

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.e2e.hubclient import HubSession
from tests.e2e.stack import start_hub

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    running = start_hub(str(tmp_path_factory.mktemp("schema-hub")))
    yield running
    running.stop()


@pytest.fixture(scope="module")
def admin_token(hub):
    admin = HubSession(hub.url, "admin", "admin-demo")
    admin.login()
    return admin.new_token()


@pytest.fixture(scope="module")
def api_schema(hub):
    return schemathesis.openapi.from_url(f"{hub.url}/services/profiles/api/openapi.json")


def test_api_matches_its_openapi_document(api_schema, admin_token):
    """Every operation, with generated requests (schemathesis' pytest plugin does not run on pytest 9 yet)."""
    headers = {"Authorization": f"token {admin_token}"}
    operations = [result.ok() for result in api_schema.get_all_operations()]
    assert len(operations) >= 10
    failures, calls = [], []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=15, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            calls.append(case.call_and_validate(headers=headers, checks=CHECKS).status_code)

        try:
            check()
        except Exception as error:  # collect every operation's failure, then report them together
            failures.append(f"{operation.method.upper()} {operation.path}: {error}")
    assert not failures, "\n\n".join(failures)
    assert len(calls) >= 3 * len(operations), calls  # generated requests really went out
    assert any(status < 300 for status in calls) and any(status >= 400 for status in calls)
