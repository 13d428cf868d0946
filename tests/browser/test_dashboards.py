"""The dashboards as people see them in Chromium, through `desp-hub up` with the sandbox catalogue and accounting:
each loads after the hub login, the visualisation map renders and follows the settings (area, time; a click gives
the time series), a share link reproduces them in another browser, a phone-sized screen stays usable, the executive
statistics show platform-wide DCU aggregates to everyone and restricted panels and user names to members of
`executives` only (on the page and on the data endpoints), and no page asks any host but 127.0.0.1 for anything."""

import datetime as dt
import os
import re
import uuid
from urllib.parse import urlsplit

import pytest
import requests

from tests.browser.conftest import shot
from tests.e2e.stack import FAST_REFRESH_CONFIG, start_hub

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]  # two pages of ~20 panels each on a loaded machine

BASE = "/services/dashboards"
PAGE_TIMEOUT_MS = 120_000  # the first session of an app imports Panel, HoloViews, cartopy ... in the service
# Text of a page including Panel's components, which render inside shadow roots (`inner_text` does not see them).
ALL_TEXT_JS = """() => {
  const parts = [];
  const walk = (node) => {
    if (node.nodeType === Node.TEXT_NODE) { parts.push(node.textContent); return; }
    if (node.nodeName === 'STYLE' || node.nodeName === 'SCRIPT') return;
    if (node.shadowRoot) walk(node.shadowRoot);
    for (const child of node.childNodes) walk(child);
  };
  walk(document.body);
  return parts.join(' ');
}"""
# A user name as a word: "executive" alone, not "executives" (the group), "executive statistics" (the title) or
# "executive-statistics" (the IdP role the page names).
EXECUTIVE_NAME = re.compile(r"\bexecutive\b(?![\s-]+statistics)")




@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    running = start_hub(str(tmp_path_factory.mktemp("browser-dashboards")), with_catalogue=True, with_accounting=True,
                        extra_config=FAST_REFRESH_CONFIG)
    yield running
    running.stop()


#: Every URL each page asked for (requests and websockets), by page: checked by `assert_only_local_requests`.
REQUESTED: dict = {}


def log_in(browser, hub, username, password, viewport=(1400, 900)):
    """A fresh browser context logged in to the hub through the DESP login form; returns its page. Every request
    and websocket of the page is recorded in REQUESTED."""
    context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    page = context.new_page()
    urls = REQUESTED.setdefault(page, [])
    context.on("request", lambda request: urls.append(request.url))
    page.on("websocket", lambda websocket: urls.append(websocket.url))
    page.goto(hub.url + "/hub/login")
    page.get_by_text("Sign in with DESP").click()
    page.wait_for_selector("input[name=password]")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.locator("input[name=password]").press("Enter")
    page.wait_for_url(f"{hub.url}/hub/**")
    return page


def all_text(page):
    return page.evaluate(ALL_TEXT_JS)


def assert_only_local_requests(page):
    """Everything the page fetched or connected to (pages, scripts, styles, fonts, websockets) was on 127.0.0.1:
    the dashboards work offline and tell no third party who opens them."""
    urls = REQUESTED[page]
    assert any("/services/dashboards/" in url for url in urls)  # the recording saw the dashboards' requests
    elsewhere = sorted({url for url in urls if urlsplit(url).scheme not in ("data", "blob")
                        and urlsplit(url).hostname != "127.0.0.1"})  # fmt: skip
    assert elsewhere == [], elsewhere


def record_debit(hub, user, profile, amount):
    """A debit in the stack's accounting service, recorded as the hub's metering does (the `desp-metering` service
    account, whose secret `desp-hub up` keeps in its data directory)."""
    from desp_lab.accounting import Accounting

    with open(os.path.join(hub.data_dir, "secrets", "metering_client_secret")) as secret_file:
        secret = secret_file.read().strip()
    token = requests.post(f"{hub.iam_url}/realms/{hub.realm}/protocol/openid-connect/token",
                          data={"grant_type": "client_credentials"}, auth=("desp-metering", secret), timeout=30)
    token.raise_for_status()
    meter = Accounting(hub.accounting_url, token=token.json()["access_token"])
    start = dt.datetime.now(dt.UTC).replace(microsecond=0, tzinfo=None) - dt.timedelta(minutes=30)
    session = f"{user}//{start:%Y-%m-%dT%H:%M:%SZ}"
    meter.record(user, "debit", amount, f"jupyterhub:{session}:{uuid.uuid4().hex}", service="jupyterhub",
                 profile=profile, session=session, period_start=start, period_end=start + dt.timedelta(minutes=10))


