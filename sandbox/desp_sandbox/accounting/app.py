"""HTTP routes of the sandbox accounting service over a `Ledger` (FastAPI); the contract is `openapi.yaml`.

The document served at /openapi.json is that hand-written file, not one generated from these routes. Request bodies
are read as JSON with numbers kept as `Decimal` (never float), checked by `ledger.normalize_transaction`, and errors
answer `{"message": ..., "field": ..., "detail": ...}` with 400 (bad input, the field named), 401 (no or invalid
token), 403 (not allowed), 404 (unknown path) or 409 (idempotency key reused with another body).
"""

from __future__ import annotations

import json
import os
import re
from decimal import Decimal
from pathlib import Path

import yaml
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from desp_sandbox.catalogue.auth import TokenVerifier, Unauthorized

from . import ledger as money
from .ledger import GROUP_KEYS, IdempotencyConflict, InvalidInput, Ledger

OPENAPI_FILE = Path(__file__).with_name("openapi.yaml")
METER, ADMIN, EXECUTIVE = "dcu-meter", "dcu-admin", "executive-statistics"
READ_ALL = {METER, ADMIN, EXECUTIVE}
MAX_LIMIT = 1000
_USER = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@+-]{0,199}$")


class Forbidden(Exception):
    """The caller is authenticated but not allowed (answered as 403)."""


def load_openapi() -> dict:
    with open(OPENAPI_FILE, encoding="utf-8") as document:
        return yaml.safe_load(document)


def _error(status: int, message: str, field: str | None = None, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"message": message, "field": field, "detail": message}, status_code=status, headers=headers)


def _claims_identity(claims: dict) -> tuple[str, set[str]]:
    name = claims.get("preferred_username") or claims.get("sub") or ""
    roles = (claims.get("realm_access") or {}).get("roles") or []
    return name, {role for role in roles if isinstance(role, str)}


def _check_user(user: str) -> str:
    if not _USER.match(user):
        raise InvalidInput("user", "must be a user name (letters, digits, '.', '_', '@', '+', '-'; at most 200)")
    return user


def _may_read(caller: str, roles: set[str], user: str) -> None:
    if caller != user and not roles & READ_ALL:
        raise Forbidden(f"{caller} may not read the account of {user}: only the user themself, dcu-admin, "
                        "executive-statistics or a metering service may")  # fmt: skip


