"""The sandbox accounting API: accounts and plans, usage report and monthly statement, who may read and write
what, and every kind of bad input answered 400 with the field named."""

from __future__ import annotations

import datetime as dt
import uuid

import pytest
import requests

from tests.conftest_accounting import unique_user


def call(method: str, url: str, token: str | None = None, key: str | None = None, **kwargs) -> requests.Response:
    headers = kwargs.pop("headers", {})
    if token:
        headers["Authorization"] = f"Bearer {token}"
    if key:
        headers["Idempotency-Key"] = key
    return requests.request(method, url, headers=headers, timeout=30, **kwargs)


def debit(acc, user: str, amount="1", service="jupyterhub", profile="standard", **fields) -> dict:
    body = {"kind": "debit", "amount": amount, "service": service, "profile": profile, **fields}
    answer = call("POST", f"{acc.url}/api/v1/accounts/{user}/transactions", acc.meter_token(), uuid.uuid4().hex,
                  json=body)  # fmt: skip
    assert answer.status_code == 201, answer.text
    return answer.json()


def this_month() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m")


# -- accounts and plans -------------------------------------------------------------------------------------------


def test_a_new_account_gets_the_default_plan_with_its_opening_credit(sandbox_accounting):
    acc, user = sandbox_accounting, unique_user()
    account = call("GET", f"{acc.url}/api/v1/accounts/{user}", acc.admin_token()).json()
    assert account == {"user": user, "mode": "advance", "balance": "100.000", "monthly_quota": "0.000",
                       "used_this_month": "0.000", "available": "100.000"}  # fmt: skip
    listing = call("GET", f"{acc.url}/api/v1/accounts/{user}/transactions", acc.admin_token()).json()
    [opening] = listing["transactions"]
    assert (opening["kind"], opening["amount"], opening["idempotency_key"]) == ("credit", "100.000", "opening-balance")
    assert listing["total"] == "0.000" and listing["credits"] == "100.000" and listing["count"] == 1


def test_a_debit_beyond_the_balance_is_recorded_and_the_balance_goes_negative(sandbox_accounting):
    acc, user = sandbox_accounting, unique_user()
    assert debit(acc, user, "100.5")["balance_after"] == "-0.500"
    account = call("GET", f"{acc.url}/api/v1/accounts/{user}", acc.meter_token()).json()
    assert account["balance"] == account["available"] == "-0.500"


def test_plan_changes_switch_to_arrears_with_a_monthly_quota(sandbox_accounting):
    acc, user = sandbox_accounting, unique_user()
    debit(acc, user, "7.25")
    changed = call("PUT", f"{acc.url}/api/v1/accounts/{user}", acc.admin_token(),
                   json={"mode": "arrears", "monthly_quota": "50"})  # fmt: skip
    assert changed.status_code == 200, changed.text
    assert changed.json() == {"user": user, "mode": "arrears", "balance": "92.750", "monthly_quota": "50.000",
                              "used_this_month": "7.250", "available": "42.750"}  # fmt: skip
    # a part left out keeps its value; the history is kept (append-only)
    again = call("PUT", f"{acc.url}/api/v1/accounts/{user}", acc.admin_token(), json={"monthly_quota": 10}).json()
    assert (again["mode"], again["monthly_quota"], again["available"]) == ("arrears", "10.000", "2.750")
    back = call("PUT", f"{acc.url}/api/v1/accounts/{user}", acc.admin_token(), json={"mode": "advance"}).json()
    assert (back["mode"], back["monthly_quota"], back["available"]) == ("advance", "10.000", "92.750")


def test_corrections_are_new_credits(sandbox_accounting):
    acc, user = sandbox_accounting, unique_user()
    wrong = debit(acc, user, "5")
    answer = call("POST", f"{acc.url}/api/v1/accounts/{user}/transactions", acc.admin_token(), "fix-1",
                  json={"kind": "credit", "amount": "5", "service": "jupyterhub",
                        "metadata": {"corrects": wrong["id"]}, "description": "metered twice"})  # fmt: skip
    assert answer.status_code == 201, answer.text
    assert answer.json()["balance_after"] == "100.000" and answer.json()["metadata"] == {"corrects": wrong["id"]}
    listing = call("GET", f"{acc.url}/api/v1/accounts/{user}/transactions", acc.admin_token()).json()
    assert [t["kind"] for t in listing["transactions"]] == ["credit", "debit", "credit"]  # newest first


# -- usage and statements -----------------------------------------------------------------------------------------


