"""The web application: stac-fastapi-pgstac's own app under `/stac/v2`, plus the order endpoint and the cache.

Nothing of STAC is re-implemented here: `instantiate_api` builds the API with its default extensions (query, sort,
fields, filter with cql2-json and cql2-text, token pagination, collection search); we only give it settings, a
lifespan that connects to our cluster, and two additions:

* `POST /stac/v2/collections/{id}/order` (`orders.py`),
* `/cache/...` — the cache directory, read-only, token-protected (`cache.py`);

and three small request adapters so clients written for the Data Lake's HDA work unchanged: `/stac/v2` answers
without a redirect, `query` takes `{"eq": [a, b]}` (any of), and POST /search takes a CQL2-text filter.
"""

from __future__ import annotations

import json
import logging
from contextlib import asynccontextmanager
from pathlib import Path

from cql2 import Expr
from fastapi import FastAPI
from starlette.responses import JSONResponse
from stac_fastapi.pgstac.app import instantiate_api
from stac_fastapi.pgstac.config import PostgresSettings, Settings
from stac_fastapi.pgstac.core import CoreCrudClient
from stac_fastapi.pgstac.db import close_db_connection, connect_to_db
from stac_fastapi.pgstac.models.extensions import Extensions

from . import orders
from .auth import TokenVerifier
from .cache import CacheFiles
from .records import PREFIX

log = logging.getLogger("desp_sandbox.catalogue")


QUERY_OPS = {"eq": "=", "ne": "<>", "neq": "<>", "lt": "<", "lte": "<=", "gt": ">", "gte": ">="}


def query_as_cql2(query: dict) -> dict:
    """The query extension's terms as one CQL2-JSON expression; `{"eq": [a, b]}` (HDA's form) becomes `in`."""
    terms = []
    for name, ops in query.items():
        for op, value in ops.items():
            op = getattr(op, "value", op)
            if op == "eq" and isinstance(value, list):
                terms.append({"op": "in", "args": [{"property": name}, value]})
            else:
                terms.append({"op": QUERY_OPS[op], "args": [{"property": name}, value]})
    return terms[0] if len(terms) == 1 else {"op": "and", "args": terms}


class HdaClient(CoreCrudClient):
    """pgstac's own client, also accepting the Data Lake HDA's list form of `query`: `{"ecmwf:param": {"eq":
    ["2t", "2d"]}}` means any of them. pgstac would compare the property with the whole list (no match), so such a
    query is handed to pgstac as the equivalent CQL2 filter (`in`). (`query` and `filter` together are refused by
    stac-fastapi-pgstac's request model before this point.)"""

    async def _search_base(self, search_request, request):
        query = search_request.query or {}
        if any(isinstance(ops, dict) and isinstance(ops.get("eq"), list) for ops in query.values()):
            search_request.query = None
            search_request.filter_expr = query_as_cql2(query)
            search_request.filter_lang = "cql2-json"
        return await super()._search_base(search_request, request)


class TextFilterInPost:
    """ASGI wrapper: POST /stac/v2/search also takes a CQL2-text filter (`"filter-lang": "cql2-text"`), as GET does.

    stac-fastapi's POST model takes CQL2-JSON only; the text is translated with the same `cql2` library stac-fastapi
    uses for GET requests, before the request reaches it. A filter that does not parse is a 400 naming it.
    """

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != f"{PREFIX}/search":
            return await self.app(scope, receive, send)
        chunks, more = [], True
        while more:
            message = await receive()
            chunks.append(message.get("body", b""))
            more = message.get("more_body", False)
        body = b"".join(chunks)
        try:
            request = json.loads(body)
        except ValueError:
            request = None
        if isinstance(request, dict) and request.get("filter-lang") == "cql2-text" and isinstance(
                request.get("filter"), str):  # fmt: skip
            try:
                expression = Expr(request["filter"])
                expression.validate()
            except Exception as error:  # noqa: BLE001 - cql2 raises a bare Exception on parse errors
                response = JSONResponse({"code": "BadRequest", "description": f"Invalid cql2-text filter: {error}"},
                                        status_code=400)  # fmt: skip
                return await response(scope, receive, send)
            body = json.dumps({**request, "filter": expression.to_json(), "filter-lang": "cql2-json"}).encode()
            headers = [(k, v) for k, v in scope["headers"] if k != b"content-length"]
            scope = {**scope, "headers": [*headers, (b"content-length", str(len(body)).encode())]}
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)


class RootAlias:
    """ASGI wrapper: `/stac/v2` answers like `/stac/v2/` (no redirect for clients that do not follow one)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] == PREFIX:
            scope = {**scope, "path": PREFIX + "/", "raw_path": (PREFIX + "/").encode()}
        await self.app(scope, receive, send)


def create_app(pg_port: int, base_url: str, cache_dir: Path, jwks_url: str, issuer: str | None = None,
               order_delay: float = 2.0, database: str = "postgres") -> FastAPI:  # fmt: skip
    """The catalogue app for a pgstac database on 127.0.0.1:`pg_port`, publishing hrefs under `base_url`."""
    settings = Settings(
        prefix_path=PREFIX, stac_fastapi_title="DESP sandbox catalogue",
        stac_fastapi_description="STAC API of the DESP Hub sandbox, shaped like the Data Lake's HDA (/stac/v2).",
        stac_fastapi_landing_id="desp-sandbox-catalogue", stac_fastapi_version="1.0.0",
        enable_transactions_extensions=False,
        enabled_extensions=None, openapi_url=f"{PREFIX}/api", docs_url=f"{PREFIX}/api.html",
    )  # fmt: skip
    postgres = PostgresSettings(pguser="postgres", pgpassword="unused-trust-auth", pghost="127.0.0.1", pgport=pg_port,
                                pgdatabase=database, db_min_conn_size=1, db_max_conn_size=8)  # fmt: skip
    verifier = TokenVerifier(jwks_url, issuer)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        await connect_to_db(app, postgres_settings=postgres)
        resumed = await orders.resume_pending(app)
        if resumed:
            log.info("resumed %d pending orders", resumed)
        yield
        for task in list(app.state.orders.tasks):
            task.cancel()
        await close_db_connection(app)

    api = instantiate_api(client=HdaClient, extensions=Extensions(settings=settings), settings=settings,
                          lifespan=lifespan)  # fmt: skip
    app = api.app
    app.state.orders = orders.OrderContext(base_url=base_url, cache_dir=Path(cache_dir), verifier=verifier,
                                           delay=order_delay)  # fmt: skip
    app.include_router(orders.router, prefix=PREFIX)
    app.mount("/cache", CacheFiles(Path(cache_dir), verifier), name="cache")
    app.add_middleware(TextFilterInPost)
    app.add_middleware(RootAlias)
    return app
