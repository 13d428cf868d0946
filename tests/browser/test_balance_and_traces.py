"""The DCU balance in JupyterLab's status bar and the "DESP Traces" sidebar, in Chromium, against real processes.

A real `jupyter lab` runs with the installed `@desp/lab` front end and the desp_lab server extension, token auth on
127.0.0.1, and the environment a user server gets from the hub: the sandbox accounting service
(`sandbox_accounting`), a sandbox trace service trusting the same IdP, `DESP_SESSION_ID`, `DESP_PROFILE`,
`DESP_DCU_PER_HOUR` and the researcher's access token; the status bar refreshes every 2 s (the server extension's
`status_refresh_seconds`, from the user's config). In the browser: the status bar shows the balance; the test then
records debits for the session as the metering service would, and the balance drops and the session's cost rises
on screen. In the Traces panel a file is traced and registered, verifies OK, and after the test changes one byte,
"Verify this file" from the file browser's context menu reports the mismatch; "Trace this file" traces another;
both commands are in the palette. A server without accounting shows no balance at all; one whose accounting service
is down shows "DCU ?" and why in the tooltip. Screenshots of the status bar are kept in the test's tmp dir (and the
pages in test-artifacts/).
"""

from __future__ import annotations

import json
import re
import uuid
from decimal import Decimal

import blake3
import pytest

from desp_lab.accounting import Accounting
from tests.browser.conftest import shot
from tests.browser.test_data_panel import TOKEN, Lab
from tests.conftest_catalogue import make_data_dir
from tests.conftest_traces import TracesProcess
from tests.support import free_port

pytestmark = pytest.mark.browser
PlaywrightTimeout = pytest.importorskip("playwright.sync_api").TimeoutError

USER = "researcher"
REFRESH_SECONDS = 2
STATUS = "[data-testid=desp-balance-status]"


@pytest.fixture(scope="module")
def trace_service(sandbox_accounting):
    """A sandbox trace service trusting the accounting fixture's IdP (one user token for both services)."""
    service = TracesProcess(make_data_dir("desp-browser-traces-"), sandbox_accounting.idp.jwks_url,
                            sandbox_accounting.idp.issuer).start()  # fmt: skip
    yield service
    service.stop()


def start_lab(directory, env: dict) -> Lab:
    """A `jupyter lab` whose user config refreshes the status bar every REFRESH_SECONDS."""
    config = directory / "config"
    config.mkdir(parents=True)
    (config / "jupyter_server_config.json").write_text(
        json.dumps({"DespLabExtension": {"status_refresh_seconds": REFRESH_SECONDS}})
    )
    return Lab(directory, env)


@pytest.fixture
def session_id():
    return f"{USER}/browser-{uuid.uuid4().hex[:8]}/2026-11-26T00:00:00Z"


@pytest.fixture
def lab(sandbox_accounting, trace_service, session_id, tmp_path):
    running = start_lab(
        tmp_path / "lab",
        {
            "DESP_ACCOUNTING_URL": sandbox_accounting.url,
            "DESP_TRACE_URL": trace_service.url,
            "DESP_SESSION_ID": session_id,
            "DESP_PROFILE": "standard",
            "DESP_DCU_PER_HOUR": "1.5",
            "DESP_ACCESS_TOKEN": sandbox_accounting.token_for(USER),
        },
    )
    yield running
    running.stop()


def open_lab(browser, lab: Lab):
    context = browser.new_context(viewport={"width": 1500, "height": 1000})
    page = context.new_page()
    page.goto(f"{lab.url}/lab?token={TOKEN}")
    page.locator("#jp-main-statusbar").wait_for(timeout=90_000)
    return page


def wait_for_session_cost(page, cost: str) -> None:
    page.wait_for_function(
        "([selector, cost]) => { const e = document.querySelector(selector);"
        " return e && e.dataset.state === 'ok' && e.dataset.sessionCost === cost; }",
        arg=[STATUS, cost],
        timeout=60_000,
    )


