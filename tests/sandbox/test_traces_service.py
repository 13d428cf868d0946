"""The sandbox trace service over HTTP: every endpoint's success and error paths, batch limits, auth, OpenAPI.

Each test uses product names and hashes of its own (uuid-based), so tests share one service safely.
"""

import secrets
import urllib.parse
import uuid

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, given, settings
from openapi_spec_validator import validate as validate_openapi
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from tests.conftest_traces import TracesProcess

ALLOWED = ("BLAKE3", "SHA256", "SHA3")


def new_hash() -> str:
    return secrets.token_hex(32)


def new_name(suffix: str = ".nc") -> str:
    return f"product-{uuid.uuid4().hex}{suffix}"


def a_trace(name=None, digest=None, **fields) -> dict:
    trace = {"event": "CREATE", "hash_algorithm": "BLAKE3",
             "product": {"name": name or new_name(), "size": 42, "hash": new_hash() if digest is None else digest}}  # fmt: skip
    trace.update(fields)
    return trace


@pytest.fixture(scope="module")
def api(sandbox_traces):
    """A requests session as the researcher, with the service root as `.root`."""
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {sandbox_traces.token_for('researcher')}"
    session.root = sandbox_traces.url
    return session


def put(api, traces):
    return api.put(f"{api.root}/api/v1/traces", json=traces, timeout=30)


def get(api, path, **params):
    return api.get(f"{api.root}/api/v1/traces/{path}", params=params, timeout=30)


def assert_error(response, status, *words):
    assert response.status_code == status, response.text
    message = response.json()["message"]
    for word in words:
        assert word in message, message
    return message


def test_status_answers_without_a_token(sandbox_traces):
    answer = requests.get(f"{sandbox_traces.url}/api/status", timeout=10)
    assert answer.status_code == 200
    assert answer.json()["status"] == "ok"


def test_openapi_document_is_valid_and_describes_every_endpoint(sandbox_traces):
    document = requests.get(f"{sandbox_traces.url}/openapi.json", timeout=10).json()
    validate_openapi(document)
    paths = document["paths"]
    assert "put" in paths["/api/v1/traces"]
    for path in ("/api/status", "/api/v1/traces/{id}", "/api/v1/traces/name/{productname}",
                 "/api/v1/traces/hash/{hash}", "/api/v1/traces/{productname}/validate"):  # fmt: skip
        assert "get" in paths[path], path
        assert paths[path]["get"].get("summary"), path
    assert "HTTPBearer" in document["components"]["securitySchemes"]
    assert "400" in paths["/api/v1/traces"]["put"]["responses"]


def test_register_fills_id_timestamp_origin_and_normalises(api):
    trace = a_trace(digest=new_hash().upper(), hash_algorithm="sha3-256",
                    id="mine", timestamp="yesterday", origin="someone-else")  # fmt: skip
    trace["product"]["contents"] = [{"path": "b/1", "hash": new_hash()}, {"path": "a/0", "hash": new_hash()}]
    trace["product"]["inputs"] = [{"name": "era5.zarr", "hash": new_hash()}]
    answer = put(api, [trace])
    assert answer.status_code == 201, answer.text
    [stored] = answer.json()
    assert stored["id"] != "mine" and uuid.UUID(stored["id"])
    assert stored["timestamp"].endswith("Z") and stored["timestamp"] != "yesterday"
    assert stored["origin"] == "researcher"
    assert stored["hash_algorithm"] == "SHA3"
    assert stored["product"]["hash"] == trace["product"]["hash"].lower()
    assert stored["product"]["contents"] == trace["product"]["contents"]  # order kept as sent
    assert stored["product"]["inputs"] == trace["product"]["inputs"]
    assert get(api, stored["id"]).json() == stored


def test_event_defaults_to_create_and_every_event_is_accepted(api):
    name = new_name()
    traces = [{"product": {"name": name, "size": 1, "hash": new_hash()}}]
    traces += [a_trace(name, event=event) for event in ("COPY", "DELETE", "OBSOLETE")]
    answer = put(api, traces)
    assert answer.status_code == 201, answer.text
    assert [t["event"] for t in answer.json()] == ["CREATE", "COPY", "DELETE", "OBSOLETE"]
    assert_error(put(api, [a_trace(event="MOVE")]), 400, "event")


def test_batch_of_50_is_stored_and_0_or_51_are_refused_with_nothing_stored(api):
    name = new_name()
    assert_error(put(api, []), 400, "1 to 50", "has 0")
    assert_error(put(api, [a_trace(name) for _ in range(51)]), 400, "1 to 50", "has 51")
    assert get(api, f"name/{name}").json() == []
    answer = put(api, [a_trace(name) for _ in range(50)])
    assert answer.status_code == 201
    assert len(answer.json()) == 50
    assert len(get(api, f"name/{name}").json()) == 50


