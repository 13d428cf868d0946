"""The platform's accounting service (DCU balances, quotas, transactions, usage) from Python.

    from desp_lab.accounting import Accounting
    acc = Accounting()                      # DESP_ACCOUNTING_URL, the user's access token
    acc.account()["available"]              # Decimal("97.500")
    acc.transactions(session=os.environ["DESP_SESSION_ID"])["total"]    # what this session cost so far
    acc.usage(group_by="service,profile", start="2026-01-01")
    acc.statement("2026-01")

A metering service records usage with its own token (a zero-argument callable returning a client-credentials token):

    acc.record("researcher", "debit", "0.125", "jupyterhub:researcher::1767225600:3",
               service="jupyterhub", profile="standard", session="researcher//2026-01-01T00:00:00Z")

`record` is safe to retry: the service records a key once, and answers a repeat of the same request with the first
result. So on a connection error, a timeout or a 5xx the request is sent again with the same key (bounded attempts,
exponential backoff); a client killed mid-request may likewise call `record` again with the same key.

Amounts go out as decimal strings (never floats) and come back as `decimal.Decimal`. Errors are `desp_lab.errors`
classes carrying the service's message: `InvalidParameter` (400, `field` names the offending field), `NotAuthorized`
(401), `AccessDenied` (403), `NotFound` (404), `IdempotencyConflict` (409: the key was used with another body),
`ServiceUnavailable` (unreachable or 5xx after the retries). The client is synchronous and thread-safe (one HTTP
session per thread), every request has an explicit timeout, and the token is asked for at each request.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import threading
import time
from collections.abc import Callable
from decimal import Decimal, InvalidOperation
from urllib.parse import quote

import requests

from .errors import DespError, InvalidParameter, NotFound, ServiceUnavailable

TokenLike = str | Callable[[], str] | None
DEFAULT_TIMEOUT_SECONDS = 10.0
RETRY_STATUSES = {500, 502, 503, 504}
AMOUNT_FIELDS = {"amount", "balance", "monthly_quota", "used_this_month", "available", "balance_after", "total",
                 "credits", "debits", "opening_balance", "closing_balance"}  # fmt: skip


class BadRequest(InvalidParameter):
    """The service refused a parameter (400); the message is the service's, `field` the one it named."""

    def __init__(self, message: str, field: str | None = None):
        DespError.__init__(self, message, field=field)


class NotAuthorized(DespError):
    """No valid token (401): not logged in, or the login expired."""

    status = 401


class AccessDenied(DespError):
    """The caller's roles do not allow this (403), e.g. another user's transactions."""

    status = 403


class IdempotencyConflict(DespError):
    """The idempotency key was already used for a different transaction of that account (409)."""

    status = 409


class Transaction(dict):
    """A recorded transaction (a dict); `replayed` is True when the service answered with an earlier result."""

    replayed: bool = False


def _decimals(value):
    """Amount fields (3-decimal strings) as Decimal, recursively."""
    if isinstance(value, list):
        return [_decimals(item) for item in value]
    if isinstance(value, dict):
        return {key: Decimal(item) if key in AMOUNT_FIELDS and isinstance(item, str)
                else item if key == "metadata" else _decimals(item) for key, item in value.items()}  # fmt: skip
    return value


def amount_text(amount, field: str = "amount") -> str:
    """A DCU amount (Decimal, int, decimal string; a float by its shortest repr) as the decimal string sent."""
    if isinstance(amount, bool):
        raise InvalidParameter(field, "must be a number of DCU such as 1.25")
    try:
        value = Decimal(repr(amount)) if isinstance(amount, float) else Decimal(str(amount).strip())
    except (InvalidOperation, ValueError):
        raise InvalidParameter(field, f"{str(amount)[:40]!r} is not a decimal number of DCU (e.g. \"1.25\")") from None
    if not value.is_finite():
        raise InvalidParameter(field, "must be a finite number")
    return format(value, "f")


def _time_text(value) -> str | None:
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).isoformat()
    if isinstance(value, dt.date):
        return value.isoformat()
    raise InvalidParameter("time", f"{value!r} is not an ISO 8601 string, a datetime or a date")


