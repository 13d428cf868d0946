"""The sandbox accounting ledger over HTTP: exactly-once transactions under an idempotency key, conservation of
amounts, crash safety between commit and answer, and an append-only store."""

from __future__ import annotations

import random
import sqlite3
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest
import requests

from tests.conftest_accounting import AccountingProcess, unique_user


def post(url: str, user: str, body: dict, key: str | None, token: str) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return requests.post(f"{url}/api/v1/accounts/{user}/transactions", json=body, headers=headers, timeout=30)


def get(url: str, path: str, token: str, **params) -> requests.Response:
    return requests.get(f"{url}{path}", params=params, headers={"Authorization": f"Bearer {token}"}, timeout=30)


def debits_of(url: str, user: str, token: str) -> list[dict]:
    answer = get(url, f"/api/v1/accounts/{user}/transactions", token, limit=1000)
    assert answer.status_code == 200, answer.text
    return [t for t in answer.json()["transactions"] if t["kind"] == "debit"]


def test_replaying_one_transaction_100_times_debits_once(sandbox_accounting):
    url, token, user = sandbox_accounting.url, sandbox_accounting.meter_token(), unique_user()
    body = {"kind": "debit", "amount": "1.25", "service": "jupyterhub", "profile": "standard",
            "session": f"{user}//2026-01-01T00:00:00Z"}  # fmt: skip
    key = f"jupyterhub:{user}::1767225600:0"
    with ThreadPoolExecutor(10) as pool:  # concurrent replays, the same key and body
        answers = list(pool.map(lambda _: post(url, user, body, key, token), range(100)))
    statuses = sorted(answer.status_code for answer in answers)
    assert statuses == [200] * 99 + [201]
    first = next(answer.json() for answer in answers if answer.status_code == 201)
    for answer in answers:
        assert answer.json() == first  # the FIRST result, balance_after included
        assert (answer.headers.get("Idempotent-Replayed") == "true") == (answer.status_code == 200)
    assert [t["id"] for t in debits_of(url, user, token)] == [first["id"]]
    account = get(url, f"/api/v1/accounts/{user}", token).json()
    assert account["balance"] == first["balance_after"] == "98.750"
    # the same body spelled differently is the same request
    again = post(url, user, {**body, "amount": 1.250, "description": None, "metadata": {}}, key, token)
    assert again.status_code == 200 and again.json() == first


def test_same_key_with_another_body_is_a_conflict(sandbox_accounting):
    url, token, user = sandbox_accounting.url, sandbox_accounting.meter_token(), unique_user()
    body = {"kind": "debit", "amount": "2", "service": "workflows"}
    assert post(url, user, body, "run-1", token).status_code == 201
    for changed in ({"amount": "2.001"}, {"service": "dask-gateway"}, {"profile": "power"},
                    {"metadata": {"note": "x"}}):  # fmt: skip
        answer = post(url, user, {**body, **changed}, "run-1", token)
        assert answer.status_code == 409, answer.text
        assert "run-1" in answer.json()["message"] and answer.json()["field"] == "Idempotency-Key"
    assert len(debits_of(url, user, token)) == 1
    # the key is per account: another user may use it
    assert post(url, unique_user(), body, "run-1", token).status_code == 201


