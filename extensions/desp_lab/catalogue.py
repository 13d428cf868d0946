"""The DESP data catalogue (a STAC API shaped like the Data Lake's HDA) from Python, over pystac-client.

    from desp_lab import catalogue
    results = catalogue.search(collections=["EO.ECMWF.DAT.REANALYSIS_ERA5_SINGLE_LEVELS"],
                               bbox=[0, 40, 20, 55], datetime="2024-01-01/2024-01-31")
    dataset = results.to_xarray()          # lazy, Dask-backed

`Catalogue(url=None, token=None)` talks to `DESP_CATALOGUE_URL`; the module-level `search`, `collections`,
`open_item`, `item` and `order` use one default `Catalogue` from the environment. Bounding boxes and datetimes are
checked here before any request (InvalidParameter naming the field); an unknown collection is NotFound; a catalogue
that cannot be reached is ServiceUnavailable with a short message.

Every request carries `Authorization: Bearer <token>`, the token asked for at request time (a string, a zero-argument
callable, or by default the platform's data token), so a refreshed token is used without the user noticing.
Zarr assets open with xarray's zarr engine (`chunks={}`), Cloud-Optimised GeoTIFFs with odc-stac, both lazily.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import math
import os
import re
import sys
import threading
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence

import pystac
import requests
from pystac_client import Client
from pystac_client.exceptions import APIError

from .cache import TokenLike, http_storage_options, resolve_token
from .errors import DespError, InvalidParameter, NotFound, ServiceUnavailable

ZARR_MEDIA_TYPES = ("application/vnd+zarr", "application/vnd.zarr", "application/x-zarr")
COG_MEDIA_TYPE = "image/tiff"
COG_CHUNK_PIXELS = 2048
KNOWN_COLLECTIONS_SECONDS = 300
DEFAULT_TIMEOUT_SECONDS = 30

# An RFC 3339 instant, or the shorter dates pystac-client expands (2024, 2024-06, 2024-06-05).
_INSTANT = re.compile(
    r"^(?P<date>\d{4}(-\d{2}(-\d{2})?)?)"
    r"([Tt ](?P<time>\d{2}:\d{2}(:\d{2}(\.\d+)?)?)(?P<zone>[Zz]|[+-]\d{2}:?\d{2})?)?$"
)


# -- local checks of search parameters (pure functions) ----------------------------------------------------------


def validate_bbox(bbox) -> list[float] | None:
    """A bbox as a list of 4 (west, south, east, north) or 6 (with min/max height) numbers, or InvalidParameter.

    Accepts a sequence or a comma-separated string. Longitudes within ±180, latitudes within ±90, south <= north;
    west > east only for a box crossing the antimeridian (west > 0 > east), as STAC defines it.
    """
    if bbox is None:
        return None
    if isinstance(bbox, str):
        bbox = [part for part in bbox.replace(" ", "").split(",") if part != ""]
    try:
        numbers = [float(value) for value in bbox]
    except (TypeError, ValueError):
        raise InvalidParameter("bbox", "must be 4 or 6 numbers: west,south,east,north") from None
    if len(numbers) not in (4, 6):
        raise InvalidParameter("bbox", f"must be 4 or 6 numbers (west,south,east,north), got {len(numbers)}")
    if not all(math.isfinite(n) for n in numbers):
        raise InvalidParameter("bbox", "numbers must be finite")
    if len(numbers) == 4:
        west, south, east, north = numbers
    else:
        west, south, bottom, east, north, top = numbers
        if bottom > top:
            raise InvalidParameter("bbox", f"minimum height {bottom} is above maximum height {top}")
    for name, value in (("west", west), ("east", east)):
        if not -180 <= value <= 180:
            raise InvalidParameter("bbox", f"{name} longitude {value} is outside -180..180")
    for name, value in (("south", south), ("north", north)):
        if not -90 <= value <= 90:
            raise InvalidParameter("bbox", f"{name} latitude {value} is outside -90..90")
    if south > north:
        raise InvalidParameter("bbox", f"south {south} is north of north {north}")
    if west > east and not (west > 0 > east):
        raise InvalidParameter(
            "bbox", f"west {west} is east of east {east} (only a box crossing the antimeridian has west > 0 > east)"
        )
    return numbers


def _parse_instant(text: str) -> dt.datetime:
    match = _INSTANT.match(text)
    if not match:
        raise ValueError(text)
    date = match["date"]
    date += "-01" * (2 - date.count("-"))  # 2024 → 2024-01-01, 2024-06 → 2024-06-01
    moment = dt.datetime.fromisoformat(f"{date}T{match['time'] or '00:00'}{(match['zone'] or '').replace('z', 'Z')}")
    return moment if moment.tzinfo else moment.replace(tzinfo=dt.UTC)


def validate_datetime(value):
    """A datetime filter as pystac-client takes it, or InvalidParameter("datetime", ...).

    Strings: an RFC 3339 instant (`2024-06-05T10:30:00Z`; `2024`, `2024-06`, `2024-06-05` are expanded) or an
    interval `start/end` where either end may be open (`..` or empty). Also a `datetime` or a (start, end) pair of
    them (None for open). The start must not be after the end.
    """
    if value is None:
        return None
    if isinstance(value, dt.datetime):
        return value
    if isinstance(value, (list, tuple)):
        if len(value) != 2 or not all(v is None or isinstance(v, (dt.datetime, str)) for v in value):
            raise InvalidParameter("datetime", "give an RFC 3339 string, a datetime, or a (start, end) pair")
        ends = [v if isinstance(v, dt.datetime) or v is None else v.strip() for v in value]
        text = "/".join(".." if v in (None, "") else (v if isinstance(v, str) else v.isoformat()) for v in ends)
        validate_datetime(text)
        return value
    if not isinstance(value, str):
        raise InvalidParameter("datetime", "give an RFC 3339 string such as 2024-06-01T00:00:00Z or a/b interval")
    text = value.strip()
    parts = text.split("/")
    if not text or len(parts) > 2 or (len(parts) == 1 and parts[0] in ("", "..")):
        raise InvalidParameter("datetime", f"{value!r} is not an RFC 3339 instant or start/end interval")
    moments = []
    for part in parts:
        if part in ("", ".."):
            moments.append(None)
            continue
        try:
            moments.append(_parse_instant(part))
        except ValueError:
            raise InvalidParameter(
                "datetime", f"{part!r} is not an RFC 3339 date-time (e.g. 2024-06-01T00:00:00Z)"
            ) from None
    if len(moments) == 2 and moments[0] and moments[1] and moments[0] > moments[1]:
        raise InvalidParameter("datetime", f"start {parts[0]} is after end {parts[1]}")
    if len(moments) == 2 and moments == [None, None]:
        raise InvalidParameter("datetime", "an interval needs at least one end")
    return text


def _positive_int(field: str, value) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidParameter(field, "must be a whole number of at least 1")
    return value


def _collection_ids(collections) -> list[str] | None:
    if collections is None:
        return None
    if isinstance(collections, str):
        collections = [c for c in collections.split(",") if c.strip()]
    ids = [c.id if isinstance(c, pystac.Collection) else str(c).strip() for c in collections]
    if not ids or not all(ids):
        raise InvalidParameter("collections", "name at least one collection id")
    return ids


# -- results -----------------------------------------------------------------------------------------------------


class SearchResults(Sequence):
    """The items a search found (all pages, up to `max_items`), in the catalogue's order."""

    def __init__(self, catalogue: Catalogue, items: list[pystac.Item]):
        self.catalogue = catalogue
        self.items = items

    def __len__(self) -> int:
        return len(self.items)

    def __iter__(self) -> Iterator[pystac.Item]:
        return iter(self.items)

    def __getitem__(self, index):
        return self.items[index]

    def __repr__(self) -> str:
        shown = ", ".join(item.id for item in self.items[:3]) + (", ..." if len(self.items) > 3 else "")
        return f"<SearchResults {len(self.items)} items: {shown}>"

    @property
    def ids(self) -> list[str]:
        return [item.id for item in self.items]

    def to_xarray(self, **kwargs):
        """All items as one lazy xarray Dataset (see `Catalogue.to_xarray`)."""
        return self.catalogue.to_xarray(self.items, **kwargs)


