"""Data access through the whole stack, as `make run` starts it: sandbox IdP, sandbox catalogue and cache, hub.

A researcher logs in, starts a server and, with no configuration of their own, searches the catalogue,
opens a Zarr item lazily, and copies a dataset into their cache area, from a kernel and through the
server extension's REST API. Credentials are the hub's Keycloak token, fetched by the SDK from the hub.
"""

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from tests.e2e.hubclient import HubSession, run_in_kernel
from tests.e2e.stack import start_hub

pytestmark = pytest.mark.timeout(900)

ERA5 = "EO.ECMWF.DAT.REANALYSIS_ERA5_SINGLE_LEVELS"


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    running = start_hub(str(tmp_path_factory.mktemp("hub-data")), with_catalogue=True)
    yield running
    running.stop()
    cluster = Path(running.data_dir, "catalogue", "pg")
    if cluster.is_symlink():  # pytest's 0700 tmp dir: the cluster was kept beside the postgres home
        shutil.rmtree(cluster.resolve(), ignore_errors=True)


@pytest.fixture(scope="module")
def researcher(hub):
    session = HubSession(hub.url, "researcher", "researcher-demo")
    session.login()
    response = session.post_spawn_form("standard")
    assert response.status_code < 400, response.text
    session.wait_ready()
    session.token = session.new_token()
    yield session
    session.stop_server()


def extension_api(session, method, path, **kwargs):
    """The user's server extension through the proxy, with the user's own hub token."""
    headers = {"Authorization": f"token {session.token}"}
    return session.http.request(method, session.url(f"/user/{session.username}/desp/api/{path}"),
                                headers=headers, timeout=120, **kwargs)


def test_server_knows_the_platform_endpoints(hub, researcher):
    environment = json.loads(run_in_kernel(hub.url, "researcher", researcher.token, (
        "import os, json; json.dumps({k: os.environ.get(k, '') for k in "
        "('DESP_CATALOGUE_URL', 'DESP_CACHE_URL', 'DESP_CACHE_QUOTA_BYTES')})"
    )).strip("'"))
    assert environment["DESP_CATALOGUE_URL"].endswith("/stac/v2")
    assert environment["DESP_CACHE_URL"] == os.path.join(hub.data_dir, "user-cache", "researcher")
    assert int(environment["DESP_CACHE_QUOTA_BYTES"]) == 10 * 1024**3
    assert os.path.isdir(environment["DESP_CACHE_URL"])  # created at spawn


def test_search_and_open_a_zarr_item_from_a_kernel(hub, researcher):
    code = (
        "from desp_lab import catalogue\n"
        f"results = catalogue.search(collections=['{ERA5}'], query={{'ecmwf:param': {{'eq': '2t'}}}}, limit=5, max_items=5)\n"
        "ds = catalogue.open_item(results.items[0].collection_id, results.items[0].id)\n"
        "(len(results) > 0, tuple(ds['t2m'].dims), str(ds['t2m'].dtype), ds['t2m'].chunks is not None)"
    )
    result = run_in_kernel(hub.url, "researcher", researcher.token, code, timeout=180)
    assert result == "(True, ('valid_time', 'latitude', 'longitude'), 'float32', True)"


def test_extension_searches_and_copies_into_the_users_cache(hub, researcher):
    collections = extension_api(researcher, "GET", "collections")
    assert collections.status_code == 200, collections.text
    assert ERA5 in {c["id"] for c in collections.json()["collections"]}

    search = extension_api(researcher, "GET", "search", params={"collections": ERA5, "limit": 2})
    assert search.status_code == 200, search.text
    item = search.json()["items"][0]
    assert "catalogue.open_item" in item["code"]

    bad = extension_api(researcher, "GET", "search", params={"collections": ERA5, "bbox": "10,20,5"})
    assert bad.status_code == 400 and bad.json()["field"] == "bbox"

    # copy one Zarr asset of the item (served by the sandbox cache with the user's token) into the cache area
    stac_item = json.loads(run_in_kernel(hub.url, "researcher", researcher.token, (
        "import json; from desp_lab import catalogue\n"
        f"json.dumps(catalogue.Catalogue().item('{item['collection']}', '{item['id']}').to_dict())"
    ), timeout=120).strip("'"))
    source = next(a["href"] for a in stac_item["assets"].values() if "zarr" in a.get("type", ""))
    started = extension_api(researcher, "POST", "cache/requests",
                            json={"source": source, "name": "era5-copy.zarr", "retention_days": 1})
    assert started.status_code == 202, started.text
    request_id = started.json()["id"]
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline:
        status = extension_api(researcher, "GET", f"cache/requests/{request_id}").json()
        if status["status"] != "running":
            break
        time.sleep(1)
    assert status["status"] == "done", status
    assert status["done_bytes"] == status["total_bytes"] > 0

    listing = extension_api(researcher, "GET", "cache").json()
    entry = next(e for e in listing["entries"] if e["name"] == "era5-copy.zarr")
    assert entry["expires"]
    assert os.path.isdir(os.path.join(hub.data_dir, "user-cache", "researcher", "era5-copy.zarr"))
    outside = extension_api(researcher, "GET", "cache", params={"path": "../poweruser"})
    assert outside.status_code == 403