def test_usage_report_groups_and_filters(sandbox_accounting):
    acc = sandbox_accounting
    alice, bob = unique_user("alice"), unique_user("bob")
    service, other = f"svc-{uuid.uuid4().hex[:8]}", f"svc-{uuid.uuid4().hex[:8]}"
    debit(acc, alice, "1.5", service, "standard")
    debit(acc, alice, "2", service, "power")
    debit(acc, alice, "0.25", service, "power")
    debit(acc, bob, "4", service, "standard")
    debit(acc, bob, "8", other, "ai")
    admin = acc.admin_token()
    report = call("GET", f"{acc.url}/api/v1/usage", admin, params={"service": service,
                                                                    "group_by": "user,profile"}).json()  # fmt: skip
    assert report["group_by"] == ["user", "profile"] and report["total"] == "7.750" and report["count"] == 4
    assert report["rows"] == [  # largest first
        {"user": bob, "profile": "standard", "amount": "4.000", "count": 1},
        {"user": alice, "profile": "power", "amount": "2.250", "count": 2},
        {"user": alice, "profile": "standard", "amount": "1.500", "count": 1},
    ]
    by_service = call("GET", f"{acc.url}/api/v1/usage", admin, params={"user": bob}).json()
    assert by_service["group_by"] == ["service"]
    assert {row["service"]: row["amount"] for row in by_service["rows"]} == {service: "4.000", other: "8.000"}
    one_row = call("GET", f"{acc.url}/api/v1/usage", admin, params={"user": alice, "group_by": ""}).json()
    assert one_row["rows"] == [{"amount": "3.750", "count": 3}]
    profile = call("GET", f"{acc.url}/api/v1/usage", admin, params={"profile": "ai", "service": other}).json()
    assert profile["total"] == "8.000"
    # periods: `from` inclusive, `to` exclusive, on the time recorded
    later = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    earlier = (dt.datetime.now(dt.UTC) - dt.timedelta(hours=1)).isoformat()
    assert call("GET", f"{acc.url}/api/v1/usage", admin, params={"service": service, "from": later}).json()[
        "rows"] == []  # fmt: skip
    assert call("GET", f"{acc.url}/api/v1/usage", admin, params={"service": service, "to": earlier}).json()[
        "total"] == "0.000"  # fmt: skip
    window = call("GET", f"{acc.url}/api/v1/usage", admin, params={"service": service, "from": earlier,
                                                                    "to": later}).json()  # fmt: skip
    assert window["total"] == "7.750" and window["from"].endswith("Z")
    # an ordinary user sees only their own usage, without asking
    own = call("GET", f"{acc.url}/api/v1/usage", acc.token_for("researcher"), params={"service": service}).json()
    assert own["user"] == "researcher" and own["rows"] == []


def test_transactions_filter_by_session_and_page(sandbox_accounting):
    acc, user = sandbox_accounting, unique_user()
    session = f"{user}//2026-01-01T00:00:00Z"
    for amount in ("1", "2", "3"):
        debit(acc, user, amount, session=session)
    debit(acc, user, "10", service="workflows")
    admin = acc.admin_token()
    cost = call("GET", f"{acc.url}/api/v1/accounts/{user}/transactions", admin, params={"session": session}).json()
    assert cost["total"] == "6.000" and cost["count"] == 3
    page = call("GET", f"{acc.url}/api/v1/accounts/{user}/transactions", admin,
                params={"limit": 2, "offset": 1}).json()  # fmt: skip
    assert [t["amount"] for t in page["transactions"]] == ["3.000", "2.000"] and page["count"] == 5
    assert page["total"] == "16.000" and page["credits"] == "100.000"  # totals cover every page
    workflows = call("GET", f"{acc.url}/api/v1/accounts/{user}/transactions", admin,
                     params={"service": "workflows"}).json()  # fmt: skip
    assert [t["amount"] for t in workflows["transactions"]] == ["10.000"]


def test_monthly_statement(sandbox_accounting):
    acc, user = sandbox_accounting, unique_user()
    debit(acc, user, "1.5", "jupyterhub", "standard")
    debit(acc, user, "2.5", "jupyterhub", "standard")
    debit(acc, user, "3", "dask-gateway", None)
    call("POST", f"{acc.url}/api/v1/accounts/{user}/transactions", acc.admin_token(), "grant",
         json={"kind": "credit", "amount": "20", "service": "accounting", "description": "grant"})  # fmt: skip
    statement = call("GET", f"{acc.url}/api/v1/accounts/{user}/statements/{this_month()}",
                     acc.token_for("executive")).json()  # fmt: skip
    assert statement["user"] == user and statement["month"] == this_month()
    assert (statement["opening_balance"], statement["debits"], statement["credits"], statement["closing_balance"]) \
        == ("0.000", "7.000", "120.000", "113.000")  # the opening credit of a new account falls in this month
    assert statement["by_service"] == [
        {"service": "dask-gateway", "profile": None, "amount": "3.000", "count": 1},
        {"service": "jupyterhub", "profile": "standard", "amount": "4.000", "count": 2},
    ]
    assert [t["amount"] for t in statement["transactions"]] == ["100.000", "1.500", "2.500", "3.000", "20.000"]
    assert statement["transactions"][-1]["balance_after"] == statement["closing_balance"]
    last_year = f"{int(this_month()[:4]) - 1}{this_month()[4:]}"
    empty = call("GET", f"{acc.url}/api/v1/accounts/{user}/statements/{last_year}", acc.admin_token()).json()
    assert (empty["opening_balance"], empty["closing_balance"], empty["transactions"]) == ("0.000", "0.000", [])


