"""desp_lab.accounting against the sandbox accounting service: Decimal amounts, the caller's own account, errors as
desp_lab.errors classes with the service's message, and `record` retried with the same key across a crash."""

from __future__ import annotations

import datetime as dt
import json
import threading
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from desp_lab.accounting import (
    AccessDenied,
    Accounting,
    IdempotencyConflict,
    NotAuthorized,
    amount_text,
)
from desp_lab.errors import DespError, InvalidParameter, NotFound, ServiceUnavailable
from tests.conftest_accounting import AccountingProcess, unique_user
from tests.support import free_port


@pytest.fixture
def meter(sandbox_accounting):
    return Accounting(sandbox_accounting.url, sandbox_accounting.meter_token)


def test_the_caller_reads_their_own_account_with_the_default_token(sandbox_accounting, monkeypatch):
    for name in ("JUPYTERHUB_API_URL", "JUPYTERHUB_API_TOKEN", "JUPYTERHUB_USER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("DESP_ACCESS_TOKEN", sandbox_accounting.token_for("poweruser"))
    monkeypatch.setenv("DESP_ACCOUNTING_URL", sandbox_accounting.url + "/")
    accounting = Accounting()
    assert accounting.whoami() == "poweruser"
    account = accounting.account()
    assert account["user"] == "poweruser" and account["mode"] == "advance"
    assert all(isinstance(account[name], Decimal) for name in ("balance", "monthly_quota", "available"))


def test_record_and_read_back_in_decimals(sandbox_accounting, meter):
    user = unique_user()
    session = f"{user}//2026-01-01T00:00:00Z"
    first = meter.record(user, "debit", Decimal("0.125"), "i-0", service="jupyterhub", profile="standard",
                         session=session, period_start=dt.datetime(2026, 1, 1),
                         period_end="2026-01-01T00:05:00Z")  # fmt: skip
    assert first["amount"] == Decimal("0.125") and first["balance_after"] == Decimal("99.875")
    assert first.replayed is False and first["period_start"] == "2026-01-01T00:00:00.000000Z"
    again = meter.record(user, "debit", "0.1250", "i-0", service="jupyterhub", profile="standard", session=session,
                         period_start="2026-01-01T00:00:00+00:00", period_end="2026-01-01T00:05:00Z")  # fmt: skip
    assert again.replayed is True and again == first
    meter.record(user, "debit", 2, "i-1", service="jupyterhub", profile="standard", session=session)
    meter.record(user, "debit", 0.5, "i-2", service="workflows")  # a float goes out as its decimal text
    mine = Accounting(sandbox_accounting.url, sandbox_accounting.token_for("admin"))
    assert mine.transactions(user, session=session)["total"] == Decimal("2.125")
    assert mine.transactions(user, limit=1)["transactions"][0]["amount"] == Decimal("0.5")
    report = mine.usage(user=user, group_by=["service", "profile"], start=dt.date(2020, 1, 1))
    assert report["total"] == Decimal("2.625")
    assert {(r["service"], r["profile"]): r["amount"] for r in report["rows"]} == {
        ("jupyterhub", "standard"): Decimal("2.125"), ("workflows", None): Decimal("0.5")}
    statement = mine.statement(dt.datetime.now(dt.UTC), user=user)
    assert statement["closing_balance"] == Decimal("97.375") == mine.account(user)["balance"]
    plan = mine.set_plan(user, mode="arrears", monthly_quota="10")
    assert plan["available"] == Decimal("10") - Decimal("2.625")


def test_errors_carry_the_service_message(sandbox_accounting, meter):
    researcher = Accounting(sandbox_accounting.url, sandbox_accounting.token_for("researcher"))
    with pytest.raises(AccessDenied) as denied:
        researcher.transactions("poweruser")
    assert denied.value.status == 403 and "poweruser" in denied.value.message
    with pytest.raises(InvalidParameter) as bad:
        meter.record(unique_user(), "debit", "-1", "bad-1", service="jupyterhub")
    assert bad.value.status == 400 and bad.value.field == "amount" and "negative" in str(bad.value)
    with pytest.raises(InvalidParameter) as bad_kind:
        meter.record(unique_user(), "refund", "1", "bad-2", service="jupyterhub")
    assert bad_kind.value.field == "kind"
    user = unique_user()
    meter.record(user, "debit", "1", "same", service="jupyterhub")
    with pytest.raises(IdempotencyConflict) as conflict:
        meter.record(user, "debit", "2", "same", service="jupyterhub")
    assert conflict.value.status == 409 and "same" in conflict.value.message
    with pytest.raises(AccessDenied):
        meter.record(user, "credit", "1", "credit-1", service="jupyterhub")
    with pytest.raises(NotAuthorized):
        Accounting(sandbox_accounting.url, "not-a-token").account("researcher")
    with pytest.raises(InvalidParameter):
        researcher.transactions(colour="red")
    with pytest.raises(InvalidParameter):
        amount_text("lots")


def test_no_url_and_no_user(monkeypatch):
    monkeypatch.delenv("DESP_ACCOUNTING_URL", raising=False)
    with pytest.raises(DespError, match="DESP_ACCOUNTING_URL") as no_url:
        Accounting()
    assert no_url.value.field == "url"
    monkeypatch.delenv("JUPYTERHUB_USER", raising=False)
    with pytest.raises(DespError) as unknown:
        Accounting("http://127.0.0.1:9", token="opaque").whoami()
    assert unknown.value.field == "user"
    monkeypatch.setenv("JUPYTERHUB_USER", "someone")
    assert Accounting("http://127.0.0.1:9", token="opaque").whoami() == "someone"
    for name in ("JUPYTERHUB_API_URL", "JUPYTERHUB_API_TOKEN", "DESP_ACCESS_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    with pytest.raises(NotAuthorized, match="Not running under DESP Hub"):
        Accounting("http://127.0.0.1:9").account()  # no token to be had: 401-like, before any request


def test_an_unreachable_service_is_service_unavailable_after_bounded_retries():
    accounting = Accounting(f"http://127.0.0.1:{free_port()}", token="t", retries=2, backoff=0.01, timeout=2)
    with pytest.raises(ServiceUnavailable) as down:
        accounting.record("someone", "debit", "1", "k", service="jupyterhub")
    assert "3 attempts" in down.value.message and down.value.status == 502


class _Flaky(BaseHTTPRequestHandler):
    """Answers 503 to the first two POSTs, then 201; remembers the Idempotency-Key of every attempt."""

    keys: list = []

    def do_POST(self):  # noqa: N802
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        self.keys.append(self.headers["Idempotency-Key"])
        status = 503 if len(self.keys) <= 2 else 201
        answer = {"message": "busy"} if status == 503 else {**body, "id": 1, "balance_after": "99.000"}
        data = json.dumps(answer).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, *args):
        pass


def test_record_retries_a_5xx_with_the_same_key():
    _Flaky.keys = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Flaky)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        accounting = Accounting(f"http://127.0.0.1:{server.server_port}", token="t", backoff=0.01)
        result = accounting.record("someone", "debit", "1", "interval-7", service="jupyterhub")
        assert result["amount"] == Decimal("1") and result["balance_after"] == Decimal("99.000")
        assert _Flaky.keys == ["interval-7"] * 3
    finally:
        server.shutdown()
        server.server_close()