def open_executive(page, hub):
    page.goto(f"{hub.url}{BASE}/executive")
    page.get_by_text("DESP executive statistics").first.wait_for()
    page.get_by_text("Users per group").first.wait_for()  # a view's card is drawn
    page.get_by_text("About these statistics").first.wait_for()
    # the charts follow the page (defer_load): wait until no panel is loading any more
    page.wait_for_function("""() => { let loading = 0;
        const walk = (n) => { if (n.shadowRoot) walk(n.shadowRoot); for (const c of n.children || []) walk(c);
                              if (n.classList && n.classList.contains('pn-loading')) loading++; };
        walk(document.body); return loading === 0; }""", polling=500)
    page.get_by_text("At a glance").first.wait_for()


def test_executive_statistics_public_for_a_researcher_restricted_for_executives(hub, browser):
    record_debit(hub, "poweruser", "power", "4.321")  # someone else's use: the public page shows it, unnamed
    executive = log_in(browser, hub, "executive", "executive-demo")
    researcher = log_in(browser, hub, "researcher", "researcher-demo")

    # the index, then the dashboard, through the hub's Services menu link (OAuth without a consent page)
    researcher.goto(f"{hub.url}/hub/home")
    researcher.goto(f"{hub.url}{BASE}/")
    assert researcher.inner_text("#user") == "researcher"
    open_executive(researcher, hub)
    text = all_text(researcher)
    assert "(restricted)" not in text
    named = EXECUTIVE_NAME.search(text)
    assert not named, f"a user name on a public page: ...{text[max(0, named.start() - 300):named.end() + 300]!r}..."
    assert "aggregates only" in text
    # platform-wide DCU, read by the service's statistics account, not the researcher's own (refused) token
    assert "executive-statistics role" not in text
    assert "DCU consumed in the period" in text and "4.321" in text
    assert "poweruser" not in text
    shot(researcher, "dashboards-executive-public")
    for view, status in (("users", 403), ("runs", 403), ("dcu_by_user", 403), ("users_per_group", 200),
                         ("summary", 200), ("dcu_by_profile", 200), ("usage_table", 200)):  # fmt: skip
        response = researcher.request.get(f"{hub.url}{BASE}/executive/data/{view}.json")
        assert response.status == status, (view, response.text()[:300])
        if status == 200:
            assert not EXECUTIVE_NAME.search(response.text())
            assert "poweruser" not in response.text()
    by_profile = researcher.request.get(f"{hub.url}{BASE}/executive/data/dcu_by_profile.json").json()
    assert {row["profile"]: row["dcu"] for row in by_profile}.get("power", 0) >= 4.321
    table = researcher.request.get(f"{hub.url}{BASE}/executive/data/usage_table.csv")
    assert table.status == 200 and "power" in table.text() and "poweruser" not in table.text()
    assert_only_local_requests(researcher)

    open_executive(executive, hub)
    executive.get_by_text("Users (restricted)").first.wait_for()
    executive.get_by_text("researcher").first.wait_for()  # the restricted users table names users
    shot(executive, "dashboards-executive-restricted")
    users = executive.request.get(f"{hub.url}{BASE}/executive/data/users.json")
    assert users.status == 200
    assert {"researcher", "executive"} <= {str(value) for row in users.json() for value in row.values()}
    by_user = executive.request.get(f"{hub.url}{BASE}/executive/data/dcu_by_user.json")
    assert by_user.status == 200 and "poweruser" in by_user.text()
    assert_only_local_requests(executive)
    executive.context.close()
    researcher.context.close()


def map_locator(page):
    """The map: the first Bokeh plot canvas of the page (inside Panel's shadow roots, which locators pierce)."""
    return page.locator(".bk-Canvas canvas, canvas").first


def open_visualisation(page, url):
    page.goto(url)
    page.get_by_text("DESP · Visualisation").first.wait_for()
    canvas = map_locator(page)
    canvas.wait_for()
    page.wait_for_function(
        """() => { const found = [];
                   const walk = (n) => { if (n.shadowRoot) walk(n.shadowRoot);
                                         for (const c of n.children || []) walk(c);
                                         if (n.tagName === 'CANVAS') found.push(n); };
                   walk(document.body);
                   return found.some((c) => c.width > 200 && c.height > 150); }"""
    )
    return canvas


def area_input(page):
    return page.get_by_label("Area: west, south, east, north")


def share_link(page):
    return page.get_by_label("Share link (opens this view read-only)").input_value()


