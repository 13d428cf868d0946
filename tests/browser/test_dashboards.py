"""The dashboards as people see them in Chromium, through `desp-hub up` with the sandbox catalogue and accounting:
each loads after the hub login, the visualisation map renders and follows the settings, a share link reproduces them
in another browser, a phone-sized screen stays usable, and the executive statistics show restricted panels and user
names to members of `executives` only (on the page and on the data endpoints)."""

import re

import pytest

from tests.browser.conftest import shot
from tests.e2e.stack import FAST_REFRESH_CONFIG, start_hub

pytestmark = pytest.mark.browser

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


def log_in(browser, hub, username, password, viewport=(1400, 900)):
    """A fresh browser context logged in to the hub through the DESP login form; returns its page."""
    context = browser.new_context(viewport={"width": viewport[0], "height": viewport[1]})
    context.set_default_timeout(PAGE_TIMEOUT_MS)
    page = context.new_page()
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


def open_executive(page, hub):
    page.goto(f"{hub.url}{BASE}/executive")
    page.get_by_text("DESP executive statistics").first.wait_for()
    page.get_by_text("Users per group").first.wait_for()  # a view's card is drawn
    page.get_by_text("About these statistics").first.wait_for()


def test_executive_statistics_public_for_a_researcher_restricted_for_executives(hub, browser):
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
    shot(researcher, "dashboards-executive-public")
    for view, status in (("users", 403), ("runs", 403), ("users_per_group", 200), ("summary", 200)):
        response = researcher.request.get(f"{hub.url}{BASE}/executive/data/{view}.json")
        assert response.status == status, (view, response.text()[:300])
        if status == 200:
            assert not EXECUTIVE_NAME.search(response.text())

    open_executive(executive, hub)
    executive.get_by_text("Users (restricted)").first.wait_for()
    executive.get_by_text("researcher").first.wait_for()  # the restricted users table names users
    shot(executive, "dashboards-executive-restricted")
    users = executive.request.get(f"{hub.url}{BASE}/executive/data/users.json")
    assert users.status == 200
    assert {"researcher", "executive"} <= {str(value) for row in users.json() for value in row.values()}
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

    area = area_input(researcher)
    area.fill("(0.0, 40.0, 20.0, 55.0)")
    area.press("Enter")
    after = map_changes(researcher, before)
    assert after != before
    link = share_link(researcher)
    assert link.startswith(page_url + "?") and "shared=1" in link
    shot(researcher, "dashboards-visualisation-region")

    # the link in another browser (another user): the same settings, read-only
    other = log_in(browser, hub, "executive", "executive-demo")
    open_visualisation(other, link)
    shared_area = area_input(other)
    assert shared_area.input_value() == area.input_value()
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
    phone.context.close()
    researcher.context.close()