def test_a_batch_is_stored_all_or_nothing(api):
    good, bad = a_trace(), a_trace(digest="12345")
    assert_error(put(api, [good, bad]), 400, "traces[1].product.hash")
    assert get(api, f"name/{good['product']['name']}").json() == []


@pytest.mark.parametrize("algorithm", ["MD5", "sha1", "", "BLAKE2b"])
def test_unknown_algorithm_is_refused_naming_the_allowed_ones(api, algorithm):
    message = assert_error(put(api, [a_trace(hash_algorithm=algorithm)]), 400, *ALLOWED)
    assert "hash_algorithm" in message


@pytest.mark.parametrize("digest", ["", "abc", "z" * 64, "a" * 63, "a" * 65, "a" * 128, " " + "a" * 63])
def test_malformed_product_hash_is_refused(api, digest):
    assert_error(put(api, [a_trace(digest=digest)]), 400, "Malformed hash")


def test_malformed_member_and_input_hashes_are_refused(api):
    trace = a_trace()
    trace["product"]["contents"] = [{"path": "x", "hash": "not-hex"}]
    assert_error(put(api, [trace]), 400, "Malformed hash", "contents[0]")
    trace = a_trace()
    trace["product"]["inputs"] = [{"name": "x", "hash": "00"}]
    assert_error(put(api, [trace]), 400, "Malformed hash", "inputs[0]")


def test_structurally_wrong_bodies_are_400_with_a_message(api):
    assert_error(put(api, {"product": {}}), 400)  # not an array
    assert_error(put(api, [{"product": {"name": "x", "hash": new_hash()}}]), 400, "size")
    assert_error(put(api, [a_trace(product={"name": "x", "size": -1, "hash": new_hash()})]), 400, "size")
    assert_error(put(api, [a_trace(colour="red")]), 400, "colour")
    duplicate = a_trace()
    duplicate["product"]["contents"] = [{"path": "a", "hash": new_hash()}, {"path": "a", "hash": new_hash()}]
    assert_error(put(api, [duplicate]), 400, "twice")
    answer = api.put(f"{api.root}/api/v1/traces", data="[{", headers={"Content-Type": "application/json"})
    assert_error(answer, 400)


def test_get_by_unknown_id_is_404(api):
    assert_error(get(api, str(uuid.uuid4())), 404, "No trace")


def test_by_name_lists_every_trace_newest_first(api):
    name = new_name(".zarr")
    first = put(api, [a_trace(name)]).json()[0]
    second, third = put(api, [a_trace(name), a_trace(name, event="OBSOLETE")]).json()
    found = get(api, f"name/{name}").json()
    assert [t["id"] for t in found] == [third["id"], second["id"], first["id"]]
    assert get(api, f"name/{new_name()}").json() == []


def test_names_with_slashes_and_spaces_round_trip(api):
    name = f"results/{uuid.uuid4().hex}/t2m mean.nc"
    stored = put(api, [a_trace(name)]).json()[0]
    quoted = requests.utils.quote(name, safe="")
    assert [t["id"] for t in get(api, f"name/{quoted}").json()] == [stored["id"]]
    check = get(api, f"{quoted}/validate", filehash=stored["product"]["hash"]).json()
    assert check["valid"] is True


def test_by_hash_finds_every_product_with_that_hash_in_any_case(api):
    digest = new_hash()
    one, two = put(api, [a_trace(digest=digest), a_trace(digest=digest, event="COPY")]).json()
    put(api, [a_trace()])
    found = get(api, f"hash/{digest.upper()}").json()
    assert [t["id"] for t in found] == [two["id"], one["id"]]
    assert get(api, f"hash/{new_hash()}").json() == []


@pytest.mark.parametrize("digest", ["xyz", "a" * 63, "g" * 64])
def test_by_malformed_hash_is_400(api, digest):
    assert_error(get(api, f"hash/{digest}"), 400, "Malformed hash")


def test_validate_says_whether_a_hash_is_the_current_one(api):
    name = new_name()
    old, current = new_hash(), new_hash()
    put(api, [a_trace(name, digest=old)])
    put(api, [a_trace(name, digest=current)])
    answer = get(api, f"{name}/validate", filehash=current.upper()).json()
    assert answer["valid"] is True and answer["trace"]["product"]["hash"] == current
    answer = get(api, f"{name}/validate", filehash=old).json()
    assert answer["valid"] is False and "older version" in answer["message"]
    answer = get(api, f"{name}/validate", filehash=new_hash()).json()
    assert answer["valid"] is False and "does not match" in answer["message"]
    put(api, [a_trace(name, digest=current, event="OBSOLETE")])
    answer = get(api, f"{name}/validate", filehash=current).json()
    assert answer["valid"] is False and "OBSOLETE" in answer["message"]


