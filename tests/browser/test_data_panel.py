"""The "DESP Data" sidebar of JupyterLab, in Chromium, against real processes.

A real `jupyter lab` runs as a child process with the installed `@desp/lab` front end and the desp_lab server
extension (both from the installed package: nothing is passed on the command line), token auth on 127.0.0.1, the
environment a user server gets from the hub pointing at the sandbox STAC catalogue (`sandbox_catalogue`) and a
fresh local cache area. In the browser: open a notebook, open the sidebar, a bad bounding box is refused naming
the field, search ERA5, page through all collections, insert the item's code below the active cell, run it, and the
dataset's repr with its dimensions appears; copy the item to my cache and find it in the cache browser with its
retention. A second server whose catalogue is down shows a clear message in the panel, never a traceback.
"""

from __future__ import annotations

import json
import os
import re
import sys
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

from tests.browser.conftest import shot
from tests.support import ManagedProcess, free_port, wait_for_http

pytestmark = pytest.mark.browser

ERA5 = "EO.ECMWF.DAT.REANALYSIS_ERA5_SINGLE_LEVELS"
TOKEN = "desp-data-panel-test-token"
NOTEBOOK = "analysis.ipynb"
PAGE_SIZE = 10  # what the panel asks for (extensions/lab/src/panel.tsx PAGE_SIZE)


class Lab:
    """A `jupyter lab` child process: token auth, 127.0.0.1, a free port, private settings and workspaces."""

    def __init__(self, directory: Path, env: dict[str, str]):
        self.directory = directory
        self.root = directory / "work"
        self.root.mkdir(parents=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        full_env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("JUPYTERHUB_", "DESP_", "JUPYTER_", "JUPYTERLAB_"))
        }
        full_env.update(
            JUPYTER_CONFIG_DIR=str(directory / "config"),  # ~/.jupyter cannot interfere; sys.prefix config applies
            JUPYTER_RUNTIME_DIR=str(directory / "runtime"),
            JUPYTERLAB_SETTINGS_DIR=str(directory / "lab-settings"),
            JUPYTERLAB_WORKSPACES_DIR=str(directory / "lab-workspaces"),
            **env,
        )
        args = [
            sys.executable, "-m", "jupyterlab", "--no-browser",
            "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={self.port}", "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={TOKEN}", f"--ServerApp.root_dir={self.root}",
        ]  # fmt: skip
        if os.geteuid() == 0:
            args.append("--allow-root")
        self.process = ManagedProcess("jupyter-lab", args, directory / "jupyter-lab.log", env=full_env, cwd=self.root)
        wait_for_http(f"{self.url}/api/status", timeout=90, process=self.process)

    def api(self, method: str, path: str, body=None):
        """JSON answer of one authenticated request to the server (`path` below the base URL)."""
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(
            f"{self.url}/{path}", data=data, method=method,
            headers={"Authorization": f"token {TOKEN}", "Content-Type": "application/json"},
        )  # fmt: skip
        with urllib.request.urlopen(request, timeout=120) as response:
            return json.loads(response.read() or b"null")

    def desp_search(self, **params) -> dict:
        """What the panel's search asks the REST API (GET desp/api/search)."""
        return self.api("GET", "desp/api/search?" + urllib.parse.urlencode(params))

    def create_notebook(self, name: str, first_cell: str) -> None:
        notebook = {
            "cells": [{"cell_type": "code", "source": first_cell, "metadata": {}, "outputs": [], "execution_count": None}],
            "metadata": {"kernelspec": {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}},
            "nbformat": 4,
            "nbformat_minor": 5,
        }
        self.api("PUT", f"api/contents/{name}", {"type": "notebook", "format": "json", "content": notebook})

    def stop(self) -> None:
        self.process.stop()


def open_lab(browser, lab: Lab, path: str = ""):
    """A fresh browser page on JupyterLab (logged in with the token), the DESP Data sidebar opened."""
    context = browser.new_context(viewport={"width": 1500, "height": 1000})
    page = context.new_page()
    target = f"/lab/tree/{path}" if path else "/lab"
    page.goto(f"{lab.url}{target}?token={TOKEN}")
    tab = page.locator('li[data-id="desp-data-panel"]')
    tab.wait_for(timeout=90_000)
    assert tab.get_attribute("title") == "DESP Data"
    tab.click()
    page.wait_for_selector("[data-testid=desp-data-panel] [data-testid=desp-search-button]")
    return page


def shown_ids(page) -> list[str]:
    return [row.get_attribute("data-item-id") for row in page.locator("[data-testid=desp-result]").all()]


