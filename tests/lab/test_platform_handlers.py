"""The desp_lab server extension's accounting and trace endpoints (`/desp/api/accounting/status`,
`/desp/api/traces/{generate,verify,search}`), against real processes.

A real `jupyter server` (the extension enabled by the installed config alone) runs with the environment a user
server gets from the hub: `DESP_ACCOUNTING_URL` (the sandbox accounting service, `sandbox_accounting`),
`DESP_TRACE_URL` (a sandbox trace service started here against the same sandbox IdP, so one user token is good for
both), `DESP_SESSION_ID`, `DESP_PROFILE`, `DESP_DCU_PER_HOUR` and the researcher's access token. The metering
service account records debits for the session, and the status follows. A second server has no accounting and no
trace service configured, a third points at closed ports. Each handler's success and error paths are checked.
"""

from __future__ import annotations

import hashlib
import uuid
from decimal import Decimal
from pathlib import Path

import blake3
import pytest

from desp_lab.accounting import Accounting
from tests.conftest_catalogue import make_data_dir
from tests.conftest_traces import TracesProcess
from tests.lab.test_server_extension import LabServer, assert_error
from tests.support import free_port

USER = "researcher"
PROFILE = "standard"
PRICE = "1.5"


@pytest.fixture(scope="module")
def trace_service(sandbox_accounting):
    """A sandbox trace service trusting the accounting fixture's IdP (one token for both services)."""
    data_dir = make_data_dir("desp-lab-traces-")
    service = TracesProcess(data_dir, sandbox_accounting.idp.jwks_url, sandbox_accounting.idp.issuer).start()
    yield service
    service.stop()


@pytest.fixture(scope="module")
def session_id():
    return f"{USER}/lab-test-{uuid.uuid4().hex[:8]}/2026-11-26T00:00:00Z"


@pytest.fixture(scope="module")
def platform_server(sandbox_accounting, trace_service, session_id, tmp_path_factory):
    directory = tmp_path_factory.mktemp("lab-platform")
    server = LabServer(
        directory,
        {
            "DESP_ACCOUNTING_URL": sandbox_accounting.url,
            "DESP_TRACE_URL": trace_service.url,
            "DESP_SESSION_ID": session_id,
            "DESP_PROFILE": PROFILE,
            "DESP_DCU_PER_HOUR": PRICE,
            "DESP_ACCESS_TOKEN": sandbox_accounting.token_for(USER),
        },
        config={"DespLabExtension": {"status_refresh_seconds": 2}},
        base_url="/user/researcher/",
    )
    yield server
    server.stop()


@pytest.fixture(scope="module")
def unconfigured_server(tmp_path_factory):
    """No accounting and no trace service configured (e.g. a server outside the platform)."""
    server = LabServer(tmp_path_factory.mktemp("lab-unconfigured"), {"DESP_ACCESS_TOKEN": "not-used"})
    yield server
    server.stop()


@pytest.fixture(scope="module")
def down_server(sandbox_accounting, tmp_path_factory):
    """Accounting and trace services configured on closed ports (the services are down)."""
    server = LabServer(
        tmp_path_factory.mktemp("lab-down"),
        {
            "DESP_ACCOUNTING_URL": f"http://127.0.0.1:{free_port()}",
            "DESP_TRACE_URL": f"http://127.0.0.1:{free_port()}",
            "DESP_ACCESS_TOKEN": sandbox_accounting.token_for(USER),
        },
    )
    yield server
    server.stop()


def record_debit(sandbox_accounting, session: str, amount: str) -> dict:
    """What the hub's metering does: a debit for this session, as the metering service account."""
    meter = Accounting(url=sandbox_accounting.url, token=sandbox_accounting.meter_token)
    return meter.record(USER, "debit", amount, f"lab-test:{uuid.uuid4().hex}", service="jupyterhub", profile=PROFILE,
                        session=session)  # fmt: skip


def direct_account(sandbox_accounting) -> dict:
    return Accounting(url=sandbox_accounting.url, token=sandbox_accounting.token_for(USER)).account(USER)


# ------------------------------------------------------------------------------------------------ accounting/status


def test_status_shows_the_account_profile_and_session(platform_server, sandbox_accounting, session_id):
    before = direct_account(sandbox_accounting)
    status, body = platform_server.api("GET", "accounting/status")
    assert status == 200, body
    assert set(body) == {
        "user", "mode", "balance", "available", "monthly_quota", "used_this_month", "profile", "dcu_per_hour",
        "session", "session_cost", "refresh_seconds",
    }  # fmt: skip
    assert body["user"] == USER and body["mode"] in ("advance", "arrears")
    assert body["profile"] == PROFILE and body["dcu_per_hour"] == "1.500"
    assert body["session"] == session_id and body["session_cost"] == "0.000"
    assert body["refresh_seconds"] == 2  # the traitlet from the user's config
    for key in ("balance", "available", "monthly_quota", "used_this_month"):
        assert isinstance(body[key], str) and len(body[key].split(".")[1]) == 3, body  # 3 decimals, as the API
    # What the accounting service says (no other test debits this session; others may debit the user: re-read).
    after = direct_account(sandbox_accounting)
    assert Decimal(after["balance"]) <= Decimal(body["balance"]) <= Decimal(before["balance"])


