"""schemathesis against the accounting service's hand-written OpenAPI document (served at /openapi.json): no 5xx,
and every response matches the document (status code, content type, body). Driven through hypothesis, as the
profiles schema test does (schemathesis' pytest plugin does not run on pytest 9 yet)."""

import requests
import schemathesis
import yaml
from hypothesis import HealthCheck, given, settings
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from desp_sandbox.accounting.app import OPENAPI_FILE

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def test_the_service_serves_the_hand_written_document(sandbox_accounting):
    served = requests.get(f"{sandbox_accounting.url}/openapi.json", timeout=10).json()
    assert served == yaml.safe_load(OPENAPI_FILE.read_text())
    assert served["openapi"].startswith("3.1")


def test_every_path_parameter_and_schema_is_described(sandbox_accounting):
    document = yaml.safe_load(OPENAPI_FILE.read_text())
    missing = []
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                missing += [f"{path} {p.get('name')}" for p in operation
                            if "$ref" not in p and not p.get("description")]  # fmt: skip
                continue
            if not operation.get("description"):
                missing.append(f"{method} {path}")
            missing += [f"{method} {path} {p.get('name')}" for p in operation.get("parameters", [])
                        if "$ref" not in p and not p.get("description")]  # fmt: skip
    for kind in ("parameters", "schemas", "responses"):
        missing += [f"{kind}/{name}" for name, item in document["components"][kind].items()
                    if not item.get("description")]  # fmt: skip
    for name, schema in document["components"]["schemas"].items():
        missing += [f"{name}.{prop}" for prop, spec in schema.get("properties", {}).items()
                    if "$ref" not in spec and not spec.get("description")]  # fmt: skip
    assert not missing


def run_operations(sandbox_accounting, mode: GenerationMode, max_examples: int) -> tuple[list, list]:
    """(failures, status codes) of generated requests to every operation (that has inputs, for negative data)."""
    schema = schemathesis.openapi.from_url(f"{sandbox_accounting.url}/openapi.json")
    headers = {"Authorization": f"Bearer {sandbox_accounting.admin_token()}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 7
    failures, calls = [], []
    for operation in operations:
        if mode == GenerationMode.NEGATIVE and operation.path == "/api/status":
            continue  # nothing to make invalid

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=max_examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            calls.append(case.call_and_validate(headers=headers, checks=CHECKS).status_code)

        try:
            check()
        except Exception as error:  # collect every operation's failure, then report them together
            failures.append(f"{operation.method.upper()} {operation.path}: {error}")
    return failures, calls


def test_api_matches_its_openapi_document(sandbox_accounting):
    """Every operation, with generated valid requests, as dcu-admin (a few examples each: well under a minute)."""
    failures, calls = run_operations(sandbox_accounting, GenerationMode.POSITIVE, 12)
    assert not failures, "\n\n".join(failures)
    assert len(calls) >= 3 * 7, calls  # generated requests really went out
    assert any(status < 300 for status in calls) and any(status >= 400 for status in calls)


def test_invalid_requests_get_documented_errors(sandbox_accounting):
    """Generated requests that break the document (bad types, patterns, missing headers): no 5xx, and each answer
    is one the document lists, with the Error body."""
    failures, calls = run_operations(sandbox_accounting, GenerationMode.NEGATIVE, 10)
    assert not failures, "\n\n".join(failures)
    assert sum(400 <= status < 500 for status in calls) >= 3 * 6, calls
