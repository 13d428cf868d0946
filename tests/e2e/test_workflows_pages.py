"""The workflows service's web pages through the hub's proxy, as a browser session (requests) sees them, and the
published-workflow example (notebooks/workflows/regional_anomaly.ipynb) run by the service against the sandbox
catalogue and cache.

One hub (`desp-hub up` with the sandbox catalogue, cache and trace service). A run asked for in person reads the
data as its user: the service hands it the caller's DESP token (from the hub's auth_state).
"""

import ast
import csv
import html
import io
import re
import time
from html.parser import HTMLParser
from pathlib import Path

import nbformat
import pytest

from tests.e2e.hubclient import HubSession
from tests.e2e.stack import start_hub
from tests.e2e.test_workflows_service import INJECTION, Client, notebook
from tests.support import wait_for_http

pytestmark = pytest.mark.timeout(900)

PAGES = "/services/workflows/"
EXAMPLE = Path(__file__).resolve().parents[2] / "notebooks" / "workflows" / "regional_anomaly.ipynb"
FINISHED = ("succeeded", "failed", "timed_out")

TYPED = notebook(
    "print('seen', [type(v).__name__ for v in (n, ratio, label, flag, areas)])",
    parameters="n = 3\nratio = 0.5\nlabel = 'alps'\nflag = False\nareas = ['a', 'b']",
)
FAILING = notebook("x = 1", "raise ValueError('the input data has no values')", "print('never')", parameters="k = 1")


class FormReader(HTMLParser):
    """Every form: action, method, fields as a browser submits them (checked boxes, textareas, selected options)."""

    def __init__(self):
        super().__init__()
        self.forms = []
        self._textarea = None
        self._select = None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.forms.append({"action": attrs.get("action"), "id": attrs.get("id"), "fields": {}})
        elif not self.forms:
            return
        elif tag == "input" and attrs.get("name"):
            kind = attrs.get("type")
            if kind in ("checkbox", "radio"):
                if "checked" in attrs:
                    self.forms[-1]["fields"][attrs["name"]] = attrs.get("value") or "on"
            elif kind != "file":
                self.forms[-1]["fields"][attrs["name"]] = attrs.get("value") or ""
        elif tag == "textarea":
            self._textarea = attrs["name"]
            self.forms[-1]["fields"][self._textarea] = ""
        elif tag == "select":
            self._select = attrs["name"]
        elif tag == "option" and self._select and ("selected" in attrs or self._select not in self.forms[-1]["fields"]):
            self.forms[-1]["fields"][self._select] = attrs.get("value")

    def handle_endtag(self, tag):
        if tag == "textarea":
            self._textarea = None
        elif tag == "select":
            self._select = None

    def handle_data(self, data):
        if self._textarea:
            self.forms[-1]["fields"][self._textarea] += data


def form_of(html, form_id):
    reader = FormReader()
    reader.feed(html)
    reader.close()
    return next(f for f in reader.forms if f["id"] == form_id)


class Pages:
    """A logged-in user's browser session on the workflows pages (and the API with a token of theirs)."""

    def __init__(self, hub_url, username):
        self.hub_url = hub_url
        self.session = HubSession(hub_url, username, f"{username}-demo")
        self.session.login()
        first = self.get("")  # OAuth with the hub, no consent page
        assert first.status_code == 200, first.text[:300]
        self.api = Client(hub_url, username, self.session.new_token())

    def get(self, path, **kwargs):
        return self.session.http.get(self.hub_url + PAGES + path, timeout=60, **kwargs)

    def post(self, path, data, **kwargs):
        return self.session.http.post(self.hub_url + PAGES + path, data=data, timeout=60, **kwargs)

    def submit(self, page_path, form_id, changes=None, **kwargs):
        page = self.get(page_path)
        assert page.status_code == 200, page.text[:300]
        form = form_of(page.text, form_id)
        data = dict(form["fields"], **(changes or {}))
        return self.session.http.post(self.hub_url + form["action"], data=data, timeout=60, **kwargs)

    def publish(self, name, nb, visibility="private", group=""):
        page = self.get("")
        fields = form_of(page.text, "publish-form")["fields"]
        fields.update(name=name, visibility=visibility, group=group)
        files = {"notebook": (f"{name}.ipynb", nbformat.writes(nb).encode(), "application/x-ipynb+json")}
        return self.session.http.post(self.hub_url + PAGES, data=fields, files=files, timeout=60)

    def wait_run(self, run_id, timeout=300):
        deadline = time.monotonic() + timeout
        while True:
            run = self.api("GET", f"api/runs/{run_id}").json()
            if run["status"] in FINISHED:
                return run
            assert time.monotonic() < deadline, f"run {run_id} not finished after {timeout} s: {run}"
            time.sleep(0.5)


