"""Executive dashboard views without a server: every panel builds and renders to bokeh models, exports read back
with the right rows, public output names nobody, restricted views are neither built nor served to non-members.

The sources here are in-memory `Source` objects over fixed hub and ledger records (the store's plug-in point); the
sources' own reading of the real services is tested in test_executive_sources.py.
"""

import dataclasses
import datetime as dt
import io
import json
from collections.abc import Callable

import pandas as pd
import panel as pn
import pytest
from bokeh.core.serialization import Serialized
from bokeh.document import Document

from desp_dashboards.context import DashboardContext
from desp_dashboards.executive import app, exports, sources
from desp_dashboards.executive.sources import Filters, SourceUnavailable, debits_frame, runs_frame
from desp_dashboards.executive.store import ExecutiveStore
from desp_dashboards.executive.views import VIEWS, VIEWS_BY_NAME, ExecutiveView, view_data, views_for

PERIOD = Filters(dt.datetime(2026, 3, 1), dt.datetime(2026, 3, 8))
NAMES = ["ulla-sigrid", "bert-oskar", "cleo-maris"]
ULLA, BERT, CLEO = NAMES
USERS = [
    {"name": ULLA, "groups": ["desp-users", "power-users"], "created": "2026-01-10T08:00:00Z",
     "last_activity": "2026-03-02T10:00:00Z",
     "servers": {"": {"ready": True, "started": "2026-03-07T09:00:00Z", "user_options": {"profile": "power"}}}},
    {"name": BERT, "groups": ["desp-users"], "created": "2026-03-03T12:00:00Z", "last_activity": "2026-03-03T12:30:00Z",
     "servers": {"lab2": {"ready": False, "stopped": True, "started": None, "user_options": {"profile": "standard"}}}},
    {"name": CLEO, "groups": ["executives"], "created": "2026-03-05T00:00:00Z", "last_activity": None, "servers": {}},
]  # fmt: skip
GROUPS = [{"name": "desp-users", "users": [ULLA, BERT]}, {"name": "power-users", "users": [ULLA]},
          {"name": "executives", "users": [CLEO]}]  # fmt: skip
LEDGER = [
    {"user": ULLA, "kind": "debit", "amount": "1.500", "service": "jupyterhub", "profile": "power",
     "session": f"{ULLA}//2026-03-01T10:00:00Z", "period_start": "2026-03-01T10:00:00Z",
     "period_end": "2026-03-01T11:00:00Z"},
    {"user": ULLA, "kind": "debit", "amount": "2.000", "service": "jupyterhub", "profile": "power",
     "session": f"{ULLA}//2026-03-07T09:00:00Z", "period_start": "2026-03-07T09:00:00Z",
     "period_end": "2026-03-07T10:00:00Z"},
    {"user": BERT, "kind": "debit", "amount": "0.250", "service": "jupyterhub", "profile": "standard",
     "session": f"{BERT}/lab2/2026-03-03T12:00:00Z", "period_start": "2026-03-03T12:00:00Z",
     "period_end": "2026-03-03T13:00:00Z"},
    {"user": CLEO, "kind": "debit", "amount": "0.125", "service": "workflows", "profile": None, "session": None,
     "period_start": None, "period_end": None, "created": "2026-03-04T08:00:00Z"},
]  # fmt: skip
COLLECTIONS = pd.DataFrame({"collection": ["EO.ERA5", "EO.S2"], "title": ["ERA5", "Sentinel-2"],
                            "west": [-180.0, 5.0], "south": [-90.0, 45.0], "east": [180.0, 10.0],
                            "north": [90.0, 48.0], "start": pd.to_datetime(["1940-01-01", "2017-01-01"]),
                            "end": pd.to_datetime([None, None])})  # fmt: skip


@dataclasses.dataclass
class MemorySource:
    """A Source over records held in memory, read through the same frame builders as the real sources."""

    name: str
    load_frame: Callable[[Filters], pd.DataFrame]
    restricted: bool = True
    title: str = "in memory"

    def load(self, filters):
        return self.load_frame(filters)


def memory_sources():
    def ledger(filters):
        return debits_frame([entry for entry in LEDGER if filters.profile in ("All", entry["profile"])])

    return [
        MemorySource("hub_users", lambda f: sources.users_frame(USERS, f)),
        MemorySource("hub_servers", lambda f: sources.servers_frame(USERS, f)),
        MemorySource("hub_groups", lambda f: sources.groups_frame(GROUPS, f)),
        MemorySource("dcu_debits", ledger),
        MemorySource("runs", lambda f: runs_frame(ledger(f))),
        MemorySource("collections", lambda f: COLLECTIONS.copy(), restricted=False),
    ]


