"""REST handlers under `{base_url}desp/api/`: catalogue search and the user's cache, thin over the desp_lab SDK.

Every handler is authenticated and authorised like any Jupyter server API (resource "desp"). Blocking SDK calls
run on the extension's thread pool, never on the event loop. Every error is JSON `{"message", "field"}` with
the HTTP status of the SDK's `DespError` (400 bad parameter, 403 outside the cache area, 404 unknown, 413 quota,
502 platform service unreachable); unexpected errors answer 500 with a short message, the traceback going
to the server log only.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.parse
import urllib.request

import tornado.web
from jupyter_server.auth.decorator import authorized
from jupyter_server.base.handlers import APIHandler

from desp_lab.errors import DespError, InvalidParameter, NotFound, ServiceUnavailable
from desp_lab.search_pages import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    item_summary,
    parse_bbox,
    parse_positive_int,
    search_page,
    thumbnail_href,
)

#: The authorisation resource of these handlers (jupyter_server's Authorizer is asked about it).
AUTH_RESOURCE = "desp"
#: How long POST cache/requests waits for the copy to begin before answering 202 anyway.
REQUEST_START_WAIT_SECONDS = 10


class DespApiError(tornado.web.HTTPError):
    """An HTTP error carrying the JSON body `{"message", "field"}` (from a DespError or a handler check)."""

    def __init__(self, status: int, message: str, field: str | None = None):
        super().__init__(status, log_message=None, reason=None)
        self.message = message
        self.field = field

    @classmethod
    def from_desp_error(cls, error: DespError) -> "DespApiError":
        return cls(error.status, error.message, error.field)


class DespApiHandler(APIHandler):
    """Base of the DESP handlers: JSON errors `{"message", "field"}`, SDK calls off the event loop."""

    auth_resource = AUTH_RESOURCE

    @property
    def extension(self):
        """The DespLabExtension app: configuration, SDK clients, the thread pool, the cache request jobs."""
        return self.settings["desp_lab"]

    async def run_sdk(self, function, *args, **kwargs):
        """Run a blocking SDK call on the extension's thread pool; DespError → DespApiError with its status."""
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self.extension.executor, lambda: function(*args, **kwargs))
        except DespError as error:
            raise DespApiError.from_desp_error(error) from None

    def write_json(self, body, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(body, default=str))

    def body_json(self) -> dict:
        """The request body as a JSON object; 400 (field "body") when it is not one."""
        if not self.request.body:
            return {}
        try:
            body = json.loads(self.request.body)
        except ValueError:
            raise DespApiError(400, "The request body is not valid JSON.", "body") from None
        if not isinstance(body, dict):
            raise DespApiError(400, "The request body must be a JSON object.", "body")
        return body

    def log_exception(self, typ, value, tb):
        """Expected API errors are logged in one line (no traceback); anything else as usual."""
        if isinstance(value, DespApiError):
            self.log.info("DESP API %s %s → %s: %s", self.request.method, self.request.path, value.status_code, value.message)
        else:
            super().log_exception(typ, value, tb)

    def write_error(self, status_code: int, **kwargs) -> None:
        """Every error as `{"message", "field"}`; never a traceback in the body."""
        self.set_header("Content-Type", "application/json")
        exception = kwargs.get("exc_info", (None, None, None))[1]
        field = None
        if isinstance(exception, DespApiError):
            message, field = exception.message, exception.field
        elif isinstance(exception, tornado.web.HTTPError):
            message = exception.log_message or exception.reason or self._reason
            if exception.args and exception.log_message:
                try:
                    message = exception.log_message % exception.args
                except (TypeError, ValueError):
                    pass
        elif status_code >= 500:
            message = "Internal error in the DESP extension; the server log has the details."
        else:
            message = self._reason
        self.finish(json.dumps({"message": message, "field": field}))


# ----------------------------------------------------------------------------------------------- catalogue


def _collection_summary(collection) -> dict:
    """One collection as the panel lists it: id, title, description, extent, orderable."""
    return {
        "id": collection.id,
        "title": collection.title,
        "description": collection.description,
        "extent": collection.extent.to_dict() if collection.extent is not None else None,
        "orderable": _is_orderable(collection),
    }