def wait_for_results_page(page, number: int) -> None:
    page.wait_for_function(
        "n => { const l = document.querySelector('[data-testid=desp-page-label]');"
        " const b = document.querySelector('[data-testid=desp-search-button]');"
        " return l && l.textContent.startsWith('page ' + n) && b && !b.disabled; }",
        arg=number,
        timeout=120_000,
    )


def thumbnails_loaded(page, items: list[dict]) -> int:
    """Wait until every shown item that has a thumbnail displays it (fetched through the server's proxy: the
    browser has no catalogue token); returns how many there are."""
    with_thumbnail = [item["id"] for item in items if item["thumbnail"]]
    for item_id in with_thumbnail:
        image = page.locator(f'[data-testid=desp-result][data-item-id="{item_id}"] [data-testid=desp-thumbnail]')
        image.scroll_into_view_if_needed()  # thumbnails load lazily, when scrolled into view
        page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=image.element_handle(), timeout=60_000)
    return len(with_thumbnail)


@pytest.fixture
def lab(sandbox_catalogue, tmp_path):
    cache_area = tmp_path / "my-cache"  # this user's cache area (the hub sets a per-user one)
    cache_area.mkdir()
    running = Lab(
        tmp_path / "lab",
        {
            "DESP_CATALOGUE_URL": sandbox_catalogue.stac_url,
            "DESP_CACHE_URL": str(cache_area),
            "DESP_ACCESS_TOKEN": sandbox_catalogue.token,
        },
    )
    running.cache_area = cache_area
    yield running
    running.stop()


