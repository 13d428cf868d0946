"""REST handlers under `{base_url}desp/api/` for the DESP platform services: accounting (the status bar's balance)
and traceability (the "Traces" panel), thin over the `desp_lab.accounting` and `desp_lab.trace` SDKs.

* `GET accounting/status` → `{"user", "mode", "balance", "available", "monthly_quota", "used_this_month",
  "profile", "dcu_per_hour", "session", "session_cost", "refresh_seconds"}`: the user's account, this server's
  profile and price (`DESP_PROFILE`, `DESP_DCU_PER_HOUR`) and the total of this session's transactions
  (`DESP_SESSION_ID`). Amounts are strings with 3 decimals, as the accounting API gives them. 404 with the message
  "accounting is not configured ..." when the server has no accounting URL (the status bar then hides itself).
* `POST traces/generate` `{"path", "algorithm"?, "send"?}` → `{"path", "trace", "sent", "id"}`: the trace of a file
  or folder (Zarr store) below the server's root folder, registered with the trace service when `send` is true.
* `POST traces/verify` `{"path"}` → the verification: `{"path", "ok", "expected", "actual", "changed", "missing",
  "added", ...}` against the registered trace of that product.
* `GET traces/search?hash=|name=` → `{"traces": [...]}`.

Paths are relative to the server's root folder (what the file browser shows); one that leaves it (`..`, an absolute
path elsewhere, a symlink pointing out) is refused with 400 naming the field `path`. Errors are JSON
`{"message", "field"}` like every DESP handler (see handlers.py).
"""

from __future__ import annotations

import dataclasses
import os

import tornado.web
from jupyter_server.auth.decorator import authorized

from desp_lab.server_extension.handlers import DespApiError, DespApiHandler

#: What `accounting/status` answers (404) when the server has no accounting URL.
NOT_CONFIGURED = "accounting is not configured in this server (DESP_ACCOUNTING_URL is not set)."


# ----------------------------------------------------------------------------------------------- accounting


def accounting_status(extension) -> dict:
    """The status bar's JSON (blocking: runs on the thread pool). One implementation with the notebook's
    `desp_lab.widgets.balance_status`, fed with this server's settings."""
    from desp_lab.widgets import balance_status

    status = balance_status(
        extension.accounting(),
        user=extension.accounting_user or None,
        session=extension.session_id,
        profile=extension.profile,
        dcu_per_hour=extension.dcu_per_hour,
    )
    status["refresh_seconds"] = extension.status_refresh_seconds
    return status


class AccountingStatusHandler(DespApiHandler):
    """GET accounting/status → the user's balance and this session's cost (404 when accounting is not configured)."""

    @tornado.web.authenticated
    @authorized
    async def get(self):
        if not self.extension.accounting_url:
            raise DespApiError(404, NOT_CONFIGURED)
        self.write_json(await self.run_sdk(accounting_status, self.extension))


# ----------------------------------------------------------------------------------------------- traces


def resolve_path(root: str, path) -> tuple[str, str]:
    """(absolute path, path relative to `root` in POSIX form) of an existing file or folder below `root`.

    400 (field "path") when `path` is missing or leaves the root folder; 404 when it does not exist.
    """
    if not isinstance(path, str) or not path.strip():
        message = "Invalid path: give the path of a file or folder (relative to your home folder)."
        raise DespApiError(400, message, "path")
    root_real = os.path.realpath(root)
    full = os.path.realpath(os.path.join(root_real, path.strip()))
    if os.path.commonpath([root_real, full]) != root_real:
        raise DespApiError(400, f"Invalid path: {path!r} is outside the server's root folder.", "path")
    if not os.path.exists(full):
        raise DespApiError(404, f"No file or folder {path!r}.", "path")
    relative = os.path.relpath(full, root_real).replace(os.sep, "/")
    return full, relative


def verify_json(result) -> dict:
    """The SDK's VerifyResult as JSON (its `to_dict()` when it has one, else its fields)."""
    if hasattr(result, "to_dict"):
        return dict(result.to_dict())
    if dataclasses.is_dataclass(result):
        return dataclasses.asdict(result)
    if isinstance(result, dict):
        return dict(result)
    return {key: value for key, value in vars(result).items() if not key.startswith("_")}