def test_status_bar_balance_drops_as_the_session_runs(lab, browser, sandbox_accounting, session_id, tmp_path):
    user_accounting = Accounting(url=sandbox_accounting.url, token=lambda: sandbox_accounting.token_for(USER))
    before = user_accounting.account(USER)
    page = open_lab(browser, lab)
    status = page.locator(STATUS)
    wait_for_session_cost(page, "0.000")
    assert status.is_visible()
    first_text = status.inner_text()
    assert re.fullmatch(r"DCU -?\d+\.\d{3} · session 0\.000", first_text), first_text
    shown = Decimal(status.get_attribute("data-available"))
    # What the accounting service says (others may debit this user meanwhile: read again after).
    after = user_accounting.account(USER)
    assert after["available"] <= shown <= before["available"]
    assert first_text == f"DCU {status.get_attribute('data-available')} · session 0.000"
    tooltip = status.get_attribute("title")
    assert f"DESP account {USER}" in tooltip and "standard, price 1.500 DCU per hour" in tooltip
    assert ("advance payment" in tooltip) == (after["mode"] == "advance")
    assert session_id in tooltip and f"every {REFRESH_SECONDS} s" in tooltip
    status.screenshot(path=str(tmp_path / "status-bar-1-start.png"))
    shot(page, "balance-1-status-bar")

    # The metering service records this session's first intervals: the status bar follows by itself.
    meter = Accounting(url=sandbox_accounting.url, token=sandbox_accounting.meter_token)
    for index, amount in enumerate(("0.125", "0.625")):
        meter.record(USER, "debit", amount, f"jupyterhub:browser:{session_id}:{index}", service="jupyterhub",
                     profile="standard", session=session_id)  # fmt: skip
    wait_for_session_cost(page, "0.750")
    dropped = Decimal(status.get_attribute("data-available"))
    assert shown - dropped >= Decimal("0.750"), (shown, dropped)
    assert status.inner_text() == f"DCU {status.get_attribute('data-available')} · session 0.750"
    page.locator("#jp-main-statusbar").screenshot(path=str(tmp_path / "status-bar-2-after-debits.png"))
    status.screenshot(path=str(tmp_path / "status-bar-2-item.png"))
    shot(page, "balance-2-after-debits")
    assert (tmp_path / "status-bar-2-after-debits.png").stat().st_size > 0
    page.context.close()


def run_from_context_menu(page, name: str, command: str) -> None:
    """Right-click `name` in the file browser and pick `command` (a right-click lost under load is repeated)."""
    page.locator('li[data-id="filebrowser"]').click()
    item = page.locator(".jp-DirListing-item", has_text=name)
    item.wait_for(timeout=90_000)
    entry = page.locator(f'.lm-Menu-item[data-command="{command}"]')
    for attempt in range(3):
        item.click(button="right")
        try:
            entry.wait_for(timeout=15_000)
            break
        except PlaywrightTimeout:
            page.keyboard.press("Escape")
    entry.click()