def _is_orderable(collection) -> bool:
    """True when the collection's data is ordered first (HDA "orderable" flow), as its metadata says."""
    extra = collection.extra_fields or {}
    summaries = collection.summaries.to_dict() if collection.summaries is not None else {}
    for source in (extra, summaries):
        status = source.get("order:status")
        tier = source.get("storage:tier")
        if status == "orderable" or (isinstance(status, list) and "orderable" in status):
            return True
        if tier == "offline" or (isinstance(tier, list) and "offline" in tier):
            return True
    return any(link.rel == "order" for link in collection.links)


class CollectionsHandler(DespApiHandler):
    """GET collections[?q=] → {"collections": [{"id", "title", "description", "extent", "orderable"}]}"""

    @tornado.web.authenticated
    @authorized
    async def get(self):
        q = self.get_query_argument("q", None) or None
        catalogue = await self.run_sdk(self.extension.catalogue)
        collections = await self.run_sdk(catalogue.collections, q=q)
        self.write_json({"collections": [_collection_summary(collection) for collection in collections]})


class QueryablesHandler(DespApiHandler):
    """GET collections/{id}/queryables → the collection's queryables JSON schema."""

    @tornado.web.authenticated
    @authorized
    async def get(self, collection_id: str):
        catalogue = await self.run_sdk(self.extension.catalogue)
        self.write_json(await self.run_sdk(catalogue.queryables, collection_id))


def _split_list(value) -> list[str] | None:
    """`"a,b"` or `["a", "b"]` → `["a", "b"]`; empty → None."""
    if value is None:
        return None
    if isinstance(value, str):
        value = value.split(",")
    if not isinstance(value, (list, tuple)):
        raise InvalidParameter("collections", f"expected a list of collection ids; got {value!r}.")
    values = [str(entry).strip() for entry in value if str(entry).strip()]
    return values or None


def _json_param(field: str, value):
    """A JSON-valued GET parameter (`query`, `filter`): parsed, or InvalidParameter naming it."""
    if value is None or value == "":
        return None
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except ValueError:
        raise InvalidParameter(field, f"expected JSON; got {value!r}.") from None


def _sortby(value):
    """GET `sortby=-datetime,+id` → `[{"field", "direction"}]`; a POST list passes through."""
    if value is None or value == "" or isinstance(value, list):
        return value or None
    if not isinstance(value, str):
        raise InvalidParameter("sortby", f"expected fields like -datetime,+id; got {value!r}.")
    sortby = []
    for part in value.split(","):
        part = part.strip()
        if not part:
            continue
        direction = "desc" if part.startswith("-") else "asc"
        sortby.append({"field": part.lstrip("+-"), "direction": direction})
    return sortby or None


def search_arguments(params: dict) -> dict:
    """GET parameters or a POST body → keyword arguments of `search_pages.search_page` (validated)."""
    known = {"collections", "bbox", "datetime", "q", "query", "filter", "sortby", "limit", "page"}
    # Jupyter's own authentication may ride along in the query string.
    unknown = sorted(set(params) - known - {"token", "_xsrf"})
    if unknown:
        raise InvalidParameter(unknown[0], f"unknown search parameter; known ones are {', '.join(sorted(known))}.")
    datetime = params.get("datetime")
    if datetime is not None and not isinstance(datetime, str):
        raise InvalidParameter("datetime", f"expected an RFC 3339 datetime or interval a/b; got {datetime!r}.")
    text = params.get("q")
    if text is not None and not isinstance(text, str):
        raise InvalidParameter("q", f"expected free text; got {text!r}.")
    query = _json_param("query", params.get("query"))
    if query is not None and not isinstance(query, dict):
        raise InvalidParameter("query", f"expected a JSON object such as {{\"ecmwf:param\": {{\"eq\": \"2t\"}}}}; got {query!r}.")
    return {
        "collections": _split_list(params.get("collections")),
        "bbox": parse_bbox(params.get("bbox")),
        "datetime": datetime or None,
        "text": text or None,
        "query": query,
        "filter": _json_param("filter", params.get("filter")),
        "sortby": _sortby(params.get("sortby")),
        "limit": parse_positive_int("limit", params.get("limit"), DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE),
        "page": parse_positive_int("page", params.get("page"), 1),
    }


