"""The orderable-item flow of the Data Lake's HDA, for `EO.ECMWF.DAT.DT_EXTREMES`.

`POST /stac/v2/collections/{id}/order` (Bearer token required) takes the MARS-style request a placeholder's
`retrieve` link carries. A malformed request is refused at once (400, `{"code", "description", "field"}`); a
well-formed one becomes an item with `order:status=ordered`, stored in pgstac beside the placeholders. A background
task then produces the data after a short delay — a small Zarr store under `<cache>/orders/<order-id>/` — and sets
`order:status=succeeded` with `assets.downloadLink`, or `order:status=failed` with `order:message` when the
request names something the collection does not have (an unknown parameter or date). Clients poll
`GET /stac/v2/collections/{id}/items/{item_id}`. Orders still `ordered` when the server stopped resume at start.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import shutil
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from . import datasets as ds
from . import records
from .auth import TokenVerifier, Unauthorized
from .cache import unauthorized

log = logging.getLogger("desp_sandbox.catalogue.orders")

MARS_KEYS = {"class", "dataset", "expver", "stream", "type", "levtype", "param", "date", "time", "step", "area",
             "grid"}  # fmt: skip
FIXED = {k.split(":", 1)[1]: v for k, v in records.EXTREMES_COMMON.items() if k != "ecmwf:resolution"}
ORDERABLE = {ds.EXTREMES_COLLECTION}


class InvalidOrder(ValueError):
    """A request that is not a well-formed MARS-style request (→ 400)."""

    def __init__(self, field_name: str | None, message: str):
        super().__init__(message)
        self.field = field_name


class OrderFailed(Exception):
    """A well-formed request the collection cannot serve (→ order:status=failed)."""


@dataclass
class OrderContext:
    """What the order endpoint and its background tasks need; lives in `app.state.orders`."""

    base_url: str
    cache_dir: Path
    verifier: TokenVerifier
    delay: float = 2.0
    tasks: set = field(default_factory=set)


# validation (pure) -----------------------------------------------------------------------------------------------


def _date(value) -> datetime:
    text = str(value).strip()
    for pattern in ("%Y%m%d", "%Y-%m-%d"):
        try:
            return datetime.strptime(text, pattern).replace(tzinfo=timezone.utc)
        except ValueError:
            pass
    raise InvalidOrder("date", f"date must be one day as YYYYMMDD or YYYY-MM-DD, got {text!r}")


def _steps(value) -> list[int]:
    text = str(value).strip().lower()
    try:
        match = re.fullmatch(r"(\d+)/to/(\d+)(?:/by/(\d+))?", text)
        if match:
            first, last, by = int(match[1]), int(match[2]), int(match[3] or 1)
            if by <= 0 or last < first:
                raise ValueError
            steps = list(range(first, last + 1, by))
        else:
            steps = [int(part) for part in text.split("/")]
    except ValueError:
        raise InvalidOrder("step", f"step must be hours like 0/to/24/by/6 or 0/6/12, got {value!r}") from None
    if not steps or len(steps) > 100 or any(s < 0 or s > 240 for s in steps):
        raise InvalidOrder("step", "step must list 1 to 100 lead times between 0 and 240 hours")
    return steps


def _area(value) -> tuple[float, float, float, float]:
    parts = value.split("/") if isinstance(value, str) else value
    try:
        north, west, south, east = (float(p) for p in parts)
    except (TypeError, ValueError):
        raise InvalidOrder("area", "area must be North/West/South/East in degrees") from None
    if not (-90 <= south < north <= 90 and -180 <= west < east <= 180):
        raise InvalidOrder("area", "area must be North/West/South/East with North > South and West < East")
    return north, west, south, east


def validate(body) -> dict:
    """The normalised request (param list, date, steps, area, ...) or InvalidOrder naming the field."""
    if not isinstance(body, dict):
        raise InvalidOrder(None, "the order body must be a JSON object: a MARS-style request")
    unknown = sorted(set(body) - MARS_KEYS)
    if unknown:
        raise InvalidOrder(unknown[0], f"unknown request keys {unknown}; allowed: {sorted(MARS_KEYS)}")
    for key in ("param", "date"):
        if key not in body or body[key] in (None, "", []):
            raise InvalidOrder(key, f"'{key}' is required")
    params = body["param"] if isinstance(body["param"], list) else str(body["param"]).split("/")
    params = [str(p).strip() for p in params if str(p).strip()]
    if not params:
        raise InvalidOrder("param", "'param' names no parameter")
    time = str(body.get("time", "0000")).replace(":", "")
    if not re.fullmatch(r"\d{2}(\d{2})?", time) or int(time[:2]) > 23:
        raise InvalidOrder("time", f"time must be HHMM, got {body.get('time')!r}")
    return {**FIXED, **{k: v for k, v in body.items() if k in FIXED},
            "param": params, "date": _date(body["date"]), "time": time[:2] + "00",
            "step": _steps(body.get("step", "0")),
            "area": _area(body["area"]) if "area" in body else ds.EXTREMES_AREA}  # fmt: skip


def check_available(request: dict) -> list[ds.Variable]:
    """The variables to produce, or OrderFailed saying what the collection does not have."""
    known = {v.param: v for v in ds.EXTREMES_VARIABLES}
    missing = [p for p in request["param"] if p not in known]
    if missing:
        raise OrderFailed(f"parameter(s) {missing} not available in {ds.EXTREMES_COLLECTION}; "
                          f"available: {sorted(known)}")  # fmt: skip
    for key, value in FIXED.items():
        if str(request.get(key, value)) != value:
            raise OrderFailed(f"{key}={request[key]!r} is not available here (only {key}={value!r})")
    if request["date"] not in ds.EXTREMES_DATES:
        first, last = ds.EXTREMES_DATES[0], ds.EXTREMES_DATES[-1]
        raise OrderFailed(f"no forecast for {request['date']:%Y-%m-%d}: dates {first:%Y-%m-%d}..{last:%Y-%m-%d}")
    return [known[p] for p in request["param"]]


def ordered_item(order_id: str, request: dict, now: datetime) -> dict:
    """The item an accepted order becomes (order:status=ordered, no assets yet)."""
    north, west, south, east = request["area"]
    start = request["date"] + timedelta(hours=int(request["time"][:2]))
    end = start + timedelta(hours=max(request["step"]))
    mars = {**{k: v for k, v in request.items() if k in FIXED}, "param": "/".join(request["param"]),
            "date": f"{request['date']:%Y%m%d}", "time": request["time"], "step": "/".join(map(str, request["step"])),
            "area": f"{north}/{west}/{south}/{east}"}  # fmt: skip
    properties = {
        "datetime": records.iso(start), "start_datetime": records.iso(start), "end_datetime": records.iso(end),
        "title": f"Extremes DT order {order_id}", **records.EXTREMES_COMMON, "ecmwf:param": mars["param"],
        "ecmwf:date": mars["date"], "ecmwf:time": mars["time"], "ecmwf:step": mars["step"],
        "storage:tier": "online", "order:id": order_id, "order:status": "ordered", "order:date": records.iso(now),
        "order:request": mars,
    }  # fmt: skip
    return records.item(ds.EXTREMES_COLLECTION, f"DT_EXTREMES_ORDER_{order_id}", records.box(west, south, east, north),
                        [west, south, east, north], properties, {}, ["order"])  # fmt: skip


# producing the data ------------------------------------------------------------------------------------------------


def produce(cache_dir: Path, order_id: str, request: dict, variables: list[ds.Variable]) -> str:
    """Write the ordered fields as a Zarr store under orders/<order-id>/; returns its path relative to the cache."""
    import numcodecs
    import numpy as np
    import xarray as xr

    from .sample_data import analytic_fields

    north, west, south, east = request["area"]
    step = ds.EXTREMES_RESOLUTION
    latitudes = np.round(np.arange(north, south - step / 2, -step), 6)
    longitudes = np.round(np.arange(west, east + step / 2, step), 6)
    start = request["date"] + timedelta(hours=int(request["time"][:2]))
    times = [start + timedelta(hours=h) for h in request["step"]]
    seed = int(request["date"].strftime("%Y%m%d"))
    fields = analytic_fields([v.name for v in variables], latitudes, longitudes, times, seed)
    dataset = xr.Dataset(
        {v.name: (("time", "latitude", "longitude"), fields[v.name],
                  {"units": v.units, "long_name": v.long_name, "GRIB_shortName": v.param}) for v in variables},
        coords={"time": np.array([t.replace(tzinfo=None) for t in times], dtype="datetime64[ns]"),
                "latitude": ("latitude", latitudes, {"units": "degrees_north"}),
                "longitude": ("longitude", longitudes, {"units": "degrees_east"})},
        attrs={"history": f"sandbox Extremes DT order {order_id} (synthetic data)", "mars_request": json.dumps(
            {**{k: v for k, v in request.items() if k in FIXED}, "param": "/".join(request["param"]),
             "date": f"{request['date']:%Y%m%d}"})},
    )  # fmt: skip
    relative = f"orders/{order_id}/extremes-dt_{'-'.join(request['param'])}_{request['date']:%Y%m%d}.zarr"
    target = cache_dir / relative
    temporary = target.with_name(f".{target.name}.tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    compressor = numcodecs.Blosc(cname="zstd", clevel=5, shuffle=numcodecs.Blosc.SHUFFLE)
    encoding = {v.name: {"chunks": (len(times), 64, 64), "compressors": [compressor]} for v in variables}
    dataset.to_zarr(temporary, zarr_format=2, consolidated=True, encoding=encoding)
    temporary.rename(target)
    return relative


def request_of(item: dict) -> dict:
    """The normalised request back from a stored ordered item."""
    return validate(item["properties"]["order:request"])


async def _store(pool, item: dict) -> None:
    async with pool.acquire() as connection:
        await connection.execute("SELECT upsert_item($1::text::jsonb)", json.dumps(item))


async def fulfil(app, item: dict) -> None:
    """Background task: after the configured delay, produce the data and record the outcome in the item."""
    context: OrderContext = app.state.orders
    order_id = item["properties"]["order:id"]
    await asyncio.sleep(context.delay)
    properties = item["properties"]
    try:
        request = request_of(item)
        variables = check_available(request)
        relative = await asyncio.to_thread(produce, context.cache_dir, order_id, request, variables)
        item["assets"] = {"downloadLink": {
            "href": records.cache_href(context.base_url, relative), "type": records.ZARR, "roles": ["data"],
            "title": f"Ordered data ({relative.rsplit('/', 1)[-1]})", "xarray:open_kwargs": records.XARRAY_OPEN}}
        properties["order:status"] = "succeeded"
        log.info("order %s succeeded: %s", order_id, relative)
    except (OrderFailed, InvalidOrder) as error:
        properties["order:status"], properties["order:message"] = "failed", str(error)
        log.info("order %s failed: %s", order_id, error)
    except Exception as error:  # noqa: BLE001 - a broken order must end failed, never stay "ordered"
        log.exception("order %s failed unexpectedly", order_id)
        properties["order:status"], properties["order:message"] = "failed", f"internal error: {type(error).__name__}"
    properties["updated"] = records.iso(datetime.now(timezone.utc))
    await _store(app.state.readpool, item)


def schedule(app, item: dict) -> None:
    context: OrderContext = app.state.orders
    task = asyncio.get_running_loop().create_task(fulfil(app, item))
    context.tasks.add(task)
    task.add_done_callback(context.tasks.discard)


async def resume_pending(app) -> int:
    """Schedule again the orders a previous run accepted but did not finish."""
    async with app.state.readpool.acquire() as connection:
        rows = await connection.fetch(
            "SELECT get_item(id, collection) AS item FROM items WHERE collection = ANY($1::text[])", list(ORDERABLE)
        )
    pending = [row["item"] for row in rows if row["item"]["properties"].get("order:status") == "ordered"]
    for item in pending:
        schedule(app, item)
    return len(pending)


# the endpoint ------------------------------------------------------------------------------------------------------

router = APIRouter()


def error(status: int, code: str, message: str, field_name: str | None = None) -> JSONResponse:
    return JSONResponse({"code": code, "description": message, "field": field_name}, status_code=status)


@router.post("/collections/{collection_id}/order", tags=["Order"], summary="Order an offline item")
async def order(collection_id: str, request: Request):
    """Accept a MARS-style request for an orderable collection; returns the ordered item to poll."""
    context: OrderContext = request.app.state.orders
    try:
        claims = await context.verifier.check(request.headers.get("authorization"))
    except Unauthorized as refusal:
        return unauthorized(str(refusal))
    async with request.app.state.readpool.acquire() as connection:
        exists = await connection.fetchval("SELECT 1 FROM collections WHERE id = $1", collection_id)
    if not exists:
        return error(404, "NotFoundError", f"Collection {collection_id} does not exist.")
    if collection_id not in ORDERABLE:
        return error(400, "BadRequest", f"Collection {collection_id} has no orderable items.")
    try:
        body = await request.json()
    except ValueError:
        return error(400, "BadRequest", "the order body must be JSON")
    try:
        normalised = validate(body)
    except InvalidOrder as invalid:
        return error(400, "BadRequest", str(invalid), invalid.field)
    order_id = uuid.uuid4().hex[:16]
    item = ordered_item(order_id, normalised, datetime.now(timezone.utc))
    item["properties"]["order:user"] = claims.get("sub")
    await _store(request.app.state.readpool, item)
    schedule(request.app, item)
    log.info("order %s accepted for %s: %s", order_id, collection_id, item["properties"]["order:request"])
    self_href = f"{context.base_url}{records.PREFIX}/collections/{collection_id}/items/{item['id']}"
    collection_href = f"{context.base_url}{records.PREFIX}/collections/{collection_id}"
    item["links"] = [{"rel": "self", "href": self_href, "type": "application/geo+json"},
                     {"rel": "collection", "href": collection_href, "type": "application/json"},
                     {"rel": "parent", "href": collection_href, "type": "application/json"},
                     {"rel": "root", "href": f"{context.base_url}{records.PREFIX}/", "type": "application/json"}]
    return JSONResponse(item, status_code=200, headers={"Location": self_href})