def _token_claims(token: str) -> dict:
    try:
        payload = token.split(".")[1]
        return json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, TypeError):
        return {}


class Accounting:
    """Client of the accounting service at `url` (default env `DESP_ACCOUNTING_URL`, the service root).

    `token`: a string, a zero-argument callable returning one (asked at each request), or by default
    `desp_lab.credentials.access_token`. `timeout`: seconds per HTTP request. `retries`: further attempts after a
    connection error, timeout or 5xx (for `record` always with the same idempotency key), waiting `backoff`,
    2*`backoff`, 4*`backoff`, ... seconds (at most `max_backoff`) between them.
    """

    def __init__(self, url: str | None = None, token: TokenLike = None, timeout: float = DEFAULT_TIMEOUT_SECONDS,
                 retries: int = 6, backoff: float = 0.2, max_backoff: float = 5.0):  # fmt: skip
        url = url or os.environ.get("DESP_ACCOUNTING_URL")
        if not url:
            raise DespError("No accounting service configured: set DESP_ACCOUNTING_URL (or pass url=).", field="url")
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.retries = max(0, int(retries))
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._local = threading.local()

    def __repr__(self) -> str:
        return f"Accounting({self.url!r})"

    # -- plumbing ---------------------------------------------------------------------------------------------

    def _token(self) -> str:
        from . import credentials

        try:
            return credentials.bearer_token(self.token)
        except credentials.CredentialsError as error:
            raise NotAuthorized(str(error)) from None

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = self._local.session = requests.Session()
        return session

    def whoami(self) -> str:
        """The caller's user name: the token's `preferred_username`, else env `JUPYTERHUB_USER`."""
        name = _token_claims(self._token()).get("preferred_username") or os.environ.get("JUPYTERHUB_USER")
        if not name:
            raise DespError("Cannot tell who you are: the token names no user and JUPYTERHUB_USER is not set; "
                            "pass user=.", field="user")  # fmt: skip
        return name

    def _user_path(self, user: str | None) -> str:
        return f"/api/v1/accounts/{quote(user or self.whoami(), safe='')}"

    def _request(self, method: str, path: str, params=None, body=None, headers=None) -> requests.Response:
        """Send, retrying connection errors, timeouts and 5xx; raise the matching DespError for any other error."""
        url = f"{self.url}{path}"
        reason = "no answer"
        for attempt in range(self.retries + 1):
            if attempt:
                time.sleep(min(self.max_backoff, self.backoff * 2 ** (attempt - 1)))
            try:
                response = self._session().request(
                    method, url, params=params, json=body, timeout=self.timeout,
                    headers={"Authorization": f"Bearer {self._token()}", "Accept": "application/json",
                             **(headers or {})},
                )  # fmt: skip
            except requests.Timeout:
                reason = "timed out"
                continue
            except requests.ConnectionError:
                reason = "connection failed"
                self._local.session = None  # a fresh connection pool for the next attempt
                continue
            if response.status_code in RETRY_STATUSES:
                reason = f"HTTP {response.status_code}"
                continue
            if response.status_code >= 400:
                raise _error(response)
            return response
        raise ServiceUnavailable("accounting service", self.url, f"{reason} after {self.retries + 1} attempts")

    def _get(self, path: str, params=None) -> dict:
        return _decimals(self._request("GET", path, params={k: v for k, v in (params or {}).items() if v is not None})
                         .json())  # fmt: skip

    # -- the API ------------------------------------------------------------------------------------------------

    def account(self, user: str | None = None) -> dict:
        """`{"user", "mode", "balance", "monthly_quota", "used_this_month", "available"}` (amounts as Decimal)."""
        return self._get(self._user_path(user))

    def set_plan(self, user: str, mode: str | None = None, monthly_quota=None) -> dict:
        """Change an account's plan (dcu-admin): mode "advance"|"arrears" and/or the monthly quota in DCU."""
        body = {"mode": mode} if mode is not None else {}
        if monthly_quota is not None:
            body["monthly_quota"] = amount_text(monthly_quota, "monthly_quota")
        return _decimals(self._request("PUT", self._user_path(user), body=body).json())

    def transactions(self, user: str | None = None, **filters) -> dict:
        """A page of transactions, newest first: `{"transactions": [...], "count", "total" (debits), "credits"}`.

        Filters: `start`/`from_` and `end`/`to` (ISO 8601 string, datetime or date; end exclusive), `session`,
        `service`, `limit` (1-1000, default 100), `offset`.
        """
        return self._get(f"{self._user_path(user)}/transactions", _period_params(filters, ("session", "service",
                                                                                           "limit", "offset")))

    def usage(self, **filters) -> dict:
        """Consumption report (F2.7): `{"from", "to", "group_by", "user", "rows": [{..., "amount", "count"}], "total"}`.

        Filters: `start`/`from_`, `end`/`to`, `group_by` ("service,profile,user" or a list of them), `user`, `service`,
        `profile`. Ordinary users see only their own usage.
        """
        group_by = filters.pop("group_by", None)
        if group_by is not None and not isinstance(group_by, str):
            group_by = ",".join(group_by)
        params = _period_params(filters, ("user", "service", "profile"))
        if group_by is not None:
            params["group_by"] = group_by
        return self._get("/api/v1/usage", params)

    def statement(self, month, user: str | None = None) -> dict:
        """The monthly statement (F2.9) for `month` ("YYYY-MM", or a date/datetime in that month)."""
        if isinstance(month, (dt.date, dt.datetime)):
            month = month.strftime("%Y-%m")
        return self._get(f"{self._user_path(user)}/statements/{quote(str(month), safe='')}")

    def record(self, user: str, kind: str, amount, idempotency_key: str, **fields) -> Transaction:
        """Record a "debit" or "credit" of `amount` DCU for `user` once under `idempotency_key`; the transaction.

        `fields`: `service` (required by the service), `profile`, `session`, `description`, `period_start`,
        `period_end` (ISO 8601 strings or datetimes), `metadata` (a JSON object). Retried with the same key on
        connection errors, timeouts and 5xx; `.replayed` on the result tells whether it had been recorded before.
        """
        if not idempotency_key:
            raise InvalidParameter("idempotency_key", "is required: a key unique to this transaction")
        body = {"kind": kind, "amount": amount_text(amount)}
        for name, value in fields.items():
            body[name] = _time_text(value) if name in ("period_start", "period_end") else value
        response = self._request("POST", f"{self._user_path(user)}/transactions", body=body,
                                 headers={"Idempotency-Key": idempotency_key})  # fmt: skip
        result = Transaction(_decimals(response.json()))
        result.replayed = response.headers.get("Idempotent-Replayed", "").lower() == "true"
        return result