def context(member: bool) -> DashboardContext:
    user = CLEO if member else BERT
    return DashboardContext(user=user, groups={"executives"} if member else {"desp-users"},
                            hub_api_url="http://127.0.0.1:9/hub/api", hub_api_token="service-token",
                            user_token=lambda: "user-token")  # fmt: skip


@pytest.fixture(autouse=True)
def fresh_cache():
    sources.clear_cache()
    yield
    sources.clear_cache()


def store_for(member: bool, filters=PERIOD) -> ExecutiveStore:
    return ExecutiveStore(context(member), filters, sources=memory_sources())


def rendered_json(*objects) -> str:
    """The bokeh document JSON of `objects` laid out in a column (what a browser would receive)."""
    document = Document()
    document.add_root(pn.Column(*objects).get_root(document))
    return json.dumps(document.to_json(), default=_serialized)


def _serialized(value):
    if isinstance(value, Serialized):  # binary buffers too: a name must not hide in an array
        return {"content": value.content, "buffers": [bytes(b.data).decode("latin-1") for b in value.buffers]}
    return repr(value)


def test_the_memory_sources_follow_the_source_protocol():
    assert all(isinstance(source, sources.Source) for source in memory_sources())
    assert {factory.name for factory in sources.SOURCES} == {source.name for source in memory_sources()}


@pytest.mark.parametrize("spec", VIEWS, ids=lambda spec: spec.name)
def test_every_view_builds_and_renders_without_a_server(spec):
    view = ExecutiveView(spec=spec, store=store_for(member=True))
    frame = view.data()
    assert isinstance(frame, pd.DataFrame) and not frame.empty
    text = rendered_json(view)
    assert spec.title in text
    assert "No data for these filters" not in text and "alert-warning" not in text


def test_views_follow_the_filters():
    store = store_for(member=True)
    view = ExecutiveView(spec=VIEWS_BY_NAME["dcu_by_profile"], store=store)
    assert view.data().set_index("profile")["dcu"].to_dict() == {"power": 3.5, "standard": 0.25, "(none)": 0.125}
    store.profile = "standard"
    assert view.data()["dcu"].tolist() == [0.25]
    store.profile = "All"
    store.group = "power-users"
    assert view.data()["dcu"].tolist() == [3.5]
    store.param.update(group="All", start=dt.datetime(2026, 3, 6))
    spawns = ExecutiveView(spec=VIEWS_BY_NAME["spawns_per_day"], store=store).data()
    assert spawns["spawns"].sum() == 1 and spawns["day"].min() == pd.Timestamp("2026-03-06")


@pytest.mark.parametrize("name", ["dcu_per_day", "runs", "users", "summary", "collections_map"])
def test_csv_and_xlsx_exports_read_back_with_the_right_rows(name):
    view = ExecutiveView(spec=VIEWS_BY_NAME[name], store=store_for(member=True))
    expected = view.data()
    from_csv = pd.read_csv(view.csv())
    assert list(from_csv.columns) == list(expected.columns) and len(from_csv) == len(expected)
    workbook = view.xlsx().getvalue()
    assert workbook[:2] == b"PK"  # a zip container, as every .xlsx
    from_xlsx = pd.read_excel(io.BytesIO(workbook), engine="openpyxl", sheet_name=name)
    assert list(from_xlsx.columns) == list(expected.columns) and len(from_xlsx) == len(expected)
    for column in expected.columns:
        if pd.api.types.is_datetime64_any_dtype(expected[column]):
            assert pd.to_datetime(from_xlsx[column]).tolist() == expected[column].tolist()
            assert pd.to_datetime(from_csv[column]).tolist() == expected[column].tolist()
        elif pd.api.types.is_numeric_dtype(expected[column]):
            assert from_xlsx[column].tolist() == pytest.approx(expected[column].tolist())
        else:
            assert from_xlsx[column].fillna("").astype(str).tolist() == expected[column].fillna("").astype(str).tolist()


def test_runs_export_is_the_gantt_rows():
    rows = ExecutiveView(spec=VIEWS_BY_NAME["runs"], store=store_for(member=True)).data()
    assert list(rows.columns) == ["who", "what", "start", "end", "status", "service", "session"]
    assert rows[["who", "what", "status"]].values.tolist() == [[ULLA, "power", "metered"],
                                                               [BERT, "standard", "metered"],
                                                               [ULLA, "power", "running"]]  # fmt: skip