def test_validate_of_an_unknown_name_and_malformed_hashes(api):
    answer = get(api, f"{new_name()}/validate", filehash=new_hash())
    assert answer.status_code == 200
    assert answer.json()["valid"] is False and answer.json()["trace"] is None
    assert_error(get(api, f"{new_name()}/validate", filehash="nothex"), 400, "Malformed hash")
    assert_error(get(api, f"{new_name()}/validate"), 400, "filehash")


def test_every_api_endpoint_needs_a_valid_token(sandbox_traces):
    root = f"{sandbox_traces.url}/api/v1/traces"
    calls = [("PUT", root, [a_trace()]), ("GET", f"{root}/{uuid.uuid4()}", None),
             ("GET", f"{root}/name/x.nc", None), ("GET", f"{root}/hash/{new_hash()}", None),
             ("GET", f"{root}/x.nc/validate?filehash={new_hash()}", None)]  # fmt: skip
    for headers in ({}, {"Authorization": "Bearer not-a-jwt"}, {"Authorization": "Token abc"}):
        for method, url, body in calls:
            answer = requests.request(method, url, json=body, headers=headers, timeout=10)
            assert answer.status_code == 401, (method, url, headers, answer.text)
            assert answer.json()["message"]
            assert answer.headers["WWW-Authenticate"] == "Bearer"


def test_origin_is_the_callers_username(sandbox_traces):
    headers = {"Authorization": f"Bearer {sandbox_traces.token_for('poweruser')}"}
    answer = requests.put(f"{sandbox_traces.url}/api/v1/traces", json=[a_trace()], headers=headers, timeout=10)
    assert answer.status_code == 201
    assert answer.json()[0]["origin"] == "poweruser"


def test_traces_survive_a_restart_and_sigterm_exits_cleanly(sandbox_traces, tmp_path):
    idp = sandbox_traces.idp
    headers = {"Authorization": f"Bearer {sandbox_traces.token_for('researcher')}"}
    service = TracesProcess(tmp_path / "data", idp.jwks_url, idp.issuer, log_name="first.log").start()
    try:
        stored = requests.put(f"{service.url}/api/v1/traces", json=[a_trace()], headers=headers, timeout=10).json()
    finally:
        assert service.stop() == 0
    assert f"desp_sandbox.traces ready at {service.url}" in service.log()
    assert (tmp_path / "data" / "traces" / "traces.sqlite").is_file()
    again = TracesProcess(tmp_path / "data", idp.jwks_url, idp.issuer, log_name="second.log").start()
    try:
        assert requests.get(f"{again.url}/api/v1/traces/{stored[0]['id']}", headers=headers,
                            timeout=10).json() == stored[0]  # fmt: skip
    finally:
        assert again.stop() == 0


def test_api_matches_its_openapi_document(sandbox_traces):
    """schemathesis-generated requests to every operation: no 5xx, and every answer matches the document."""
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    schema = schemathesis.openapi.from_url(f"{sandbox_traces.url}/openapi.json")
    headers = {"Authorization": f"Bearer {sandbox_traces.token_for('researcher')}"}
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) == 6
    failures, calls = [], []
    for operation in operations:

        @given(case=operation.as_strategy())
        @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def check(case):
            calls.append(case.call_and_validate(headers=headers, checks=checks).status_code)

        try:
            check()
        except Exception as error:  # collect every operation's failure, then report them together
            failures.append(f"{operation.method.upper()} {operation.path}: {error}")
    assert not failures, "\n\n".join(failures)
    assert any(status < 300 for status in calls) and any(status == 400 for status in calls)


def test_product_names_with_line_breaks_reach_the_service(sandbox_traces):
    """A name is any text: one with a newline is traced, found by name and validated like any other."""
    headers = sandbox_traces.headers()
    name = "run 1\nmean.nc"
    trace = {"product": {"name": name, "size": 1, "hash": "ab" * 32}}
    stored = requests.put(f"{sandbox_traces.url}/api/v1/traces", json=[trace], headers=headers, timeout=10)
    assert stored.status_code == 201, stored.text
    quoted = urllib.parse.quote(name, safe="")
    found = requests.get(f"{sandbox_traces.url}/api/v1/traces/name/{quoted}", headers=headers, timeout=10)
    assert [t["product"]["name"] for t in found.json()] == [name]
    checked = requests.get(f"{sandbox_traces.url}/api/v1/traces/{quoted}/validate", params={"filehash": "ab" * 32},
                           headers=headers, timeout=10)  # fmt: skip
    assert checked.status_code == 200 and checked.json()["valid"] is True