def workflow_id_of(response):
    match = re.search(r"/services/workflows/w/(\d+)$", response.url)
    assert match, (response.status_code, response.url, response.text[:500])
    return int(match.group(1))


def run_id_of(response):
    match = re.search(r"/services/workflows/runs/(\d+)$", response.url)
    assert match, (response.status_code, response.url, response.text[:500])
    return int(match.group(1))


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("workflows-pages")
    try:
        running = start_hub(str(data_dir / "hub"), with_catalogue=True, with_traces=True)
    except RuntimeError:
        hub_log = data_dir / "hub" / "logs" / "hub.log"
        raise RuntimeError(hub_log.read_text(errors="replace")[-3000:] if hub_log.exists() else "no hub log") from None
    try:
        wait_for_http(f"{running.url}/services/workflows/api/workflows", timeout=120)
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def researcher(hub):
    return Pages(hub.url, "researcher")


@pytest.fixture(scope="module")
def poweruser(hub):
    return Pages(hub.url, "poweruser")


def test_the_example_notebook_runs_through_the_service(hub, researcher):
    """notebooks/workflows/regional_anomaly.ipynb, published through the API, run with its own parameters: the
    region read from the sandbox catalogue and cache; its CSV and PNG kept, traced, and shown on the run page."""
    example = nbformat.read(EXAMPLE, as_version=4)
    workflow = researcher.api.publish("regional anomaly", example, outputs=["*.csv", "*.png"])
    declared = {p["name"]: p["type"] for p in workflow["latest_version"]["parameters"]}
    assert declared["region_bbox"] == "list" and declared["variable"] == "str" and declared["output_name"] == "str"
    run = researcher.api.run(workflow["id"], {"region_bbox": [5.0, 40.0, 15.0, 48.0], "output_name": "alps"})
    run = researcher.wait_run(run["id"], timeout=400)
    assert run["status"] == "succeeded", (run, researcher.api("GET", f"api/runs/{run['id']}/log").text[-3000:])
    names = {output["name"]: output for output in run["outputs"]}
    assert set(names) == {"alps.csv", "alps.png"}
    assert all(output.get("trace_id") for output in names.values()), run
    rows = list(csv.DictReader(io.StringIO(researcher.api("GET", f"api/runs/{run['id']}/outputs/alps.csv").text)))
    assert len(rows) == 9 * 11 and {"latitude", "longitude", "anomaly"} <= set(rows[0])
    png = researcher.api("GET", f"api/runs/{run['id']}/outputs/alps.png")
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    page = researcher.get(f"runs/{run['id']}").text
    assert 'data-name="alps.csv"' in page and 'data-name="alps.png"' in page and 'class="desp-trace-id"' in page
    assert "data:image/png;base64," in researcher.get(f"api/runs/{run['id']}/html").text  # the map, rendered


