"""Executive dashboard: the pure pandas aggregations and the filters, on frames built here (no server, no I/O)."""

import datetime as dt

import pandas as pd
import pytest

from desp_dashboards.executive import store as agg
from desp_dashboards.executive.sources import (ALL, Filters, debits_frame, groups_frame, runs_frame, servers_frame,
                                               users_frame)  # fmt: skip

T = pd.Timestamp
PERIOD = Filters(dt.datetime(2026, 3, 1), dt.datetime(2026, 3, 8))
NAMES = {"alice", "bob", "carol", "dave"}

HUB_USERS = [
    {"name": "alice", "groups": ["desp-users", "power-users"], "admin": False, "created": "2026-01-10T08:00:00Z",
     "last_activity": "2026-03-02T10:00:00.123Z",
     "servers": {"": {"name": "", "ready": True, "pending": None, "started": "2026-03-07T09:00:00.5Z",
                      "last_activity": "2026-03-07T10:00:00Z", "user_options": {"profile": "power"}}}},
    {"name": "bob", "groups": ["desp-users"], "admin": False, "created": "2026-03-03T12:00:00+00:00",
     "last_activity": "2026-03-03T12:30:00Z",
     "servers": {"": {"name": "", "ready": False, "pending": None, "stopped": True, "started": None,
                      "last_activity": "2026-03-03T13:00:00Z", "user_options": {"profile": "standard"}}}},
    {"name": "carol", "groups": ["desp-users", "executives"], "admin": False, "created": "2026-03-05T00:00:00Z",
     "last_activity": "2026-02-20T00:00:00Z",
     "servers": {"gpu": {"name": "gpu", "ready": True, "started": "2026-03-06T00:00:00Z",
                         "user_options": {"profile": "ai"}}}},
    {"name": "dave", "groups": [], "admin": True, "created": "2026-04-01T00:00:00Z", "last_activity": None,
     "servers": {}},
]  # fmt: skip
HUB_GROUPS = [{"name": "desp-users", "users": ["alice", "bob", "carol"]}, {"name": "power-users", "users": ["alice"]},
              {"name": "executives", "users": ["carol"]}]  # fmt: skip


def debit(user, amount, start, end=None, profile="standard", service="jupyterhub", session=None):
    return {"user": user, "kind": "debit", "amount": amount, "service": service, "profile": profile,
            "session": session, "period_start": start, "period_end": end or start, "created": start}  # fmt: skip


A1, A2 = "alice//2026-03-01T10:00:00Z", "alice//2026-03-07T09:00:00Z"
DEBITS = debits_frame([
    debit("alice", "1.500", "2026-03-01T10:00:00Z", "2026-03-01T11:00:00Z", "power", session=A1),
    debit("alice", "0.500", "2026-03-01T11:00:00Z", "2026-03-01T11:20:00Z", "power", session=A1),
    debit("alice", "2.000", "2026-03-07T09:00:00Z", "2026-03-07T10:00:00Z", "power", session=A2),
    debit("bob", "0.250", "2026-03-03T12:00:00Z", "2026-03-03T13:00:00Z", session="bob//2026-03-03T12:00:00Z"),
    debit("carol", "4.000", "2026-03-06T00:00:00Z", "2026-03-06T02:00:00Z", "ai",
          session="carol/gpu/2026-03-06T00:00:00Z"),
    debit("carol", "0.125", "2026-03-02T00:00:00Z", service="workflows", profile=None),
])  # fmt: skip


def test_filters_default_and_query():
    now = dt.datetime(2026, 3, 10, 15, 30)
    default = Filters.default(now)
    assert (default.start, default.end) == (dt.datetime(2026, 2, 9), dt.datetime(2026, 3, 11))
    chosen = Filters.from_query({"start": "2026-03-01", "end": "2026-03-08T00:00:00Z", "profile": "power"}, now)
    assert chosen == Filters(dt.datetime(2026, 3, 1), dt.datetime(2026, 3, 8), profile="power")
    assert chosen.service == chosen.group == ALL


@pytest.mark.parametrize("query, message", [
    pytest.param({"start": "yesterday"}, "start", id="bad-date"),
    pytest.param({"start": "2026-03-08", "end": "2026-03-01"}, "after its start", id="reversed"),
    pytest.param({"user": "alice"}, "unknown filter 'user'", id="unknown"),
])  # fmt: skip
def test_filters_refuse_bad_queries(query, message):
    with pytest.raises(ValueError, match=message):
        Filters.from_query(query, dt.datetime(2026, 3, 10))