def test_traces_panel_traces_verifies_and_reports_a_changed_byte(lab, browser):
    name = f"output-{uuid.uuid4().hex[:6]}.bin"
    data = uuid.uuid4().bytes * 4096
    (lab.root / name).write_bytes(data)
    other = f"other-{uuid.uuid4().hex[:6]}.txt"
    (lab.root / other).write_bytes(b"another product")
    page = open_lab(browser, lab)
    tab = page.locator('li[data-id="desp-traces-panel"]')
    tab.wait_for(timeout=90_000)
    assert tab.get_attribute("title") == "DESP Traces"
    # The commands are in the command palette, under DESP.
    palette = page.locator("#command-palette")
    for attempt in range(3):
        if not palette.locator("input").is_visible():  # a late first press may have opened it: don't toggle it shut
            page.keyboard.press("Control+Shift+C")
        try:
            palette.locator("input").wait_for(timeout=15_000)
            break
        except PlaywrightTimeout:
            pass
    palette.locator("input").fill("this file")
    for label in ("Trace this file", "Verify this file"):
        palette.locator(".lm-CommandPalette-item", has_text=label).first.wait_for(timeout=60_000)
    page.keyboard.press("Escape")
    tab.click()
    panel = page.locator("[data-testid=desp-traces-panel]")
    panel.locator("[data-testid=desp-trace-path]").fill(name)
    assert panel.locator("[data-testid=desp-trace-send]").is_checked()
    panel.locator("[data-testid=desp-trace-button]").click()
    result = panel.locator("[data-testid=desp-trace-result][data-kind=trace]")
    result.wait_for(timeout=60_000)
    digest = blake3.blake3(data).hexdigest()
    assert panel.locator("[data-testid=desp-trace-hash]").inner_text() == digest
    assert result.get_attribute("data-sent") == "true"
    trace_id = panel.locator("[data-testid=desp-trace-id]").inner_text()
    assert trace_id
    shot(page, "traces-1-traced")

    panel.locator("[data-testid=desp-verify-button]").click()
    verdict = panel.locator("[data-testid=desp-trace-result][data-kind=verify]")
    verdict.wait_for(timeout=60_000)
    assert verdict.get_attribute("data-ok") == "true"
    assert panel.locator("[data-testid=desp-verify-verdict]").inner_text().startswith("OK")
    shot(page, "traces-2-verified")

    # One byte changes on disk; "Verify this file" from the file browser's context menu finds the mismatch.
    changed = bytearray(data)
    changed[len(changed) // 2] ^= 0x20
    (lab.root / name).write_bytes(bytes(changed))
    run_from_context_menu(page, name, "desp:verify-file")
    mismatch = panel.locator("[data-testid=desp-trace-result][data-kind=verify][data-ok=false]")
    mismatch.wait_for(timeout=60_000)
    assert panel.locator("[data-testid=desp-trace-path]").input_value() == name
    assert panel.locator("[data-testid=desp-verify-verdict]").inner_text().startswith("MISMATCH")
    assert panel.locator("[data-testid=desp-verify-expected]").inner_text() == digest
    assert panel.locator("[data-testid=desp-verify-actual]").inner_text() == blake3.blake3(bytes(changed)).hexdigest()
    shot(page, "traces-3-mismatch")

    # Search by the original hash: the registered trace.
    panel.locator("[data-testid=desp-trace-search-hash]").fill(digest)
    panel.locator("[data-testid=desp-trace-search-button]").click()
    found = panel.locator(f'[data-testid=desp-trace-search-result][data-trace-id="{trace_id}"]')
    found.wait_for(timeout=60_000)
    # A malformed hash: the service's 400, shown as a message.
    panel.locator("[data-testid=desp-trace-search-hash]").fill("not-a-hash")
    panel.locator("[data-testid=desp-trace-search-button]").click()
    message = panel.locator("[data-testid=desp-trace-search-message]")
    message.wait_for(timeout=60_000)
    assert message.get_attribute("role") == "alert" and "Traceback" not in message.inner_text()
    # A path outside the server's root folder is refused, naming the field.
    panel.locator("[data-testid=desp-trace-path]").fill("../outside.bin")
    panel.locator("[data-testid=desp-trace-button]").click()
    refused = panel.locator("[data-testid=desp-trace-message]")
    refused.wait_for(timeout=60_000)
    assert refused.get_attribute("data-field") == "path" and "outside" in refused.inner_text()
    shot(page, "traces-4-search-and-errors")

    # "Trace this file" from the file browser's context menu: the panel traces (and registers) it.
    run_from_context_menu(page, other, "desp:trace-file")
    page.wait_for_function(
        "name => { const e = document.querySelector('[data-testid=desp-trace-name]');"
        " return e && e.textContent === name; }",
        arg=other,
        timeout=60_000,
    )
    assert panel.locator("[data-testid=desp-trace-hash]").inner_text() == blake3.blake3(b"another product").hexdigest()
    assert panel.locator("[data-testid=desp-trace-id]").inner_text()
    page.context.close()


def test_without_accounting_the_status_bar_shows_no_balance(browser, tmp_path):
    lab = start_lab(tmp_path / "lab", {"DESP_ACCESS_TOKEN": "not-used"})
    try:
        page = open_lab(browser, lab)
        page.wait_for_function(
            "selector => { const e = document.querySelector(selector);"
            " return e && e.dataset.state === 'unconfigured'; }",
            arg=STATUS,
            timeout=60_000,
        )
        assert not page.locator(STATUS).is_visible()
        assert "accounting is not configured" in page.locator(STATUS).get_attribute("title")
        page.context.close()
    finally:
        lab.stop()


def test_accounting_down_shows_a_question_mark_and_why(browser, sandbox_accounting, tmp_path):
    closed = free_port()
    lab = start_lab(tmp_path / "lab", {"DESP_ACCOUNTING_URL": f"http://127.0.0.1:{closed}",
                                       "DESP_ACCESS_TOKEN": sandbox_accounting.token_for(USER)})  # fmt: skip
    try:
        page = open_lab(browser, lab)
        status = page.locator(STATUS)
        page.wait_for_function(
            "selector => { const e = document.querySelector(selector); return e && e.dataset.state === 'error'; }",
            arg=STATUS,
            timeout=90_000,
        )
        assert status.is_visible() and status.inner_text() == "DCU ?"
        title = status.get_attribute("title")
        assert f"The accounting service at http://127.0.0.1:{closed} is not available right now" in title, title
        assert "Traceback" not in title
        status.screenshot(path=str(tmp_path / "status-bar-accounting-down.png"))
        page.context.close()
    finally:
        lab.stop()
