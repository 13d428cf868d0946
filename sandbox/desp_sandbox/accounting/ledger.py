"""The DCU ledger: an append-only SQLite store of transactions and plan changes, and its money arithmetic.

No HTTP here. Amounts are integers of milli-DCU (1 DCU = 1000 units) everywhere inside; `parse_amount` turns a
request value (a JSON number read as `Decimal`, an int, or a string such as "1.25") into units without ever going
through a float, and `format_amount` gives the 3-decimal string the API answers with.

Tables (created on first use; the file is in WAL mode):

* `plans`: one row per plan change of an account (mode advance|arrears, monthly quota). The first row of a user is
  the account's creation with the service's default plan; the latest row is the current plan.
* `transactions`: debits and credits. `balance_after` is computed inside the same `BEGIN IMMEDIATE` write transaction
  that inserts the row, from the user's previous row, so concurrent writers can never interleave. `(user,
  idempotency_key)` is unique, and `request_hash` (SHA-256 of the canonical request body) tells a replay of the same
  request (answered with the first result) from a different request under the same key (`IdempotencyConflict`).
  When the default plan has an opening balance, the account's creation adds a credit (service "accounting", key
  "opening-balance") so that, for every account, balance = credits - debits over its transactions.

Both tables are append-only: triggers RAISE on any UPDATE or DELETE, so a correction is always a new entry (a credit
with `metadata.corrects` naming the transaction it corrects).

Times are UTC, stored as fixed-width ISO 8601 text (`2026-01-31T12:00:00.000000Z`) so that text order is time order;
period filters (`from` inclusive, `to` exclusive) and months apply to the `created` time of a transaction.
"""

from __future__ import annotations

import calendar
import datetime as dt
import decimal
import hashlib
import json
import re
import sqlite3
import threading
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

UNITS_PER_DCU = 1000
MAX_AMOUNT_UNITS = 10**15  # one trillion DCU: far beyond any real amount, far below SQLite's int64 limit
MODES = ("advance", "arrears")
KINDS = ("debit", "credit")
GROUP_KEYS = ("service", "profile", "user")
MAX_KEY_LENGTH = 200
MAX_TEXT_LENGTH = 1000
OPENING_KEY = "opening-balance"
TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"

_AMOUNT_TEXT = re.compile(r"^\s*[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?\s*$")
_MONTH = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
_KEY = re.compile(r"^[\x21-\x7e]+$")
_SERVICE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,99}$")

SCHEMA = """
CREATE TABLE IF NOT EXISTS plans (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    user TEXT NOT NULL,
    mode TEXT NOT NULL CHECK (mode IN ('advance', 'arrears')),
    monthly_quota INTEGER NOT NULL CHECK (monthly_quota >= 0),
    changed_by TEXT,
    created TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS plans_user ON plans (user, id);
CREATE TABLE IF NOT EXISTS transactions (
    id INTEGER PRIMARY KEY,
    user TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('debit', 'credit')),
    amount INTEGER NOT NULL CHECK (amount > 0),
    service TEXT NOT NULL,
    profile TEXT,
    session TEXT,
    description TEXT,
    period_start TEXT,
    period_end TEXT,
    metadata TEXT NOT NULL DEFAULT '{}',
    created TEXT NOT NULL,
    balance_after INTEGER NOT NULL,
    idempotency_key TEXT NOT NULL,
    request_hash TEXT NOT NULL,
    recorded_by TEXT,
    UNIQUE (user, idempotency_key)
);
CREATE INDEX IF NOT EXISTS transactions_user ON transactions (user, id);
CREATE INDEX IF NOT EXISTS transactions_user_created ON transactions (user, created);
CREATE TRIGGER IF NOT EXISTS transactions_no_update BEFORE UPDATE ON transactions
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only: transactions cannot be updated'); END;
CREATE TRIGGER IF NOT EXISTS transactions_no_delete BEFORE DELETE ON transactions
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only: transactions cannot be deleted'); END;
CREATE TRIGGER IF NOT EXISTS plans_no_update BEFORE UPDATE ON plans
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only: plan changes cannot be updated'); END;
CREATE TRIGGER IF NOT EXISTS plans_no_delete BEFORE DELETE ON plans
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only: plan changes cannot be deleted'); END;
"""

