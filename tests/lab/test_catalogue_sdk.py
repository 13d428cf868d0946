"""desp_lab.catalogue against the sandbox's real STAC API (stac-fastapi-pgstac) and its HTTP cache.

What must hold: the SDK returns the same items, in the same order, as plain pystac-client for the same criteria
(bbox, datetime, query, filter, sortby, and paging with a small limit); bad input is refused locally with the field
named; unknown collections are NotFound; a catalogue that is down is ServiceUnavailable with a plain message; items
open lazily in xarray (Zarr through the zarr engine, Sentinel-2 COGs through odc-stac); an orderable item can be
ordered and waited for, and its download link opens.
"""

import math
import socket
import time
import warnings
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
import xarray as xr
from pystac_client import Client

from desp_lab import catalogue as catalogue_module
from desp_lab.catalogue import Catalogue
from desp_lab.errors import DespError, InvalidParameter, NotFound, ServiceUnavailable
from tests.support import free_port

ERA5 = "EO.ECMWF.DAT.REANALYSIS_ERA5_SINGLE_LEVELS"
CLIMATE_DT = "EO.ECMWF.DAT.D1.DT_CLIMATE.G2.PROJECTIONS_SSP3-7.0_IFS-NEMO.R1"
SENTINEL2 = "EO.ESA.DAT.SENTINEL-2.MSI.L2A"
EXTREMES = "EO.ECMWF.DAT.DT_EXTREMES"


class CountingToken:
    """A token callable that counts how often it is asked: once per HTTP request the SDK makes."""

    def __init__(self, token: str):
        self.token = token
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        return self.token


@pytest.fixture(scope="module")
def plain(sandbox_catalogue) -> Client:
    """Plain pystac-client on the same server: the reference the SDK must agree with."""
    return Client.open(sandbox_catalogue.stac_url)


@pytest.fixture
def token(sandbox_catalogue) -> CountingToken:
    return CountingToken(sandbox_catalogue.token)


@pytest.fixture
def cat(sandbox_catalogue, token) -> Catalogue:
    return Catalogue(sandbox_catalogue.stac_url, token=token)


def _plain_ids(plain: Client, **criteria) -> list[str]:
    return [item.id for item in plain.search(**criteria).items()]


def _search_cases(plain: Client) -> list[tuple[str, dict]]:
    """Criteria for SDK vs plain comparisons, drawn from the sample data so that each selects something."""
    s2 = next(plain.search(collections=[SENTINEL2], max_items=1).items())
    west, south, east, north = s2.bbox
    era5 = next(plain.search(collections=[ERA5], max_items=1).items())
    return [
        ("one collection", {"collections": [ERA5]}),
        ("two collections", {"collections": [ERA5, CLIMATE_DT]}),
        ("bbox of one S2 tile", {"collections": [SENTINEL2],
                                 "bbox": [west + 0.01, south + 0.01, west + 0.02, south + 0.02]}),
        ("bbox nowhere", {"collections": [SENTINEL2], "bbox": [-60, -50, -59, -49]}),
        ("datetime interval", {"collections": [ERA5], "datetime": f"{era5.properties['start_datetime'][:10]}/.."}),
        ("datetime open start", {"datetime": "../2024-06-16T00:00:00Z", "collections": [SENTINEL2]}),
        ("datetime instant", {"collections": [ERA5], "datetime": era5.properties["datetime"]}),
        ("query eq", {"collections": [ERA5], "query": {"ecmwf:param": {"eq": era5.properties["ecmwf:param"]}}}),
        ("query lt", {"collections": [SENTINEL2], "query": {"eo:cloud_cover": {"lt": 50}}}),
        ("cql2 filter", {"collections": [ERA5, CLIMATE_DT],
                         "filter": {"op": "=", "args": [{"property": "ecmwf:param"}, "2t"]},
                         "filter_lang": "cql2-json"}),
        ("sortby id desc", {"collections": [ERA5, SENTINEL2], "sortby": [{"field": "id", "direction": "desc"}]}),
        ("sortby -datetime", {"collections": [SENTINEL2], "sortby": "-datetime"}),
        ("paging limit 2", {"collections": [ERA5, CLIMATE_DT, SENTINEL2], "limit": 2}),
        ("paging limit 3 max 7", {"limit": 3, "max_items": 7}),
    ]