class TraceHandler(DespApiHandler):
    """Base of the trace handlers: the server's root folder and the SDK's keyword arguments."""

    def root_dir(self) -> str:
        return self.settings.get("server_root_dir") or self.extension.serverapp.root_dir

    def trace_kwargs(self) -> dict:
        """`url=` for the SDK calls that talk to the trace service (its root URL, from the extension's config)."""
        return {"url": self.extension.trace_url} if self.extension.trace_url else {}

    def require_service(self) -> None:
        if not self.extension.trace_url:
            raise DespApiError(404, "The trace service is not configured in this server (DESP_TRACE_URL is not set).")


class TraceGenerateHandler(TraceHandler):
    """POST traces/generate {"path", "algorithm"?, "send"?} → {"path", "trace", "sent", "id"}."""

    @tornado.web.authenticated
    @authorized
    async def post(self):
        from desp_lab import trace as trace_sdk

        body = self.body_json()
        full, relative = resolve_path(self.root_dir(), body.get("path"))
        algorithm = body.get("algorithm") or "BLAKE3"
        try:
            if not isinstance(algorithm, str):
                raise ValueError(f"expected a name such as BLAKE3 or SHA256; got {algorithm!r}")
            algorithm = trace_sdk.canonical_algorithm(algorithm)
        except ValueError as error:
            raise DespApiError(400, f"Invalid algorithm: {error}", "algorithm") from None
        send = body.get("send", False)
        if not isinstance(send, bool):
            raise DespApiError(400, f"Invalid send: expected true or false; got {send!r}.", "send")
        if send:
            self.require_service()
        trace = await self.run_sdk(trace_sdk.generate, full, algorithm=algorithm)
        trace_id = None
        if send:
            stored = await self.run_sdk(trace_sdk.send, [trace], **self.trace_kwargs())
            if stored:
                trace = stored[0]
                trace_id = trace.get("id")
        self.write_json({"path": relative, "trace": trace, "sent": send, "id": trace_id})


class TraceVerifyHandler(TraceHandler):
    """POST traces/verify {"path"} → the verification against the registered trace of that product."""

    @tornado.web.authenticated
    @authorized
    async def post(self):
        from desp_lab import trace as trace_sdk

        body = self.body_json()
        full, relative = resolve_path(self.root_dir(), body.get("path"))
        self.require_service()
        result = await self.run_sdk(trace_sdk.verify, full, **self.trace_kwargs())
        answer = verify_json(result)
        answer["path"] = relative
        answer["message"] = str(result)
        registered = getattr(result, "trace", None)
        answer["trace_id"] = registered.get("id") if isinstance(registered, dict) else None
        self.write_json(answer)


class TraceSearchHandler(TraceHandler):
    """GET traces/search?hash=H | name=N → {"traces": [...]} (newest first)."""

    @tornado.web.authenticated
    @authorized
    async def get(self):
        from desp_lab import trace as trace_sdk

        known = {"hash", "name"}
        # Jupyter's own authentication and JupyterLab's numeric cache-buster may ride along.
        unknown = sorted(set(self.request.query_arguments) - known - {"token", "_xsrf"})
        unknown = [name for name in unknown if not name.isdigit()]
        if unknown:
            raise DespApiError(400, f"Invalid {unknown[0]}: unknown parameter; give hash= or name=.", unknown[0])
        hash_value = (self.get_query_argument("hash", "") or "").strip() or None
        name = (self.get_query_argument("name", "") or "").strip() or None
        if hash_value is None and name is None:
            raise DespApiError(400, "Invalid hash: give hash= (a product hash) or name= (a product name).", "hash")
        self.require_service()
        traces = await self.run_sdk(trace_sdk.search, hash=hash_value, name=name, **self.trace_kwargs())
        self.write_json({"traces": list(traces)})


def platform_handlers() -> list[tuple[str, type]]:
    """(pattern relative to base_url, handler class) of the accounting and trace endpoints (before the catch-all)."""
    return [
        (r"desp/api/accounting/status/?", AccountingStatusHandler),
        (r"desp/api/traces/generate/?", TraceGenerateHandler),
        (r"desp/api/traces/verify/?", TraceVerifyHandler),
        (r"desp/api/traces/search/?", TraceSearchHandler),
    ]
