"""The trace service's routes: the API shape of the Copernicus traceability API, over `store.TraceStore`.

    GET  /api/status                                   readiness, no token
    PUT  /api/v1/traces                                register 1-50 traces (Bearer)
    GET  /api/v1/traces/{id}                           one trace
    GET  /api/v1/traces/name/{productname}             every trace of a product name, newest first
    GET  /api/v1/traces/hash/{hash}                    every trace whose product hash is `hash`, newest first
    GET  /api/v1/traces/{productname}/validate?filehash=H    is H the current hash of that product?

The server fills `id` (a UUID), `timestamp` (UTC, ISO 8601) and `origin` (the caller's `preferred_username`);
values a client sends for them are ignored. Hashes are hex of the algorithm's digest length (64 digits for BLAKE3,
SHA256 and SHA3, i.e. SHA3-256), stored lower-cased. Errors are JSON `{"message": ...}` (also as `detail`): 400 for
a malformed request (bad hash, unknown algorithm naming the allowed ones, a batch of 0 or more than 50), 401
without a valid token, 404 for an unknown id. Signatures are stored as given; checking them is the client's job
(`desp_lab.trace.verify_signature`).
"""

from __future__ import annotations

import datetime as dt
import re
import uuid
from enum import Enum
from pathlib import Path
from typing import Annotated

from fastapi import Body, Depends, FastAPI, Path as PathParam, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, ConfigDict, Field
from starlette.convertors import Convertor, register_url_convertor
from starlette.exceptions import HTTPException

from ..catalogue.auth import TokenVerifier, Unauthorized
from .store import TraceStore

MAX_BATCH = 50
DIGEST_HEX_DIGITS = {"BLAKE3": 64, "SHA256": 64, "SHA3": 64}  # SHA3 means SHA3-256
ALGORITHM_ALIASES = {"SHA-256": "SHA256", "SHA3-256": "SHA3", "SHA3_256": "SHA3"}
ALLOWED_ALGORITHMS = ", ".join(DIGEST_HEX_DIGITS)
_HEX = re.compile(r"[0-9a-fA-F]+")


class Event(str, Enum):
    CREATE = "CREATE"
    COPY = "COPY"
    DELETE = "DELETE"
    OBSOLETE = "OBSOLETE"


class Member(BaseModel):
    """One file of a directory product (e.g. a chunk of a Zarr store)."""

    model_config = ConfigDict(extra="forbid")
    path: str = Field(min_length=1, max_length=4096, description="relative POSIX path inside the product")
    hash: str = Field(description="hex digest of the member file with the trace's algorithm")