def test_users_frame_counts_registered_by_end_and_group():
    users = users_frame(HUB_USERS, PERIOD)
    assert sorted(users["user"]) == ["alice", "bob", "carol"]  # dave registered after the period
    assert users.loc[users["user"] == "alice", "last_activity"].item() == T("2026-03-02T10:00:00.123")
    assert users["created"].dt.tz is None
    assert list(users_frame(HUB_USERS, Filters(PERIOD.start, PERIOD.end, group="power-users"))["user"]) == ["alice"]


def test_servers_frame_profiles_states_and_filters():
    servers = servers_frame(HUB_USERS, PERIOD)
    assert sorted(zip(servers["user"], servers["profile"], servers["state"], strict=True)) == [
        ("alice", "power", "running"), ("bob", "standard", "stopped"), ("carol", "ai", "running")]
    assert agg.servers_by_profile(servers).to_dict("records") == [{"profile": "ai", "servers": 1},
                                                                   {"profile": "power", "servers": 1}]
    only_ai = servers_frame(HUB_USERS, Filters(PERIOD.start, PERIOD.end, profile="ai"))
    assert list(only_ai["user"]) == ["carol"]


def test_summary_and_per_day_users():
    users, servers = users_frame(HUB_USERS, PERIOD), servers_frame(HUB_USERS, PERIOD)
    summary = dict(agg.summary(users, servers, DEBITS, runs_frame(DEBITS), PERIOD).itertuples(index=False))
    assert summary == {"Registered users": 3, "Users active in the period (last activity)": 2, "Running servers": 2,
                       "Server runs started in the period": 4, "DCU consumed in the period": 8.375}  # fmt: skip
    registrations = agg.registrations_per_day(users, PERIOD)
    assert len(registrations) == 7 and registrations["day"].iloc[0] == T("2026-03-01")
    assert registrations["new_users"].sum() == 2  # bob and carol; alice registered before
    assert list(registrations["registered"]) == [1, 1, 2, 2, 3, 3, 3]
    active = agg.active_users_per_day(users, PERIOD)
    assert active.set_index("day")["users"].to_dict() == {T(f"2026-03-0{d}"): int(d in (2, 3)) for d in range(1, 8)}


def test_users_per_group():
    groups = groups_frame(HUB_GROUPS, PERIOD)
    assert agg.users_per_group(groups).to_dict("records") == [
        {"group": "desp-users", "users": 3}, {"group": "executives", "users": 1}, {"group": "power-users", "users": 1}]
    assert list(groups_frame(HUB_GROUPS, Filters(PERIOD.start, PERIOD.end, group="executives"))["user"]) == ["carol"]


def test_dcu_totals_are_conserved_by_profile_service_and_day():
    total = DEBITS["amount"].sum()
    assert total == pytest.approx(8.375)
    by_profile = agg.dcu_by(DEBITS, "profile")
    assert by_profile["dcu"].sum() == pytest.approx(total) and by_profile["debits"].sum() == len(DEBITS)
    assert by_profile.iloc[0].to_dict() == {"profile": "ai", "dcu": 4.0, "debits": 1}  # largest first
    assert agg.dcu_by(DEBITS, "service").set_index("service")["dcu"].to_dict() == {"jupyterhub": 8.25,
                                                                                   "workflows": 0.125}
    table = agg.dcu_by_service_and_profile(DEBITS)
    assert table["dcu"].sum() == pytest.approx(total) and table["debits"].sum() == len(DEBITS)
    assert table.iloc[0].to_dict() == {"service": "jupyterhub", "profile": "ai", "dcu": 4.0, "debits": 1, "runs": 1}
    assert table.set_index(["service", "profile"]).loc[("jupyterhub", "power"), "runs"] == 2
    per_day = agg.dcu_per_day(DEBITS, PERIOD)
    assert per_day["dcu"].sum() == pytest.approx(total)
    assert set(per_day["profile"]) == {"(none)", "ai", "power", "standard"}
    assert len(per_day) == 7 * 4  # zero-filled: every day x every profile
    assert per_day[(per_day["day"] == T("2026-03-01")) & (per_day["profile"] == "power")]["dcu"].item() == 2.0


def test_time_range_cuts_and_filters_narrow():
    first_days = Filters(dt.date(2026, 3, 1), dt.date(2026, 3, 4))
    per_day = agg.dcu_per_day(DEBITS, first_days)
    assert per_day["dcu"].sum() == pytest.approx(1.5 + 0.5 + 0.25 + 0.125)
    power = Filters(PERIOD.start, PERIOD.end, profile="power")
    assert agg.filter_rows(DEBITS, power, "time")["amount"].sum() == pytest.approx(4.0)
    workflows = Filters(PERIOD.start, PERIOD.end, service="workflows")
    assert list(agg.filter_rows(DEBITS, workflows, "time")["user"]) == ["carol"]
    groups = groups_frame(HUB_GROUPS, PERIOD)
    executives = agg.members(groups, "executives")
    assert agg.filter_rows(DEBITS, PERIOD, None, users=executives)["amount"].sum() == pytest.approx(4.125)