def test_search_insert_code_run_it_and_copy_to_my_cache(lab, browser, sandbox_catalogue):
    import xarray

    lab.create_notebook(NOTEBOOK, "print('first cell')")
    page = open_lab(browser, lab, NOTEBOOK)
    page.wait_for_selector(".jp-NotebookPanel .jp-Cell")
    page.wait_for_selector(f'[data-testid=desp-collection] option[value="{ERA5}"]', state="attached", timeout=60_000)
    shot(page, "data-panel-1-open")

    # A bounding box that is not four numbers: refused by the server, the panel names the field.
    page.select_option("[data-testid=desp-collection]", ERA5)
    page.fill("[data-testid=desp-bbox-west]", "0")
    page.fill("[data-testid=desp-bbox-south]", "forty")
    page.fill("[data-testid=desp-bbox-east]", "20")
    page.fill("[data-testid=desp-bbox-north]", "60")
    page.click("[data-testid=desp-search-button]")
    message = page.locator("[data-testid=desp-search-message]")
    message.wait_for(timeout=60_000)
    assert message.get_attribute("data-field") == "bbox"
    assert message.inner_text().startswith("Invalid bbox")
    assert "Traceback" not in message.inner_text()
    assert page.get_attribute("[data-testid=desp-bbox-south]", "aria-invalid") == "true"
    shot(page, "data-panel-2-bad-bbox")

    # ERA5 over Europe on 2 January 2024, free text "temperature": what the REST API answers is what the panel lists.
    page.fill("[data-testid=desp-bbox-south]", "40")
    page.fill("[data-testid=desp-date-from]", "2024-01-02")
    page.fill("[data-testid=desp-date-to]", "2024-01-02")
    page.fill("[data-testid=desp-text]", "temperature")
    page.click("[data-testid=desp-search-button]")
    wait_for_results_page(page, 1)
    expected = lab.desp_search(
        collections=ERA5, bbox="0,40,20,60", datetime="2024-01-02T00:00:00Z/2024-01-02T23:59:59Z", q="temperature",
        limit=PAGE_SIZE, page=1,
    )  # fmt: skip
    assert expected["items"], "the sandbox has ERA5 items on 2024-01-02"
    assert shown_ids(page) == [item["id"] for item in expected["items"]]
    assert all(item["collection"] == ERA5 and item["datetime"].startswith("2024-01-02") for item in expected["items"])
    assert all("2T" in item["id"].upper() for item in expected["items"])
    assert message.count() == 0  # the earlier error is gone
    item = expected["items"][0]
    row = page.locator(f'[data-testid=desp-result][data-item-id="{item["id"]}"]')
    assert row.locator("[data-testid=desp-result-id]").inner_text() == item["id"]
    assert row.locator("[data-testid=desp-result-time]").inner_text().startswith("2024-01-02")
    assert row.locator("[data-testid=desp-footprint] polygon").count() >= 1  # the global footprint, drawn
    shot(page, "data-panel-3-results")

    # Insert code: a new code cell below the active (first) cell holding the item's snippet.
    row.locator("[data-testid=desp-insert-code]").click()
    notice = page.locator("[data-testid=desp-notice]")
    notice.wait_for()
    assert f"Inserted code for {item['id']} into {NOTEBOOK}" in notice.inner_text()
    cells = page.locator(".jp-NotebookPanel .jp-Notebook .jp-Cell")
    assert cells.count() == 2
    assert "print('first cell')" in cells.nth(0).locator(".jp-InputArea-editor").inner_text()
    inserted = cells.nth(1)
    assert "jp-mod-active" in (inserted.get_attribute("class") or "")
    source = inserted.locator(".jp-InputArea-editor").inner_text()
    assert "from desp_lab import catalogue" in source and item["id"] in source and ERA5 in source

    # Run it: the dataset's repr appears with the ERA5 dimensions; the grid is the sample store's.
    page.click(".jp-NotebookPanel-toolbar [data-command='notebook:run-cell-and-select-next']")
    output = inserted.locator(".jp-OutputArea-output")
    output.first.wait_for(timeout=180_000)
    page.wait_for_function(
        "el => /valid_time|Error/.test(el.innerText)", arg=output.first.element_handle(), timeout=180_000
    )
    text = output.first.inner_text()
    assert "Error" not in text, text
    assert "xarray.Dataset" in text
    store = next(Path(sandbox_catalogue.cache_dir).glob("era5/*.zarr"))
    with xarray.open_zarr(store) as on_disk:
        lat, lon = on_disk.sizes["latitude"], on_disk.sizes["longitude"]
    # The HTML repr lists the dimensions as "name: size" items, in the dataset's order.
    dims = output.first.locator(".xr-dim-list li").all_inner_texts()
    sizes = {name.strip(): int(size) for name, size in (dim.split(":") for dim in dims)}
    assert list(sizes) == ["valid_time", "latitude", "longitude"]
    assert sizes["latitude"] == lat and sizes["longitude"] == lon and sizes["valid_time"] >= 1
    assert "t2m" in text and "(valid_time, latitude, longitude)" in text
    shot(page, "data-panel-4-code-ran")

    # Copy to my cache: a retention of 0 days is refused by the server, naming the field.
    row.locator("[data-testid=desp-retention-days]").fill("0")
    row.locator("[data-testid=desp-copy-to-cache]").click()
    copy_message = row.locator("[data-testid=desp-copy-message]")
    copy_message.wait_for(timeout=60_000)
    assert copy_message.get_attribute("data-field") == "retention_days"
    assert copy_message.inner_text().startswith("Invalid retention_days")
    assert row.locator("[data-testid=desp-retention-days]").get_attribute("aria-invalid") == "true"
    assert not any(path.is_file() for path in lab.cache_area.rglob("*.zarr/*"))

    # Kept 3 days: progress until done, then the copy is in the cache browser with its retention.
    row.locator("[data-testid=desp-retention-days]").fill("3")
    row.locator("[data-testid=desp-copy-to-cache]").click()
    status = row.locator("[data-testid=desp-copy-status]")
    status.wait_for(timeout=60_000)
    page.wait_for_function(
        "el => el.dataset.status !== 'running'", arg=status.element_handle(), timeout=180_000
    )
    assert status.get_attribute("data-status") == "done", row.inner_text()
    assert status.inner_text().startswith("copied ")
    shot(page, "data-panel-5-copied")
    copied = [path for path in lab.cache_area.rglob("*") if path.is_file() and not path.name.startswith(".")]
    assert copied, "the copy is in the user's cache area on disk"

    page.click("[data-testid=desp-tab-cache]")
    usage = page.locator("[data-testid=desp-cache-usage]")
    usage.wait_for()
    assert re.search(r"\d", usage.inner_text()) and "of 10.0 GiB used" in usage.inner_text()
    # Down the folders to the copied dataset: each level is a folder until the copy itself.
    page.locator(f'[data-testid=desp-cache-entry][data-path="{ERA5}"]').wait_for()
    page.click(f'[data-testid=desp-cache-entry][data-path="{ERA5}"] [data-testid=desp-cache-open]')
    item_folder = page.locator(f'[data-testid=desp-cache-entry][data-path="{ERA5}/{item["id"]}"]')
    item_folder.wait_for()
    item_folder.locator("[data-testid=desp-cache-open]").click()
    entry = page.locator("[data-testid=desp-cache-entry]").first
    page.wait_for_function(
        "p => { const e = document.querySelector('[data-testid=desp-cache-entry]');"
        " return e && e.dataset.path.startsWith(p); }",
        arg=f"{ERA5}/{item['id']}/",
    )
    assert re.search(r"expires \d{4}-\d{2}-\d{2} \(in (3 d|7\d h)\)", entry.locator("[data-testid=desp-cache-expires]").inner_text())
    assert re.search(r"\d", entry.locator("[data-testid=desp-cache-size]").inner_text())
    assert page.inner_text("[data-testid=desp-cache-path]").replace(" ", "") == f"mycache/{ERA5}/{item['id']}"
    shot(page, "data-panel-6-my-cache")
    page.click("[data-testid=desp-cache-up]")
    item_folder.wait_for()

    # Paging through all collections: page 2 is what the API says page 2 is.
    page.click("[data-testid=desp-tab-search]")
    page.select_option("[data-testid=desp-collection]", "")
    for name in ("west", "south", "east", "north"):
        page.fill(f"[data-testid=desp-bbox-{name}]", "")
    page.fill("[data-testid=desp-date-from]", "")
    page.fill("[data-testid=desp-date-to]", "")
    page.fill("[data-testid=desp-text]", "")
    page.click("[data-testid=desp-search-button]")
    wait_for_results_page(page, 1)
    first = lab.desp_search(limit=PAGE_SIZE, page=1)
    assert first["next_page"] == 2, "the sandbox catalogue holds more than one page of items"
    assert shown_ids(page) == [entry["id"] for entry in first["items"]]
    assert page.is_disabled("[data-testid=desp-prev-page]")
    page.click("[data-testid=desp-next-page]")
    wait_for_results_page(page, 2)
    second = lab.desp_search(limit=PAGE_SIZE, page=2)
    assert shown_ids(page) == [entry["id"] for entry in second["items"]]
    assert not set(shown_ids(page)) & {entry["id"] for entry in first["items"]}
    thumbnails = thumbnails_loaded(page, second["items"])
    shot(page, "data-panel-7-page-2")
    page.click("[data-testid=desp-prev-page]")
    wait_for_results_page(page, 1)
    assert shown_ids(page) == [entry["id"] for entry in first["items"]]
    thumbnails += thumbnails_loaded(page, first["items"])
    assert thumbnails, "the sandbox's Sentinel-2 items have thumbnails"

    # Saved, the notebook holds the snippet the API gave, exactly, below the first cell.
    page.click(".jp-NotebookPanel-toolbar [data-command='docmanager:save']")
    page.wait_for_selector(".lm-TabBar-tab.jp-mod-dirty", state="detached")
    saved = lab.api("GET", f"api/contents/{NOTEBOOK}")["content"]["cells"]
    assert "".join(saved[1]["source"]) == item["code"]
    assert saved[1]["cell_type"] == "code" and saved[1]["outputs"]

    # With no notebook open, "Insert code" says so instead of doing anything.
    page.locator(".lm-TabBar-tab", has_text=NOTEBOOK).locator(".lm-TabBar-tabCloseIcon").click()
    page.wait_for_selector(".jp-NotebookPanel", state="detached")
    page.locator("[data-testid=desp-insert-code]").first.click()
    assert "Open a notebook first" in page.inner_text("[data-testid=desp-notice]")
    assert page.get_attribute("[data-testid=desp-notice]", "role") == "alert"
    shot(page, "data-panel-8-no-notebook")
    page.context.close()