# -- who may do what ----------------------------------------------------------------------------------------------


def test_users_read_only_their_own_account(sandbox_accounting):
    acc = sandbox_accounting
    researcher = acc.token_for("researcher")
    base = f"{acc.url}/api/v1/accounts"
    for path in ("researcher", "researcher/transactions", f"researcher/statements/{this_month()}"):
        assert call("GET", f"{base}/{path}", researcher).status_code == 200, path
    for path in ("poweruser", "poweruser/transactions", f"poweruser/statements/{this_month()}"):
        answer = call("GET", f"{base}/{path}", researcher)
        assert answer.status_code == 403, path
        assert "poweruser" in answer.json()["message"]
    answer = call("GET", f"{acc.url}/api/v1/usage", researcher, params={"user": "poweruser"})
    assert answer.status_code == 403
    assert call("GET", f"{base}/outsider", acc.token_for("outsider")).status_code == 200


@pytest.mark.parametrize("who", ["admin", "executive", "meter"])
def test_admin_executive_and_metering_read_everyone(sandbox_accounting, who):
    acc = sandbox_accounting
    token = acc.meter_token() if who == "meter" else acc.token_for(who)
    user = unique_user()
    debit(acc, user, "2")
    base = f"{acc.url}/api/v1/accounts/{user}"
    for path in ("", "/transactions", f"/statements/{this_month()}"):
        assert call("GET", f"{base}{path}", token).status_code == 200, path
    report = call("GET", f"{acc.url}/api/v1/usage", token, params={"user": user}).json()
    assert report["total"] == "2.000"
    everyone = call("GET", f"{acc.url}/api/v1/usage", token, params={"group_by": "user"}).json()
    assert everyone["user"] is None and user in {row["user"] for row in everyone["rows"]}


def test_who_may_write(sandbox_accounting):
    acc = sandbox_accounting
    url = f"{acc.url}/api/v1/accounts/{unique_user()}"
    body = {"kind": "debit", "amount": "1", "service": "jupyterhub"}
    credit = {**body, "kind": "credit"}
    researcher, executive = acc.token_for("researcher"), acc.token_for("executive")
    assert call("POST", f"{url}/transactions", researcher, "w1", json=body).status_code == 403
    assert call("POST", f"{acc.url}/api/v1/accounts/researcher/transactions", researcher, "w1",
                json=credit).status_code == 403  # not even a credit for oneself  # fmt: skip
    assert call("POST", f"{url}/transactions", executive, "w1", json=body).status_code == 403
    answer = call("POST", f"{url}/transactions", acc.meter_token(), "w2", json=credit)
    assert answer.status_code == 403 and "dcu-admin" in answer.json()["message"]
    assert call("POST", f"{url}/transactions", acc.meter_token(), "w3", json=body).status_code == 201
    assert call("POST", f"{url}/transactions", acc.admin_token(), "w4", json=body).status_code == 201
    assert call("POST", f"{url}/transactions", acc.admin_token(), "w5", json=credit).status_code == 201
    assert call("PUT", url, researcher, json={"mode": "arrears"}).status_code == 403
    assert call("PUT", url, acc.meter_token(), json={"mode": "arrears"}).status_code == 403


def test_no_or_invalid_token_is_401(sandbox_accounting):
    acc = sandbox_accounting
    paths = ["/api/v1/accounts/researcher", "/api/v1/accounts/researcher/transactions", "/api/v1/usage",
             f"/api/v1/accounts/researcher/statements/{this_month()}"]  # fmt: skip
    for path in paths:
        for headers in ({}, {"Authorization": "Bearer not-a-jwt"}, {"Authorization": "Token abc"}):
            answer = requests.get(f"{acc.url}{path}", headers=headers, timeout=10)
            assert answer.status_code == 401, (path, headers)
            assert answer.json()["message"]
    answer = requests.post(f"{acc.url}/api/v1/accounts/researcher/transactions", timeout=10,
                           json={"kind": "debit", "amount": "1", "service": "jupyterhub"},
                           headers={"Idempotency-Key": "no-token"})  # fmt: skip
    assert answer.status_code == 401
    assert requests.get(f"{acc.url}/api/status", timeout=10).json()["status"] == "ok"


# -- bad input ----------------------------------------------------------------------------------------------------