def test_conservation_across_users_services_and_profiles(tmp_path, sandbox_accounting):
    """Random debits and credits, concurrently: every grouping of the usage report sums to the same total, exactly
    the sum of the debits sent, and each balance equals credits - debits (the opening balance is a credit)."""
    idp = sandbox_accounting.idp
    process = AccountingProcess(tmp_path, idp.jwks_url, idp.issuer, default_balance="10.5").start()
    try:
        url, meter, admin = process.url, sandbox_accounting.meter_token(), sandbox_accounting.admin_token()
        rng = random.Random(5)
        users = [unique_user("c") for _ in range(5)]
        requests_ = []
        for n in range(300):
            kind = "credit" if rng.random() < 0.2 else "debit"
            body = {"kind": kind, "amount": f"{rng.randint(1, 99999) / 1000:.3f}".rstrip("0").rstrip("."),
                    "service": rng.choice(["jupyterhub", "workflows", "dask-gateway"]),
                    "profile": rng.choice(["standard", "power", "ai", None])}  # fmt: skip
            requests_.append((rng.choice(users), body, f"conservation-{n}", admin if kind == "credit" else meter))
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda r: post(url, *r), requests_))
        assert {answer.status_code for answer in answers} == {201}
        units = lambda amount: int(Decimal(amount) * 1000)  # noqa: E731
        debits = {u: sum(units(b["amount"]) for v, b, *_ in requests_ if v == u and b["kind"] == "debit")
                  for u in users}  # fmt: skip
        credits = {u: sum(units(b["amount"]) for v, b, *_ in requests_ if v == u and b["kind"] == "credit")
                   for u in users}  # fmt: skip
        total = sum(debits.values())
        for group_by in ("user", "profile", "service", "service,profile,user", ""):
            report = get(url, "/api/v1/usage", admin, group_by=group_by).json()
            assert units(report["total"]) == total
            assert sum(units(row["amount"]) for row in report["rows"]) == total
            assert sum(row["count"] for row in report["rows"]) == report["count"]
        per_user = {row["user"]: units(row["amount"]) for row in get(url, "/api/v1/usage", admin,
                                                                     group_by="user").json()["rows"]}  # fmt: skip
        assert per_user == {u: d for u, d in debits.items() if d}
        per_profile = get(url, "/api/v1/usage", admin, group_by="profile").json()["rows"]
        for profile in ("standard", "power", "ai", None):
            expected = sum(units(b["amount"]) for _, b, *_ in requests_ if b["kind"] == "debit"
                           and b["profile"] == profile)  # fmt: skip
            assert sum(units(r["amount"]) for r in per_profile if r["profile"] == profile) == expected
        for user in users:
            account = get(url, f"/api/v1/accounts/{user}", admin).json()
            assert units(account["balance"]) == 10500 + credits[user] - debits[user]
            listing = get(url, f"/api/v1/accounts/{user}/transactions", admin, limit=1000).json()
            assert units(listing["total"]) == debits[user]
            assert units(listing["credits"]) == 10500 + credits[user]
            # balance_after chains: each entry's balance is the previous one plus its own amount
            balance = 0
            for entry in reversed(listing["transactions"]):
                balance += units(entry["amount"]) * (1 if entry["kind"] == "credit" else -1)
                assert units(entry["balance_after"]) == balance
            assert balance == units(account["balance"])
    finally:
        process.stop()


def test_a_crash_between_commit_and_answer_then_a_retry_leaves_one_debit(tmp_path, sandbox_accounting):
    idp, meter = sandbox_accounting.idp, sandbox_accounting.meter_token()
    process = AccountingProcess(tmp_path, idp.jwks_url, idp.issuer, exit_after_commit=1).start()
    user, key = unique_user(), f"crash-{uuid.uuid4().hex}"
    body = {"kind": "debit", "amount": "0.125", "service": "jupyterhub", "profile": "standard"}
    try:
        with pytest.raises(requests.ConnectionError):
            post(process.url, user, body, key, meter)  # committed, then the process died before answering
        assert process.returncode() == 3
        process.stop()
        process.options.pop("exit_after_commit")
        process.start()  # same data dir, same port
        retry = post(process.url, user, body, key, meter)
        assert retry.status_code == 200 and retry.headers["Idempotent-Replayed"] == "true"
        debits = debits_of(process.url, user, meter)
        assert [(t["idempotency_key"], t["amount"]) for t in debits] == [(key, "0.125")]
        assert get(process.url, f"/api/v1/accounts/{user}", meter).json()["balance"] == "99.875"
    finally:
        process.stop()


def test_a_killed_service_keeps_what_it_committed(tmp_path, sandbox_accounting):
    idp, meter = sandbox_accounting.idp, sandbox_accounting.meter_token()
    process = AccountingProcess(tmp_path, idp.jwks_url, idp.issuer).start()
    user = unique_user()
    try:
        for n in range(5):
            assert post(process.url, user, {"kind": "debit", "amount": 1, "service": "jupyterhub"}, f"k{n}",
                        meter).status_code == 201  # fmt: skip
        process.kill()
        process.start()
        assert len(debits_of(process.url, user, meter)) == 5
        assert post(process.url, user, {"kind": "debit", "amount": 1, "service": "jupyterhub"}, "k4",
                    meter).status_code == 200  # fmt: skip
    finally:
        assert process.stop() == 0  # SIGTERM: a clean exit
    assert process.log().count(f"desp_sandbox.accounting ready at {process.url}") == 2


def test_the_ledger_file_is_append_only(sandbox_accounting):
    url, token, user = sandbox_accounting.url, sandbox_accounting.meter_token(), unique_user()
    created = post(url, user, {"kind": "debit", "amount": "3", "service": "jupyterhub"}, "append-only", token).json()
    ledger = sqlite3.connect(sandbox_accounting.process.ledger_path, timeout=30)
    try:
        assert ledger.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        for statement in ("UPDATE transactions SET amount = 1 WHERE id = ?",
                          "UPDATE transactions SET balance_after = 1000000 WHERE id = ?",
                          "DELETE FROM transactions WHERE id = ?"):  # fmt: skip
            with pytest.raises(sqlite3.DatabaseError, match="append-only"):
                ledger.execute(statement, (created["id"],))
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            ledger.execute("DELETE FROM plans WHERE user = ?", (user,))
        assert ledger.execute("SELECT amount FROM transactions WHERE id = ?", (created["id"],)).fetchone() == (3000,)
    finally:
        ledger.close()
    assert debits_of(url, user, token)[0] == created