def test_publish_from_the_page_and_run_with_typed_values(researcher):
    published = researcher.publish("typed pages", TYPED)
    workflow_id = workflow_id_of(published)
    assert "Published typed pages, version 1." in published.text
    # One input per declared parameter, typed from the parameters cell.
    assert re.search(r'id="param-n" name="p.n" data-type="int"\s+type="number" step="1" value="3"', published.text)
    assert re.search(r'id="param-ratio" name="p.ratio" data-type="float"\s+type="number" step="any"', published.text)
    assert 'type="checkbox" id="param-flag" name="p.flag"' in published.text
    assert re.search(r'<textarea[^>]*id="param-areas"[^>]*>\["a", "b"\]</textarea>', html.unescape(published.text))

    # The same notebook again is the same version; the list shows it under "Mine".
    again = researcher.publish("typed pages", TYPED)
    assert workflow_id_of(again) == workflow_id and "already has this notebook as version 1" in again.text
    listing = researcher.get("").text
    mine = listing[listing.index('id="section-mine"'):listing.index('id="section-shared"')]
    assert f'id="workflow-{workflow_id}"' in mine

    ran = researcher.submit(f"w/{workflow_id}", "run-form", {
        "p.n": "7", "p.ratio": "2", "p.label": INJECTION, "p.flag": "on", "p.areas": '["x", 1]',
    })  # fmt: skip
    run_id = run_id_of(ran)
    assert f"Run {run_id} queued." in ran.text
    run = researcher.wait_run(run_id)
    assert run["status"] == "succeeded", run
    # papermill wrote the typed values as literals (the string stays a string)
    executed = nbformat.reads(researcher.api("GET", f"api/runs/{run_id}/notebook").text, as_version=4)
    injected = next(c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", []))
    assigned = dict(line.split(" = ", 1) for line in injected.source.splitlines() if " = " in line)
    assert ast.literal_eval(assigned["label"]) == INJECTION
    assert (assigned["n"], assigned["ratio"], assigned["flag"]) == ("7", "2.0", "True")
    assert run["parameters"] == {"n": 7, "ratio": 2.0, "label": INJECTION, "flag": True, "areas": ["x", 1]}

    # The run's page: status, parameters, the rendered notebook in a sandboxed iframe, the log.
    page = researcher.get(f"runs/{run_id}")
    assert page.status_code == 200
    assert 'id="run-status" data-status="succeeded"' in page.text
    iframe = re.search(r'<iframe class="desp-result" id="run-result"[^>]*>', page.text).group(0)
    assert " sandbox " in iframe and f'src="/services/workflows/api/runs/{run_id}/html"' in iframe
    rendering = researcher.get(f"api/runs/{run_id}/html")
    assert rendering.status_code == 200 and rendering.headers["Content-Security-Policy"] == "sandbox"
    assert "seen" in rendering.text
    assert 'id="run-log"' in page.text and "refresh" not in page.text.split("</head>")[0]


def test_bad_form_values_name_the_parameter_and_queue_nothing(researcher):
    workflow_id = workflow_id_of(researcher.publish("typed checks", TYPED))
    for changes, name in [({"p.n": "3.5"}, "n"), ({"p.ratio": "nan"}, "ratio"), ({"p.areas": "{'a': 1}"}, "areas"),
                          ({"p.areas": '{"a": 1}'}, "areas")]:  # fmt: skip
        refused = researcher.submit(f"w/{workflow_id}", "run-form", changes)
        assert refused.status_code == 400, refused.text[:300]
        assert f'data-error-for="{name}"' in refused.text
        assert "Check the parameters" in refused.text
    assert researcher.api("GET", f"api/workflows/{workflow_id}/runs").json()["runs"] == []


def test_a_failing_run_shows_the_failing_cell(researcher):
    workflow_id = workflow_id_of(researcher.publish("failing pages", FAILING))
    run_id = run_id_of(researcher.submit(f"w/{workflow_id}", "run-form"))
    assert researcher.wait_run(run_id)["status"] == "failed"
    page = researcher.get(f"runs/{run_id}").text
    assert 'data-status="failed"' in page
    failing = page[page.index('id="run-error"'):]
    assert "ValueError" in failing and "the input data has no values" in failing
    # cell 3 of the published notebook (parameters, x = 1, the raise), its source shown
    assert 'id="failing-cell" data-cell="3"' in failing
    assert "raise ValueError(&#39;the input data has no values&#39;)" in failing
    assert 'id="run-result"' in page  # the executed notebook up to the failure


def test_visibility_on_the_pages(researcher, poweruser):
    private = workflow_id_of(researcher.publish("private pages", TYPED))
    public = workflow_id_of(researcher.publish("public pages", TYPED, visibility="public"))
    group = workflow_id_of(researcher.publish("group pages", TYPED, visibility="group", group="desp-users"))
    run_id = run_id_of(researcher.submit(f"w/{private}", "run-form"))

    assert poweruser.get(f"w/{private}").status_code == 404
    assert poweruser.get(f"runs/{run_id}").status_code == 404
    listing = poweruser.get("").text
    assert f'id="workflow-{private}"' not in listing
    public_section = listing[listing.index('id="section-public"'):listing.index('id="publish"')]
    assert f'id="workflow-{public}"' in public_section
    shared_section = listing[listing.index('id="section-shared"'):listing.index('id="section-public"')]
    assert f'id="workflow-{group}"' in shared_section  # poweruser is in desp-users
    # Visible but not runnable by others (allow_run_by_others is off): no form, and a POST is refused.
    page = poweruser.get(f"w/{public}")
    assert page.status_code == 200 and 'id="not-runnable"' in page.text and 'id="run-form"' not in page.text
    xsrf = form_of(poweruser.get("").text, "publish-form")["fields"]["_xsrf"]
    refused = poweruser.post(f"w/{public}/run", {"_xsrf": xsrf})
    assert refused.status_code == 403
    # Not the owner: no schedule form, and its POST is refused.
    assert 'id="schedule-form"' not in page.text
    assert poweruser.post(f"w/{public}/schedule", {"_xsrf": xsrf, "kind": "interval",
                                                   "interval_seconds": "60"}).status_code == 403  # fmt: skip
    researcher.wait_run(run_id)


def test_a_post_without_the_xsrf_token_is_refused(researcher):
    workflow_id = workflow_id_of(researcher.publish("xsrf pages", TYPED))
    response = researcher.post(f"w/{workflow_id}/run", {"p.n": "1"})
    assert response.status_code == 403
    assert researcher.api("GET", f"api/workflows/{workflow_id}/runs").json()["runs"] == []


def test_schedule_form_validates_sets_and_removes(researcher):
    workflow_id = workflow_id_of(researcher.publish("scheduled pages", TYPED))
    bad = researcher.submit(f"w/{workflow_id}", "schedule-form", {"kind": "cron", "cron": "61 * * *"})
    assert bad.status_code == 400 and "Check the schedule" in bad.text and 'id="cron"' in bad.text
    bad_zone = researcher.submit(f"w/{workflow_id}", "schedule-form",
                                 {"kind": "cron", "cron": "0 6 * * *", "timezone": "Mars/Olympus"})  # fmt: skip
    assert bad_zone.status_code == 400
    saved = researcher.submit(f"w/{workflow_id}", "schedule-form",
                              {"kind": "cron", "cron": "0 6 * * *", "timezone": "Europe/Rome"})  # fmt: skip
    assert saved.status_code == 200 and "Schedule saved." in saved.text
    schedule = researcher.api("GET", f"api/workflows/{workflow_id}/schedule").json()
    assert schedule["cron"] == "0 6 * * *" and schedule["timezone"] == "Europe/Rome" and schedule["enabled"]
    assert "cron 0 6 * * * (Europe/Rome)" in saved.text
    removed = researcher.submit(f"w/{workflow_id}", "schedule-form", {"remove": "1"})
    assert "Schedule removed." in removed.text
    assert researcher.api("GET", f"api/workflows/{workflow_id}/schedule").status_code == 404
