"""Catalogue search, one page at a time, and the JSON summary of one item.

Shared by the server extension's REST API and the ipywidgets search widget so both page and summarise
results the same way. Pure functions over a `desp_lab.catalogue.Catalogue`-like object (anything with
`.search(...)` returning something with `.items`); nothing here does I/O of its own.

Paging is by page number over the SDK: page `n` of size `limit` asks the SDK for the first
`n * limit + 1` items (the SDK follows the STAC API's own pages) and keeps the `limit` items of page `n`;
the extra item tells whether a next page exists.
"""

from __future__ import annotations

import json
from typing import Any

from desp_lab.errors import InvalidParameter

#: Page size when the caller gives none, and the largest one accepted.
DEFAULT_PAGE_SIZE = 20
MAX_PAGE_SIZE = 200
#: Largest page asked of the STAC API itself (its items are then cut into pages of the caller's size).
MAX_STAC_PAGE_SIZE = 500
#: With free text, items are matched here (the STAC item search has no free-text field): at most this many
#: items of the catalogue search are looked through.
MAX_ITEMS_SCANNED_FOR_TEXT = 2000


def parse_bbox(value: Any) -> list[float] | None:
    """`"w,s,e,n"` or a list of four (or six) numbers → list of floats; InvalidParameter("bbox") otherwise.

    Only the shape is checked here; the SDK checks the ranges (longitude/latitude order, west ≤ east...).
    """
    if value is None or value == "" or value == []:
        return None
    parts = value.split(",") if isinstance(value, str) else value
    if not isinstance(parts, (list, tuple)) or len(parts) not in (4, 6):
        raise InvalidParameter("bbox", f"expected four numbers west,south,east,north; got {value!r}.")
    try:
        return [float(part) for part in parts]
    except (TypeError, ValueError):
        raise InvalidParameter("bbox", f"expected four numbers west,south,east,north; got {value!r}.") from None


def parse_positive_int(field: str, value: Any, default: int, maximum: int | None = None) -> int:
    """A positive integer parameter (`page`, `limit`); InvalidParameter naming the field otherwise."""
    if value is None or value == "":
        return default
    try:
        number = int(value)
    except (TypeError, ValueError):
        raise InvalidParameter(field, f"expected a positive integer; got {value!r}.") from None
    if isinstance(value, float) and value != number or number < 1:
        raise InvalidParameter(field, f"expected a positive integer; got {value!r}.")
    if maximum is not None and number > maximum:
        raise InvalidParameter(field, f"at most {maximum}; got {number}.")
    return number


def open_item_code(collection_id: str, item_id: str, orderable: bool = False) -> str:
    """A Python snippet that opens the item in xarray with desp_lab (string literals quoted safely).

    An orderable placeholder (HDA `order:status=orderable`) is ordered first, waiting until its data is ready.
    """
    collection, item = json.dumps(collection_id), json.dumps(item_id)
    if orderable:
        return (
            "from desp_lab import catalogue\n"
            f"item = catalogue.order(catalogue.item({collection}, {item}))  # waits until the order is ready\n"
            "ds = catalogue.default_catalogue().to_xarray(item)\n"
            "ds"
        )
    return f"from desp_lab import catalogue\nds = catalogue.open_item({collection}, {item})\nds"


def thumbnail_href(item) -> str | None:
    """The href of the item's thumbnail asset (role `thumbnail`, else an asset keyed `thumbnail`), if any."""
    for asset in item.assets.values():
        if "thumbnail" in (asset.roles or []):
            return asset.href
    asset = item.assets.get("thumbnail")
    return asset.href if asset is not None else None


def item_summary(item) -> dict:
    """The JSON summary of one pystac Item the REST API and the widget show (see the issue-4 contract)."""
    properties = item.properties
    collection_id = item.collection_id
    return {
        "id": item.id,
        "collection": collection_id,
        "datetime": properties.get("datetime"),
        "start_datetime": properties.get("start_datetime"),
        "end_datetime": properties.get("end_datetime"),
        "bbox": list(item.bbox) if item.bbox is not None else None,
        "geometry": item.geometry,
        "thumbnail": thumbnail_href(item),
        "assets": list(item.assets),
        # Added to the contract's shape: "copy to my cache" needs the href of the asset to copy.
        "asset_hrefs": {name: asset.href for name, asset in item.assets.items()},
        "order_status": properties.get("order:status"),
        "code": open_item_code(collection_id or "", item.id, orderable=properties.get("order:status") == "orderable"),
    }


def item_time_label(item) -> str:
    """The item's time as one short string: its datetime, or its start/end range."""
    properties = item.properties
    if properties.get("datetime"):
        return properties["datetime"]
    start, end = properties.get("start_datetime"), properties.get("end_datetime")
    if start or end:
        return f"{start or '..'}/{end or '..'}"
    return ""


def matches_text(item, text: str) -> bool:
    """True when every word of `text` occurs (case-insensitively) in the item's id, collection, title,
    description, keywords or string-valued properties (e.g. `ecmwf:param`)."""
    words = text.lower().split()
    if not words:
        return True
    haystack = [item.id, item.collection_id or ""]
    for value in item.properties.values():
        if isinstance(value, str):
            haystack.append(value)
        elif isinstance(value, list):
            haystack.extend(str(entry) for entry in value if isinstance(entry, (str, int, float)))
    text_blob = "\n".join(haystack).lower()
    return all(word in text_blob for word in words)


def search_page(catalogue, page: int = 1, limit: int = DEFAULT_PAGE_SIZE, text: str | None = None, **search) -> dict:
    """Page `page` (from 1) of a catalogue search: `{"items": [pystac.Item], "matched", "page", "next_page"}`.

    `search` holds the SDK's keyword arguments (collections, bbox, datetime, query, filter, sortby).
    `text` is free text matched against each item (see `matches_text`); with it, `matched` is None.
    """
    search = {key: value for key, value in search.items() if value not in (None, "", [], {})}
    wanted = page * limit + 1
    if text and text.strip():
        results = catalogue.search(**search, limit=MAX_STAC_PAGE_SIZE, max_items=MAX_ITEMS_SCANNED_FOR_TEXT)
        items = [item for item in results.items if matches_text(item, text)]
        matched = len(items)
    else:
        # One STAC page holding everything up to the end of page `page` (plus one) when the server allows it.
        results = catalogue.search(**search, limit=min(wanted, MAX_STAC_PAGE_SIZE), max_items=wanted)
        items = list(results.items)
        matched = getattr(results, "matched", None)
        if callable(matched):
            matched = matched()
    page_items = items[(page - 1) * limit : page * limit]
    has_next = len(items) > page * limit
    if not isinstance(matched, int) and not has_next and page_items:
        matched = (page - 1) * limit + len(page_items)  # the last page: the count is known exactly
    return {
        "items": page_items,
        "matched": matched if isinstance(matched, int) else None,
        "page": page,
        "next_page": page + 1 if has_next else None,
    }