GOOD = {"kind": "debit", "amount": "1", "service": "jupyterhub"}
BAD_BODIES = [
    ({"amount": -1}, "amount"),
    ({"amount": "-0.5"}, "amount"),
    ({"amount": 0}, "amount"),
    ({"amount": "0.000"}, "amount"),
    ({"amount": "abc"}, "amount"),
    ({"amount": "1,5"}, "amount"),
    ({"amount": ""}, "amount"),
    ({"amount": "1.2345"}, "amount"),
    ({"amount": 0.0001}, "amount"),
    ({"amount": True}, "amount"),
    ({"amount": None}, "amount"),
    ({"amount": [1]}, "amount"),
    ({"amount": "NaN"}, "amount"),
    ({"amount": "1e400"}, "amount"),
    ({"kind": "refund"}, "kind"),
    ({"kind": None}, "kind"),
    ({"service": None}, "service"),
    ({"service": "no spaces"}, "service"),
    ({"profile": 3}, "profile"),
    ({"period_start": "yesterday"}, "period_start"),
    ({"period_start": "2026-01-02T00:00:00Z", "period_end": "2026-01-01T00:00:00Z"}, "period_end"),
    ({"metadata": "text"}, "metadata"),
    ({"colour": "red"}, "colour"),
]


@pytest.mark.parametrize("change,field", BAD_BODIES, ids=[f"{f}={c.get(f, c)!r}" for c, f in BAD_BODIES])
def test_bad_transaction_bodies_are_400_naming_the_field(sandbox_accounting, change, field):
    acc = sandbox_accounting
    body = {**GOOD, **change}
    if change.get(field, "present") is None and field in ("kind", "service"):
        body.pop(field)
    answer = call("POST", f"{acc.url}/api/v1/accounts/{unique_user()}/transactions", acc.admin_token(),
                  uuid.uuid4().hex, json=body)  # fmt: skip
    assert answer.status_code == 400, answer.text
    error = answer.json()
    assert error["field"] == field and field in error["message"]


def test_missing_key_or_unreadable_body_is_400(sandbox_accounting):
    acc = sandbox_accounting
    url = f"{acc.url}/api/v1/accounts/{unique_user()}/transactions"
    token = acc.meter_token()
    for key, field in ((None, "Idempotency-Key"), ("k" * 201, "Idempotency-Key"), ("with space", "Idempotency-Key")):
        answer = call("POST", url, token, key, json=GOOD)
        assert answer.status_code == 400 and answer.json()["field"] == field, answer.text
    for data in (b"{not json", b"[1, 2]", b"NaN", b""):
        answer = call("POST", url, token, "k", data=data, headers={"Content-Type": "application/json"})
        assert answer.status_code == 400 and answer.json()["field"] == "body", (data, answer.text)


@pytest.mark.parametrize("path,params,field", [
    ("/api/v1/accounts/researcher/transactions", {"limit": 0}, "limit"),
    ("/api/v1/accounts/researcher/transactions", {"limit": "ten"}, "limit"),
    ("/api/v1/accounts/researcher/transactions", {"offset": -1}, "offset"),
    ("/api/v1/accounts/researcher/transactions", {"from": "last week"}, "from"),
    ("/api/v1/usage", {"to": "2026-13-01"}, "to"),
    ("/api/v1/usage", {"from": "2026-02-01", "to": "2026-01-01"}, "to"),
    ("/api/v1/usage", {"group_by": "colour"}, "group_by"),
    ("/api/v1/usage", {"group_by": "user,user"}, "group_by"),
    ("/api/v1/accounts/researcher/statements/2026-13", {}, "month"),
    ("/api/v1/accounts/researcher/statements/january", {}, "month"),
    ("/api/v1/accounts/-bad-/transactions", {}, "user"),
])  # fmt: skip
def test_bad_query_parameters_are_400_naming_them(sandbox_accounting, path, params, field):
    answer = call("GET", f"{sandbox_accounting.url}{path}", sandbox_accounting.admin_token(), params=params)
    assert answer.status_code == 400, answer.text
    assert answer.json()["field"] == field and field in answer.json()["message"]


@pytest.mark.parametrize("body,field", [
    ({"mode": "prepaid"}, "mode"),
    ({"monthly_quota": -5}, "monthly_quota"),
    ({"monthly_quota": "lots"}, "monthly_quota"),
    ({"monthly_quota": "0.0001"}, "monthly_quota"),
    ({"balance": 1000}, "balance"),
])  # fmt: skip
def test_bad_plan_changes_are_400_naming_the_field(sandbox_accounting, body, field):
    answer = call("PUT", f"{sandbox_accounting.url}/api/v1/accounts/{unique_user()}",
                  sandbox_accounting.admin_token(), json=body)  # fmt: skip
    assert answer.status_code == 400, answer.text
    assert answer.json()["field"] == field and field in answer.json()["message"]
