"""Executive dashboard sources against the real services on 127.0.0.1: the sandbox accounting service (debits
recorded as the metering service, read back with the admin's and the executive's tokens) and a real JupyterHub
(users, groups and servers over its REST API with the dashboards service's role, `DASHBOARDS_SCOPES` of
`desp_hub.services.install`, and servers spawned with a profile).
"""

import datetime as dt
import os
import subprocess
import sys
import textwrap
import time
import uuid

import pandas as pd
import pytest
import requests

from desp_dashboards.context import DashboardContext
from desp_dashboards.executive import sources
from desp_dashboards.executive.sources import (AccountingUsage, Filters, HubGroups, HubServers, HubUsers, Sessions,
                                               SourceUnavailable)  # fmt: skip
from desp_dashboards.executive.store import ExecutiveStore
from desp_dashboards.executive.views import view_data
from desp_hub.services.install import DASHBOARDS_SCOPES
from desp_lab.accounting import Accounting
from tests.conftest_accounting import unique_user
from tests.support import free_port

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(autouse=True)
def fresh_cache():
    sources.clear_cache()
    yield
    sources.clear_cache()


def today_period() -> Filters:
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    return Filters(now - dt.timedelta(days=1), now + dt.timedelta(days=1))


def stamp(moment: dt.datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@pytest.fixture
def ledger(sandbox_accounting):
    """Two users' metered sessions, recorded as the metering service does: (users, sessions, expected DCU)."""
    meter = Accounting(sandbox_accounting.url, token=sandbox_accounting.meter_token)
    alice, bob = unique_user("exa"), unique_user("exb")
    started = dt.datetime.now(dt.UTC).replace(microsecond=0, tzinfo=None) - dt.timedelta(hours=2)
    sessions = {
        (alice, "power"): f"{alice}//{stamp(started)}",
        (bob, "standard"): f"{bob}/lab2/{stamp(started + dt.timedelta(minutes=30))}",
    }
    amounts = {(alice, "power"): ["0.400", "0.400", "0.150"], (bob, "standard"): ["0.100", "0.025"]}
    for (user, profile), session in sessions.items():
        begin = started if user == alice else started + dt.timedelta(minutes=30)
        for index, amount in enumerate(amounts[(user, profile)]):
            start = begin + dt.timedelta(minutes=10 * index)
            meter.record(user, "debit", amount, f"jupyterhub:{session}:{index}", service="jupyterhub",
                         profile=profile, session=session, period_start=start,
                         period_end=start + dt.timedelta(minutes=10))  # fmt: skip
    meter.record(alice, "debit", "0.050", f"workflows:{alice}:1", service="workflows", profile=None)
    return alice, bob, sessions, started


def statistics_context(accounting, token) -> DashboardContext:
    return DashboardContext(user="executive", groups={"executives"}, accounting_url=accounting.url,
                            user_token=token, hub_api_url="http://127.0.0.1:9/hub/api")  # fmt: skip


@pytest.mark.parametrize("reader", ["admin", "executive"])
def test_accounting_usage_reads_everyones_debits(sandbox_accounting, ledger, reader):
    alice, bob, sessions, started = ledger
    token = sandbox_accounting.admin_token if reader == "admin" else (
        lambda: sandbox_accounting.token_for("executive"))  # fmt: skip
    debits = AccountingUsage(statistics_context(sandbox_accounting, token)).load(today_period())
    ours = debits[debits["user"].isin([alice, bob])]
    assert ours.groupby("user")["amount"].sum().round(3).to_dict() == {alice: 1.0, bob: 0.125}
    assert set(ours["service"]) == {"jupyterhub", "workflows"}
    assert ours[ours["service"] == "workflows"]["profile"].tolist() == ["(none)"]
    # The frame agrees with the service's own report, for everyone in the period.
    report = Accounting(sandbox_accounting.url, token=token).usage(group_by="", start=today_period().start,
                                                                   end=today_period().end)  # fmt: skip
    assert debits["amount"].sum() == pytest.approx(float(report["total"]))
    assert len(debits) == report["count"]
    assert ours[ours["session"] == sessions[(alice, "power")]]["time"].min() == pd.Timestamp(started)


def test_accounting_filters_narrow_on_the_service(sandbox_accounting, ledger):
    alice, bob, _, _ = ledger
    context = statistics_context(sandbox_accounting, sandbox_accounting.admin_token)
    period = today_period()
    power = AccountingUsage(context).load(Filters(period.start, period.end, profile="power"))
    assert set(power["profile"]) == {"power"} and power[power["user"] == alice]["amount"].sum() == pytest.approx(0.95)
    workflows = AccountingUsage(context).load(Filters(period.start, period.end, service="workflows"))
    assert set(workflows["service"]) == {"workflows"} and bob not in set(workflows["user"])
    past = AccountingUsage(context).load(Filters(dt.datetime(2020, 1, 1), dt.datetime(2020, 1, 2)))
    assert past.empty and list(past.columns) == sources.DEBIT_COLUMNS


def test_sessions_are_runs_from_the_ledger(sandbox_accounting, ledger):
    alice, bob, sessions, started = ledger
    context = statistics_context(sandbox_accounting, sandbox_accounting.admin_token)
    runs = Sessions(context).load(today_period())
    ours = runs[runs["who"].isin([alice, bob])].set_index("session")
    assert len(ours) == 2  # the workflows debit has no session
    alice_run = ours.loc[sessions[(alice, "power")]]
    assert (alice_run["who"], alice_run["what"], alice_run["status"]) == (alice, "power", "metered")
    assert (alice_run["start"], alice_run["end"]) == (pd.Timestamp(started),
                                                      pd.Timestamp(started + dt.timedelta(minutes=30)))  # fmt: skip
    bob_run = ours.loc[sessions[(bob, "standard")]]
    assert bob_run["end"] - bob_run["start"] == pd.Timedelta(minutes=20)


def test_an_ordinary_token_is_refused_rather_than_shown_as_the_platform(sandbox_accounting, ledger):
    context = DashboardContext(user="researcher", groups={"desp-users"}, accounting_url=sandbox_accounting.url,
                               user_token=lambda: sandbox_accounting.token_for("researcher"))  # fmt: skip
    with pytest.raises(SourceUnavailable, match="executive-statistics"):
        AccountingUsage(context).load(today_period())
    no_token = DashboardContext(user=None, groups=set(), accounting_url=sandbox_accounting.url)
    with pytest.raises(SourceUnavailable):
        AccountingUsage(no_token).load(today_period())


# -- a real JupyterHub -----------------------------------------------------------------------------------------------

PROXY = os.path.join(os.path.dirname(sys.executable), "configurable-http-proxy")  # installed next to this Python
SERVICE_TOKEN = uuid.uuid4().hex
TESTER_TOKEN = uuid.uuid4().hex
HUB_USERS = {"ulla-sigrid": ["desp-users", "power-users"], "bert-oskar": ["desp-users"],
             "cleo-maris": ["desp-users", "executives"]}  # fmt: skip


class Hub:
    def __init__(self, workdir):
        self.workdir = workdir
        self.port, self.hub_port, self.proxy_port = free_port(), free_port(), free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.api = f"{self.url}/hub/api"
        self.process = None

    def config(self) -> str:
        groups = {}
        for user, names in HUB_USERS.items():
            for group in names:
                groups.setdefault(group, {"users": []})["users"].append(user)
        return textwrap.dedent(f"""
            c.JupyterHub.ip = "127.0.0.1"
            c.JupyterHub.port = {self.port}
            c.JupyterHub.hub_ip = "127.0.0.1"
            c.JupyterHub.hub_port = {self.hub_port}
            c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{self.proxy_port}"
            c.JupyterHub.db_url = "sqlite:///{self.workdir}/jupyterhub.sqlite"
            c.JupyterHub.cookie_secret_file = "{self.workdir}/cookie_secret"
            c.ConfigurableHTTPProxy.pid_file = "{self.workdir}/proxy.pid"
            c.ConfigurableHTTPProxy.command = ["{PROXY}"]
            c.JupyterHub.authenticator_class = "dummy"
            c.Authenticator.allowed_users = {set(HUB_USERS)!r}
            c.JupyterHub.load_groups = {groups!r}
            c.JupyterHub.spawner_class = "jupyterhub.tests.mocking.MockSpawner"
            c.SimpleLocalProcessSpawner.home_dir_template = "{self.workdir}/home/{{username}}"
            c.JupyterHub.allow_named_servers = True
            c.JupyterHub.services = [{{"name": "dashboards", "api_token": "{SERVICE_TOKEN}"}},
                                     {{"name": "tester", "api_token": "{TESTER_TOKEN}"}}]
            c.JupyterHub.load_roles = [
                {{"name": "dashboards", "services": ["dashboards"], "scopes": {list(DASHBOARDS_SCOPES)!r}}},
                {{"name": "tester", "services": ["tester"], "scopes": ["servers", "read:users"]}},
            ]
        """)  # fmt: skip

    def start(self):
        config = self.workdir / "jupyterhub_config.py"
        config.write_text(self.config())
        self.log = open(self.workdir / "hub.log", "wb")  # noqa: SIM115 (closed in stop)
        self.process = subprocess.Popen([sys.executable, "-m", "jupyterhub", "-f", str(config)], cwd=self.workdir,
                                        stdout=self.log, stderr=subprocess.STDOUT, env=dict(os.environ))  # fmt: skip
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.workdir / "hub.log").read_text()[-3000:]
            try:
                if requests.get(f"{self.api}/", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise AssertionError("JupyterHub did not start: " + (self.workdir / "hub.log").read_text()[-3000:])

    def tester(self, method, path, **kwargs):
        return requests.request(method, f"{self.api}{path}", headers={"Authorization": f"token {TESTER_TOKEN}"},
                                timeout=30, **kwargs)  # fmt: skip

    def spawn(self, user, server, profile):
        response = self.tester("POST", f"/users/{user}/servers/{server}", json={"profile": profile})
        assert response.status_code in (201, 202), response.text
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            model = self.tester("GET", f"/users/{user}").json()
            if (model["servers"].get(server) or {}).get("ready"):
                return model["servers"][server]
            time.sleep(0.3)
        raise AssertionError(f"{user}/{server} did not start")

    def stop_server(self, user, server):
        response = self.tester("DELETE", f"/users/{user}/servers/{server}")
        assert response.status_code in (202, 204), response.text
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if not (self.tester("GET", f"/users/{user}").json()["servers"].get(server) or {}).get("ready"):
                return
            time.sleep(0.3)

    def stop(self):
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()  # SIGTERM: the hub stops its proxy and spawned servers
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(10)
        self.log.close()


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    running = Hub(tmp_path_factory.mktemp("exec-hub")).start()
    try:
        running.spawn("ulla-sigrid", "main", "power")
        running.spawn("bert-oskar", "lab2", "standard")
        running.stop_server("bert-oskar", "lab2")
        running.spawn("cleo-maris", "gpu", "power")
        yield running
    finally:
        running.stop()


def hub_context(hub, member=True) -> DashboardContext:
    return DashboardContext(user="cleo-maris" if member else "bert-oskar",
                            groups={"executives"} if member else {"desp-users"}, hub_api_url=hub.api,
                            hub_api_token=SERVICE_TOKEN)  # fmt: skip


def test_hub_users_groups_and_servers(hub):
    context, period = hub_context(hub), today_period()
    users = HubUsers(context).load(period)
    assert set(users["user"]) == set(HUB_USERS)
    assert users.set_index("user")["groups"].to_dict() == {user: ",".join(sorted(groups))
                                                           for user, groups in HUB_USERS.items()}  # fmt: skip
    assert users["last_activity"].dt.tz is None
    if "read:users" in DASHBOARDS_SCOPES:
        assert users["created"].notna().all() and users["created"].dt.tz is None
    else:  # the hub gives no registration date: the curve says so rather than show zeros
        with pytest.raises(SourceUnavailable, match="read:users"):
            view_data("registrations", hub_context(hub, member=False), period)
    servers = HubServers(context).load(period)
    table = sorted(zip(servers["user"], servers["server"], servers["profile"], servers["state"], strict=True))
    assert table == [("bert-oskar", "lab2", "standard", "stopped"), ("cleo-maris", "gpu", "power", "running"),
                     ("ulla-sigrid", "main", "power", "running")]  # fmt: skip
    groups = HubGroups(context).load(period)
    assert sorted(groups[groups["group"] == "power-users"]["user"]) == ["ulla-sigrid"]
    only_executives = HubServers(context).load(Filters(period.start, period.end, group="executives"))
    assert list(only_executives["user"]) == ["cleo-maris"]


def test_hub_views_for_the_public_and_for_members(hub):
    period = today_period()
    by_profile = view_data("running_servers_by_profile", hub_context(hub, member=False), period)
    assert by_profile.to_dict("records") == [{"profile": "power", "servers": 2}]
    per_group = view_data("users_per_group", hub_context(hub, member=False), period).set_index("group")["users"]
    assert per_group.to_dict() == {"desp-users": 3, "executives": 1, "power-users": 1}
    for name in ("running_servers_by_profile", "users_per_group", "active_users", "summary"):
        text = view_data(name, hub_context(hub, member=False), period).to_csv()
        assert not [user for user in HUB_USERS if user in text]
    with pytest.raises(PermissionError):
        view_data("servers", hub_context(hub, member=False), period)
    servers = view_data("servers", hub_context(hub), period)
    assert set(servers["user"]) == set(HUB_USERS)


def test_a_store_joins_the_ledger_with_the_hub(hub, sandbox_accounting):
    """Runs of hub users recorded in the ledger: the one whose server is up is "running", groups filter the DCU."""
    server = hub.tester("GET", "/users/ulla-sigrid").json()["servers"]["main"]
    started = pd.Timestamp(server["started"]).tz_convert("UTC").tz_localize(None).floor("s")
    session = f"ulla-sigrid/main/{stamp(started.to_pydatetime())}"
    meter = Accounting(sandbox_accounting.url, token=sandbox_accounting.meter_token)
    key = uuid.uuid4().hex
    meter.record("ulla-sigrid", "debit", "0.300", f"{key}:0", service="jupyterhub", profile="power", session=session,
                 period_start=started.to_pydatetime(), period_end=started.to_pydatetime() + dt.timedelta(minutes=5))
    meter.record("bert-oskar", "debit", "0.200", f"{key}:1", service="jupyterhub", profile="standard",
                 session=f"bert-oskar/lab2/{stamp(started.to_pydatetime())}")  # fmt: skip
    context = DashboardContext(user="cleo-maris", groups={"executives"}, hub_api_url=hub.api,
                               hub_api_token=SERVICE_TOKEN, accounting_url=sandbox_accounting.url,
                               user_token=sandbox_accounting.admin_token)  # fmt: skip
    store = ExecutiveStore(context, today_period())
    runs = store.runs().set_index("session")
    assert runs.loc[session, "status"] == "running"
    assert runs.loc[f"bert-oskar/lab2/{stamp(started.to_pydatetime())}", "status"] == "metered"
    store.group = "power-users"
    assert set(store.debits()["user"]) == {"ulla-sigrid"}
    by_group = view_data("dcu_by_group", context, today_period()).set_index("group")
    assert by_group.loc["power-users", "dcu"] >= 0.3 and by_group.loc["desp-users", "users"] >= 2


# -- the catalogue (the map's data) --------------------------------------------------------------------------------


def test_collections_give_the_map_real_extents(sandbox_catalogue):
    context = DashboardContext(user="researcher", groups={"desp-users"}, catalogue_url=sandbox_catalogue.stac_url,
                               user_token=lambda: sandbox_catalogue.token_for("researcher"))  # fmt: skip
    collections = view_data("collections_map", context, today_period()).set_index("collection")
    era5 = collections.loc["EO.ECMWF.DAT.REANALYSIS_ERA5_SINGLE_LEVELS"]
    assert (era5["west"], era5["south"], era5["east"], era5["north"]) == pytest.approx((-180, -90, 180, 90), abs=1)
    assert ((collections["west"] <= collections["east"]) & (collections["south"] <= collections["north"])).all()
    assert len(collections) >= 2
    anonymous = DashboardContext(user=None, groups=set(), catalogue_url=sandbox_catalogue.stac_url)
    with pytest.raises(SourceUnavailable, match="sign in"):
        view_data("collections_map", anonymous, today_period())
