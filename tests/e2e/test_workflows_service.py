"""End to end: the workflows service as a managed service of the real hub (`desp-hub up`, sandbox IdP logins,
sandbox trace and accounting services), runs executed by real papermill in the venv's python3 kernel.

One hub for most tests (at most one run per user at a time, so the queue is visible); the schedule test has a hub
of its own, which it stops and starts again between ticks.
"""

import csv
import io
import os
import time

import nbformat
import psutil
import pytest
import requests
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from desp_lab.accounting import Accounting
from desp_lab.trace import TraceClient, hash_file
from tests.e2e.hubclient import HubSession, run_in_kernel
from tests.e2e.stack import start_hub
from tests.support import free_port

pytestmark = pytest.mark.timeout(900)

FINISHED = ("succeeded", "failed", "timed_out")
INJECTION = "\"; import os; os.system('touch hacked')"
PRICE = 36  # DCU per hour of the test's profile: 0.010 DCU per second

SEED = f"""
profiles:
  - {{slug: standard, display_name: Standard, image: img, cpu_guarantee: 0.5, cpu_limit: 1, mem_guarantee: 1G,
     mem_limit: 2G, allowed_groups: [desp-users], dcu_per_hour: {PRICE}, default: true, order: 10}}
  - {{slug: power, display_name: Power, image: img, cpu_guarantee: 0.5, cpu_limit: 1, mem_guarantee: 1G,
     mem_limit: 2G, allowed_groups: [power-users], dcu_per_hour: {PRICE}, order: 20}}
"""


def notebook(*sources, parameters=None):
    """A python3 notebook: an optional `parameters` cell, then a code cell per source."""
    cells = []
    if parameters is not None:
        cells.append(new_code_cell(parameters, metadata={"tags": ["parameters"]}))
    cells += [new_code_cell(source) for source in sources]
    nb = new_notebook(cells=cells)
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


class Client:
    """The workflows API with a user's hub API token."""

    def __init__(self, hub_url, username, token=None):
        self.hub_url = hub_url
        self.username = username
        self.base = f"{hub_url}/services/workflows/"
        self.headers = {"Authorization": f"token {token}"} if token else {}

    def __call__(self, method, path, body=None, **kwargs):
        kwargs.setdefault("timeout", 120)
        if body is not None:
            kwargs["json"] = body
        return requests.request(method, self.base + path, headers=self.headers, **kwargs)

    def publish(self, name, nb, **fields):
        response = self("POST", "api/workflows", {"name": name, "notebook": nb, **fields})
        assert response.status_code == 201, response.text
        return response.json()

    def run(self, workflow_id, parameters=None, **body):
        response = self("POST", f"api/workflows/{workflow_id}/runs", {"parameters": parameters or {}, **body})
        assert response.status_code == 202, response.text
        return response.json()

    def wait_run(self, run_id, timeout=300):
        deadline = time.monotonic() + timeout
        while True:
            run = self("GET", f"api/runs/{run_id}").json()
            if run["status"] in FINISHED:
                return run
            if time.monotonic() > deadline:
                raise AssertionError(f"run {run_id} not finished after {timeout} s: {run}")
            time.sleep(0.5)


def login(hub_url, username):
    session = HubSession(hub_url, username, f"{username}-demo")
    session.login()
    return session


def client_of(hub_url, username):
    session = login(hub_url, username)
    return Client(hub_url, username, session.new_token()), session


