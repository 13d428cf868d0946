"""What a person sees: the hub's login page, the DESP login form, the profile form, JupyterLab — in Chromium."""

import pytest

from tests.browser.conftest import shot
from tests.e2e.stack import start_hub

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    running = start_hub(str(tmp_path_factory.mktemp("browser-hub")))
    yield running
    running.stop()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    yield context.new_page()
    context.close()


def test_login_choose_profile_and_land_in_jupyterlab(hub, page):
    page.goto(hub.url + "/hub/login")
    page.get_by_text("Sign in with DESP").click()
    page.wait_for_selector("input[name=password]")
    assert "DESP" in page.content()
    shot(page, "1-desp-login-form")
    page.fill("input[name=username]", "poweruser")
    page.fill("input[name=password]", "poweruser-demo")
    page.locator("input[name=password]").press("Enter")

    page.wait_for_selector("input[name=profile]")
    offered = page.locator("input[name=profile]").evaluate_all("inputs => inputs.map(i => i.value)")
    assert offered == ["standard", "power"]
    assert page.is_visible("text=Standard") and page.is_visible("text=Power")
    shot(page, "2-profile-form")
    page.check("#profile-power")
    page.locator("form#spawn_form input[type=submit], form#spawn_form button[type=submit]").first.click()

    page.wait_for_selector(".jp-LabShell", timeout=120_000)
    page.wait_for_selector(".jp-Launcher", timeout=60_000)
    assert "/user/poweruser/lab" in page.url
    page.wait_for_timeout(1500)  # the news prompt, if enabled, shows shortly after start-up
    assert not page.get_by_text("official Jupyter news").is_visible(), "Lab's news pop-up must be off"
    assert shot(page, "3-jupyterlab").stat().st_size > 10_000

    page.goto(hub.url + "/hub/home")
    page.click("#stop")
    page.wait_for_selector("#start", state="visible", timeout=60_000)
