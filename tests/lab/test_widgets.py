"""`desp_lab.widgets.SearchWidget` driven in-process, without a browser, against the sandbox STAC catalogue.

Widget values are set as a user would, the Search / Next buttons are clicked with `.click()`, and the results,
the paging and the messages are read back; the selected result opens as an xarray Dataset.
"""

from __future__ import annotations

import datetime as dt

import pystac_client
import pytest

from desp_lab.catalogue import Catalogue
from desp_lab.errors import InvalidParameter, NotFound, ServiceUnavailable
from desp_lab.widgets import SearchWidget, datetime_interval
from tests.support import free_port

ERA5 = "EO.ECMWF.DAT.REANALYSIS_ERA5_SINGLE_LEVELS"
SENTINEL_2 = "EO.ESA.DAT.SENTINEL-2.MSI.L2A"


@pytest.fixture
def catalogue(sandbox_catalogue):
    return Catalogue(url=sandbox_catalogue.stac_url, token=sandbox_catalogue.token)


def plain_ids(stac_url, **search) -> list[str]:
    return [item.id for item in pystac_client.Client.open(stac_url).search(**search).items()]


def test_collections_fill_the_dropdown(catalogue):
    widget = SearchWidget(catalogue=catalogue)
    values = [value for _label, value in widget.collection.options]
    assert values[0] == "" and {ERA5, SENTINEL_2} <= set(values)
    assert widget.error is None and widget.message.value == ""


def test_search_click_shows_results_and_pages(catalogue, sandbox_catalogue):
    expected = plain_ids(sandbox_catalogue.stac_url, collections=[ERA5])
    assert len(expected) >= 2
    widget = SearchWidget(catalogue=catalogue, page_size=1)
    widget.collection.value = ERA5
    widget.search_button.click()
    assert widget.error is None, widget.message.value
    assert [item.id for item in widget.results] == expected[:1]
    assert widget.result_list.options[0][0].startswith(expected[0])
    assert widget.previous_button.disabled and not widget.next_button.disabled
    seen = [item.id for item in widget.results]
    while not widget.next_button.disabled:
        widget.next_button.click()
        seen += [item.id for item in widget.results]
    assert seen == expected
    widget.previous_button.click()
    assert widget.page == len(expected) - 1
    assert widget.code.value.startswith("from desp_lab import catalogue")
    compile(widget.code.value, "<snippet>", "exec")


def test_bbox_and_dates_narrow_the_search(catalogue, sandbox_catalogue):
    widget = SearchWidget(catalogue=catalogue, page_size=50)
    widget.collection.value = SENTINEL_2
    widget.bbox.value = "-180,-90,180,90"
    widget.start_date.value = dt.date(2000, 1, 1)
    widget.end_date.value = dt.date(2099, 12, 31)
    widget.search_button.click()
    assert widget.error is None, widget.message.value
    assert [item.id for item in widget.results] == plain_ids(
        sandbox_catalogue.stac_url, collections=[SENTINEL_2], bbox=[-180, -90, 180, 90],
        datetime="2000-01-01T00:00:00Z/2099-12-31T23:59:59Z",
    )
    assert widget.results
    widget.start_date.value = dt.date(1900, 1, 1)
    widget.end_date.value = dt.date(1900, 1, 2)
    widget.search_button.click()
    assert widget.results == [] and "no items" in widget.message.value


def test_free_text_matches_items(catalogue):
    widget = SearchWidget(catalogue=catalogue, page_size=50)
    widget.text.value = "sentinel"
    widget.search_button.click()
    assert widget.error is None, widget.message.value
    assert widget.results and {item.collection_id for item in widget.results} == {SENTINEL_2}


def test_selected_result_opens_in_xarray(catalogue):
    widget = SearchWidget(catalogue=catalogue)
    widget.collection.value = ERA5
    widget.search_button.click()
    widget.result_list.value = 0
    dataset = widget.selected_dataset()
    assert {"valid_time", "latitude", "longitude"} <= set(dataset.sizes)
    assert widget.to_xarray().sizes == dataset.sizes


def test_orderable_result_is_ordered_then_opened(catalogue):
    widget = SearchWidget(catalogue=catalogue, page_size=100)
    widget.collection.value = "EO.ECMWF.DAT.DT_EXTREMES"
    widget.search_button.click()
    # Other tests of the session may have ordered some already: pick a placeholder still to be ordered.
    widget.result_list.value = next(
        index for index, item in enumerate(widget.results) if item.properties.get("order:status") == "orderable"
    )
    assert "catalogue.order(" in widget.code.value
    dataset = widget.selected_dataset()
    assert {"latitude", "longitude"} <= set(dataset.sizes)
    assert "ready" in widget.message.value


@pytest.mark.parametrize("bbox", ["1,2,3", "a,b,c,d", "10,0,20,95"])
def test_malformed_bbox_is_a_message_not_a_traceback(catalogue, bbox):
    widget = SearchWidget(catalogue=catalogue)
    widget.bbox.value = bbox
    widget.search_button.click()
    assert isinstance(widget.error, InvalidParameter) and widget.error.field == "bbox"
    assert "bbox" in widget.message.value and "Traceback" not in widget.message.value
    assert widget.results == [] and widget.result_list.options == ()


def test_unknown_collection_is_a_message(catalogue):
    widget = SearchWidget(catalogue=catalogue)
    widget.collection.options = [*widget.collection.options, ("gone", "NO.SUCH.COLLECTION")]
    widget.collection.value = "NO.SUCH.COLLECTION"
    widget.search_button.click()
    assert isinstance(widget.error, NotFound)
    assert "NO.SUCH.COLLECTION" in widget.message.value


def test_catalogue_down_is_a_message():
    widget = SearchWidget(catalogue=Catalogue(url=f"http://127.0.0.1:{free_port()}/stac/v2", token="unused"))
    assert isinstance(widget.error, ServiceUnavailable)
    assert "catalogue" in widget.message.value.lower() and "Traceback" not in widget.message.value
    widget.search_button.click()
    assert isinstance(widget.error, ServiceUnavailable) and widget.results == []


def test_selecting_nothing_says_so(catalogue):
    widget = SearchWidget(catalogue=catalogue)
    with pytest.raises(Exception, match="Select a search result"):
        widget.selected_dataset()


def test_datetime_interval():
    assert datetime_interval(None, None) is None
    assert datetime_interval(dt.date(2024, 1, 2), None) == "2024-01-02T00:00:00Z/.."
    assert datetime_interval(None, dt.date(2024, 1, 2)) == "../2024-01-02T23:59:59Z"