def wait_for_service(hub_url, timeout=180):
    """Until the service itself answers (401 to an anonymous call; the proxy answers 503 while it starts)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if requests.get(f"{hub_url}/services/workflows/api/workflows", timeout=10).status_code == 401:
                return
        except requests.ConnectionError:
            pass
        assert time.monotonic() < deadline, f"the workflows service did not answer within {timeout} s"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("hub-workflows")
    seed = data_dir / "profiles.yaml"
    seed.write_text(SEED)
    running = start_hub(
        str(data_dir / "hub"), extra_args=["--profiles", str(seed)], with_traces=True, with_accounting=True,
        extra_env={"DESP_WORKFLOWS_MAX_RUNS": "2", "DESP_WORKFLOWS_MAX_RUNS_PER_USER": "1"},
    )  # fmt: skip
    try:
        wait_for_service(running.url)
        yield running
    finally:
        running.stop()


@pytest.fixture(scope="module")
def researcher(hub):
    return client_of(hub.url, "researcher")


@pytest.fixture(scope="module")
def poweruser(hub):
    return client_of(hub.url, "poweruser")[0]


@pytest.fixture(scope="module")
def admin(hub):
    return client_of(hub.url, "admin")[0]


PRODUCT = notebook(
    "import base64, csv, json, os\n"
    "from desp_lab.credentials import access_token\n"
    "claims = access_token().split('.')[1]\n"
    "user = json.loads(base64.urlsafe_b64decode(claims + '=' * (-len(claims) % 4)))['preferred_username']\n"
    "with open('values.csv', 'w', newline='') as f:\n"
    "    w = csv.writer(f)\n"
    "    w.writerow(['name', 'repr', 'type'])\n"
    "    for name, value in [('year', year), ('scale', scale), ('label', label), ('flag', flag), ('areas', areas),\n"
    "                        ('token_of', user), ('hub_token', 'JUPYTERHUB_API_TOKEN' in os.environ)]:\n"
    "        w.writerow([name, repr(value), type(value).__name__])",
    "import matplotlib.pyplot as plt\n"
    "fig, ax = plt.subplots(figsize=(2, 2))\n"
    "ax.plot([0, 1], [0, year % 7])\n"
    "fig.savefig('map.png')\n"
    "print('product written for', label)",
    parameters="year = 2020\nscale: float = 1\nlabel = 'alps'\nflag = False\nareas = ['a', 'b']",
)


def test_publish_run_with_typed_parameters_results_traced_and_debited(hub, researcher):
    client, session = researcher
    workflow = client.publish("regional product", PRODUCT, description="a CSV and a PNG", outputs=["*.csv", "*.png"])
    assert workflow["owner"] == "researcher" and workflow["visibility"] == "private" and workflow["may_edit"]
    assert workflow["latest_version"]["number"] == 1
    assert workflow["latest_version"]["parameters"] == [
        {"name": "year", "type": "int", "default": 2020}, {"name": "scale", "type": "float", "default": 1.0},
        {"name": "label", "type": "str", "default": "alps"}, {"name": "flag", "type": "bool", "default": False},
        {"name": "areas", "type": "list", "default": ["a", "b"]},
    ]  # fmt: skip
    listed = client("GET", "api/workflows").json()["workflows"]
    assert [w["id"] for w in listed if w["name"] == "regional product"] == [workflow["id"]]

    run = client.run(workflow["id"], {"year": 2021, "scale": 2, "label": INJECTION, "flag": True})
    assert run["status"] == "queued" and run["user"] == "researcher" and run["version"] == 1
    run = client.wait_run(run["id"])
    assert run["status"] == "succeeded", run
    assert run["error"] is None and run["attempt"] == 1

    # papermill ran with the exact typed values: the string is a string, never code
    values = client("GET", f"api/runs/{run['id']}/outputs/values.csv")
    assert values.status_code == 200
    rows = {row["name"]: row for row in csv.DictReader(io.StringIO(values.text))}
    assert rows["year"]["repr"] == "2021" and rows["year"]["type"] == "int"
    assert rows["scale"]["repr"] == "2.0" and rows["scale"]["type"] == "float"
    assert rows["label"]["repr"] == repr(INJECTION) and rows["label"]["type"] == "str"
    assert rows["flag"]["repr"] == "True" and rows["areas"]["repr"] == "['a', 'b']"
    # the run reads data as its user (their DESP token), and never holds the service's hub token
    assert rows["token_of"]["repr"] == "'researcher'" and rows["hub_token"]["repr"] == "False"
    run_dir = os.path.join(hub.data_dir, "hub", "workflows", "runs", str(run["id"]))
    assert not os.path.exists(os.path.join(run_dir, "hacked"))

    # results: executed notebook, HTML, log, declared outputs
    executed = nbformat.reads(client("GET", f"api/runs/{run['id']}/notebook").text, as_version=4)
    assert any("injected-parameters" in c.metadata.get("tags", []) for c in executed.cells)
    html = client("GET", f"api/runs/{run['id']}/html")
    assert html.status_code == 200 and html.headers["Content-Type"].startswith("text/html")
    assert html.headers["Content-Security-Policy"] == "sandbox"
    assert "product written for" in html.text
    assert "product written for" in client("GET", f"api/runs/{run['id']}/log").text
    png = client("GET", f"api/runs/{run['id']}/outputs/map.png")
    assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
    assert client("GET", f"api/runs/{run['id']}/outputs/input.ipynb").status_code == 404
    assert client("GET", f"api/runs/{run['id']}/outputs/..%2F..%2Fworkflows.sqlite").status_code == 404

    # each output traced, with the run's user in the product name
    names = {output["name"]: output for output in run["outputs"]}
    assert set(names) == {"values.csv", "map.png"}, run
    assert run["trace_error"] is None
    token = session.api("GET", "/users/researcher").json()["auth_state"]["access_token"]
    traces = TraceClient(hub.trace_url, token=token)
    for name, output in names.items():
        stored = traces.get(output["trace_id"])
        assert stored["product"]["name"] == f"researcher/workflows/{workflow['id']}/runs/{run['id']}/{name}"
        assert stored["product"]["hash"] == hash_file(os.path.join(run_dir, name))[0]
        assert output["size"] == os.path.getsize(os.path.join(run_dir, name))

    # the run time debited once to the researcher, at the profile's price
    assert run["dcu"] is not None and float(run["dcu"]) > 0
    accounting = Accounting(hub.accounting_url, token=token, retries=0)
    debits = accounting.transactions("researcher", session=f"workflows:{run['id']}")["transactions"]
    assert len(debits) == 1, debits
    assert debits[0]["idempotency_key"] == f"workflows:{run['id']}"
    assert debits[0]["service"] == "workflows" and debits[0]["kind"] == "debit"
    assert f"{debits[0]['amount']:.3f}" == run["dcu"]
    assert abs(float(run["dcu"]) - PRICE * run["run_seconds"] / 3600) <= 0.0015


def test_a_failing_cell_is_shown(researcher):
    client, _ = researcher
    nb = notebook("x = 1", "raise ValueError('no data for ' + region)", "print('never')", parameters="region = 'alps'")
    workflow = client.publish("failing", nb, outputs=[])
    run = client.wait_run(client.run(workflow["id"], {"region": "po valley"})["id"])
    assert run["status"] == "failed" and run["attempt"] == 1
    assert run["error"]["cell_index"] == 2  # parameters cell, x = 1, then the raise
    assert run["error"]["ename"] == "ValueError" and run["error"]["evalue"] == "no data for po valley"
    html = client("GET", f"api/runs/{run['id']}/html").text
    assert "no data for po valley" in html
    assert "ValueError" in client("GET", f"api/runs/{run['id']}/log").text


def test_timeout_stops_the_run_and_its_kernel(hub, researcher):
    client, _ = researcher
    nb = notebook("import os, time\nopen('kernel.pid', 'w').write(str(os.getpid()))", "time.sleep(600)")
    workflow = client.publish("too slow", nb, timeout_seconds=40, retries=2)
    run = client.wait_run(client.run(workflow["id"])["id"])
    assert run["status"] == "timed_out", run
    assert run["attempt"] == 1  # a timeout is final, not retried
    assert run["error"]["ename"] == "Timeout" and run["error"]["cell_index"] == 1
    pid_file = os.path.join(hub.data_dir, "hub", "workflows", "runs", str(run["id"]), "kernel.pid")
    kernel_pid = int(open(pid_file).read())
    deadline = time.monotonic() + 30
    while psutil.pid_exists(kernel_pid) and psutil.Process(kernel_pid).status() != psutil.STATUS_ZOMBIE:
        assert time.monotonic() < deadline, "the kernel outlived its timed-out run"
        time.sleep(0.5)


def test_a_failed_attempt_is_retried(researcher):
    client, _ = researcher
    # the run directory is kept across attempts: the first attempt leaves a mark and fails, the second succeeds
    nb = notebook(
        "import os\n"
        "first = not os.path.exists('attempt-mark')\n"
        "open('attempt-mark', 'a').write('x')\n"
        "if first:\n"
        "    raise RuntimeError('transient failure')",
        "open('done.csv', 'w').write('ok')",
    )
    retried = client.publish("flaky", nb, retries=1, outputs=["done.csv"])
    run = client.wait_run(client.run(retried["id"])["id"])
    assert run["status"] == "succeeded" and run["attempt"] == 2, run
    assert [o["name"] for o in run["outputs"]] == ["done.csv"]

    not_retried = client.publish("flaky without retries", nb, retries=0)
    run = client.wait_run(client.run(not_retried["id"])["id"])
    assert run["status"] == "failed" and run["attempt"] == 1
    assert run["error"]["ename"] == "RuntimeError"


def test_the_per_user_limit_queues_the_excess(researcher):
    client, _ = researcher
    workflow = client.publish("queued", notebook("import time\ntime.sleep(3)"), outputs=[])
    runs = [client.run(workflow["id"])["id"] for _ in range(3)]
    seen_queued_while_running = False
    while True:
        states = [client("GET", f"api/runs/{run_id}").json()["status"] for run_id in runs]
        assert states.count("running") <= 1, states
        if "running" in states and "queued" in states:
            seen_queued_while_running = True
        if all(state in FINISHED for state in states):
            break
        time.sleep(0.3)
    assert seen_queued_while_running
    finished = sorted((client.wait_run(run_id) for run_id in runs), key=lambda r: r["started_at"])
    assert [r["status"] for r in finished] == ["succeeded"] * 3
    for before, after in zip(finished, finished[1:]):
        assert before["finished_at"] <= after["started_at"], (before, after)


def test_visibility_for_other_users(researcher, poweruser, admin):
    client, _ = researcher
    private = client.publish("mine only", notebook("1"))
    for other in (poweruser, admin):
        assert other("GET", f"api/workflows/{private['id']}").status_code == 404
        assert other("POST", f"api/workflows/{private['id']}/runs", {}).status_code == 404
        assert other("GET", f"api/workflows/{private['id']}/runs").status_code == 404
        assert private["id"] not in [w["id"] for w in other("GET", "api/workflows").json()["workflows"]]
    own_run = client.run(private["id"])
    assert poweruser("GET", f"api/runs/{own_run['id']}").status_code == 404

    # group: members only (and only a group the owner belongs to)
    refused = client("POST", "api/workflows", {"name": "g", "notebook": notebook("1"), "visibility": "group",
                                               "group": "power-users"})  # fmt: skip
    assert refused.status_code == 400 and refused.json()["field"] == "group"
    grouped = poweruser.publish("power group", notebook("1"), visibility="group", group="power-users",
                                allow_run_by_others=True)  # fmt: skip
    assert client("GET", f"api/workflows/{grouped['id']}").status_code == 404
    assert admin("GET", f"api/workflows/{grouped['id']}").status_code == 404
    everyone = poweruser.publish("desp group", notebook("1"), visibility="group", group="desp-users")
    assert client("GET", f"api/workflows/{everyone['id']}").json()["may_run"] is False

    # public: everyone sees it; running it needs allow_run_by_others; the run is the caller's
    public = poweruser.publish("public", notebook("x = 1", parameters="x = 0"), visibility="public")
    seen = client("GET", f"api/workflows/{public['id']}").json()
    assert seen["may_run"] is False and seen["may_edit"] is False
    assert client("POST", f"api/workflows/{public['id']}/runs", {}).status_code == 403
    assert client("PATCH", f"api/workflows/{public['id']}", {"description": "mine now"}).status_code == 403
    assert client("DELETE", f"api/workflows/{public['id']}").status_code == 403
    assert poweruser("PATCH", f"api/workflows/{public['id']}", {"allow_run_by_others": True}).status_code == 200
    run = client.wait_run(client.run(public["id"], {"x": 5})["id"])
    assert run["status"] == "succeeded" and run["user"] == "researcher" and run["parameters"] == {"x": 5}
    # the owner sees who ran it and the results
    owner_view = poweruser("GET", f"api/workflows/{public['id']}/runs").json()["runs"]
    assert [(r["id"], r["user"]) for r in owner_view] == [(run["id"], "researcher")]
    assert poweruser("GET", f"api/runs/{run['id']}/html").status_code == 200

    # private again: gone for the others, runs included
    assert poweruser("PATCH", f"api/workflows/{public['id']}", {"visibility": "private"}).status_code == 200
    assert client("GET", f"api/workflows/{public['id']}").status_code == 404
    assert client("GET", f"api/runs/{run['id']}").status_code == 404


def test_bad_input_is_refused_naming_the_field(hub, researcher):
    client, _ = researcher
    anonymous = Client(hub.url, None)
    assert anonymous("GET", "api/workflows").status_code == 401
    assert anonymous("POST", "api/workflows", {"name": "x", "notebook": notebook("1")}).status_code == 401

    # no parameters cell: publishes, with no parameters; any parameter is then unknown
    plain = client.publish("plain", notebook("print('hello')"))
    assert plain["latest_version"]["parameters"] == []
    response = client("POST", f"api/workflows/{plain['id']}/runs", {"parameters": {"x": 1}})
    assert response.status_code == 400 and response.json()["field"] == "parameters.x"

    typed = client.publish("typed", notebook("pass", parameters="n = 1\nratio = 0.5\nname = 'a'\nok = True"))
    for parameters, field in [
        ({"n": "1"}, "parameters.n"), ({"n": True}, "parameters.n"), ({"n": 1.5}, "parameters.n"),
        ({"ratio": "0.5"}, "parameters.ratio"), ({"name": 3}, "parameters.name"),
        ({"name": {"__class__": "x"}}, "parameters.name"), ({"ok": 1}, "parameters.ok"),
        ({"nope": 1}, "parameters.nope"),
    ]:  # fmt: skip
        response = client("POST", f"api/workflows/{typed['id']}/runs", {"parameters": parameters})
        assert response.status_code == 400, (parameters, response.text)
        assert response.json()["field"] == field, (parameters, response.json())
    response = client("POST", f"api/workflows/{typed['id']}/runs", {"parameters": ["n", 1]})
    assert response.status_code == 400 and response.json()["field"] == "parameters"
    assert client("GET", f"api/workflows/{typed['id']}/runs").json()["runs"] == []  # nothing was queued

    for body, field in [
        ({"notebook": notebook("1")}, "name"),
        ({"name": "x"}, "notebook"),
        ({"name": "x", "notebook": {"cells": []}}, "notebook"),
        ({"name": "x", "notebook": notebook("1"), "visibility": "everyone"}, "visibility"),
        ({"name": "x", "notebook": notebook("1"), "timeout_seconds": 0}, "timeout_seconds"),
        ({"name": "x", "notebook": notebook("1"), "retries": -1}, "retries"),
        ({"name": "x", "notebook": notebook("1"), "outputs": ["../../secrets/*"]}, "outputs"),
        ({"name": "x", "notebook": notebook("1"), "profile": "power"}, "profile"),
        ({"name": "x", "notebook": notebook("1"), "owner": "admin"}, "owner"),
        ({"name": "x", "notebook": notebook("1", parameters="a = (")}, "notebook"),
    ]:  # fmt: skip
        response = client("POST", "api/workflows", body)
        assert response.status_code == 400, (body.keys(), response.text)
        assert response.json()["field"] == field, response.json()
    taken = client("POST", "api/workflows", {"name": "plain", "notebook": notebook("1")})
    assert taken.status_code == 409 and taken.json()["workflow_id"] == plain["id"]

    # schedules: invalid cron, time zone, interval
    for body, field in [
        ({"cron": "61 * * * *", "timezone": "UTC"}, "cron"),
        ({"cron": "every day"}, "cron"),
        ({"cron": "0 6 * * *", "timezone": "Mars/Olympus"}, "timezone"),
        ({"interval_seconds": 0}, "interval_seconds"),
        ({"interval_seconds": 60, "missed_policy": "twice"}, "missed_policy"),
        ({}, "cron"),
    ]:  # fmt: skip
        response = client("PUT", f"api/workflows/{plain['id']}/schedule", body)
        assert response.status_code == 400 and response.json()["field"] == field, (body, response.text)
    weekdays = {"cron": "0 6 * * 1-5", "timezone": "Europe/Rome"}
    scheduled = client("PUT", f"api/workflows/{plain['id']}/schedule", weekdays)
    assert scheduled.status_code == 200, scheduled.text
    assert scheduled.json()["next_tick"].endswith(("T05:00:00Z", "T04:00:00Z"))  # 06:00 in Rome, winter or summer
    assert client("DELETE", f"api/workflows/{plain['id']}/schedule").status_code == 204

    # versions: same content is the same version, new content a new one
    same = client("POST", f"api/workflows/{plain['id']}/versions", {"notebook": notebook("print('hello')")})
    assert same.status_code == 200 and same.json()["number"] == 1
    changed = notebook("print('bye')", parameters="n = 2")
    new = client("POST", f"api/workflows/{plain['id']}/versions", {"notebook": changed})
    assert new.status_code == 201 and new.json()["number"] == 2
    assert new.json()["parameters"] == [{"name": "n", "type": "int", "default": 2}]
    assert client("GET", f"api/workflows/{plain['id']}").json()["latest_version"]["number"] == 2

    for path in ("api/workflows/999999", "api/workflows/abc", "api/runs/999999", "api/runs/1/outputs/x"):
        assert client("GET", path).status_code == 404, path
    assert client("POST", "api/workflows", data=b"{not json").status_code == 400


def test_users_and_servers_may_reach_the_service(hub):
    session = login(hub.url, "researcher")
    scopes = set(session.api("GET", "/user").json()["scopes"])
    assert "access:services!service=workflows" in scopes
    assert "admin:auth_state!user=researcher" in scopes  # the user role was extended, not replaced


def test_a_users_server_publishes_with_its_own_token(hub):
    """The path of the Lab's Publish command: the server's environment names the service, its token may call it."""
    session = login(hub.url, "researcher")
    assert session.post_spawn_form("standard").status_code == 200
    session.wait_ready(timeout=300)
    try:
        code = (
            "import json, os, urllib.request\n"
            "nb = {'nbformat': 4, 'nbformat_minor': 5, 'metadata': {}, 'cells': [{'cell_type': 'code', 'id': 'a', "
            "'metadata': {}, 'execution_count': None, 'outputs': [], 'source': 'print(1)'}]}\n"
            "request = urllib.request.Request(os.environ['DESP_WORKFLOWS_URL'] + 'api/workflows', method='POST',\n"
            "    data=json.dumps({'name': 'from the server', 'notebook': nb}).encode(),\n"
            "    headers={'Authorization': 'token ' + os.environ['JUPYTERHUB_API_TOKEN']})\n"
            "json.load(urllib.request.urlopen(request))['owner']"
        )
        assert run_in_kernel(hub.url, "researcher", session.new_token(), code, timeout=180) == "'researcher'"
    finally:
        session.stop_server()


# -- schedules across a restart ----------------------------------------------------------------------------------

INTERVAL = 5
GRACE = 2


def test_an_interval_schedule_ticks_once_per_tick_across_a_service_restart(tmp_path):
    port, idp_port = free_port(), free_port()
    data_dir = str(tmp_path / "hub")
    env = {"DESP_WORKFLOWS_MISSED_GRACE": str(GRACE)}
    hub = start_hub(data_dir, port=port, idp_port=idp_port, extra_env=env)
    try:
        wait_for_service(hub.url)
        client, _ = client_of(hub.url, "researcher")
        workflow = client.publish("ticking", notebook("open('tick.csv', 'w').write(str(n))", parameters="n = 0"),
                                  outputs=["tick.csv"])  # fmt: skip
        schedule = client("PUT", f"api/workflows/{workflow['id']}/schedule",
                          {"interval_seconds": INTERVAL, "missed_policy": "run_once", "parameters": {"n": 7}})
        assert schedule.status_code == 200, schedule.text
        wait_ticks(client, workflow["id"], 3)
        hub.stop()
        time.sleep(3 * INTERVAL)  # the service is down for at least two ticks
        hub = start_hub(data_dir, port=port, idp_port=idp_port, extra_env=env)
        wait_for_service(hub.url)
        before = len(ticks_of(client, workflow["id"]))
        wait_ticks(client, workflow["id"], before + 3)
        disabled = client("PUT", f"api/workflows/{workflow['id']}/schedule",
                          {"interval_seconds": INTERVAL, "parameters": {"n": 7}, "enabled": False})
        assert disabled.status_code == 200 and disabled.json()["next_tick"] is None
        ticks = ticks_of(client, workflow["id"])
        runs = client("GET", f"api/workflows/{workflow['id']}/runs").json()["runs"]
    finally:
        hub.stop()

    # every tick from the first to the last has exactly one row: no gap, no duplicate
    times = [tick_time(t["tick_at"]) for t in ticks]
    assert times == sorted(set(times))
    assert all(b - a == INTERVAL for a, b in zip(times, times[1:])), times
    # each tick that ran has its own run; each run belongs to one tick
    ran = [t for t in ticks if t["status"] == "run"]
    scheduled_runs = [r for r in runs if r["trigger"] == "schedule"]
    assert sorted(t["run_id"] for t in ran) == sorted(r["id"] for r in scheduled_runs)
    assert len({r["tick_at"] for r in scheduled_runs}) == len(scheduled_runs)
    assert all(r["parameters"] == {"n": 7} for r in scheduled_runs)
    # ticks recorded late (the outage) were missed, except the newest of each pass (policy run_once), which ran
    late_by_pass = {}
    for tick in ticks:
        if tick_time(tick["recorded_at"]) - tick_time(tick["tick_at"]) > GRACE:
            late_by_pass.setdefault(tick["recorded_at"], []).append(tick["status"])
    assert max(map(len, late_by_pass.values()), default=0) >= 2, ticks  # the outage covered two ticks or more
    for statuses in late_by_pass.values():
        assert statuses == ["missed"] * (len(statuses) - 1) + ["run"], late_by_pass
    finished = [r for r in scheduled_runs if r["status"] in FINISHED]
    assert finished and all(r["status"] == "succeeded" for r in finished), finished


def ticks_of(client, workflow_id):
    response = client("GET", f"api/workflows/{workflow_id}/schedule/ticks")
    assert response.status_code == 200, response.text
    return response.json()["ticks"]


def wait_ticks(client, workflow_id, count, timeout=180):
    deadline = time.monotonic() + timeout
    while len(ticks_of(client, workflow_id)) < count:
        assert time.monotonic() < deadline, f"fewer than {count} ticks after {timeout} s"
        time.sleep(1)


def tick_time(text):
    from datetime import datetime

    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def test_a_notebook_of_markdown_only_publishes(researcher):
    client, _ = researcher
    workflow = client.publish("just text", new_notebook(cells=[new_markdown_cell("# Title")]))
    assert workflow["latest_version"]["parameters"] == []
