"""Through the hub, in Chromium: a metered session's status bar shows the balance, and it drops as the session runs.

`desp-hub up` with the sandbox accounting service and a 3-second metering interval; the user logs in, starts the
Power profile (4 DCU per hour: 0.003 DCU per interval) and watches JupyterLab's status bar, which the server
extension refreshes every second. Nothing but the hub's metering debits the account here.
"""

import re
from decimal import Decimal

import pytest

from tests.browser.conftest import shot
from tests.e2e.stack import FAST_REFRESH_CONFIG, start_hub

pytestmark = [pytest.mark.browser, pytest.mark.timeout(600)]

STATUS = "[data-testid=desp-balance-status]"
BALANCE_TEXT = re.compile(r"DCU (-?\d+\.\d{3}) · session (\d+\.\d{3})")
FAST_STATUS_CONFIG = FAST_REFRESH_CONFIG + (
    "c.DespLocalSpawner.args.append('--DespLabExtension.status_refresh_seconds=1')\n"
)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    running = start_hub(str(tmp_path_factory.mktemp("metered-hub")), with_accounting=True, metering_interval=3,
                        extra_config=FAST_STATUS_CONFIG)  # fmt: skip
    yield running
    running.stop()


def status_numbers(page) -> tuple[Decimal, Decimal]:
    text = page.locator(STATUS).inner_text()
    match = BALANCE_TEXT.search(text)
    assert match, f"status bar shows {text!r}"
    return Decimal(match[1]), Decimal(match[2])


def wait_for_status_below(page, available: Decimal, timeout_ms: int = 90_000) -> None:
    page.wait_for_function(
        """([selector, limit]) => {
             const match = /DCU (-?\\d+\\.\\d{3}) · session/.exec(document.querySelector(selector)?.textContent ?? '');
             return match !== null && parseFloat(match[1]) < limit;
           }""",
        arg=[STATUS, float(available)],
        timeout=timeout_ms,
    )


def test_status_bar_balance_drops_as_the_metered_session_runs(hub, browser):
    page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
    page.goto(hub.url + "/hub/login")
    page.get_by_text("Sign in with DESP").click()
    page.fill("input[name=username]", "poweruser")
    page.fill("input[name=password]", "poweruser-demo")
    page.locator("input[name=password]").press("Enter")
    page.wait_for_selector("input[name=profile]")
    page.check("#profile-power")
    page.locator("form#spawn_form input[type=submit], form#spawn_form button[type=submit]").first.click()
    page.wait_for_selector(".jp-LabShell", timeout=120_000)

    page.wait_for_function(
        "s => /DCU -?\\d+\\.\\d{3} · session/.test(document.querySelector(s)?.textContent ?? '')",
        arg=STATUS, timeout=60_000,
    )  # fmt: skip
    first_available, first_cost = status_numbers(page)
    assert first_available <= Decimal("100.000")  # the sandbox's opening balance, less what is metered already
    tooltip = page.locator(STATUS).get_attribute("title")
    assert "power" in tooltip and "4" in tooltip  # profile and its price per hour

    wait_for_status_below(page, first_available)
    later_available, later_cost = status_numbers(page)
    assert later_available < first_available and later_cost > first_cost
    # What the user sees is what the ledger holds: the balance fell by what the session cost, from 100.000.
    assert later_available + later_cost == Decimal("100.000")
    shot(page, "metered-session-status-bar")

    page.goto(hub.url + "/hub/home")
    page.click("#stop")
    page.wait_for_selector("#start", state="visible", timeout=60_000)
    page.context.close()

