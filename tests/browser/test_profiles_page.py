"""What an admin sees on the profiles pages, in Chromium: edit a profile, and a researcher's spawn page shows it."""

import pytest

from tests.browser.conftest import shot
from tests.e2e.stack import start_hub

pytestmark = pytest.mark.browser

NEW_DESCRIPTION = "3 GB memory now: edited in the browser by an admin."


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    running = start_hub(str(tmp_path_factory.mktemp("browser-profiles")))
    yield running
    running.stop()


def log_in(browser, hub, username, password):
    """A fresh browser context, logged in to the hub through the DESP login form; returns its page."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    page = context.new_page()
    page.goto(hub.url + "/hub/login")
    page.get_by_text("Sign in with DESP").click()
    page.wait_for_selector("input[name=password]")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.locator("input[name=password]").press("Enter")
    page.wait_for_url(f"{hub.url}/hub/**")
    return page


def test_admin_edits_a_profile_and_a_researcher_sees_it_on_the_spawn_page(hub, browser):
    admin = log_in(browser, hub, "admin", "admin-demo")
    admin.goto(hub.url + "/services/profiles/")
    admin.wait_for_selector("#profiles-table")
    assert admin.locator("nav").get_by_text("DESP Hub").is_visible()
    assert admin.locator("#profiles-table tbody tr").count() == 3
    shot(admin, "profiles-1-list")

    admin.click("#edit-standard")
    admin.wait_for_selector("#profile-form")
    assert admin.input_value("#field-mem_limit") == "4G"
    admin.fill("#field-mem_limit", "lots")
    admin.click("#save-profile")
    admin.wait_for_selector("#error-mem_limit")
    assert "expected a size" in admin.inner_text("#error-mem_limit")
    assert admin.input_value("#field-mem_limit") == "lots"  # the input is kept
    shot(admin, "profiles-2-field-error")

    admin.fill("#field-description", NEW_DESCRIPTION)
    admin.fill("#field-mem_limit", "3G")
    admin.click("#save-profile")
    admin.wait_for_selector("#desp-flash")
    assert "Profile Standard (standard) saved" in admin.inner_text("#desp-flash")
    row = admin.locator("#profile-standard")
    assert NEW_DESCRIPTION in row.inner_text() and "3G" in row.inner_text()
    shot(admin, "profiles-3-saved")

    admin.click("nav >> text=Audit")
    admin.wait_for_selector("#audit-table")
    newest = admin.locator("tr.audit-entry").first.inner_text()
    assert "update" in newest and "mem_limit" in newest and "4G" in newest and "3G" in newest
    shot(admin, "profiles-4-audit")
    admin.context.close()

    researcher = log_in(browser, hub, "researcher", "researcher-demo")
    researcher.goto(hub.url + "/hub/spawn")
    researcher.wait_for_selector("input[name=profile]")
    assert researcher.get_by_text(NEW_DESCRIPTION).is_visible()
    shot(researcher, "profiles-5-spawn-page")
    researcher.context.close()