class SearchHandler(DespApiHandler):
    """GET|POST search → {"items": [ItemSummary], "matched", "page", "next_page"}.

    GET parameters: collections=a,b bbox=w,s,e,n datetime=a/b q=free text query=<json> filter=<cql2 json>
    sortby=-datetime limit=n page=n. POST: the same keys in a JSON body (lists and objects as JSON).
    """

    @tornado.web.authenticated
    @authorized
    async def get(self):
        # JupyterLab's ServerConnection adds a cache-buster to GET URLs: a bare number (`&1764110000000`).
        params = {
            name: self.get_query_argument(name) for name in self.request.query_arguments if not name.isdigit()
        }
        if "collections" in params:
            # Both `collections=a,b` and `collections=a&collections=b`.
            params["collections"] = ",".join(self.get_query_arguments("collections"))
        await self._search(params)

    @tornado.web.authenticated
    @authorized
    async def post(self):
        await self._search(self.body_json())

    async def _search(self, params: dict) -> None:
        try:
            arguments = search_arguments(params)
        except DespError as error:
            raise DespApiError.from_desp_error(error) from None
        catalogue = await self.run_sdk(self.extension.catalogue)
        page = await self.run_sdk(search_page, catalogue, **arguments)
        summaries = []
        for item in page["items"]:
            summary = item_summary(item)
            if summary["thumbnail"]:
                # The browser cannot send the bearer token the asset needs: point at this server's proxy.
                summary["thumbnail"] = thumbnail_path(self.base_url, item.collection_id, item.id)
            summaries.append(summary)
        page["items"] = summaries
        self.write_json(page)


# ----------------------------------------------------------------------------------------------- cache


class CacheListingHandler(DespApiHandler):
    """GET cache[?path=] → {"path", "entries": [{"name", "path", "type", "size", "expires"}], "usage"}.

    Expired copies are evicted first, so what is listed is what the user may still read.
    """

    @tornado.web.authenticated
    @authorized
    async def get(self):
        path = self.get_query_argument("path", "")
        cache = await self.run_sdk(self.extension.cache)
        await self.run_sdk(cache.evict_expired)
        listing = await self.run_sdk(cache_listing, cache, path)
        self.write_json(listing)


def cache_listing(cache, path: str) -> dict:
    """The JSON of one folder of the cache area: its entries (retention from the request manifest) and usage."""
    entries = [
        {
            "name": entry["name"],
            "path": entry["path"],
            "type": entry["type"],
            "size": entry.get("size"),
            "expires": entry.get("expires"),
        }
        for entry in cache.ls(path)
    ]
    return {"path": cache.relative_path(path), "entries": entries, "usage": cache.usage()}


class CacheInfoHandler(DespApiHandler):
    """GET cache/info?path= → the SDK's info dict of one file or folder of the cache area."""

    @tornado.web.authenticated
    @authorized
    async def get(self):
        path = self.get_query_argument("path", None)
        if path is None or path == "":
            raise DespApiError(400, "Invalid path: give the path of a file or folder in your cache area.", "path")
        cache = await self.run_sdk(self.extension.cache)
        self.write_json(await self.run_sdk(cache.info, path))


class CacheRequestsHandler(DespApiHandler):
    """GET cache/requests → {"requests": [...]}; POST {"source", "name", "retention_days"} → 202 the new request.

    POST waits a moment for the copy to begin so that errors found before copying (path outside the area 403,
    quota 413, unknown source 404, ...) are answered with their status; a started copy answers 202 and is
    polled at cache/requests/{id}.
    """

    @tornado.web.authenticated
    @authorized
    async def get(self):
        self.write_json({"requests": [job.to_json() for job in self.extension.jobs.list()]})

    @tornado.web.authenticated
    @authorized
    async def post(self):
        body = self.body_json()
        source = body.get("source")
        if not isinstance(source, str) or not source.strip():
            raise DespApiError(400, "Invalid source: give the URL of the dataset to copy (e.g. an asset href).", "source")
        name = body.get("name")
        if name is not None and not isinstance(name, str):
            raise DespApiError(400, f"Invalid name: expected a path in your cache area; got {name!r}.", "name")
        retention_days = body.get("retention_days", self.extension.default_retention_days)
        if isinstance(retention_days, bool) or not isinstance(retention_days, (int, float)) or retention_days <= 0:
            raise DespApiError(400, f"Invalid retention_days: expected a positive number of days; got {retention_days!r}.", "retention_days")
        if retention_days > self.extension.max_retention_days:
            raise DespApiError(
                400, f"Invalid retention_days: at most {self.extension.max_retention_days} days; got {retention_days}.", "retention_days"
            )
        cache = await self.run_sdk(self.extension.cache)
        job, started = self.extension.jobs.start(cache, source.strip(), name or None, retention_days)
        try:
            await asyncio.wait_for(asyncio.shield(started), REQUEST_START_WAIT_SECONDS)
        except asyncio.TimeoutError:
            pass
        if job.status == "failed" and job.error is not None and job.done_bytes == 0:
            raise DespApiError.from_desp_error(job.error)
        self.write_json(job.to_json(), status=202)