def _period_params(filters: dict, names: tuple[str, ...]) -> dict:
    filters = dict(filters)
    starts = [filters.pop(name) for name in ("start", "from_", "from") if filters.get(name) is not None]
    ends = [filters.pop(name) for name in ("end", "to") if filters.get(name) is not None]
    for name in ("start", "from_", "from", "end", "to"):
        filters.pop(name, None)
    params = {"from": _time_text(starts[0]) if starts else None, "to": _time_text(ends[0]) if ends else None}
    for name in names:
        if name in filters:
            params[name] = filters.pop(name)
    if filters:
        raise InvalidParameter(sorted(filters)[0], f"is not a filter here (known: start, end, {', '.join(names)})")
    return params


def _error(response: requests.Response) -> DespError:
    try:
        body = response.json()
        message, field = body.get("message") or body.get("detail"), body.get("field")
    except (ValueError, AttributeError):
        message, field = None, None
    message = str(message or f"HTTP {response.status_code}")
    status = response.status_code
    if status == 400 or status == 422:
        return BadRequest(message, field)
    if status == 401:
        return NotAuthorized(message)
    if status == 403:
        return AccessDenied(message)
    if status == 404:
        return NotFound(message)
    if status == 409:
        return IdempotencyConflict(message, field=field)
    return DespError(message, field=field, status=status)