class Input(BaseModel):
    """A product this one was made from."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=1024, description="product name of the input")
    hash: str = Field(description="hex digest (global hash) of the input")


class Product(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=1024, description="product name (e.g. the file or store name)")
    size: int = Field(ge=0, le=2**63 - 1, description="size in bytes (a directory: the sum of its members)")
    hash: str = Field(description="hex digest of the file, or a directory's global hash over its sorted members")
    contents: list[Member] = Field(default_factory=list, description="member files of a directory product")
    inputs: list[Input] = Field(default_factory=list, description="products this one was made from")


class Signature(BaseModel):
    algorithm: str = Field(description="e.g. ECDSA-P256-SHA256")
    certificate: str = Field(description="PEM public key or X.509 certificate of the signer")
    signature: str = Field(description="base64 signature over the trace's canonical JSON (see desp_lab.trace)")


class TraceIn(BaseModel):
    """A trace to register. `id`, `timestamp` and `origin` are filled by the server (values sent are ignored)."""

    model_config = ConfigDict(extra="forbid")
    id: str | None = Field(default=None, description="ignored: assigned by the server")
    timestamp: str | None = Field(default=None, description="ignored: assigned by the server")
    origin: str | None = Field(default=None, description="ignored: the caller's username")
    event: Event = Field(default=Event.CREATE, description="what happened to the product")
    hash_algorithm: str = Field(default="BLAKE3", description=f"one of {ALLOWED_ALGORITHMS} (SHA3 = SHA3-256)")
    product: Product
    signature: Signature | None = Field(default=None, description="optional signature of the trace")


class Trace(BaseModel):
    """A stored trace."""

    id: str = Field(description="UUID assigned by the server")
    timestamp: str = Field(description="registration time, UTC, ISO 8601")
    origin: str = Field(description="username of whoever registered it")
    event: Event
    hash_algorithm: str = Field(description=f"one of {ALLOWED_ALGORITHMS}")
    product: Product
    signature: Signature | None = None


class Validation(BaseModel):
    valid: bool = Field(description="true when the hash is the product's current one")
    trace: Trace | None = Field(description="the trace the hash was checked against (none if the name is unknown)")
    message: str


class Status(BaseModel):
    status: str = Field(description="always ok when the service answers")
    service: str
    traces: int = Field(description="number of stored traces")


class Error(BaseModel):
    message: str


class Invalid(Exception):
    """A request the service refuses with 400; the message says what and where."""


def _error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"message": message, "detail": message}, status_code=status, headers=headers)


def canonical_algorithm(value: str) -> str:
    name = value.strip().upper()
    name = ALGORITHM_ALIASES.get(name, name)
    if name not in DIGEST_HEX_DIGITS:
        raise Invalid(f"Unknown hash_algorithm {value[:40]!r}: allowed are {ALLOWED_ALGORITHMS}")
    return name


def checked_hash(value: str, algorithm: str | None, where: str) -> str:
    """`value` lower-cased if it is hex of the algorithm's digest length (any algorithm's, when None)."""
    digits = DIGEST_HEX_DIGITS[algorithm] if algorithm else 64
    if len(value) != digits or not _HEX.fullmatch(value):
        shown = value if len(value) <= 80 else value[:77] + "..."
        raise Invalid(f"Malformed hash in {where}: {shown!r} is not {digits} hexadecimal digits"
                      + (f" (a {algorithm} digest)" if algorithm else ""))  # fmt: skip
    return value.lower()


class ProductNameConvertor(Convertor):
    """A product name in a path: any text, `/` and line breaks included (Starlette's `path` stops at a newline)."""

    regex = r"[\s\S]+"

    def convert(self, value: str) -> str:
        return value

    def to_string(self, value: str) -> str:
        return value


register_url_convertor("productname", ProductNameConvertor())


def checked_text(value: str, where: str) -> str:
    """`value` if it is valid Unicode text (JSON and URLs can carry lone surrogates, which SQLite cannot store)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise Invalid(f"{where} is not valid UTF-8 text") from None
    return value


def stored_form(trace: TraceIn, where: str, origin: str) -> dict:
    """The trace as stored: algorithm canonical, hashes checked and lower-cased, server fields filled."""
    algorithm = canonical_algorithm(trace.hash_algorithm)
    product = trace.product
    checked_text(product.name, f"{where}.product.name")
    for i, member in enumerate(product.contents):
        checked_text(member.path, f"{where}.product.contents[{i}].path")
    for i, item in enumerate(product.inputs):
        checked_text(item.name, f"{where}.product.inputs[{i}].name")
    if trace.signature is not None:
        for key, text in trace.signature.model_dump().items():
            checked_text(text, f"{where}.signature.{key}")
    paths = [member.path for member in product.contents]
    if len(set(paths)) != len(paths):
        raise Invalid(f"{where}.product.contents lists a path twice")
    now = dt.datetime.now(dt.UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    stored = {
        "id": str(uuid.uuid4()), "timestamp": now, "origin": origin, "event": trace.event.value,
        "hash_algorithm": algorithm,
        "product": {
            "name": product.name, "size": product.size,
            "hash": checked_hash(product.hash, algorithm, f"{where}.product.hash"),
            "contents": [{"path": m.path, "hash": checked_hash(m.hash, algorithm, f"{where}.product.contents[{i}]")}
                         for i, m in enumerate(product.contents)],
            "inputs": [{"name": x.name, "hash": checked_hash(x.hash, None, f"{where}.product.inputs[{i}]")}
                       for i, x in enumerate(product.inputs)],
        },
    }  # fmt: skip
    if trace.signature is not None:
        stored["signature"] = trace.signature.model_dump()
    return stored


def validation(traces: list[dict], filehash: str, name: str) -> dict:
    """Whether `filehash` is the current hash of product `name`, given its traces newest first.

    The current trace is the newest CREATE or COPY. Valid when its hash is `filehash` and no DELETE or OBSOLETE
    trace of the name came after it; otherwise the answer says why (unknown name, an older version, withdrawn).
    """
    if not traces:
        return {"valid": False, "trace": None, "message": f"No trace of a product named {name!r}."}
    current_index = next((i for i, t in enumerate(traces) if t["event"] in ("CREATE", "COPY")), None)
    if current_index is None:
        return {"valid": False, "trace": traces[0],
                "message": f"{name!r} was only ever traced as {traces[0]['event']}; it has no valid version."}
    current = traces[current_index]
    withdrawn = traces[:current_index]
    if current["product"]["hash"] == filehash:
        if withdrawn:
            event = withdrawn[-1]
            return {"valid": False, "trace": current,
                    "message": f"The hash matches {name!r}, but the product was marked {event['event']} "
                               f"at {event['timestamp']}."}  # fmt: skip
        return {"valid": True, "trace": current,
                "message": f"The hash matches the current trace of {name!r} ({current['timestamp']})."}
    older = next((t for t in traces[current_index + 1:] if t["product"]["hash"] == filehash), None)
    if older is not None:
        return {"valid": False, "trace": older,
                "message": f"The hash matches an older version of {name!r} ({older['timestamp']}), "
                           f"not the current one ({current['timestamp']})."}  # fmt: skip
    return {"valid": False, "trace": current,
            "message": f"The hash does not match any trace of {name!r}; the product differs from what was traced."}


ERRORS = {400: {"model": Error, "description": "malformed request (the message says what)"},
          401: {"model": Error, "description": "no valid Bearer token"}}  # fmt: skip


def create_app(data_dir: Path, jwks_url: str, issuer: str | None = None) -> FastAPI:
    """The trace service over `DATA_DIR/traces/traces.sqlite`, accepting tokens from the IdP at `jwks_url`."""
    store = TraceStore(Path(data_dir) / "traces" / "traces.sqlite")
    verifier = TokenVerifier(jwks_url, issuer)
    bearer = HTTPBearer(auto_error=False, description="an access token of the DESP IdP")
    app = FastAPI(
        title="DESP sandbox trace service",
        version="1.1.0",
        description=__doc__.split("\n\n", 1)[0] + "\n\nRegister and look up traces of products: a product "
        "(file, or directory store with its member files) identified by its hash, with the products it was made "
        "from, what happened to it (CREATE, COPY, DELETE, OBSOLETE) and, optionally, a signature.",
    )  # fmt: skip
    app.state.store = store

    async def caller(request: Request, _: HTTPAuthorizationCredentials | None = Depends(bearer)) -> str:
        try:
            claims = await verifier.check(request.headers.get("authorization"))
        except Unauthorized as error:
            raise HTTPException(401, str(error), headers={"WWW-Authenticate": "Bearer"}) from None
        return claims.get("preferred_username") or claims.get("sub") or "unknown"

    @app.exception_handler(HTTPException)
    async def http_error(request, error: HTTPException):
        return _error(error.status_code, str(error.detail), getattr(error, "headers", None))

    @app.exception_handler(Invalid)
    async def invalid(request, error: Invalid):
        return _error(400, str(error))

    @app.exception_handler(RequestValidationError)
    async def malformed(request, error: RequestValidationError):
        first = error.errors()[0] if error.errors() else {"loc": (), "msg": "malformed request"}
        where = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in first["loc"]).lstrip(".")
        message = f"{where}: {first['msg']}" if where else first["msg"]
        return JSONResponse({"message": f"Invalid request: {message}", "detail": error.errors()[:20]},
                            status_code=400)  # fmt: skip

    @app.get("/api/status", response_model=Status, tags=["status"], summary="Readiness (no token needed)")
    def status() -> dict:
        return {"status": "ok", "service": "desp_sandbox.traces", "traces": store.count()}

    @app.put("/api/v1/traces", status_code=201, response_model=list[Trace], response_model_exclude_none=True,
             responses=ERRORS, tags=["traces"], summary="Register a batch of 1-50 traces")  # fmt: skip
    def register(
        traces: Annotated[list[TraceIn], Body(description=f"1 to {MAX_BATCH} traces, stored all or none")],
        origin: str = Depends(caller),
    ) -> list[dict]:
        if not 1 <= len(traces) <= MAX_BATCH:
            raise Invalid(f"A batch holds 1 to {MAX_BATCH} traces, this one has {len(traces)}")
        stored = [stored_form(trace, f"traces[{i}]", origin) for i, trace in enumerate(traces)]
        store.add(stored)
        return stored

    @app.get("/api/v1/traces/name/{productname:productname}", response_model=list[Trace], response_model_exclude_none=True,
             responses=ERRORS, tags=["traces"], summary="Every trace of a product name, newest first")  # fmt: skip
    def by_name(productname: Annotated[str, PathParam(description="product name")],
                _: str = Depends(caller)) -> list[dict]:  # fmt: skip
        return store.by_name(checked_text(productname, "the product name"))

    @app.get("/api/v1/traces/hash/{hash}", response_model=list[Trace], response_model_exclude_none=True,
             responses=ERRORS, tags=["traces"], summary="Every trace whose product hash is this, newest first")
    def by_hash(hash: Annotated[str, PathParam(description="hex digest, 64 digits")],
                _: str = Depends(caller)) -> list[dict]:  # fmt: skip
        return store.by_hash(checked_hash(hash, None, "the path"))

    @app.get("/api/v1/traces/{productname:productname}/validate", response_model=Validation, responses=ERRORS,
             tags=["traces"], summary="Is this hash the current one of the product?")  # fmt: skip
    def validate(productname: Annotated[str, PathParam(description="product name")],
                 filehash: Annotated[str, Query(description="hex digest of the file to check")],
                 _: str = Depends(caller)) -> dict:  # fmt: skip
        traces = store.by_name(checked_text(productname, "the product name"))
        return validation(traces, checked_hash(filehash, None, "filehash"), productname)

    @app.get("/api/v1/traces/{id}", response_model=Trace, response_model_exclude_none=True,
             responses={**ERRORS, 404: {"model": Error, "description": "no trace with this id"}},
             tags=["traces"], summary="One trace by id")  # fmt: skip
    def by_id(id: Annotated[str, PathParam(description="trace id")], _: str = Depends(caller)) -> dict:
        trace = store.by_id(checked_text(id, "the id"))
        if trace is None:
            raise HTTPException(404, f"No trace with id {id!r}")
        return trace

    return app