class CacheRequestHandler(DespApiHandler):
    """GET cache/requests/{id} → the request's progress: {"id", "status", "done_bytes", "total_bytes", "message"}."""

    @tornado.web.authenticated
    @authorized
    async def get(self, job_id: str):
        job = self.extension.jobs.get(job_id)
        if job is None:
            raise DespApiError.from_desp_error(NotFound(f"No cache request {job_id!r} in this server.", field="id"))
        self.write_json(job.to_json())


# ----------------------------------------------------------------------------------------------- thumbnails


#: Largest thumbnail the proxy passes on.
MAX_THUMBNAIL_BYTES = 5 * 1024 * 1024


def thumbnail_path(base_url: str, collection_id: str, item_id: str) -> str:
    """The server path of an item's thumbnail proxy (what ItemSummary.thumbnail holds in the REST API)."""
    quote = urllib.parse.quote
    return f"{base_url.rstrip('/')}/desp/api/collections/{quote(collection_id, safe='')}/items/{quote(item_id, safe='')}/thumbnail"


class ThumbnailHandler(DespApiHandler):
    """GET collections/{id}/items/{item}/thumbnail → the item's thumbnail image, fetched with the user's token.

    Catalogue assets (the sandbox cache, Cache B) need a bearer token an `<img>` in the browser cannot send; the
    panel shows thumbnails through this proxy instead. Only the thumbnail asset of a catalogue item is fetched.
    """

    @tornado.web.authenticated
    @authorized
    async def get(self, collection_id: str, item_id: str):
        catalogue = await self.run_sdk(self.extension.catalogue)
        item = await self.run_sdk(catalogue.item, collection_id, item_id)
        href = thumbnail_href(item)
        if not href:
            raise DespApiError(404, f"The item {item_id!r} has no thumbnail.", None)
        data, content_type = await self.run_sdk(fetch_thumbnail, href)
        self.set_header("Cache-Control", "private, max-age=3600")
        self.finish(data, set_content_type=content_type)


def fetch_thumbnail(href: str) -> tuple[bytes, str]:
    """Bytes and media type of a thumbnail URL (bearer token for http(s)); ServiceUnavailable if unreachable."""
    from desp_lab.server_extension import _data_token

    headers = {}
    token = _data_token()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(href, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            data = response.read(MAX_THUMBNAIL_BYTES + 1)
            content_type = response.headers.get("Content-Type") or "application/octet-stream"
    except urllib.error.HTTPError as error:
        if error.code == 404:
            raise NotFound("The thumbnail does not exist any more.") from None
        if error.code in (401, 403):
            raise DespError("The data store refused your token for the thumbnail (log in again?).", status=403) from None
        raise ServiceUnavailable("thumbnail store", href, f"HTTP {error.code}") from None
    except (urllib.error.URLError, OSError) as error:
        raise ServiceUnavailable("thumbnail store", href, type(error).__name__) from None
    if len(data) > MAX_THUMBNAIL_BYTES:
        raise DespError(f"The thumbnail is larger than {MAX_THUMBNAIL_BYTES} bytes.", status=502)
    return data, content_type


class NotFoundHandler(DespApiHandler):
    """Anything else under desp/api/: 404 as JSON."""

    @tornado.web.authenticated
    @authorized
    async def get(self, path: str = ""):
        raise DespApiError(404, f"No DESP API endpoint {self.request.path!r}.")

    post = get


def handlers() -> list[tuple[str, type]]:
    """(pattern relative to base_url, handler class) of the DESP API."""
    collection = r"(?P<collection_id>[^/]+)"
    return [
        (r"desp/api/collections/?", CollectionsHandler),
        (rf"desp/api/collections/{collection}/queryables/?", QueryablesHandler),
        (rf"desp/api/collections/{collection}/items/(?P<item_id>[^/]+)/thumbnail/?", ThumbnailHandler),
        (r"desp/api/search/?", SearchHandler),
        (r"desp/api/cache/?", CacheListingHandler),
        (r"desp/api/cache/info/?", CacheInfoHandler),
        (r"desp/api/cache/requests/?", CacheRequestsHandler),
        (r"desp/api/cache/requests/(?P<job_id>[^/]+)/?", CacheRequestHandler),
        (r"desp/api/(?P<path>.*)", NotFoundHandler),
    ]