def test_status_follows_the_sessions_debits(platform_server, sandbox_accounting, session_id):
    status, first = platform_server.api("GET", "accounting/status")
    assert status == 200, first
    record_debit(sandbox_accounting, session_id, "0.125")
    record_debit(sandbox_accounting, session_id, "0.250")
    # Another session's debit is not this session's cost.
    record_debit(sandbox_accounting, f"{session_id}-other", "1")
    status, second = platform_server.api("GET", "accounting/status")
    assert status == 200, second
    assert Decimal(second["session_cost"]) - Decimal(first["session_cost"]) == Decimal("0.375")
    assert Decimal(first["balance"]) - Decimal(second["balance"]) >= Decimal("1.375")
    direct = Accounting(url=sandbox_accounting.url, token=sandbox_accounting.token_for(USER))
    assert Decimal(second["session_cost"]) == direct.transactions(USER, session=session_id)["total"]
    # A correction (a credit by an admin, for this session) lowers the session's cost.
    admin = Accounting(url=sandbox_accounting.url, token=sandbox_accounting.admin_token)
    admin.record(USER, "credit", "0.125", f"lab-test:{uuid.uuid4().hex}", service="jupyterhub", session=session_id,
                 metadata={"corrects": "lab-test"})  # fmt: skip
    status, third = platform_server.api("GET", "accounting/status")
    assert status == 200, third
    assert Decimal(second["session_cost"]) - Decimal(third["session_cost"]) == Decimal("0.125")


def test_status_without_accounting_is_404_saying_so(unconfigured_server):
    message = assert_error(unconfigured_server.api("GET", "accounting/status"), 404)
    assert "accounting is not configured" in message


def test_status_with_accounting_down_is_502(down_server):
    message = assert_error(down_server.api("GET", "accounting/status"), 502)
    assert "accounting service" in message and "not available" in message


@pytest.mark.parametrize("token", [None, "not-the-token"])
def test_platform_endpoints_need_the_servers_token(platform_server, token):
    for method, path in (("GET", "accounting/status"), ("POST", "traces/generate"), ("POST", "traces/verify"),
                         ("GET", "traces/search?hash=00")):  # fmt: skip
        status, body = platform_server.api(method, path, body={"path": "x"} if method == "POST" else None, token=token)
        assert status in (401, 403), (path, body)


# ------------------------------------------------------------------------------------------------ traces


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_generate_hashes_a_file_like_an_independent_computation(platform_server):
    data = uuid.uuid4().bytes * 1000
    write(platform_server.directory / "results" / "plain.bin", data)
    status, body = platform_server.api("POST", "traces/generate", body={"path": "results/plain.bin"})
    assert status == 200, body
    assert body["path"] == "results/plain.bin" and body["sent"] is False and body["id"] is None
    trace = body["trace"]
    assert trace["hash_algorithm"] == "BLAKE3" and trace["event"] == "CREATE"
    assert trace["product"]["hash"] == blake3.blake3(data).hexdigest()
    assert trace["product"]["size"] == len(data) and trace["product"]["name"] == "plain.bin"
    sha256 = {"path": "results/plain.bin", "algorithm": "sha256"}
    status, body = platform_server.api("POST", "traces/generate", body=sha256)
    assert status == 200, body
    assert body["trace"]["hash_algorithm"] == "SHA256"
    assert body["trace"]["product"]["hash"] == hashlib.sha256(data).hexdigest()


def test_send_search_verify_and_a_one_byte_change(platform_server):
    name = f"product-{uuid.uuid4().hex[:8]}.nc"
    path = write(platform_server.directory / name, b"DESP" * 4096)
    status, body = platform_server.api("POST", "traces/generate", body={"path": name, "send": True})
    assert status == 200, body
    assert body["sent"] is True and body["id"] and body["trace"]["id"] == body["id"]
    assert body["trace"]["origin"] == USER and body["trace"]["timestamp"]
    digest = body["trace"]["product"]["hash"]

    status, found = platform_server.api("GET", "traces/search", params={"hash": digest})
    assert status == 200, found
    assert body["id"] in [trace["id"] for trace in found["traces"]]
    status, by_name = platform_server.api("GET", "traces/search", params={"name": name})
    assert status == 200 and [trace["id"] for trace in by_name["traces"]] == [body["id"]], by_name
    # JupyterLab's GET cache-buster rides along harmlessly.
    status, busted = platform_server.api("GET", f"traces/search?hash={digest}&1764110000000")
    assert status == 200 and busted == found

    status, verified = platform_server.api("POST", "traces/verify", body={"path": name})
    assert status == 200, verified
    assert verified["ok"] is True and verified["expected"] == verified["actual"] == digest
    assert verified["path"] == name and verified["trace_id"] == body["id"]

    data = bytearray(path.read_bytes())
    data[1234] ^= 0x01
    path.write_bytes(bytes(data))
    status, verified = platform_server.api("POST", "traces/verify", body={"path": name})
    assert status == 200, verified
    assert verified["ok"] is False and verified["expected"] == digest
    assert verified["actual"] == blake3.blake3(bytes(data)).hexdigest()
    assert "differs" in verified["message"]