def test_dcu_by_group_counts_a_user_in_each_group_and_keeps_the_groupless():
    debits = pd.concat([DEBITS, debits_frame([debit("erin", "1.000", "2026-03-04T00:00:00Z")])], ignore_index=True)
    by_group = agg.dcu_by_group(debits, groups_frame(HUB_GROUPS, PERIOD)).set_index("group")
    assert by_group.loc["desp-users", "dcu"] == pytest.approx(8.375)  # everyone but erin
    assert by_group.loc["power-users", "dcu"] == pytest.approx(4.0)
    assert by_group.loc["executives", "dcu"] == pytest.approx(4.125)
    assert by_group.loc[agg.NO_GROUP].to_dict() == {"dcu": 1.0, "users": 1}
    per_day = agg.dcu_per_day_by_group(debits, groups_frame(HUB_GROUPS, PERIOD), PERIOD)
    assert len(per_day) == 7 * 4  # every day x (three groups + NO_GROUP)
    assert per_day.groupby("group")["dcu"].sum().round(3).to_dict() == by_group["dcu"].to_dict()
    erin_day = per_day[(per_day["day"] == T("2026-03-04")) & (per_day["group"] == agg.NO_GROUP)]
    assert erin_day["dcu"].item() == 1.0


def test_runs_spawns_durations_and_running_status():
    runs = runs_frame(DEBITS)
    assert list(runs.columns) == ["who", "what", "start", "end", "status", "service", "session"]
    assert len(runs) == 4  # the workflows debit has no session
    first = runs.iloc[0]
    assert (first["who"], first["what"], first["start"], first["end"]) == ("alice", "power", T("2026-03-01T10:00"),
                                                                           T("2026-03-01T11:20"))  # fmt: skip
    spawns = agg.spawns_per_day(runs, PERIOD)
    assert spawns["spawns"].sum() == 4 and len(spawns) == 7 * 3
    durations = agg.run_durations(runs)
    assert sorted(durations["hours"]) == pytest.approx([1.0, 1.0, 4 / 3, 2.0], abs=1e-4)
    assert list(durations.columns) == ["profile", "hours"]
    marked = agg.mark_running(runs, servers_frame(HUB_USERS, PERIOD)).set_index("session")["status"]
    assert marked.to_dict() == {"alice//2026-03-01T10:00:00Z": "metered", "bob//2026-03-03T12:00:00Z": "metered",
                                "carol/gpu/2026-03-06T00:00:00Z": "running",
                                "alice//2026-03-07T09:00:00Z": "running"}  # fmt: skip


def test_public_frames_name_nobody():
    users, servers = users_frame(HUB_USERS, PERIOD), servers_frame(HUB_USERS, PERIOD)
    groups, runs = groups_frame(HUB_GROUPS, PERIOD), runs_frame(DEBITS)
    public = [agg.summary(users, servers, DEBITS, runs, PERIOD), agg.registrations_per_day(users, PERIOD),
              agg.active_users_per_day(users, PERIOD), agg.users_per_group(groups), agg.servers_by_profile(servers),
              agg.dcu_by(DEBITS, "profile"), agg.dcu_by(DEBITS, "service"), agg.dcu_by_group(DEBITS, groups),
              agg.dcu_by_service_and_profile(DEBITS), agg.dcu_per_day_by_group(DEBITS, groups, PERIOD),
              agg.dcu_per_day(DEBITS, PERIOD), agg.spawns_per_day(runs, PERIOD), agg.run_durations(runs),
              agg.public_runs(runs)]  # fmt: skip
    for frame in public:
        text = frame.to_csv(index=False) + " ".join(map(str, frame.columns))
        assert not [name for name in NAMES if name in text], frame.columns
    restricted = agg.restricted_dcu_by_user(DEBITS)
    assert restricted.to_dict("records")[0] == {"user": "carol", "dcu": 4.125, "debits": 2, "sessions": 1}


def test_empty_frames_aggregate_to_empty_or_zero():
    empty_debits, empty_runs = debits_frame([]), runs_frame(debits_frame([]))
    assert agg.dcu_by(empty_debits, "profile").empty
    assert agg.dcu_per_day(empty_debits, PERIOD).empty
    assert agg.spawns_per_day(empty_runs, PERIOD).empty
    assert agg.public_runs(empty_runs).empty
    users = users_frame([], PERIOD)
    assert list(agg.registrations_per_day(users, PERIOD)["registered"]) == [0] * 7