# -- the client --------------------------------------------------------------------------------------------------


class Catalogue:
    """A STAC API catalogue: `url` (default `DESP_CATALOGUE_URL`), `token` (string, callable, or the platform's
    data token by default), `timeout` in seconds for each request."""

    def __init__(self, url: str | None = None, token: TokenLike = None, timeout: float = DEFAULT_TIMEOUT_SECONDS):
        url = url or os.environ.get("DESP_CATALOGUE_URL")
        if not url:
            raise DespError("No catalogue configured: set DESP_CATALOGUE_URL (or pass url=).", field="url")
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self._client: Client | None = None
        self._client_lock = threading.Lock()
        self._known_collections: dict[str, float] = {}  # id → when it was last seen to exist

    def __repr__(self) -> str:
        return f"Catalogue({self.url!r})"

    # -- plumbing ---------------------------------------------------------------------------------------------

    def _authorize(self, request: requests.Request) -> requests.Request:
        """pystac-client request hook: the bearer token as of now (none if there is none to be had)."""
        token = resolve_token(self.token)
        if token:
            request.headers["Authorization"] = f"Bearer {token}"
        return request

    @contextlib.contextmanager
    def _errors(self, what: str):
        """Turn pystac-client/requests failures into DespErrors with short, human messages."""
        try:
            yield
        except DespError:
            raise
        except APIError as error:
            status = getattr(error, "status_code", None)
            cause = error.__context__ or error.__cause__
            if status is None:
                raise ServiceUnavailable("catalogue", self.url, _connection_reason(cause)) from None
            if status == 404:
                raise NotFound(f"{what} was not found in the catalogue.") from None
            if status in (401, 403):
                raise DespError(f"The catalogue refused access to {what} (log in again?).", status=status) from None
            if status in (400, 422):
                reason, field = _server_reason(str(error))
                raise DespError(f"The catalogue rejected {what}: {reason}", field=field, status=400) from None
            raise ServiceUnavailable("catalogue", self.url, f"HTTP {status}") from None
        except (requests.ConnectionError, requests.Timeout) as error:
            raise ServiceUnavailable("catalogue", self.url, _connection_reason(error)) from None
        except pystac.STACError as error:
            raise ServiceUnavailable("catalogue", self.url, f"not a STAC API answer ({_short(str(error))})") from None

    @property
    def client(self) -> Client:
        """The pystac-client Client, opened on first use."""
        with self._client_lock:
            if self._client is None:
                with self._errors("the catalogue root"):
                    client = Client.open(self.url, request_modifier=self._authorize, timeout=self.timeout)
                _accept_newer_sort_conformance(client)
                self._client = client
            return self._client

    def _read_json(self, url: str, what: str) -> dict:
        with self._errors(what):
            return self.client._stac_io.read_json(url)

    def _check_collections(self, ids: Iterable[str]) -> None:
        """NotFound for the first id that is not a collection; ids seen recently are not asked again."""
        now = time.monotonic()
        for collection_id in ids:
            seen = self._known_collections.get(collection_id)
            if seen is not None and now - seen < KNOWN_COLLECTIONS_SECONDS:
                continue
            self.collection(collection_id)

    # -- discovery --------------------------------------------------------------------------------------------

    def collections(self, q: str | None = None) -> list[pystac.Collection]:
        """All collections, or those matching the free text `q` (the server's collection search where it has one,
        else pystac-client filters title, description and keywords)."""
        with self._errors("the collections"):
            if q:
                found = list(self.client.collection_search(q=q).collections())
            else:
                found = list(self.client.get_collections())
        now = time.monotonic()
        self._known_collections.update((c.id, now) for c in found)
        return found

    def collection(self, collection_id: str) -> pystac.Collection:
        """One collection, or NotFound."""
        if not collection_id:
            raise InvalidParameter("collection", "name a collection id")
        with self._errors(f"collection {collection_id!r}"):
            found = self.client.get_collection(collection_id)
        if found is None:
            raise NotFound(f"There is no collection {collection_id!r} in the catalogue.", field="collections")
        self._known_collections[collection_id] = time.monotonic()
        return found

    def queryables(self, collection_id: str) -> dict:
        """The JSON schema of the properties `query`/`filter` may use in `collection_id`."""
        self._check_collections([collection_id])
        return self._read_json(f"{self.url}/collections/{collection_id}/queryables",
                               f"the queryables of {collection_id!r}")

    def item(self, collection_id: str, item_id: str) -> pystac.Item:
        """One item, or NotFound (naming whether the collection or the item is missing)."""
        url = f"{self.url}/collections/{collection_id}/items/{item_id}"
        try:
            data = self._read_json(url, f"item {item_id!r}")
        except NotFound:
            self._check_collections([collection_id])
            raise NotFound(f"There is no item {item_id!r} in {collection_id}.", field="item") from None
        return pystac.Item.from_dict(data)

    def search(
        self,
        collections: str | Sequence[str] | None = None,
        bbox=None,
        datetime=None,
        query: dict | list | None = None,
        filter: dict | str | None = None,
        sortby=None,
        limit: int | None = None,
        max_items: int | None = None,
        **kwargs,
    ) -> SearchResults:
        """Items matching all the given criteria, every page followed (up to `max_items`).

        `collections`: ids (a list or a comma-separated string); `bbox`: west,south,east,north; `datetime`: RFC 3339
        instant or `start/end` (open ends `..`); `query`: the query extension (`{"ecmwf:param": {"eq": "2t"}}`);
        `filter`: CQL2 (JSON dict or text); `sortby`: `"-datetime"` or `[{"field": ..., "direction": ...}]`;
        `limit`: page size; other keywords go to pystac-client's `Client.search`.
        """
        ids = _collection_ids(collections)
        bbox = validate_bbox(bbox)
        datetime = validate_datetime(datetime)
        limit = _positive_int("limit", limit)
        max_items = _positive_int("max_items", max_items)
        if query is not None and not isinstance(query, (dict, list)):
            raise InvalidParameter("query", 'must be a JSON object such as {"ecmwf:param": {"eq": "2t"}}')
        if filter is not None and not isinstance(filter, (dict, str)):
            raise InvalidParameter("filter", "must be CQL2 JSON (an object) or CQL2 text")
        if ids:
            self._check_collections(ids)
        with self._errors("the search"):
            search = self.client.search(
                collections=ids, bbox=bbox, datetime=datetime, query=query, filter=filter, sortby=sortby,
                limit=limit, max_items=max_items, **kwargs,
            )
            items = list(search.items())
        return SearchResults(self, items)

    # -- opening data -----------------------------------------------------------------------------------------

    def open_item(self, collection_id: str, item_id: str, asset: str | None = None, **kwargs):
        """One item's data as a lazy xarray Dataset (see `to_xarray`)."""
        return self.to_xarray(self.item(collection_id, item_id), asset=asset, **kwargs)

    def to_xarray(self, items: pystac.Item | Iterable[pystac.Item], asset: str | None = None, subset: bool = True,
                  **kwargs):
        """Items as one lazy (Dask) xarray Dataset.

        Zarr assets open with xarray's zarr engine, `chunks={}` (the store's own chunks); items sharing a store open
        it once and, with `subset` (the default), keep the variables their `cube:variables` name and the time span
        their start/end datetimes cover; several stores are combined by their coordinates. GeoTIFF (COG) items load
        through `odc.stac.load` (lazy, 2048 × 2048 chunks unless `chunks` is given; `bands`, `resolution`, `crs`,
        `groupby`, ... pass through).
        `asset` picks an asset key instead of the default (a Zarr asset with role `data`, or every COG band).
        Bearer token (or ~/.netrc) is sent to the data server by fsspec and GDAL.
        """
        items = [items] if isinstance(items, pystac.Item) else list(items)
        if not items:
            raise DespError("Nothing to open: the search found no items.", status=404)
        for item in items:
            if item.properties.get("order:status") in ("orderable", "ordered", "pending", "running"):
                raise DespError(
                    f"Item {item.id} is not available yet (order status {item.properties['order:status']}); "
                    "order it first with catalogue.order(item).", status=409,
                )
        zarr_assets = [_zarr_asset(item, asset) for item in items]
        if all(zarr_assets):
            return self._open_zarr_stores(list(zip(items, zarr_assets)), subset=subset, **kwargs)
        if any(zarr_assets):
            raise DespError("These items mix Zarr stores and GeoTIFFs; open each kind separately.", status=400)
        if asset is not None:
            kwargs.setdefault("bands", [asset])
        return self._load_cogs(items, **kwargs)

    def _open_zarr_stores(self, items_assets: list[tuple[pystac.Item, tuple[str, dict]]], subset: bool, **kwargs):
        import xarray as xr

        by_store: dict[str, list[pystac.Item]] = {}
        open_kwargs: dict[str, dict] = {}
        for item, (href, extra) in items_assets:
            by_store.setdefault(href, []).append(item)
            open_kwargs.setdefault(href, extra)
        datasets = []
        for href, store_items in by_store.items():
            options = {"engine": "zarr", "chunks": {}, **open_kwargs[href], **kwargs}
            if href.startswith(("http://", "https://")):
                options["storage_options"] = {**http_storage_options(self.token), **options.get("storage_options", {})}
            try:
                with warnings.catch_warnings():
                    warnings.filterwarnings("ignore", "Failed to open Zarr store with consolidated metadata")
                    dataset = xr.open_dataset(href, **options)
            except FileNotFoundError:
                raise NotFound(f"The data of this item is missing at {href.split('?')[0]}.") from None
            except Exception as error:
                if getattr(error, "status", None) in (401, 403):
                    raise DespError(f"Not allowed to read {href.split('?')[0]} (log in again?).",
                                    status=error.status) from None
                if isinstance(error, (ConnectionError, TimeoutError, OSError)):
                    raise ServiceUnavailable("data server", href, type(error).__name__) from None
                raise
            datasets.append(_items_subset(dataset, store_items) if subset else dataset)
        if len(datasets) == 1:
            return datasets[0]
        return xr.combine_by_coords(datasets, combine_attrs="drop_conflicts")

    def _load_cogs(self, items: list[pystac.Item], **kwargs):
        import odc.stac

        token = resolve_token(self.token)
        gdal = {"GDAL_DISABLE_READDIR_ON_OPEN": "EMPTY_DIR", "GDAL_HTTP_NETRC": "YES"}
        if token:
            gdal["GDAL_HTTP_HEADERS"] = f"Authorization: Bearer {token}"
        if os.environ.get("NETRC"):
            gdal["GDAL_HTTP_NETRC_FILE"] = os.environ["NETRC"]
        # odc-stac reads (now and later, when Dask computes) with this GDAL configuration.
        odc.stac.configure_rio(cloud_defaults=False, **gdal)
        # Lazy, in pieces a worker can hold (a full Sentinel-2 tile is 10980² at 10 m).
        kwargs.setdefault("chunks", {"x": COG_CHUNK_PIXELS, "y": COG_CHUNK_PIXELS})
        try:
            return odc.stac.load(items, **kwargs)
        except ValueError as error:
            raise DespError(f"Cannot load these items together: {_short(str(error))}", status=400) from None

    # -- orders (HDA orderable items) -------------------------------------------------------------------------

    def order(
        self,
        item: pystac.Item,
        wait: bool = True,
        timeout: float = 600,
        poll_interval: float = 2,
        progress: bool | Callable[[pystac.Item, float], None] = True,
    ) -> pystac.Item:
        """Order an orderable item (HDA: POST its `retrieve` link's body to `/collections/{id}/order`) and, with
        `wait`, poll it until `order:status` is `succeeded` (returned, with its `downloadLink` asset) or `failed`
        (DespError with the server's message). `progress`: True prints a status line, a callable gets
        (item, seconds elapsed) at each poll. Not finished within `timeout` seconds → DespError (504).
        """
        retrieve = next((link for link in item.links if link.rel == "retrieve"), None)
        if retrieve is None:
            raise DespError(f"Item {item.id} cannot be ordered (it has no 'retrieve' link).", status=400)
        collection_id = item.collection_id
        if not collection_id:
            raise DespError(f"Item {item.id} names no collection.", status=400)
        body = retrieve.extra_fields.get("body") or {}
        url = f"{self.url}/collections/{collection_id}/order"
        with self._errors(f"the order of {item.id}"):
            answer = self.client._stac_io.request(url, method="POST", parameters=body)
        ordered = pystac.Item.from_dict(_json(answer))
        if not wait:
            return ordered
        started = time.monotonic()
        show = _progress_printer(progress, ordered.id)
        while True:
            status = ordered.properties.get("order:status")
            elapsed = time.monotonic() - started
            show(ordered, elapsed)
            if status == "succeeded":
                show(ordered, elapsed, done=True)
                return ordered
            if status == "failed":
                show(ordered, elapsed, done=True)
                message = (ordered.properties.get("order:message") or ordered.properties.get("order:error")
                           or ordered.properties.get("description") or "no reason given")
                raise DespError(f"The order of {ordered.id} failed: {message}", status=502)
            if elapsed >= timeout:
                show(ordered, elapsed, done=True)
                raise DespError(
                    f"The order of {ordered.id} is still {status!r} after {timeout:.0f} s; "
                    f"check later with catalogue.item({collection_id!r}, {ordered.id!r}).", status=504,
                )
            time.sleep(min(poll_interval, max(0.0, timeout - elapsed)))
            ordered = self.item(collection_id, ordered.id)