def test_catalogue_down_shows_a_clear_message(browser, tmp_path):
    closed_port = free_port()  # nothing listens there
    cache_area = tmp_path / "my-cache"
    cache_area.mkdir()
    lab = Lab(
        tmp_path / "lab",
        {
            "DESP_CATALOGUE_URL": f"http://127.0.0.1:{closed_port}/stac/v2",
            "DESP_CACHE_URL": str(cache_area),
            "DESP_ACCESS_TOKEN": "not-needed-the-catalogue-is-down",
        },
    )
    try:
        page = open_lab(browser, lab)
        message = page.locator("[data-testid=desp-search-message]")
        message.wait_for(timeout=60_000)  # the collection list could not be loaded
        page.click("[data-testid=desp-search-button]")
        page.wait_for_function(
            "() => !document.querySelector('[data-testid=desp-search-button]').disabled", timeout=60_000
        )
        text = message.inner_text()
        assert f"The catalogue at http://127.0.0.1:{closed_port}/stac/v2 is not available right now" in text, text
        assert "Traceback" not in text and "File \"" not in text
        assert message.get_attribute("role") == "alert"
        assert page.locator("[data-testid=desp-result]").count() == 0
        shot(page, "data-panel-9-catalogue-down")
        # The cache area does not depend on the catalogue: it still opens, empty.
        page.click("[data-testid=desp-tab-cache]")
        page.locator("[data-testid=desp-cache-empty]").wait_for()
        assert re.match(r"\d+ B of 10.0 GiB used", page.inner_text("[data-testid=desp-cache-usage]"))
        page.context.close()
    finally:
        lab.stop()