def test_verify_a_store_names_the_members_that_differ(platform_server):
    name = f"store-{uuid.uuid4().hex[:8]}.zarr"
    root = platform_server.directory / "out" / name
    write(root / ".zgroup", b'{"zarr_format": 2}')
    write(root / "t2m" / ".zarray", b'{"chunks": [1]}')
    write(root / "t2m" / "0", b"\x00" * 100)
    write(root / "t2m" / "1", b"\x01" * 100)
    status, body = platform_server.api("POST", "traces/generate", body={"path": f"out/{name}", "send": True})
    assert status == 200, body
    members = [member["path"] for member in body["trace"]["product"]["contents"]]
    assert members == [".zgroup", "t2m/.zarray", "t2m/0", "t2m/1"]
    assert platform_server.api("POST", "traces/verify", body={"path": f"out/{name}"})[1]["ok"] is True
    write(root / "t2m" / "1", b"\x01" * 99 + b"\x02")
    (root / "t2m" / "0").unlink()
    write(root / "t2m" / "2", b"new")
    status, verified = platform_server.api("POST", "traces/verify", body={"path": f"out/{name}"})
    assert status == 200, verified
    assert verified["ok"] is False
    assert (verified["changed"], verified["missing"], verified["added"]) == (["t2m/1"], ["t2m/0"], ["t2m/2"])


@pytest.mark.parametrize("path", ["../outside.txt", "results/../../outside.txt", "/etc/hostname", "", None, 7])
def test_paths_outside_the_root_or_missing_are_400(platform_server, path):
    (platform_server.directory.parent / "outside.txt").write_text("not yours")
    for endpoint in ("traces/generate", "traces/verify"):
        message = assert_error(platform_server.api("POST", endpoint, body={"path": path}), 400, "path")
        assert "Invalid path" in message


def test_a_symlink_out_of_the_root_is_400(platform_server):
    link = platform_server.directory / "escape"
    if not link.exists():
        link.symlink_to("/etc")
    assert_error(platform_server.api("POST", "traces/generate", body={"path": "escape/hostname"}), 400, "path")


def test_trace_errors(platform_server):
    write(platform_server.directory / "e.txt", b"e")
    assert_error(platform_server.api("POST", "traces/generate", body={"path": "no/such/file"}), 404, "path")
    message = assert_error(
        platform_server.api("POST", "traces/generate", body={"path": "e.txt", "algorithm": "MD5"}), 400, "algorithm"
    )
    assert "BLAKE3" in message and "SHA256" in message and "SHA3" in message
    assert_error(platform_server.api("POST", "traces/generate", body={"path": "e.txt", "send": "yes"}), 400, "send")
    assert_error(platform_server.api("POST", "traces/generate", body=["e.txt"]), 400, "body")
    # Never registered: nothing to verify against.
    fresh = f"never-{uuid.uuid4().hex[:8]}.txt"
    write(platform_server.directory / fresh, b"x")
    message = assert_error(platform_server.api("POST", "traces/verify", body={"path": fresh}), 404)
    assert fresh in message
    # Search: a hash is hex of the algorithm's length; one of hash= or name= is needed.
    assert_error(platform_server.api("GET", "traces/search", params={"hash": "not-hex"}), 400)
    assert_error(platform_server.api("GET", "traces/search"), 400, "hash")
    assert_error(platform_server.api("GET", "traces/search", params={"hsh": "00"}), 400, "hsh")
    assert platform_server.api("GET", "traces/search", params={"hash": "0" * 64}) == (200, {"traces": []})


def test_traces_without_a_service(unconfigured_server, down_server):
    write(unconfigured_server.directory / "f.txt", b"f")
    # Tracing alone needs no service; registering, verifying and searching do.
    assert unconfigured_server.api("POST", "traces/generate", body={"path": "f.txt"})[0] == 200
    needing_the_service = [
        ("POST", "traces/generate", {"path": "f.txt", "send": True}),
        ("POST", "traces/verify", {"path": "f.txt"}),
        ("GET", "traces/search?hash=00", None),
    ]
    for method, path, body in needing_the_service:
        message = assert_error(unconfigured_server.api(method, path, body=body), 404)
        assert "trace service is not configured" in message
    write(down_server.directory / "f.txt", b"f")
    message = assert_error(down_server.api("POST", "traces/generate", body={"path": "f.txt", "send": True}), 502)
    assert "trace service" in message and "not available" in message