# -- helpers -----------------------------------------------------------------------------------------------------


SORT_CONFORMANCE = re.compile(r"^https://api\.stacspec\.org/v1\.\d+\.\d+[^/]*/item-search#sort$")


def _accept_newer_sort_conformance(client: Client) -> None:
    """Let pystac-client send `sortby` to servers that declare the STAC API 1.1 sort class.

    pystac-client 0.9 recognises only `v1.0.x/item-search#sort`; stac-fastapi (and so the sandbox) declares
    `v1.1.0/item-search#sort`, and every search would warn "does not conform to SORT" although sorting works.
    """
    if any(SORT_CONFORMANCE.match(uri) for uri in client.get_conforms_to()):
        client.add_conforms_to("SORT")


def _zarr_asset(item: pystac.Item, key: str | None) -> tuple[str, dict] | None:
    """(href, xarray open kwargs) of the item's Zarr asset (the named one, else the first with role data)."""
    if key is not None:
        if key not in item.assets:
            raise NotFound(f"Item {item.id} has no asset {key!r} (it has {', '.join(item.assets)}).", field="asset")
        candidates = [item.assets[key]]
    else:
        candidates = sorted(item.assets.values(), key=lambda a: "data" not in (a.roles or []))
    for asset in candidates:
        media = (asset.media_type or "").lower()
        if any(kind in media for kind in ZARR_MEDIA_TYPES) or asset.href.rstrip("/").endswith(".zarr"):
            return asset.href, dict(asset.extra_fields.get("xarray:open_kwargs") or {})
    return None