def test_the_public_page_names_nobody():
    viewer = context(member=False)
    store = store_for(member=False)
    public = app.build_views(viewer, store)
    assert [view.spec.name for view in public] == [spec.name for spec in VIEWS if not spec.restricted]
    text = rendered_json(*public, app.about_text(viewer), app.filter_widgets(store))
    exported = [exports.csv_bytes(view.data()).decode() + view.xlsx().getvalue().hex() for view in public]
    for name in NAMES:
        assert name not in text
        assert name.encode().hex() not in "".join(exported) and name not in "".join(exported)
    assert "Users per group" in text and "DCU by profile" in text


def test_a_member_sees_the_restricted_views_and_names():
    member = context(member=True)
    views = app.build_views(member, store_for(member=True))
    assert {spec.name for spec in VIEWS if spec.restricted} <= {view.spec.name for view in views}
    text = rendered_json(*views)
    assert ULLA in text and BERT in text


def test_create_app_builds_no_restricted_panel_for_a_non_member():
    page = app.create_app(context(member=False), PERIOD, sources=memory_sources())
    public = {spec.name for spec in VIEWS if not spec.restricted}
    assert {card.name for card in pn.Column(*page.main.objects).select(pn.Card)} == public
    assert "ulla-sigrid" not in rendered_json(*page.main.objects)
    member_page = app.create_app(context(member=True), PERIOD, sources=memory_sources())
    assert {card.name for card in pn.Column(*member_page.main.objects).select(pn.Card)} == {spec.name for spec in VIEWS}


def test_the_filter_menus_offer_what_the_sources_know():
    store = store_for(member=False)
    store.refresh_options()
    assert store.param.profile.objects == ["All", "(none)", "power", "standard"]
    assert store.param.service.objects == ["All", "jupyterhub", "workflows"]
    assert store.param.group.objects == ["All", "desp-users", "executives", "power-users"]


@pytest.mark.parametrize("name", [spec.name for spec in VIEWS if spec.restricted])
def test_view_data_refuses_restricted_views_to_non_members(name):
    outsider = DashboardContext(user="someone", groups={"desp-users"}, hub_api_url="http://127.0.0.1:9/hub/api")
    with pytest.raises(PermissionError, match="restricted"):
        view_data(name, outsider, PERIOD)
    anonymous = DashboardContext(user=None, groups={"executives"})
    with pytest.raises(PermissionError):
        view_data(name, anonymous)


def test_view_data_unknown_view_and_unreachable_source():
    outsider = DashboardContext(user="someone", groups=set(), hub_api_url="http://127.0.0.1:9/hub/api")
    with pytest.raises(KeyError):
        view_data("nothing", outsider)
    with pytest.raises(SourceUnavailable, match="hub did not answer"):
        view_data("users_per_group", outsider, PERIOD)


def test_an_unavailable_source_shows_its_reason_in_the_panel():
    unavailable = [source for source in memory_sources() if source.name != "dcu_debits"]

    def refuse(filters):
        raise SourceUnavailable("Platform-wide DCU statistics need the executive-statistics role.")

    unavailable.append(MemorySource("dcu_debits", refuse))
    store = ExecutiveStore(context(False), PERIOD, sources=unavailable)
    text = rendered_json(ExecutiveView(spec=VIEWS_BY_NAME["dcu_by_service"], store=store))
    assert "executive-statistics role" in text
    summary = ExecutiveView(spec=VIEWS_BY_NAME["summary"], store=store).data()
    assert "DCU consumed in the period" not in set(summary["statistic"])


def test_views_for_and_view_names_are_endpoint_safe():
    assert all(spec.name.replace("_", "").isalnum() for spec in VIEWS)
    assert len(VIEWS_BY_NAME) == len(VIEWS)
    assert all(not spec.restricted for spec in views_for(context(member=False)))


def test_a_panel_redraws_when_a_filter_changes():
    store = store_for(member=False)
    document = Document()
    document.add_root(pn.panel(ExecutiveView(spec=VIEWS_BY_NAME["dcu_by_profile"], store=store)).get_root(document))

    def text():
        return json.dumps(document.to_json(), default=_serialized)

    assert '"power"' in text() and '"standard"' in text()
    store.profile = "standard"
    assert '"power"' not in text() and '"standard"' in text()