TRANSACTION_COLUMNS = (
    "id", "user", "kind", "amount", "service", "profile", "session", "description", "period_start", "period_end",
    "metadata", "created", "balance_after", "idempotency_key",
)  # fmt: skip


class InvalidInput(ValueError):
    """A request value is unusable; `field` names it and the message says why (answered as 400)."""

    def __init__(self, field: str, message: str):
        super().__init__(f"Invalid {field}: {message}")
        self.field = field
        self.message = f"Invalid {field}: {message}"


class IdempotencyConflict(Exception):
    """The idempotency key was already used by this account for a different request (answered as 409)."""

    def __init__(self, user: str, key: str, existing_id: int):
        super().__init__(
            f"Idempotency-Key {key!r} was already used for transaction {existing_id} of {user!r} with a different "
            "request body; use a new key for a new transaction, or resend exactly the same body to replay it."
        )
        self.existing_id = existing_id


# -- money and values (pure) -------------------------------------------------------------------------------------


def parse_amount(value, field: str = "amount", allow_zero: bool = False) -> int:
    """Units (milli-DCU) of a DCU amount given as int, Decimal or decimal string; never through a float.

    Refused (InvalidInput naming `field`): booleans, floats (read JSON with `parse_float=Decimal`), non-numeric
    strings, NaN/infinity, negatives, zero (unless `allow_zero`), more than 3 decimals, more than 10^12 DCU.
    """
    if isinstance(value, bool) or value is None:
        raise InvalidInput(field, "must be a number of DCU such as 1.25 (a JSON number or a string)")
    if isinstance(value, float):
        value = Decimal(repr(value))  # only for Python callers; the service never parses JSON into floats
    if isinstance(value, str):
        if len(value) > 40 or not _AMOUNT_TEXT.match(value):
            raise InvalidInput(field, f"{value[:40]!r} is not a decimal number of DCU (e.g. \"1.25\")")
        value = Decimal(value.strip())
    if isinstance(value, int):
        value = Decimal(value)
    if not isinstance(value, Decimal):
        raise InvalidInput(field, "must be a number of DCU such as 1.25 (a JSON number or a string)")
    if not value.is_finite():
        raise InvalidInput(field, "must be a finite number")
    if value.adjusted() > 12:
        raise InvalidInput(field, "is too large (at most 10^12 DCU)")
    if value < 0:
        raise InvalidInput(field, f"must not be negative (got {value})")
    if value == 0 and not allow_zero:
        raise InvalidInput(field, "must be greater than zero")
    try:
        units = value.scaleb(3)
        if units != units.to_integral_value():
            raise InvalidInput(field, f"has more than 3 decimals (got {value}); the smallest unit is 0.001 DCU")
        units = int(units)
    except decimal.InvalidOperation:
        raise InvalidInput(field, "is not a usable number") from None
    if units > MAX_AMOUNT_UNITS:
        raise InvalidInput(field, "is too large (at most 10^12 DCU)")
    return units


def format_amount(units: int) -> str:
    """`1250` → "1.250"; negative balances keep their sign ("-0.500")."""
    sign = "-" if units < 0 else ""
    units = abs(int(units))
    return f"{sign}{units // UNITS_PER_DCU}.{units % UNITS_PER_DCU:03d}"


def format_time(moment: dt.datetime) -> str:
    return moment.astimezone(dt.UTC).strftime(TIME_FORMAT)