def _items_subset(dataset, items: list[pystac.Item]):
    """The part of a store the items describe: their `cube:variables` (data) and the time span they cover."""
    names = []
    for item in items:
        for name, variable in (item.properties.get("cube:variables") or {}).items():
            if variable.get("type", "data") == "data" and name in dataset.data_vars and name not in names:
                names.append(name)
    if names:
        dataset = dataset[names]
    time_dims = {name for item in items for name, dim in (item.properties.get("cube:dimensions") or {}).items()
                 if dim.get("type") == "temporal"}
    starts = [item.properties.get("start_datetime") or item.properties.get("datetime") for item in items]
    ends = [item.properties.get("end_datetime") or item.properties.get("datetime") for item in items]
    if len(time_dims) == 1 and all(starts) and all(ends):
        (dim,) = time_dims
        if dim in dataset.indexes:
            start = min(_parse_instant(s) for s in starts).replace(tzinfo=None)
            end = max(_parse_instant(e) for e in ends).replace(tzinfo=None)
            dataset = dataset.sel({dim: slice(start, end)})
    return dataset


def _progress_printer(progress, item_id: str):
    if callable(progress):
        return lambda item, elapsed, done=False: None if done else progress(item, elapsed)
    if not progress:
        return lambda item, elapsed, done=False: None

    def show(item, elapsed, done=False):
        status = item.properties.get("order:status", "?")
        sys.stderr.write("\n" if done else f"\rOrder {item_id}: {status:<10} {elapsed:5.0f} s")
        sys.stderr.flush()

    return show


