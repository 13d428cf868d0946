"""The sandbox STAC API, driven over HTTP: landing page, collections, search (GET/POST), paging, query, CQL2 filter,
sortby, errors. Everything runs against the real server from the `sandbox_catalogue` fixture."""

import json

import pytest
import requests

ERA5 = "EO.ECMWF.DAT.REANALYSIS_ERA5_SINGLE_LEVELS"
CLIMATE_DT = "EO.ECMWF.DAT.D1.DT_CLIMATE.G2.PROJECTIONS_SSP3-7.0_IFS-NEMO.R1"
S2 = "EO.ESA.DAT.SENTINEL-2.MSI.L2A"
EXTREMES = "EO.ECMWF.DAT.DT_EXTREMES"
ALL = {ERA5, CLIMATE_DT, S2, EXTREMES}


def get(url, **params):
    response = requests.get(url, params=params, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def post_search(catalogue, body):
    response = requests.post(f"{catalogue.stac_url}/search", json=body, timeout=30)
    assert response.status_code == 200, response.text
    return response.json()


def ids(page):
    return [feature["id"] for feature in page["features"]]


def test_landing_page_and_conformance(sandbox_catalogue):
    landing = get(sandbox_catalogue.stac_url)  # no redirect needed at the bare prefix
    assert landing["type"] == "Catalog"
    rels = {link["rel"]: link["href"] for link in landing["links"]}
    assert rels["search"] == f"{sandbox_catalogue.stac_url}/search"
    conforms = set(get(f"{sandbox_catalogue.stac_url}/conformance")["conformsTo"])
    for needed in ["https://api.stacspec.org/v1.0.0/item-search",
                   "https://api.stacspec.org/v1.1.0/item-search#sort",
                   "https://api.stacspec.org/v1.0.0/item-search#query",
                   "https://api.stacspec.org/v1.0.0-rc.2/item-search#filter",
                   "http://www.opengis.net/spec/cql2/1.0/conf/cql2-text",
                   "http://www.opengis.net/spec/cql2/1.0/conf/cql2-json"]:  # fmt: skip
        assert needed in conforms


def test_collections_have_the_data_lake_ids(sandbox_catalogue):
    collections = get(f"{sandbox_catalogue.stac_url}/collections")["collections"]
    assert {c["id"] for c in collections} == ALL
    era5 = get(f"{sandbox_catalogue.stac_url}/collections/{ERA5}")
    assert set(era5["cube:variables"]) == {"t2m", "msl"}
    assert set(era5["cube:dimensions"]) == {"valid_time", "latitude", "longitude"}
    assert era5["cube:variables"]["t2m"]["dimensions"] == ["valid_time", "latitude", "longitude"]
    climate = get(f"{sandbox_catalogue.stac_url}/collections/{CLIMATE_DT}")
    assert set(climate["cube:variables"]) == {"t2m", "d2m", "u10", "v10", "tprate"}
    s2 = get(f"{sandbox_catalogue.stac_url}/collections/{S2}")
    assert [b["name"] for b in s2["summaries"]["eo:bands"]][:4] == ["B02", "B03", "B04", "B08"]


def test_unknown_collection_is_404(sandbox_catalogue):
    response = requests.get(f"{sandbox_catalogue.stac_url}/collections/EO.NOPE", timeout=10)
    assert response.status_code == 404
    items = requests.get(f"{sandbox_catalogue.stac_url}/collections/EO.NOPE/items", timeout=10)
    assert items.status_code == 404


def test_queryables_are_typed(sandbox_catalogue):
    s2 = get(f"{sandbox_catalogue.stac_url}/collections/{S2}/queryables")["properties"]
    assert s2["eo:cloud_cover"]["type"] == "number"
    era5 = get(f"{sandbox_catalogue.stac_url}/collections/{ERA5}/queryables")["properties"]
    assert era5["ecmwf:param"]["enum"] == ["2t", "msl"]


def test_search_get_and_post_agree(sandbox_catalogue):
    by_get = get(f"{sandbox_catalogue.stac_url}/search", collections=S2, bbox="7.5,45.5,9.5,46.5",
                 datetime="2024-06-01T00:00:00Z/2024-06-20T00:00:00Z", limit=50)  # fmt: skip
    by_post = post_search(sandbox_catalogue, {"collections": [S2], "bbox": [7.5, 45.5, 9.5, 46.5],
                                              "datetime": "2024-06-01T00:00:00Z/2024-06-20T00:00:00Z",
                                              "limit": 50})  # fmt: skip
    assert sorted(ids(by_get)) == sorted(ids(by_post))
    assert len(ids(by_get)) == 4  # two tiles, two of the three dates
    assert all("20240625" not in i for i in ids(by_get))


def test_bbox_excludes_items_elsewhere(sandbox_catalogue):
    page = post_search(sandbox_catalogue, {"collections": [S2], "bbox": [-60, -40, -50, -30]})
    assert page["features"] == []


def follow_pages(catalogue, first_url=None, body=None, first_page=None):
    """All pages of a search, following `next` links exactly as the server gives them."""
    pages = []
    if first_page is not None:
        page = first_page
    elif body is not None:
        page = post_search(catalogue, body)
    else:
        page = get(first_url)
    while True:
        pages.append(page)
        following = [link for link in page["links"] if link["rel"] == "next"]
        if not following:
            return pages
        link = following[0]
        assert link["href"].startswith(f"{catalogue.stac_url}/search")  # right host, port and /stac/v2 prefix
        if link.get("method", "GET") == "POST":
            response = requests.post(link["href"], json=link["body"], timeout=30)
        else:
            response = requests.get(link["href"], timeout=30)
        assert response.status_code == 200, response.text
        page = response.json()


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_paging_visits_every_item_once(sandbox_catalogue, method):
    if method == "GET":
        pages = follow_pages(sandbox_catalogue, f"{sandbox_catalogue.stac_url}/search?collections={EXTREMES}"
                                                "&limit=10&query=" + '{"order:status":{"eq":"orderable"}}')
    else:
        pages = follow_pages(sandbox_catalogue, body={"collections": [EXTREMES], "limit": 10,
                                                      "query": {"order:status": {"eq": "orderable"}}})  # fmt: skip
    seen = [i for page in pages for i in ids(page)]
    assert len(pages) == 3 and [len(ids(p)) for p in pages] == [10, 10, 10]
    assert len(seen) == len(set(seen)) == 30
    assert pages[0]["numberMatched"] == 30


def test_query_extension_on_ecmwf_param(sandbox_catalogue):
    page = post_search(sandbox_catalogue, {"query": {"ecmwf:param": {"eq": "msl"}}, "limit": 100})
    assert {f["collection"] for f in page["features"]} == {ERA5, EXTREMES}
    assert all(f["properties"]["ecmwf:param"] == "msl" for f in page["features"])
    # Orders placed by other tests add ordered items to EXTREMES; count the seeded ones.
    seeded = [f for f in page["features"] if f["properties"].get("order:status", "orderable") == "orderable"]
    assert len(seeded) == 2 + 6
    one = post_search(sandbox_catalogue, {"collections": [CLIMATE_DT], "query": {"ecmwf:param": {"eq": "2d"}}})
    assert [f["properties"]["ecmwf:variable"] for f in one["features"]] == ["2m_dewpoint_temperature"]


@pytest.mark.parametrize("method", ["GET", "POST"])
def test_query_eq_with_a_list_means_any_of_them(sandbox_catalogue, method):
    """The Data Lake HDA's form `{"ecmwf:param": {"eq": [...]}}`, beside another term, across pages."""
    query = {"ecmwf:param": {"eq": ["2t", "msl"]}, "ecmwf:date": {"gte": "20240505"},
             "order:status": {"eq": "orderable"}}  # fmt: skip
    if method == "POST":
        page = post_search(sandbox_catalogue, {"collections": [EXTREMES], "query": query, "limit": 3})
    else:
        page = get(f"{sandbox_catalogue.stac_url}/search", collections=EXTREMES, query=json.dumps(query), limit=3)
    expected = {"DT_EXTREMES_2T_20240505", "DT_EXTREMES_2T_20240506", "DT_EXTREMES_MSL_20240505",
                "DT_EXTREMES_MSL_20240506"}  # fmt: skip
    pages = follow_pages(sandbox_catalogue, first_page=page)  # the next links keep the meaning
    assert [len(ids(p)) for p in pages] == [3, 1]
    assert {i for p in pages for i in ids(p)} == expected


def test_cql2_json_filter(sandbox_catalogue):
    clear = {"op": "<", "args": [{"property": "eo:cloud_cover"}, 20]}
    tile = {"op": "=", "args": [{"property": "s2:mgrs_tile"}, "32TMS"]}
    body = {"collections": [S2], "filter-lang": "cql2-json", "filter": {"op": "and", "args": [clear, tile]}}
    page = post_search(sandbox_catalogue, body)
    assert sorted(f["properties"]["eo:cloud_cover"] for f in page["features"]) == [2.5, 11.0]


def test_cql2_in_filter_selects_several_parameters(sandbox_catalogue):
    """HDA clients ask for several parameters at once; with CQL2 that is `in`."""
    body = {"collections": [CLIMATE_DT], "filter-lang": "cql2-json",
            "filter": {"op": "in", "args": [{"property": "ecmwf:param"}, ["2t", "2d"]]}}  # fmt: skip
    page = post_search(sandbox_catalogue, body)
    assert sorted(f["properties"]["ecmwf:param"] for f in page["features"]) == ["2d", "2t"]


def test_cql2_text_filter_post(sandbox_catalogue):
    body = {"collections": [S2], "filter-lang": "cql2-text", "filter": "eo:cloud_cover < 20 AND s2:mgrs_tile = '32TNS'"}
    page = post_search(sandbox_catalogue, {**body, "limit": 1})
    pages = follow_pages(sandbox_catalogue, first_page=page)
    assert [f["properties"]["eo:cloud_cover"] for p in pages for f in p["features"]] == [0.75]
    broken = requests.post(f"{sandbox_catalogue.stac_url}/search", json={**body, "filter": "eo:cloud_cover <"},
                           timeout=10)  # fmt: skip
    assert broken.status_code == 400 and "cql2-text" in broken.text


def test_cql2_text_filter_get(sandbox_catalogue):
    page = get(f"{sandbox_catalogue.stac_url}/search", collections=EXTREMES, **{"filter-lang": "cql2-text"},
               filter="\"ecmwf:param\" = '10u' AND \"ecmwf:date\" >= '20240504' AND \"order:status\" = 'orderable'")  # fmt: skip
    assert sorted(ids(page)) == ["DT_EXTREMES_10U_20240504", "DT_EXTREMES_10U_20240505", "DT_EXTREMES_10U_20240506"]


@pytest.mark.parametrize("direction", ["asc", "desc"])
def test_sortby_numeric_property(sandbox_catalogue, direction):
    page = post_search(sandbox_catalogue, {"collections": [S2],
                                           "sortby": [{"field": "properties.eo:cloud_cover", "direction": direction}]})
    covers = [f["properties"]["eo:cloud_cover"] for f in page["features"]]
    # numeric order (as text, "11.0" would come before "2.5")
    assert covers == sorted([0.75, 2.5, 11.0, 23.4, 47.25, 88.5], reverse=direction == "desc")
    by_get = get(f"{sandbox_catalogue.stac_url}/search", collections=S2,
                 sortby=("-" if direction == "desc" else "+") + "eo:cloud_cover")  # fmt: skip
    assert [f["properties"]["eo:cloud_cover"] for f in by_get["features"]] == covers


def test_sortby_datetime_desc(sandbox_catalogue):
    sortby = [{"field": "datetime", "direction": "desc"}]
    page = post_search(sandbox_catalogue, {"collections": [ERA5], "sortby": sortby})
    stamps = [f["properties"]["datetime"] for f in page["features"]]
    assert stamps == sorted(stamps, reverse=True) and stamps[0].startswith("2024-01-02")


def test_invalid_search_is_400(sandbox_catalogue):
    response = requests.post(f"{sandbox_catalogue.stac_url}/search", json={"bbox": [10, 50, 0]}, timeout=10)
    assert response.status_code == 400
    response = requests.get(f"{sandbox_catalogue.stac_url}/search", params={"datetime": "yesterday"}, timeout=10)
    assert response.status_code == 400