def parse_time(value, field: str) -> str:
    """An ISO 8601 date or date-time (a naive one is UTC) as the stored fixed-width UTC text, or InvalidInput."""
    if not isinstance(value, str) or not value.strip() or len(value) > 64:
        raise InvalidInput(field, "must be an ISO 8601 date-time such as 2026-01-31T12:00:00Z")
    text = value.strip()
    try:
        moment = dt.datetime.fromisoformat(text.replace("z", "Z"))
    except ValueError:
        raise InvalidInput(field, f"{text!r} is not an ISO 8601 date-time such as 2026-01-31T12:00:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    try:
        return format_time(moment)
    except (OverflowError, ValueError):
        raise InvalidInput(field, f"{text!r} is out of range") from None


def month_bounds(month: str) -> tuple[str, str]:
    """`2026-01` → ("2026-01-01T00:00:00.000000Z", "2026-02-01T00:00:00.000000Z"), or InvalidInput("month")."""
    match = _MONTH.match(month or "")
    if not match or not 1 <= int(match[1]):
        raise InvalidInput("month", f"{month!r} is not a month written YYYY-MM (e.g. 2026-01)")
    year, number = int(match[1]), int(match[2])
    start = dt.datetime(year, number, 1, tzinfo=dt.UTC)
    end = start + dt.timedelta(days=calendar.monthrange(year, number)[1])
    if year == 9999 and number == 12:
        return format_time(start), "9999-12-31T23:59:59.999999Z~"
    return format_time(start), format_time(end)


def _text(body: dict, field: str, required: bool = False, limit: int = MAX_TEXT_LENGTH) -> str | None:
    value = body.get(field)
    if value is None:
        if required:
            raise InvalidInput(field, "is required")
        return None
    if not isinstance(value, str):
        raise InvalidInput(field, "must be a string")
    if len(value) > limit:
        raise InvalidInput(field, f"is longer than {limit} characters")
    return value


TRANSACTION_FIELDS = {"kind", "amount", "service", "profile", "session", "description", "period_start", "period_end",
                      "metadata"}  # fmt: skip


def normalize_transaction(body) -> dict:
    """A transaction request body (a dict, JSON numbers as Decimal) as the canonical entry the ledger stores.

    Raises InvalidInput naming the first unusable field. The canonical form is what idempotency compares: "1.25"
    and 1.250 are the same amount, `2026-01-01T00:00:00+00:00` and `2026-01-01T00:00:00Z` the same time.
    """
    if not isinstance(body, dict):
        raise InvalidInput("body", "must be a JSON object with kind, amount and service")
    unknown = sorted(set(body) - TRANSACTION_FIELDS)
    if unknown:
        raise InvalidInput(unknown[0], f"is not a transaction field (known: {', '.join(sorted(TRANSACTION_FIELDS))})")
    kind = body.get("kind")
    if kind not in KINDS:
        raise InvalidInput("kind", f"must be one of {', '.join(KINDS)} (got {kind!r})" if kind is not None
                           else f"is required: one of {', '.join(KINDS)}")  # fmt: skip
    if "amount" not in body:
        raise InvalidInput("amount", "is required: a positive number of DCU with at most 3 decimals")
    amount = parse_amount(body["amount"])
    service = _text(body, "service", required=True, limit=100)
    if not _SERVICE.match(service):
        raise InvalidInput("service", "must be a service name such as jupyterhub, workflows or dask-gateway "
                           "(letters, digits, '.', '_', ':', '-'; at most 100)")  # fmt: skip
    entry = {"kind": kind, "amount": amount, "service": service}
    for field in ("profile", "session"):
        entry[field] = _text(body, field, limit=200)
    entry["description"] = _text(body, "description")
    for field in ("period_start", "period_end"):
        entry[field] = None if body.get(field) is None else parse_time(body[field], field)
    if entry["period_start"] and entry["period_end"] and entry["period_start"] > entry["period_end"]:
        raise InvalidInput("period_end", "is before period_start")
    metadata = body.get("metadata")
    if metadata is None:
        metadata = {}
    if not isinstance(metadata, dict):
        raise InvalidInput("metadata", "must be a JSON object")
    try:
        encoded = json.dumps(metadata, sort_keys=True, separators=(",", ":"), default=_json_decimal,
                             allow_nan=False)  # fmt: skip
    except (TypeError, ValueError):
        raise InvalidInput("metadata", "must be plain JSON") from None
    if len(encoded) > 10_000:
        raise InvalidInput("metadata", "is larger than 10000 characters of JSON")
    entry["metadata"] = encoded
    return entry


def _json_decimal(value):
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() and value.is_finite() else float(value)
    raise TypeError(type(value).__name__)


def request_hash(entry: dict) -> str:
    """SHA-256 of the canonical JSON of a normalized entry: equal for equal requests, whatever their spelling."""
    return hashlib.sha256(json.dumps(entry, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def check_key(key) -> str:
    if not key:
        raise InvalidInput("Idempotency-Key", "header is required: a unique key per transaction (at most 200 chars)")
    if len(key) > MAX_KEY_LENGTH:
        raise InvalidInput("Idempotency-Key", f"is longer than {MAX_KEY_LENGTH} characters")
    if not _KEY.match(key):
        raise InvalidInput("Idempotency-Key", "must be printable ASCII without spaces (jupyterhub:alice::1767225600:3)")
    return key


# -- the store ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """The plan of a new account: payment mode, opening balance and monthly quota (both in units)."""

    mode: str = "advance"
    balance: int = 100 * UNITS_PER_DCU
    monthly_quota: int = 0


def _utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


class Ledger:
    """The ledger in one SQLite file; thread-safe (one connection behind a lock), every write one transaction."""

    def __init__(self, path: Path | str, default_plan: Plan = Plan(), clock: Callable[[], dt.datetime] = _utcnow,
                 synchronous: str = "NORMAL"):  # fmt: skip
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.default_plan = default_plan
        self.clock = clock
        self._lock = threading.RLock()
        self.db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False, timeout=30)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(f"PRAGMA synchronous={synchronous}")  # NORMAL in WAL: a process crash loses no commit
        self.db.execute("PRAGMA foreign_keys=ON")
        with self._lock:
            self.db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self.db.close()

    def _now(self) -> str:
        return format_time(self.clock())

    # writes: each in BEGIN IMMEDIATE ... COMMIT, so reads inside see the latest committed state
    def _write(self, work):
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                result = work()
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
            return result

    def _ensure_account(self, user: str) -> None:
        """Create the account with the default plan (and its opening credit) unless it exists. Inside a write."""
        if self.db.execute("SELECT 1 FROM plans WHERE user = ? LIMIT 1", (user,)).fetchone():
            return
        now = self._now()
        plan = self.default_plan
        self.db.execute("INSERT INTO plans (user, mode, monthly_quota, changed_by, created) VALUES (?, ?, ?, ?, ?)",
                        (user, plan.mode, plan.monthly_quota, None, now))  # fmt: skip
        if plan.balance > 0:
            entry = {"kind": "credit", "amount": plan.balance, "service": "accounting", "profile": None,
                     "session": None, "description": "Opening balance of the default plan", "period_start": None,
                     "period_end": None, "metadata": json.dumps({"opening": True})}  # fmt: skip
            self._insert(user, entry, OPENING_KEY, None, now)

    def _balance(self, user: str) -> int:
        row = self.db.execute("SELECT balance_after FROM transactions WHERE user = ? ORDER BY id DESC LIMIT 1",
                              (user,)).fetchone()  # fmt: skip
        return row[0] if row else 0

    def _insert(self, user: str, entry: dict, key: str, recorded_by: str | None, now: str) -> int:
        delta = entry["amount"] if entry["kind"] == "credit" else -entry["amount"]
        cursor = self.db.execute(
            "INSERT INTO transactions (user, kind, amount, service, profile, session, description, period_start, "
            "period_end, metadata, created, balance_after, idempotency_key, request_hash, recorded_by) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (user, entry["kind"], entry["amount"], entry["service"], entry["profile"], entry["session"],
             entry["description"], entry["period_start"], entry["period_end"], entry["metadata"], now,
             self._balance(user) + delta, key, request_hash(entry), recorded_by),
        )  # fmt: skip
        return cursor.lastrowid

    def record(self, user: str, entry: dict, key: str, recorded_by: str | None = None) -> tuple[dict, bool]:
        """Record a normalized entry under `key`: (the transaction, replayed?). Same key + other body: conflict."""
        digest = request_hash(entry)

        def work():
            existing = self.db.execute(
                "SELECT id, request_hash FROM transactions WHERE user = ? AND idempotency_key = ?", (user, key)
            ).fetchone()
            if existing:
                if existing["request_hash"] != digest:
                    raise IdempotencyConflict(user, key, existing["id"])
                return existing["id"], True
            self._ensure_account(user)
            return self._insert(user, entry, key, recorded_by, self._now()), False

        with self._lock:
            transaction_id, replayed = self._write(work)
            return self.transaction(transaction_id), replayed

    def transaction(self, transaction_id: int) -> dict:
        with self._lock:
            row = self.db.execute(f"SELECT {', '.join(TRANSACTION_COLUMNS)} FROM transactions WHERE id = ?",
                                  (transaction_id,)).fetchone()  # fmt: skip
        return _transaction(row)

    def account(self, user: str) -> dict:
        """The account (created with the default plan on first reference): plan, balance, month's use, available."""
        with self._lock:
            if not self.db.execute("SELECT 1 FROM plans WHERE user = ? LIMIT 1", (user,)).fetchone():
                self._write(lambda: self._ensure_account(user))
            plan = self.db.execute("SELECT mode, monthly_quota FROM plans WHERE user = ? ORDER BY id DESC LIMIT 1",
                                   (user,)).fetchone()  # fmt: skip
            month_start, month_end = month_bounds(self.clock().strftime("%Y-%m"))
            used = self.db.execute(
                "SELECT COALESCE(SUM(amount), 0) FROM transactions WHERE user = ? AND kind = 'debit' "
                "AND created >= ? AND created < ?", (user, month_start, month_end)
            ).fetchone()[0]  # fmt: skip
            balance = self._balance(user)
        available = balance if plan["mode"] == "advance" else plan["monthly_quota"] - used
        return {"user": user, "mode": plan["mode"], "balance": balance, "monthly_quota": plan["monthly_quota"],
                "used_this_month": used, "available": available}  # fmt: skip

    def set_plan(self, user: str, mode: str | None = None, monthly_quota: int | None = None,
                 changed_by: str | None = None) -> dict:  # fmt: skip
        """Append a plan change (unset parts keep their current value) and return the account."""

        def work():
            self._ensure_account(user)
            current = self.db.execute("SELECT mode, monthly_quota FROM plans WHERE user = ? ORDER BY id DESC LIMIT 1",
                                      (user,)).fetchone()  # fmt: skip
            self.db.execute(
                "INSERT INTO plans (user, mode, monthly_quota, changed_by, created) VALUES (?, ?, ?, ?, ?)",
                (user, mode or current["mode"], current["monthly_quota"] if monthly_quota is None else monthly_quota,
                 changed_by, self._now()),
            )  # fmt: skip

        with self._lock:
            self._write(work)
            return self.account(user)

    def plan_changes(self, user: str) -> list[dict]:
        with self._lock:
            rows = self.db.execute("SELECT id, mode, monthly_quota, changed_by, created FROM plans WHERE user = ? "
                                   "ORDER BY id", (user,)).fetchall()  # fmt: skip
        return [dict(row) for row in rows]

    # reads
    @staticmethod
    def _filters(**filters) -> tuple[str, list]:
        clauses, values = [], []
        for name, column, operator in (("user", "user", "="), ("service", "service", "="), ("profile", "profile", "="),
                                       ("session", "session", "="), ("kind", "kind", "="),
                                       ("start", "created", ">="), ("end", "created", "<")):  # fmt: skip
            if filters.get(name) is not None:
                clauses.append(f"{column} {operator} ?")
                values.append(filters[name])
        return (" WHERE " + " AND ".join(clauses)) if clauses else "", values

    def transactions(self, user: str, start: str | None = None, end: str | None = None, session: str | None = None,
                     service: str | None = None, limit: int = 100, offset: int = 0) -> dict:  # fmt: skip
        """One page of a user's transactions, newest first, with totals over all that match (not just the page)."""
        where, values = self._filters(user=user, start=start, end=end, session=session, service=service)
        with self._lock:
            rows = self.db.execute(f"SELECT {', '.join(TRANSACTION_COLUMNS)} FROM transactions{where} "
                                   "ORDER BY id DESC LIMIT ? OFFSET ?", (*values, limit, offset)).fetchall()
            count, debits, credits = self.db.execute(
                "SELECT COUNT(*), COALESCE(SUM(CASE WHEN kind = 'debit' THEN amount END), 0), "
                f"COALESCE(SUM(CASE WHEN kind = 'credit' THEN amount END), 0) FROM transactions{where}", values
            ).fetchone()  # fmt: skip
        return {"transactions": [_transaction(row) for row in rows], "count": count, "debits": debits,
                "credits": credits}  # fmt: skip

    def usage(self, group_by: tuple[str, ...] = (), start: str | None = None, end: str | None = None,
              user: str | None = None, service: str | None = None, profile: str | None = None) -> dict:  # fmt: skip
        """Consumption (debits only) summed per group (any of service, profile, user), largest first, and in all."""
        where, values = self._filters(kind="debit", user=user, service=service, profile=profile, start=start, end=end)
        columns = ", ".join(group_by)
        select = f"{columns}, " if group_by else ""
        group = f" GROUP BY {columns} ORDER BY SUM(amount) DESC, {columns}" if group_by else ""
        with self._lock:
            rows = self.db.execute(f"SELECT {select}SUM(amount) AS amount, COUNT(*) AS count FROM transactions"
                                   f"{where}{group}", values).fetchall()  # fmt: skip
        rows = [dict(row) for row in rows if row["count"]]
        for row in rows:
            row["amount"] = row["amount"] or 0
        return {"rows": rows, "total": sum(row["amount"] for row in rows), "count": sum(r["count"] for r in rows)}

    def statement(self, user: str, month: str) -> dict:
        """The month's statement (F2.9): opening and closing balance, debits, credits, per-service use, entries."""
        start, end = month_bounds(month)
        with self._lock:
            before = self.db.execute("SELECT balance_after FROM transactions WHERE user = ? AND created < ? "
                                     "ORDER BY id DESC LIMIT 1", (user, start)).fetchone()  # fmt: skip
            rows = self.db.execute(f"SELECT {', '.join(TRANSACTION_COLUMNS)} FROM transactions "
                                   "WHERE user = ? AND created >= ? AND created < ? ORDER BY id",
                                   (user, start, end)).fetchall()  # fmt: skip
        transactions = [_transaction(row) for row in rows]
        opening = before[0] if before else 0
        debits = sum(t["amount"] for t in transactions if t["kind"] == "debit")
        credits = sum(t["amount"] for t in transactions if t["kind"] == "credit")
        by_service: dict[tuple, dict] = {}
        for t in transactions:
            if t["kind"] == "debit":
                row = by_service.setdefault((t["service"], t["profile"] or ""),
                                            {"service": t["service"], "profile": t["profile"], "amount": 0,
                                             "count": 0})  # fmt: skip
                row["amount"] += t["amount"]
                row["count"] += 1
        return {"user": user, "month": month, "opening_balance": opening, "debits": debits, "credits": credits,
                "closing_balance": opening + credits - debits,
                "by_service": sorted(by_service.values(), key=lambda r: (r["service"], r["profile"] or "")),
                "transactions": transactions}  # fmt: skip


def _transaction(row) -> dict:
    if row is None:
        raise KeyError("no such transaction")
    record = dict(row)
    record["metadata"] = json.loads(record["metadata"] or "{}")
    return record
