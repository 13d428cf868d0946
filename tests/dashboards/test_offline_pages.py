"""Pages served with the dashboards' template name no other host: Panel's Fast design links Google's web font, the
dashboards' `OfflineFast` design does not, and every resource it names is served by the Panel server itself.
(The served dashboards are checked in Chromium, request by request, in tests/browser/test_dashboards.py.)"""

import re
import threading
import time

import pandas as pd
import panel as pn
import pytest
import requests

from desp_dashboards.offline import page_template
from tests.support import free_port

REFERENCE = re.compile(r"""(?:href|src)=["']([^"']+)["']""")
ANY_HOST = re.compile(r"""(?:https?:)?//[A-Za-z0-9.-]+\.[A-Za-z]{2,}[^"'\s)<>]*""")
SVG_NAMESPACE = "http://www.w3.org/2000/svg"  # an XML namespace in inline SVG, never fetched


def page(template_factory):
    template = template_factory(title="T", accent="#0b5394")
    template.main.append(pn.pane.Markdown("hello"))
    template.main.append(pn.widgets.Tabulator(pd.DataFrame({"a": [1, 2]})))
    return template


@pytest.fixture(scope="module")
def server():
    port = free_port()
    apps = {"offline": lambda: page(page_template), "panel": lambda: page(pn.template.FastListTemplate)}
    running = pn.serve(apps, port=port, address="127.0.0.1", show=False, start=False)
    running.start()
    thread = threading.Thread(target=running.io_loop.start, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            requests.get(f"{url}/offline", timeout=30)
            break
        except requests.ConnectionError:
            time.sleep(0.2)
    yield url
    running.io_loop.add_callback(running.stop)
    running.io_loop.add_callback(running.io_loop.stop)
    thread.join(timeout=10)


def test_panels_own_template_links_the_google_web_font(server):
    html = requests.get(f"{server}/panel", timeout=60).text
    assert "fonts.googleapis.com" in html  # why the dashboards use their own design


def test_the_dashboards_template_names_no_other_host_and_serves_everything_it_names(server):
    for _ in range(2):  # also after the other template was rendered in the same process
        requests.get(f"{server}/panel", timeout=60)
        html = requests.get(f"{server}/offline", timeout=60).text
        hosts = [match for match in ANY_HOST.findall(html) if match != SVG_NAMESPACE]
        assert hosts == []
        references = [ref for ref in REFERENCE.findall(html) if not ref.startswith(("data:", "#"))]
        assert any("fast_design.js" in ref for ref in references)  # the design's script, from the server
        for reference in references:
            response = requests.get(f"{server}/{reference.removeprefix('./')}", timeout=60)
            assert response.status_code == 200, reference
