"""Through the hub, in Chromium: publish a notebook from JupyterLab ("Publish as workflow"), run it on the
workflows page with a parameter of one's own, and see the run's rendered result there.

`desp-hub up` (its workflows service runs notebooks with papermill in the venv's python3 kernel); the researcher
logs in, starts a server, opens a parameterised notebook in JupyterLab and publishes it with the notebook toolbar's
Publish button; the dialog links to the workflow's page, where the typed parameters form runs it; the run's page
refreshes itself until the run ends and then shows the executed notebook (its printed text and its figure) in a
sandboxed iframe, with the declared outputs. Publishing again from the palette adds a version.
"""

import re
import time
import uuid
from pathlib import Path

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.browser.conftest import shot
from tests.e2e.stack import start_hub

pytestmark = [pytest.mark.browser, pytest.mark.timeout(900)]

USER = "researcher"


def demo_notebook(marker: str):
    parameters = new_code_cell("city = 'Bologna'\nwarming: float = 1.5\n", metadata={"tags": ["parameters"]})
    nb = new_notebook(cells=[
        new_markdown_cell("# Warming demo\nA tiny workflow: a line chart and a CSV for a city."),
        parameters,
        new_code_cell(
            "import matplotlib.pyplot as plt\n"
            "values = [warming * step / 10 for step in range(11)]\n"
            "with open('warming.csv', 'w') as f:\n"
            "    f.write('step,value\\n' + ''.join(f'{i},{v}\\n' for i, v in enumerate(values)))\n"
            "fig, ax = plt.subplots(figsize=(4, 2.5))\n"
            "ax.plot(values)\n"
            "ax.set_title(f'{city}: +{warming} °C')\n"
            "fig.savefig('warming.png')\n"
            "plt.close(fig)\n"
            "from IPython.display import Image, display\n"
            "display(Image(filename='warming.png'))\n"
            f"print('{marker}', city, warming)"
        ),
    ])  # fmt: skip
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    return nb


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    running = start_hub(str(tmp_path_factory.mktemp("workflows-browser")))
    yield running
    running.stop()


def login_and_spawn(page, hub_url):
    page.goto(hub_url + "/hub/login")
    page.get_by_text("Sign in with DESP").click()
    page.fill("input[name=username]", USER)
    page.fill("input[name=password]", f"{USER}-demo")
    page.locator("input[name=password]").press("Enter")
    page.wait_for_selector("input[name=profile]", timeout=60_000)
    page.check("#profile-standard")
    page.locator("form#spawn_form input[type=submit], form#spawn_form button[type=submit]").first.click()
    # On a loaded machine the proxy may drop the spawn page's progress stream (503 after its timeout) and the page
    # then never redirects, although the server comes up: open JupyterLab again until it is there.
    deadline = time.monotonic() + 300
    while True:
        try:
            page.wait_for_selector(".jp-LabShell", timeout=30_000)
            return
        except PlaywrightTimeout:
            if time.monotonic() > deadline:
                shot(page, "workflows-0-spawn-failed")
                raise AssertionError(f"no JupyterLab at {page.url}: {page.locator('body').inner_text()[:500]}") from None
            page.goto(f"{hub_url}/user/{USER}/lab")


def publish_from_dialog(page, name):
    dialog = page.locator(".jp-Dialog")
    dialog.locator("[data-testid=desp-publish-name]").wait_for(timeout=30_000)
    dialog.locator("[data-testid=desp-publish-name]").fill(name)
    dialog.locator("[data-testid=desp-publish-visibility]").select_option("public")
    dialog.locator(".jp-Dialog-button.jp-mod-accept").click()
    message = page.locator("[data-testid=desp-publish-message]")
    message.wait_for(timeout=60_000)
    return message


def test_publish_from_jupyterlab_and_see_the_rendered_run(hub, browser):
    marker = f"warming-{uuid.uuid4().hex[:8]}"
    home = Path(hub.data_dir) / "hub" / "users" / USER
    home.mkdir(parents=True, exist_ok=True)
    nbformat.write(demo_notebook(marker), home / "warming.ipynb")
    name = f"warming {marker[-4:]}"

    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    login_and_spawn(page, hub.url)
    page.goto(f"{hub.url}/user/{USER}/lab/tree/warming.ipynb")
    page.locator(".jp-NotebookPanel").wait_for(timeout=120_000)

    # The notebook toolbar's Publish button opens the dialog; the outcome links to the workflow's page.
    page.locator("[data-testid=desp-publish-button]").first.click()
    message = publish_from_dialog(page, name)
    assert re.fullmatch(rf'Published "{name}" \(public\), version 1\.', message.inner_text()), message.inner_text()
    link = page.locator("[data-testid=desp-publish-link]")
    href = link.get_attribute("href")
    assert re.fullmatch(r"/services/workflows/w/\d+", href), href
    shot(page, "workflows-1-published-from-lab")
    page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-accept").click()

    # Again from the command palette, after an edit saved by the command itself: a new version.
    cell = page.locator(".jp-Notebook .jp-Cell").nth(0)
    cell.click()
    page.keyboard.press("Escape")
    page.keyboard.press("b")  # a new empty cell below: the notebook is now different (and unsaved)
    for attempt in range(3):
        page.keyboard.press("Control+Shift+C")
        try:
            page.locator("#command-palette input").wait_for(timeout=10_000)
            break
        except PlaywrightTimeout:
            continue
    page.locator("#command-palette input").fill("Publish as workflow")
    page.locator(".lm-CommandPalette-item", has_text="Publish as workflow").first.click()
    message = publish_from_dialog(page, name)
    assert message.inner_text() == f'Published version 2 of "{name}".', message.inner_text()
    page.locator(".jp-Dialog .jp-Dialog-button.jp-mod-accept").click()

    # The workflow's page: the parameters form, typed from the parameters cell; run with a value of one's own.
    page.goto(hub.url + href)
    page.locator("#workflow-name").wait_for(timeout=60_000)
    assert page.locator("#workflow-name").inner_text() == name
    assert page.locator("#param-warming").get_attribute("type") == "number"
    page.fill("#param-city", "Trieste")
    page.fill("#param-warming", "2.5")
    shot(page, "workflows-2-workflow-page")
    page.click("#run-button")

    # The run's page refreshes itself until the run ends, then shows the executed notebook.
    page.wait_for_selector('#run-status[data-status="succeeded"]', timeout=240_000)
    frame = page.frame_locator("#run-result")
    frame.get_by_text(f"{marker} Trieste 2.5").wait_for(timeout=60_000)
    assert frame.locator("img").count() >= 1  # the figure
    outputs = page.locator("#run-outputs a.desp-output")
    assert sorted(outputs.all_inner_texts()) == ["warming.csv", "warming.png"]
    page.locator("#run-result").scroll_into_view_if_needed()
    shot(page, "workflows-3-run-rendered")

    # The workflow's page lists the run as succeeded, and both versions.
    page.click("#workflow-link")
    page.locator("#runs-table").wait_for(timeout=30_000)
    assert page.locator("#runs-table [data-status=succeeded]").count() == 1
    assert page.locator("#versions-table tbody tr").count() == 2
    context.close()
