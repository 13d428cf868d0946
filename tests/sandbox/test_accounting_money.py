"""The ledger's money arithmetic and request normalisation, without HTTP: amounts never go through a float, the
canonical form makes equal requests hash equal, and the store is append-only and conserves amounts."""

import datetime as dt
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest

from desp_sandbox.accounting.ledger import (
    IdempotencyConflict,
    InvalidInput,
    Ledger,
    Plan,
    format_amount,
    month_bounds,
    normalize_transaction,
    parse_amount,
    request_hash,
)


@pytest.mark.parametrize("value,units", [
    (Decimal("1.25"), 1250), ("1.25", 1250), ("1.250", 1250), ("1.2500", 1250), (3, 3000), ("0.001", 1),
    (Decimal("1E+3"), 1_000_000), ("  7 ", 7000), ("1000000000000", 10**15),
    (Decimal("0.1") + Decimal("0.2"), 300),  # exact where a float would give 0.30000000000000004
])  # fmt: skip
def test_amounts_in_units(value, units):
    assert parse_amount(value) == units


@pytest.mark.parametrize("value", ["-1", -1, "0", 0, "0.0001", "1.0005", "abc", "", "1,5", "0x10", "1e400",
                                   "NaN", "Infinity", True, None, [1], {"v": 1}, Decimal("NaN"), "10000000000001"])
def test_unusable_amounts_name_the_field(value):
    with pytest.raises(InvalidInput) as error:
        parse_amount(value, "amount")
    assert error.value.field == "amount" and error.value.message.startswith("Invalid amount: ")


def test_zero_is_a_valid_quota():
    assert parse_amount("0", "monthly_quota", allow_zero=True) == 0


@pytest.mark.parametrize("units,text", [(0, "0.000"), (1, "0.001"), (1250, "1.250"), (-500, "-0.500"),
                                        (-100_500, "-100.500"), (10**15, "1000000000000.000")])  # fmt: skip
def test_amounts_as_text(units, text):
    assert format_amount(units) == text
    assert parse_amount(text.lstrip("-"), allow_zero=True) == abs(units)


def test_equal_requests_have_equal_canonical_forms():
    one = normalize_transaction({"kind": "debit", "amount": "1.25", "service": "jupyterhub",
                                 "period_start": "2026-01-01T01:00:00+01:00", "metadata": {"b": 1, "a": 2}})
    two = normalize_transaction({"kind": "debit", "amount": Decimal("1.250"), "service": "jupyterhub",
                                 "period_start": "2026-01-01T00:00:00Z", "metadata": {"a": 2, "b": 1},
                                 "profile": None, "description": None})
    assert one == two and request_hash(one) == request_hash(two)
    assert one["period_start"] == "2026-01-01T00:00:00.000000Z"
    three = normalize_transaction({"kind": "debit", "amount": "1.251", "service": "jupyterhub"})
    assert request_hash(three) != request_hash(one)


def test_month_bounds():
    assert month_bounds("2026-02") == ("2026-02-01T00:00:00.000000Z", "2026-03-01T00:00:00.000000Z")
    assert month_bounds("2024-12") == ("2024-12-01T00:00:00.000000Z", "2025-01-01T00:00:00.000000Z")
    for bad in ("2026-13", "2026-1", "0000-01", "26-01", ""):
        with pytest.raises(InvalidInput):
            month_bounds(bad)


class Clock:
    def __init__(self, moment):
        self.moment = moment

    def __call__(self):
        return self.moment


def test_store_conserves_and_stays_append_only(tmp_path):
    clock = Clock(dt.datetime(2026, 1, 31, 23, 0, tzinfo=dt.UTC))
    ledger = Ledger(tmp_path / "ledger.sqlite", Plan("advance", 5000, 0), clock=clock)
    entry = normalize_transaction({"kind": "debit", "amount": "0.125", "service": "jupyterhub"})
    with ThreadPoolExecutor(8) as pool:  # 8 threads, one connection behind a lock: balances chain exactly
        results = list(pool.map(lambda n: ledger.record("alice", entry, f"k{n}"), range(200)))
    assert all(not replayed for _, replayed in results)
    assert sorted(t["balance_after"] for t, _ in results) == [5000 - 125 * n for n in range(200, 0, -1)]
    assert ledger.record("alice", entry, "k7")[1] is True
    with pytest.raises(IdempotencyConflict):
        ledger.record("alice", normalize_transaction({"kind": "credit", "amount": "1", "service": "x"}), "k7")
    january = ledger.statement("alice", "2026-01")
    assert (january["opening_balance"], january["debits"], january["credits"]) == (0, 25_000, 5000)
    clock.moment = dt.datetime(2026, 2, 1, 0, 30, tzinfo=dt.UTC)
    ledger.record("alice", entry, "february")
    february = ledger.statement("alice", "2026-02")
    assert february["opening_balance"] == january["closing_balance"] == -20_000
    assert february["closing_balance"] == -20_125 == ledger.account("alice")["balance"]
    assert ledger.account("alice")["used_this_month"] == 125
    changed = ledger.set_plan("alice", "arrears", 1000, changed_by="admin")
    assert (changed["mode"], changed["available"]) == ("arrears", 875)
    assert [p["mode"] for p in ledger.plan_changes("alice")] == ["advance", "arrears"]
    for statement in ("UPDATE transactions SET amount = 1", "DELETE FROM transactions", "UPDATE plans SET mode = 'x'",
                      "DELETE FROM plans"):  # fmt: skip
        with pytest.raises(sqlite3.DatabaseError, match="append-only"):
            ledger.db.execute(statement)
    ledger.close()