def test_record_retries_with_the_same_key_across_a_crash_and_restart(tmp_path, sandbox_accounting):
    """The service dies right after committing; the SDK keeps retrying (connection refused) until it is back, and
    the retry is answered with the committed transaction: exactly one debit."""
    idp = sandbox_accounting.idp
    process = AccountingProcess(tmp_path, idp.jwks_url, idp.issuer, exit_after_commit=1).start()

    def restart_after_crash():
        process.returncode(timeout=60)
        process.stop()
        process.options.pop("exit_after_commit")
        process.start()

    restarter = threading.Thread(target=restart_after_crash)
    restarter.start()
    try:
        accounting = Accounting(process.url, sandbox_accounting.meter_token, retries=10, backoff=0.1,
                                max_backoff=2)  # fmt: skip
        user = unique_user()
        result = accounting.record(user, "debit", "0.25", "crash-interval-0", service="jupyterhub")
        restarter.join()
        assert result.replayed is True and result["amount"] == Decimal("0.25")
        assert process.process.popen.poll() is None  # the restarted service answered
        listing = accounting.transactions(user)
        assert [t["idempotency_key"] for t in listing["transactions"] if t["kind"] == "debit"] == ["crash-interval-0"]
        assert accounting.account(user)["balance"] == Decimal("99.75")
    finally:
        restarter.join()
        process.stop()


def test_one_client_shared_by_threads(sandbox_accounting, meter):
    user = unique_user()
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda n: meter.record(user, "debit", "0.001", f"t-{n}", service="jupyterhub"),
                                range(64)))  # fmt: skip
    assert len({r["id"] for r in results}) == 64
    assert meter.account(user)["balance"] == Decimal("99.936")
    assert sorted(r["balance_after"] for r in results) == [Decimal("99.936") + Decimal("0.001") * n for n in range(64)]
    with pytest.raises(NotFound):
        meter._get("/api/v1/nothing")