def test_sdk_search_returns_the_same_items_in_the_same_order_as_pystac_client(cat, plain, token):
    everything = _plain_ids(plain)
    assert len(everything) > 10
    nonempty = 0
    for name, criteria in _search_cases(plain):
        expected = _plain_ids(plain, **criteria)
        before = token.calls
        results = cat.search(**criteria)
        assert results.ids == expected, name
        assert [item.id for item in results] == expected and len(results) == len(expected), name
        assert all(isinstance(item, pystac.Item) for item in results.items)
        nonempty += bool(expected)
        if "limit" in criteria and "max_items" not in criteria:
            # Every page was followed: at least ceil(n / limit) search requests, and more than one page.
            assert len(expected) > criteria["limit"], name
            assert token.calls - before >= math.ceil(len(expected) / criteria["limit"]), name
        if name.startswith("sortby id"):
            assert expected == sorted(expected, reverse=True)
        if name == "query eq":
            assert 0 < len(expected) < len(_plain_ids(plain, collections=[ERA5]))
    assert nonempty >= len(_search_cases(plain)) - 1  # only "bbox nowhere" is empty


def test_sorting_server_of_stac_api_1_1_gets_sortby_without_a_conformance_warning(cat):
    """The sandbox declares `v1.1.0/item-search#sort`; pystac-client 0.9 alone would warn it does not conform."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ascending = cat.search(collections=[SENTINEL2], sortby="datetime").items
        descending = cat.search(collections=[SENTINEL2], sortby="-datetime").items
    assert [item.datetime for item in descending] == sorted((item.datetime for item in ascending), reverse=True)
    assert [item.id for item in descending] != [item.id for item in ascending]


def test_module_level_search_uses_the_environment(sandbox_catalogue, plain, monkeypatch):
    monkeypatch.setenv("DESP_CATALOGUE_URL", sandbox_catalogue.stac_url)
    monkeypatch.setenv("DESP_ACCESS_TOKEN", sandbox_catalogue.token)
    for name in ("JUPYTERHUB_API_URL", "JUPYTERHUB_API_TOKEN", "JUPYTERHUB_USER", "DESP_TOKEN_EXCHANGE_URL"):
        monkeypatch.delenv(name, raising=False)
    assert catalogue_module.search(collections=ERA5, limit=5).ids == _plain_ids(plain, collections=[ERA5], limit=5)
    assert {c.id for c in catalogue_module.collections()} >= {ERA5, CLIMATE_DT, SENTINEL2, EXTREMES}


def test_collections_queryables_and_items(cat):
    ids = [c.id for c in cat.collections()]
    assert {ERA5, CLIMATE_DT, SENTINEL2, EXTREMES} <= set(ids)
    found = [c.id for c in cat.collections(q="Sentinel-2")]
    assert SENTINEL2 in found and ERA5 not in found
    assert cat.collection(ERA5).id == ERA5
    queryables = cat.queryables(ERA5)
    assert "ecmwf:param" in queryables["properties"]
    first = cat.search(collections=[ERA5], max_items=1)[0]
    assert cat.item(ERA5, first.id).to_dict()["properties"] == first.to_dict()["properties"]


# -- bad input and failures ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "bbox",
    [[1, 2, 3], [0, 0, 1, 1, 1], "a,b,c,d", [0, -91, 1, 1], [0, 0, 1, 95], [-190, 0, 1, 1], [0, 10, 1, 5],
     [10, 0, 5, 5], [0, 0, float("nan"), 1], "1,2,3", [0, 0, 5, 1, 1, 2]],
    ids=str,
)
def test_bad_bbox_is_refused_locally_naming_the_field(bbox):
    # A catalogue on a closed port: refusal happens before any request.
    cat = Catalogue(f"http://127.0.0.1:{free_port()}/stac/v2", token="unused")
    with pytest.raises(InvalidParameter) as raised:
        cat.search(collections=[ERA5], bbox=bbox)
    assert (raised.value.status, raised.value.field) == (400, "bbox")
    assert "bbox" in str(raised.value)


@pytest.mark.parametrize(
    "when",
    ["yesterday", "2024-13-01", "2024-06-01T25:00:00Z", "2024-06-02/2024-06-01", "../..", "..",
     "2024-06-01/2024-06-02/x", "2024/06/01", "", 20240601],
    ids=str,
)
def test_bad_datetime_is_refused_locally_naming_the_field(when):
    cat = Catalogue(f"http://127.0.0.1:{free_port()}/stac/v2", token="unused")
    with pytest.raises(InvalidParameter) as raised:
        cat.search(collections=[ERA5], datetime=when)
    assert (raised.value.status, raised.value.field) == (400, "datetime")


@pytest.mark.parametrize("when", ["2024-06-01T00:00:00Z", "2024-06-01T00:00:00.5+02:00/..", "../2024-06-30",
                                  "2024-06-01/2024-06-30", "2024-06"])
def test_good_datetimes_pass(cat, plain, when):
    assert cat.search(collections=[ERA5], datetime=when).ids == _plain_ids(plain, collections=[ERA5], datetime=when)


def test_bbox_crossing_the_antimeridian_is_accepted(cat, plain):
    bbox = [170, -10, -170, 10]
    assert cat.search(collections=[ERA5], bbox=bbox).ids == _plain_ids(plain, collections=[ERA5], bbox=bbox)


def test_unknown_collection_and_item_are_not_found(cat):
    for operation in (
        lambda: cat.search(collections=["EO.NOPE.DAT.NOTHING"]),
        lambda: cat.search(collections=[ERA5, "EO.NOPE.DAT.NOTHING"]),
        lambda: cat.collection("EO.NOPE.DAT.NOTHING"),
        lambda: cat.queryables("EO.NOPE.DAT.NOTHING"),
        lambda: cat.item("EO.NOPE.DAT.NOTHING", "x"),
        lambda: cat.item(ERA5, "NO_SUCH_ITEM"),
        lambda: cat.open_item(ERA5, "NO_SUCH_ITEM"),
    ):
        with pytest.raises(NotFound) as raised:
            operation()
        assert raised.value.status == 404 and "NOPE" in str(raised.value) or "NO_SUCH_ITEM" in str(raised.value)


def test_a_catalogue_that_does_not_answer_is_service_unavailable():
    # A socket that accepts connections but never answers: the request times out.
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/stac/v2"
        started = time.monotonic()
        with pytest.raises(ServiceUnavailable) as raised:
            Catalogue(url, token="unused", timeout=1).collections()
    assert time.monotonic() - started < 10
    assert raised.value.status == 502 and "no answer in time" in str(raised.value)


def test_the_token_is_asked_at_request_time_not_before(sandbox_catalogue, token):
    cat = Catalogue(sandbox_catalogue.stac_url, token=token)
    assert token.calls == 0
    cat.collections()
    assert token.calls >= 1


def test_catalogue_down_is_service_unavailable_with_a_plain_message():
    url = f"http://127.0.0.1:{free_port()}/stac/v2"
    cat = Catalogue(url, token="unused", timeout=5)
    for operation in (lambda: cat.search(collections=[ERA5]), lambda: cat.collections(),
                      lambda: cat.item(ERA5, "x")):
        with pytest.raises(ServiceUnavailable) as raised:
            operation()
        message = str(raised.value)
        assert raised.value.status == 502 and url in message and "not available" in message
        assert "Traceback" not in message and "Error" not in message and "urllib3" not in message


# -- opening data ---------------------------------------------------------------------------------------------------


def test_zarr_item_opens_lazily_with_its_dims_and_dtype(cat, sandbox_catalogue):
    first = cat.search(collections=[ERA5], max_items=1)[0]
    variable = next(iter(first.properties["cube:variables"]))
    dataset = cat.open_item(ERA5, first.id)
    assert list(dataset.data_vars) == [variable]
    array = dataset[variable]
    assert array.dims == ("valid_time", "latitude", "longitude") and array.dtype == np.float32
    assert array.chunks is not None  # Dask, nothing read yet
    assert array.sizes["valid_time"] == 24  # the item's day
    assert float(dataset.latitude[0]) == 90 and float(dataset.longitude[0]) == 0
    local = xr.open_zarr(Path(sandbox_catalogue.cache_dir) / "era5/reanalysis-era5-single-levels-v0.zarr")
    window = {"valid_time": 3, "latitude": slice(10, 20), "longitude": slice(30, 50)}
    expected = local[variable].sel(valid_time=array.valid_time).isel(window).values
    np.testing.assert_array_equal(array.isel(window).values, expected)

    whole = cat.open_item(ERA5, first.id, subset=False)
    assert set(whole.data_vars) == set(local.data_vars) and whole.sizes == local.sizes

    dt_item = cat.search(collections=[CLIMATE_DT], max_items=1)[0]
    climate = cat.to_xarray(dt_item)
    (name,) = climate.data_vars
    assert climate[name].dims == ("time", "latitude", "longitude") and climate[name].dtype == np.float32
    assert float(climate.latitude[0]) == -90


def test_search_results_of_one_store_combine_into_one_dataset(cat):
    results = cat.search(collections=[ERA5])
    dataset = results.to_xarray()
    params = {next(iter(item.properties["cube:variables"])) for item in results}
    assert set(dataset.data_vars) == params and len(params) >= 2
    assert dataset.sizes["valid_time"] == 48


def test_sentinel2_items_load_through_odc_stac(cat, sandbox_catalogue):
    results = cat.search(collections=[SENTINEL2], sortby="datetime")
    tile = results[0].properties.get("s2:mgrs_tile") or results[0].properties.get("grid:code")
    same_tile = [item for item in results if (item.properties.get("s2:mgrs_tile") or
                                              item.properties.get("grid:code")) == tile]
    dataset = cat.to_xarray(same_tile, bands=["B04", "B08"], resolution=10, groupby="id")
    first = same_tile[0]
    epsg = first.properties.get("proj:epsg") or int(str(first.properties.get("proj:code")).split(":")[-1])
    assert dataset.odc.crs.epsg == epsg
    shape = tuple(first.assets["B04"].extra_fields["proj:shape"])
    assert dataset["B04"].shape == (len(same_tile), *shape) and dataset["B04"].dtype == np.uint16
    assert dataset["B04"].chunks is not None
    local = Path(sandbox_catalogue.cache_dir) / first.assets["B04"].href.split("/cache/", 1)[1]
    with rasterio.open(local) as source:
        expected = source.read(1, window=((0, 64), (0, 64)))
    np.testing.assert_array_equal(dataset["B04"].isel(time=0, y=slice(0, 64), x=slice(0, 64)).values, expected)


def _placeholder(cat) -> pystac.Item:
    """An orderable placeholder (orders are stored in the same collection, so ask for the status)."""
    return cat.search(collections=[EXTREMES], query={"order:status": {"eq": "orderable"}}, max_items=1)[0]


def test_orderable_item_orders_waits_and_opens(cat):
    placeholder = _placeholder(cat)
    assert placeholder.properties["order:status"] == "orderable"
    with pytest.raises(DespError) as raised:
        cat.to_xarray(placeholder)
    assert raised.value.status == 409
    seen = []
    done = cat.order(placeholder, poll_interval=0.2, timeout=120, progress=lambda item, s: seen.append(
        item.properties["order:status"]))
    assert done.properties["order:status"] == "succeeded"
    assert seen[0] in ("ordered", "running", "succeeded") and seen[-1] == "succeeded"
    link = done.assets["downloadLink"].href
    assert "/cache/orders/" in link
    dataset = cat.to_xarray(done)
    assert dataset.data_vars and all(v.dtype == np.float32 for v in dataset.data_vars.values())


def test_order_of_an_item_without_retrieve_link_is_refused(cat):
    item = cat.search(collections=[ERA5], max_items=1)[0]
    with pytest.raises(DespError) as raised:
        cat.order(item)
    assert raised.value.status == 400


def _placeholder_asking_for(cat, **changes) -> pystac.Item:
    placeholder = pystac.Item.from_dict(_placeholder(cat).to_dict())  # (Item.clone drops link fields)
    retrieve = next(link for link in placeholder.links if link.rel == "retrieve")
    retrieve.extra_fields["body"] = {**retrieve.extra_fields["body"], **changes}
    return placeholder


def test_failed_order_raises_with_the_servers_message(cat):
    with pytest.raises(DespError) as raised:
        cat.order(_placeholder_asking_for(cat, param="nosuchparam"), poll_interval=0.2, timeout=120, progress=False)
    assert "failed" in str(raised.value) and "nosuchparam" in str(raised.value)


def test_malformed_order_is_refused_with_the_servers_reason(cat):
    with pytest.raises(DespError) as raised:
        cat.order(_placeholder_asking_for(cat, date="yesterday"), progress=False)
    assert (raised.value.status, raised.value.field) == (400, "date") and "YYYYMMDD" in str(raised.value)
    assert "{" not in str(raised.value)  # the reason, not the JSON body


def test_order_not_done_in_time_raises_and_progress_is_a_text_line(cat, capsys):
    with pytest.raises(DespError) as raised:
        cat.order(_placeholder(cat), timeout=0.05, poll_interval=0.01)
    assert raised.value.status == 504 and "still" in str(raised.value)
    line = capsys.readouterr().err
    assert line.startswith("\rOrder ") and "ordered" in line and line.endswith("\n")