# A signature of the map's image data as the browser holds it (Bokeh's column data sources with an `image`
# column: shape and the sum of the finite values), so a test sees the data change, not only a label.
IMAGE_DATA_JS = """() => {
  const found = [];
  for (const doc of window.Bokeh.documents) {
    for (const model of doc.all_models) {
      const data = model.data;
      if (!data) continue;
      const images = data instanceof Map ? data.get('image') : data.image;
      if (!images || !images.length) continue;
      for (const image of images) {
        const values = image.array ?? image;
        let sum = 0, count = 0;
        for (let i = 0; i < values.length; i++) { const v = values[i]; if (Number.isFinite(v)) { sum += v; count++; } }
        found.push(`${values.length}:${count}:${sum.toFixed(2)}`);
      }
    }
  }
  return found.sort().join('|');
}"""


def image_data(page):
    return page.evaluate(IMAGE_DATA_JS)


def image_data_changes(page, before):
    """Wait until the map's image data differ from `before` (an `image_data` signature); returns the new one."""
    waited = 0
    while waited < PAGE_TIMEOUT_MS:
        now = image_data(page)
        if now and now != before:
            return now
        page.wait_for_timeout(500)
        waited += 500
    raise AssertionError(f"the map's image data did not change from {before!r}")


def map_changes(page, before):
    """Wait until the map's pixels differ from `before` (a PNG of it); returns the new PNG."""
    waited = 0
    while waited < PAGE_TIMEOUT_MS:
        now = map_locator(page).screenshot()
        if now != before:
            return now
        page.wait_for_timeout(500)
        waited += 500
    raise AssertionError("the map did not change")


def test_visualisation_map_follows_the_area_a_share_link_reproduces_it_and_a_phone_can_use_it(hub, browser):
    researcher = log_in(browser, hub, "researcher", "researcher-demo")
    page_url = f"{hub.url}{BASE}/visualisation"
    open_visualisation(researcher, page_url)
    text = all_text(researcher)
    assert "cannot be read" not in text, text[:2000]  # the catalogue answered with the user's own token
    shot(researcher, "dashboards-visualisation-map")
    before = map_locator(researcher).screenshot()

    data_before = image_data(researcher)
    assert data_before, "no image data in the page's Bokeh documents"

    area = area_input(researcher)
    area.fill("(0.0, 40.0, 20.0, 55.0)")
    area.press("Enter")
    after = map_changes(researcher, before)
    assert after != before
    data_region = image_data_changes(researcher, data_before)
    shot(researcher, "dashboards-visualisation-region")

    # another time step (typed into the time picker): the field itself changes, not only the title
    time_input = researcher.get_by_label("Time (UTC)")
    time_input.fill("2024-01-02 06:00:00")
    time_input.press("Enter")
    image_data_changes(researcher, data_region)
    researcher.wait_for_function("""() => [...window.Bokeh.documents].some((doc) => [...doc.all_models].some(
        (model) => typeof model.text === 'string' && model.text === 't2m 2024-01-02 06:00 UTC'))""")  # its title
    link = share_link(researcher)
    assert link.startswith(page_url + "?") and "shared=1" in link and "2024-01-02T06" in link
    shot(researcher, "dashboards-visualisation-time")

    # a click on the map: the time series at that point
    researcher.get_by_text("Click the map for the time series").first.wait_for()
    box = map_locator(researcher).bounding_box()  # Bokeh's event layer above the canvas takes the click
    researcher.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    researcher.wait_for_function(f"() => !({ALL_TEXT_JS})().includes('Click the map for the time series')")
    assert "No time series here" not in all_text(researcher)
    researcher.wait_for_function(
        """() => { const found = [];
                   const walk = (n) => { if (n.shadowRoot) walk(n.shadowRoot);
                                         for (const c of n.children || []) walk(c);
                                         if (n.tagName === 'CANVAS' && n.width > 200 && n.height > 100) found.push(n); };
                   walk(document.body);
                   return found.length >= 2; }""")  # the map and the series' plot
    shot(researcher, "dashboards-visualisation-series")

    # the link in another browser (another user): the same settings, read-only
    other = log_in(browser, hub, "executive", "executive-demo")
    open_visualisation(other, link)
    shared_area = area_input(other)
    assert shared_area.input_value() == area.input_value()
    assert other.get_by_label("Time (UTC)").input_value() == time_input.input_value()
    assert share_link(other) == link
    assert shared_area.is_disabled()
    shot(other, "dashboards-visualisation-shared")
    other.context.close()

    # a phone: the map and the share link fit the screen's width
    phone = log_in(browser, hub, "researcher", "researcher-demo", viewport=(390, 844))
    canvas = open_visualisation(phone, page_url)
    for part in (canvas, phone.get_by_label("Share link (opens this view read-only)")):
        box = part.bounding_box()
        assert box and box["x"] >= 0 and box["x"] + box["width"] <= 390, box
    shot(phone, "dashboards-visualisation-phone")
    for page in (researcher, phone):
        assert_only_local_requests(page)
    phone.context.close()
    researcher.context.close()