def _time_param(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    return None if value in (None, "") else money.parse_time(value, name)


def _int_param(request: Request, name: str, default: int, low: int, high: int) -> int:
    value = request.query_params.get(name)
    if value in (None, ""):
        return default
    if not re.fullmatch(r"[0-9]{1,9}", value) or not low <= int(value) <= high:
        raise InvalidInput(name, f"must be a whole number from {low} to {high} (got {value[:20]!r})")
    return int(value)


def _text_param(request: Request, name: str) -> str | None:
    value = request.query_params.get(name)
    if value is not None and len(value) > 200:
        raise InvalidInput(name, "is longer than 200 characters")
    return value or None


def _period(request: Request) -> tuple[str | None, str | None]:
    start, end = _time_param(request, "from"), _time_param(request, "to")
    if start and end and start > end:
        raise InvalidInput("to", "is before from")
    return start, end


def _read_json(raw: bytes):
    def refuse_constant(name):
        raise ValueError(name)

    try:
        return json.loads(raw, parse_float=Decimal, parse_constant=refuse_constant)
    except (ValueError, RecursionError):
        raise InvalidInput("body", "is not valid JSON") from None


# -- JSON shapes (amounts as 3-decimal strings) -------------------------------------------------------------------


def transaction_json(record: dict) -> dict:
    return {**record, "amount": money.format_amount(record["amount"]),
            "balance_after": money.format_amount(record["balance_after"])}  # fmt: skip


def account_json(account: dict) -> dict:
    return {"user": account["user"], "mode": account["mode"], **{
        name: money.format_amount(account[name])
        for name in ("balance", "monthly_quota", "used_this_month", "available")}}  # fmt: skip


def create_app(ledger: Ledger, verifier: TokenVerifier, exit_after_commit: int | None = None) -> FastAPI:
    """The app: routes over `ledger`, tokens checked by `verifier`; `exit_after_commit` is the crash test hook."""
    app = FastAPI(title="DESP sandbox accounting", openapi_url=None, docs_url=None, redoc_url=None)
    document = load_openapi()
    committed = {"count": 0}

    async def identity(request: Request) -> tuple[str, set[str]]:
        claims = await verifier.check(request.headers.get("authorization"))
        return _claims_identity(claims)

    @app.exception_handler(Unauthorized)
    async def unauthorized(request, error):
        return _error(401, str(error), headers={"WWW-Authenticate": "Bearer"})

    @app.exception_handler(Forbidden)
    async def forbidden(request, error):
        return _error(403, str(error))

    @app.exception_handler(InvalidInput)
    async def invalid(request, error):
        return _error(400, error.message, error.field)

    @app.exception_handler(IdempotencyConflict)
    async def conflict(request, error):
        return _error(409, str(error), "Idempotency-Key")

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request, error):
        return _error(error.status_code, str(error.detail), headers=getattr(error, "headers", None))

    @app.get("/openapi.json", include_in_schema=False)
    async def openapi():
        return document

    @app.get("/api/status")
    async def status():
        return {"status": "ok", "service": "desp_sandbox.accounting",
                "default_plan": {"mode": ledger.default_plan.mode,
                                 "balance": money.format_amount(ledger.default_plan.balance),
                                 "monthly_quota": money.format_amount(ledger.default_plan.monthly_quota)}}  # fmt: skip

    @app.get("/api/v1/accounts/{user}")
    async def get_account(user: str, request: Request):
        caller, roles = await identity(request)
        _check_user(user)
        _may_read(caller, roles, user)
        return account_json(ledger.account(user))

    @app.put("/api/v1/accounts/{user}")
    async def put_account(user: str, request: Request):
        caller, roles = await identity(request)
        if ADMIN not in roles:
            raise Forbidden(f"{caller} may not change plans: the dcu-admin role is required")
        _check_user(user)
        body = _read_json(await request.body())
        if not isinstance(body, dict):
            raise InvalidInput("body", "must be a JSON object with mode and/or monthly_quota")
        unknown = sorted(set(body) - {"mode", "monthly_quota"})
        if unknown:
            raise InvalidInput(unknown[0], "is not a plan field (known: mode, monthly_quota)")
        mode = body.get("mode")
        if mode is not None and mode not in money.MODES:
            raise InvalidInput("mode", f"must be one of {', '.join(money.MODES)} (got {mode!r})")
        quota = body.get("monthly_quota")
        quota = None if quota is None else money.parse_amount(quota, "monthly_quota", allow_zero=True)
        return account_json(ledger.set_plan(user, mode, quota, changed_by=caller))

    @app.post("/api/v1/accounts/{user}/transactions")
    async def post_transaction(user: str, request: Request):
        caller, roles = await identity(request)
        if not roles & {METER, ADMIN}:
            raise Forbidden(f"{caller} may not record transactions: debits need dcu-meter or dcu-admin, "
                            "credits dcu-admin")  # fmt: skip
        _check_user(user)
        key = money.check_key(request.headers.get("idempotency-key"))
        entry = money.normalize_transaction(_read_json(await request.body()))
        if entry["kind"] == "credit" and ADMIN not in roles:
            raise Forbidden(f"{caller} may not record credits: the dcu-admin role is required")
        record, replayed = ledger.record(user, entry, key, recorded_by=caller)
        if not replayed and exit_after_commit:
            committed["count"] += 1
            if committed["count"] >= exit_after_commit:
                os._exit(3)  # the crash-safety test hook: committed, never answered
        headers = {"Idempotent-Replayed": "true"} if replayed else {}
        return JSONResponse(transaction_json(record), status_code=200 if replayed else 201, headers=headers)

    @app.get("/api/v1/accounts/{user}/transactions")
    async def list_transactions(user: str, request: Request):
        caller, roles = await identity(request)
        _check_user(user)
        _may_read(caller, roles, user)
        start, end = _period(request)
        page = ledger.transactions(user, start, end, session=_text_param(request, "session"),
                                   service=_text_param(request, "service"),
                                   limit=_int_param(request, "limit", 100, 1, MAX_LIMIT),
                                   offset=_int_param(request, "offset", 0, 0, 10**9))  # fmt: skip
        return {"user": user, "transactions": [transaction_json(t) for t in page["transactions"]],
                "count": page["count"], "total": money.format_amount(page["debits"]),
                "credits": money.format_amount(page["credits"])}  # fmt: skip

    @app.get("/api/v1/accounts/{user}/statements/{month}")
    async def statement(user: str, month: str, request: Request):
        caller, roles = await identity(request)
        _check_user(user)
        _may_read(caller, roles, user)
        money.month_bounds(month)
        result = ledger.statement(user, month)
        for name in ("opening_balance", "debits", "credits", "closing_balance"):
            result[name] = money.format_amount(result[name])
        for row in result["by_service"]:
            row["amount"] = money.format_amount(row["amount"])
        result["transactions"] = [transaction_json(t) for t in result["transactions"]]
        return result

    @app.get("/api/v1/usage")
    async def usage(request: Request):
        caller, roles = await identity(request)
        start, end = _period(request)
        raw = request.query_params.get("group_by")
        group_by = ("service",) if raw is None else tuple(part.strip() for part in raw.split(",") if part.strip())
        for part in group_by:
            if part not in GROUP_KEYS:
                raise InvalidInput("group_by", f"{part[:40]!r} is not a grouping: use any of {', '.join(GROUP_KEYS)}")
        if len(set(group_by)) != len(group_by):
            raise InvalidInput("group_by", "names a grouping twice")
        user = _text_param(request, "user")
        if not roles & READ_ALL:
            if user is not None and user != caller:
                raise Forbidden(f"{caller} may only read their own usage")
            user = caller
        report = ledger.usage(group_by, start, end, user=user, service=_text_param(request, "service"),
                              profile=_text_param(request, "profile"))  # fmt: skip
        for row in report["rows"]:
            row["amount"] = money.format_amount(row["amount"])
        return {"from": start, "to": end, "group_by": list(group_by), "user": user,
                "rows": report["rows"], "count": report["count"],
                "total": money.format_amount(report["total"])}  # fmt: skip

    return app