def _connection_reason(error) -> str:
    # With pystac-client's retries a read timeout arrives as ConnectionError(MaxRetryError(ReadTimeoutError)).
    if isinstance(error, requests.Timeout) or (error is not None and "timed out" in str(error)):
        return "no answer in time"
    if isinstance(error, requests.ConnectionError):
        return "cannot connect"
    return "cannot connect" if error is None else type(error).__name__


def _server_reason(text: str) -> tuple[str, str | None]:
    """The human part of a STAC API error body (`description`/`detail`/`message`) and the field it names."""
    try:
        body = _json(text)
    except ValueError:
        return _short(text), None
    if not isinstance(body, dict):
        return _short(text), None
    reason = body.get("description") or body.get("detail") or body.get("message") or text
    return _short(str(reason)), body.get("field") if isinstance(body.get("field"), str) else None


def _short(text: str, limit: int = 200) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _json(text: str) -> dict:
    import json

    return json.loads(text)


# -- module-level shortcuts on a default catalogue ---------------------------------------------------------------

_default: Catalogue | None = None
_default_lock = threading.Lock()


def default_catalogue() -> Catalogue:
    """The Catalogue at `DESP_CATALOGUE_URL` (made on first use, remade when the variable changes)."""
    global _default
    with _default_lock:
        url = os.environ.get("DESP_CATALOGUE_URL")
        if _default is None or (url and url.rstrip("/") != _default.url):
            _default = Catalogue(url)
        return _default


def search(**kwargs) -> SearchResults:
    """`Catalogue.search` on the default catalogue."""
    return default_catalogue().search(**kwargs)


def collections(q: str | None = None) -> list[pystac.Collection]:
    """`Catalogue.collections` on the default catalogue."""
    return default_catalogue().collections(q)


def open_item(collection_id: str, item_id: str, **kwargs):
    """`Catalogue.open_item` on the default catalogue."""
    return default_catalogue().open_item(collection_id, item_id, **kwargs)


def item(collection_id: str, item_id: str) -> pystac.Item:
    """`Catalogue.item` on the default catalogue."""
    return default_catalogue().item(collection_id, item_id)


def order(item: pystac.Item, **kwargs) -> pystac.Item:
    """`Catalogue.order` on the default catalogue."""
    return default_catalogue().order(item, **kwargs)
