"""The orderable-item flow on EO.ECMWF.DAT.DT_EXTREMES: placeholder → order → ordered → succeeded (downloadable)
or failed; malformed orders refused with 400; orders need a token."""

import time

import pytest
import requests
import xarray as xr

from desp_sandbox.catalogue import orders

EXTREMES = "EO.ECMWF.DAT.DT_EXTREMES"
PLACEHOLDER = "DT_EXTREMES_10U_20240503"


def placeholder(catalogue, item_id=PLACEHOLDER):
    response = requests.get(f"{catalogue.stac_url}/collections/{EXTREMES}/items/{item_id}", timeout=10)
    assert response.status_code == 200, response.text
    return response.json()


def retrieve_link(item):
    return next(link for link in item["links"] if link["rel"] == "retrieve")


def order(catalogue, body, token=None, collection=EXTREMES):
    headers = {"Authorization": f"Bearer {token or catalogue.token}"}
    return requests.post(f"{catalogue.stac_url}/collections/{collection}/order", json=body, headers=headers,
                         timeout=30)  # fmt: skip


def poll(catalogue, item_id, timeout=60):
    """The item once its order:status leaves `ordered`, and every status seen on the way."""
    seen = []
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = requests.get(f"{catalogue.stac_url}/collections/{EXTREMES}/items/{item_id}", timeout=10)
        assert response.status_code == 200, response.text
        item = response.json()
        seen.append(item["properties"]["order:status"])
        if seen[-1] != "ordered":
            return item, seen
        time.sleep(0.2)
    raise AssertionError(f"order {item_id} still ordered after {timeout}s")


def test_placeholder_is_offline_and_orderable(sandbox_catalogue):
    item = placeholder(sandbox_catalogue)
    assert item["properties"]["storage:tier"] == "offline"
    assert item["properties"]["order:status"] == "orderable"
    assert item["assets"] == {}
    link = retrieve_link(item)
    assert link["method"] == "POST"
    assert link["href"] == f"{sandbox_catalogue.stac_url}/collections/{EXTREMES}/order"
    assert link["body"]["param"] == "10u" and link["body"]["date"] == "20240503"
    assert link["body"]["class"] == "d1" and link["body"]["dataset"] == "extremes-dt"


def test_order_succeeds_with_a_downloadable_zarr(sandbox_catalogue):
    link = retrieve_link(placeholder(sandbox_catalogue))
    response = requests.request(link["method"], link["href"], json=link["body"],
                                headers=sandbox_catalogue.headers(), timeout=30)  # fmt: skip
    assert response.status_code == 200, response.text
    ordered = response.json()
    assert ordered["properties"]["order:status"] == "ordered"
    assert ordered["collection"] == EXTREMES and ordered["id"] != PLACEHOLDER
    self_href = next(link["href"] for link in ordered["links"] if link["rel"] == "self")
    assert response.headers["Location"] == self_href
    assert requests.get(self_href, timeout=10).status_code == 200  # pollable at once

    item, seen = poll(sandbox_catalogue, ordered["id"])
    assert seen[0] == "ordered"  # the delay is visible to a poller
    assert item["properties"]["order:status"] == "succeeded", item["properties"]
    href = item["assets"]["downloadLink"]["href"]
    assert href.startswith(f"{sandbox_catalogue.cache_url}/orders/{item['properties']['order:id']}/")
    assert requests.get(f"{href}/.zmetadata", timeout=10).status_code == 401
    data = xr.open_dataset(href, engine="zarr", chunks={},
                           storage_options={"client_kwargs": {"headers": sandbox_catalogue.headers()}})  # fmt: skip
    assert list(data.data_vars) == ["u10"]
    assert data.u10.dims == ("time", "latitude", "longitude")
    assert data.sizes["time"] == 5 and str(data.u10.dtype) == "float32"
    assert str(data.time.values[0]).startswith("2024-05-03T00")
    assert float(abs(data.u10).max()) < 60

    # the placeholder stays orderable; the order is findable by search
    assert placeholder(sandbox_catalogue)["properties"]["order:status"] == "orderable"
    found = requests.post(f"{sandbox_catalogue.stac_url}/search", timeout=10, json={
        "collections": [EXTREMES], "query": {"order:id": {"eq": item["properties"]["order:id"]}}}).json()
    assert [f["id"] for f in found["features"]] == [item["id"]]


def test_unknown_parameter_ends_failed_with_a_message(sandbox_catalogue):
    body = {**retrieve_link(placeholder(sandbox_catalogue))["body"], "param": "not-a-param"}
    response = order(sandbox_catalogue, body)
    assert response.status_code == 200, response.text
    item, _ = poll(sandbox_catalogue, response.json()["id"])
    assert item["properties"]["order:status"] == "failed"
    assert "not-a-param" in item["properties"]["order:message"]
    assert "downloadLink" not in item["assets"]


def test_date_without_forecast_ends_failed(sandbox_catalogue):
    body = {**retrieve_link(placeholder(sandbox_catalogue))["body"], "date": "20230101"}
    item, _ = poll(sandbox_catalogue, order(sandbox_catalogue, body).json()["id"])
    assert item["properties"]["order:status"] == "failed"
    assert "2023-01-01" in item["properties"]["order:message"]


@pytest.mark.parametrize("body, field", [
    (["not", "an", "object"], None),
    ({"date": "20240501"}, "param"),
    ({"param": "2t"}, "date"),
    ({"param": "2t", "date": "May 1st"}, "date"),
    ({"param": "2t", "date": "20240501", "step": "0/to/x"}, "step"),
    ({"param": "2t", "date": "20240501", "area": "10/20/30/40"}, "area"),
    ({"param": "2t", "date": "20240501", "colour": "blue"}, "colour"),
])  # fmt: skip
def test_malformed_orders_are_400(sandbox_catalogue, body, field):
    response = order(sandbox_catalogue, body)
    assert response.status_code == 400, response.text
    answer = response.json()
    assert answer["field"] == field and answer["description"]


def test_orders_need_a_valid_token(sandbox_catalogue):
    body = retrieve_link(placeholder(sandbox_catalogue))["body"]
    url = f"{sandbox_catalogue.stac_url}/collections/{EXTREMES}/order"
    assert requests.post(url, json=body, timeout=10).status_code == 401
    assert requests.post(url, json=body, headers={"Authorization": "Bearer nope"}, timeout=10).status_code == 401


def test_order_on_other_collections(sandbox_catalogue):
    body = {"param": "2t", "date": "20240101"}
    assert order(sandbox_catalogue, body, collection="EO.NOPE").status_code == 404
    refused = order(sandbox_catalogue, body, collection="EO.ECMWF.DAT.REANALYSIS_ERA5_SINGLE_LEVELS")
    assert refused.status_code == 400 and "orderable" in refused.json()["description"]


def test_validation_normalises_mars_requests():
    request = orders.validate({"param": "2t/10u", "date": "2024-05-02", "time": "12:00", "step": "0/to/12/by/6"})
    assert request["param"] == ["2t", "10u"] and request["time"] == "1200" and request["step"] == [0, 6, 12]
    assert request["dataset"] == "extremes-dt"
    with pytest.raises(orders.OrderFailed, match="dataset"):
        orders.check_available({**request, "dataset": "climate-dt"})
