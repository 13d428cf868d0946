"""The workflows store (migrations, versions, runs claimed within limits) and the scheduler's ticks, on SQLite and
PostgreSQL, with a fake clock: each tick is recorded once, even by two passes or two "processes" racing; ticks
missed while the service was down run once or are recorded missed, by policy."""

import datetime
import threading

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from nbformat.v4 import new_code_cell, new_notebook

from desp_hub.workflows import scheduler
from desp_hub.workflows.notebook import content_hash
from desp_hub.workflows.scheduler import ScheduleError, ScheduleTiming, record_due_ticks
from desp_hub.workflows.store import ALEMBIC_VERSION_TABLE, NameTaken, NotFound, WorkflowStore, alembic_config, metadata

T0 = datetime.datetime(2026, 11, 26, 6, 0, 0, tzinfo=datetime.UTC)
FIELDS = {"name": "w", "description": "", "visibility": "private", "group_name": None, "allow_run_by_others": False,
          "profile": "standard", "timeout_seconds": 60, "retries": 0, "outputs": []}  # fmt: skip


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'workflows.sqlite'}"
    return request.getfixturevalue("postgres_server").create_database()


@pytest.fixture
def store(url):
    store = WorkflowStore(url)
    store.upgrade()
    yield store
    store.close()


def notebook(source="x = 1"):
    return new_notebook(cells=[new_code_cell(source)])


def publish(store, owner="alice", name="w"):
    nb = notebook()
    return store.create_workflow(owner, {**FIELDS, "name": name}, nb, content_hash(nb), [])


def test_migrations_build_the_head_schema_and_go_down(url):
    store = WorkflowStore(url)
    store.upgrade()
    store.upgrade()  # idempotent
    assert store.schema_revision() == "w0001"
    with store.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": ALEMBIC_VERSION_TABLE})
        assert compare_metadata(context, metadata) == []
        assert "alembic_version" not in sa.inspect(connection).get_table_names()  # JupyterHub's table stays free
    store.close()
    command.downgrade(alembic_config(url), "base")
    with store.engine.connect() as connection:
        assert "workflows" not in sa.inspect(connection).get_table_names()
    store.close()


def test_versions_are_numbered_and_deduplicated_by_content(store):
    workflow = publish(store)
    nb = notebook()
    same, created = store.add_version(workflow["id"], nb, content_hash(nb), [], "alice")
    assert (same["number"], created) == (1, False)
    nb2 = notebook("x = 2")
    second, created = store.add_version(workflow["id"], nb2, content_hash(nb2), [], "alice")
    assert (second["number"], created) == (2, True)
    assert [v["number"] for v in store.list_versions(workflow["id"])] == [2, 1]
    assert store.get_version(workflow["id"], 1)["notebook"]["cells"][0]["source"] == "x = 1"


def test_names_are_unique_per_owner_among_live_workflows(store):
    first = publish(store)
    with pytest.raises(NameTaken) as taken:
        publish(store)
    assert taken.value.workflow_id == first["id"]
    publish(store, owner="bob")  # another owner may use the name
    store.delete_workflow(first["id"])
    with pytest.raises(NotFound):
        store.get_workflow(first["id"])
    assert publish(store)["id"] != first["id"]  # a deleted workflow frees its name


def test_visibility_filter_of_the_list(store):
    private = publish(store, "alice", "private")
    group = store.update_workflow(publish(store, "alice", "group")["id"], {"visibility": "group", "group_name": "g"})
    public = store.update_workflow(publish(store, "alice", "public")["id"], {"visibility": "public"})
    ids = lambda user, groups: [w["id"] for w in store.list_workflows(user, groups)]  # noqa: E731
    assert ids("alice", []) == [private["id"], group["id"], public["id"]]
    assert ids("bob", []) == [public["id"]]
    assert ids("bob", ["g"]) == [group["id"], public["id"]]


def test_claims_respect_the_overall_and_per_user_limits_in_queue_order(store):
    workflow = publish(store)
    runs = [store.create_run(workflow["id"], None, user, {}) for user in ("a", "a", "b", "c")]
    claimed = store.claim_runs(max_total=3, max_per_user=1)
    assert [r["id"] for r in claimed] == [runs[0]["id"], runs[2]["id"], runs[3]["id"]]
    assert all(r["status"] == "running" and r["attempt"] == 1 for r in claimed)
    assert store.claim_runs(max_total=3, max_per_user=1) == []
    store.update_run(runs[0]["id"], expected_status="running", status="succeeded")
    assert [r["id"] for r in store.claim_runs(max_total=3, max_per_user=1)] == [runs[1]["id"]]
    # a run left running by a stopped service goes back to the queue, its attempt not counted
    assert sorted(store.requeue_interrupted()) == sorted(r["id"] for r in (runs[1], runs[2], runs[3]))
    assert {store.get_run(r["id"])["attempt"] for r in runs[1:]} == {0}


def test_concurrent_claims_never_claim_a_run_twice(url):
    stores = [WorkflowStore(url) for _ in range(4)]
    stores[0].upgrade()
    workflow = publish(stores[0])
    run_ids = [stores[0].create_run(workflow["id"], None, f"user{i}", {})["id"] for i in range(20)]
    claimed, errors = [], []

    def claim(store):
        try:
            for _ in range(10):
                claimed.extend(r["id"] for r in store.claim_runs(max_total=100, max_per_user=100))
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=claim, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for s in stores:
        s.close()
    assert not errors
    assert sorted(claimed) == run_ids


# -- scheduler -------------------------------------------------------------------------------------------------------


def schedule(store, workflow, *, interval=None, cron=None, timezone=None, policy="run_once", start=T0):
    timing = ScheduleTiming(cron=cron, timezone=timezone, interval_seconds=interval)
    return store.set_schedule(workflow["id"], {**timing.to_fields(), "missed_policy": policy, "enabled": True,
                                               "parameters": {"n": 1}, "username": "alice",
                                               "next_tick": timing.first_tick_after(start)})  # fmt: skip


def at(seconds):
    return T0 + datetime.timedelta(seconds=seconds)


def test_each_tick_runs_once_however_often_passes_look(store):
    workflow = publish(store)
    schedule(store, workflow, interval=10)
    assert record_due_ticks(store, at(5)).run_ids == []
    first = record_due_ticks(store, at(10.2))
    assert len(first.run_ids) == 1
    assert record_due_ticks(store, at(10.4)).run_ids == []
    assert len(record_due_ticks(store, at(20.1)).run_ids) == 1
    ticks = store.ticks(workflow["id"])
    assert [(t["tick_at"], t["status"]) for t in ticks] == [(at(10), "run"), (at(20), "run")]
    runs = store.list_runs(workflow["id"])
    assert sorted(r["id"] for r in runs) == sorted(t["run_id"] for t in ticks)
    assert all(r["trigger"] == "schedule" and r["parameters"] == {"n": 1} and r["username"] == "alice" for r in runs)


def test_a_tick_recorded_by_another_process_is_not_recorded_again(store):
    """A stale schedule row (another process, or a crash after the tick was recorded) cannot duplicate a tick."""
    workflow = publish(store)
    schedule(store, workflow, interval=10)
    assert len(record_due_ticks(store, at(10.1)).run_ids) == 1
    # put next_tick back, as a process that read the schedule before the first pass committed would see it
    with store.writing() as connection:
        connection.execute(sa.text("UPDATE workflow_schedules SET next_tick = :t"), {"t": at(10)})
    assert record_due_ticks(store, at(10.3)).run_ids == []
    assert len(store.ticks(workflow["id"])) == 1 and len(store.list_runs(workflow["id"])) == 1


def test_racing_passes_record_each_tick_once(url):
    stores = [WorkflowStore(url) for _ in range(3)]
    stores[0].upgrade()
    workflow = publish(stores[0])
    schedule(stores[0], workflow, interval=1)
    barrier = threading.Barrier(3)
    results = []

    def tick(store):
        barrier.wait()
        results.append(record_due_ticks(store, at(30.5), grace_seconds=3600))

    threads = [threading.Thread(target=tick, args=(s,)) for s in stores]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    ticks = stores[0].ticks(workflow["id"])
    assert [t["tick_at"] for t in ticks] == [at(s) for s in range(1, 31)]
    assert sum(len(r.run_ids) for r in results) == 30 == len(stores[0].list_runs(workflow["id"], limit=1000))
    for s in stores:
        s.close()


@pytest.mark.parametrize(("policy", "expected"), [
    ("run_once", ["missed", "missed", "missed", "run", "run"]),
    ("skip", ["missed", "missed", "missed", "missed", "run"]),
])  # fmt: skip
def test_ticks_missed_while_down_follow_the_policy(store, policy, expected):
    workflow = publish(store)
    schedule(store, workflow, interval=10, policy=policy)
    # down from 0 to 50 s: ticks at 10..40 are late; the one at 50 is on time (grace 5 s)
    outcome = record_due_ticks(store, at(51), grace_seconds=5)
    ticks = store.ticks(workflow["id"])
    assert [t["tick_at"] for t in ticks] == [at(10), at(20), at(30), at(40), at(50)]
    assert [t["status"] for t in ticks] == expected
    assert outcome.missed == expected.count("missed")
    assert [t["run_id"] is not None for t in ticks] == [s == "run" for s in expected]
    assert record_due_ticks(store, at(59), grace_seconds=5).run_ids == []
    assert store.get_schedule(workflow["id"])["next_tick"] == at(60)


def test_a_very_long_outage_is_bounded_and_logged(store, caplog):
    workflow = publish(store)
    schedule(store, workflow, interval=1)
    outcome = record_due_ticks(store, at(100.5), grace_seconds=5, max_ticks_per_pass=10)
    assert len(store.ticks(workflow["id"])) == 10 and outcome.dropped == 90
    assert "90 more ticks" in caplog.text
    assert store.get_schedule(workflow["id"])["next_tick"] == at(101)


def test_cron_ticks_in_the_schedules_time_zone_across_daylight_saving():
    timing = ScheduleTiming.from_request({"cron": "0 6 * * *", "timezone": "Europe/Rome"})
    winter = timing.first_tick_after(datetime.datetime(2026, 3, 27, 12, tzinfo=datetime.UTC))
    assert winter == datetime.datetime(2026, 3, 28, 5, tzinfo=datetime.UTC)  # CET: UTC+1
    summer = timing.next_after(winter)
    assert summer == datetime.datetime(2026, 3, 29, 4, tzinfo=datetime.UTC)  # CEST from 29 March: UTC+2


def test_an_interval_ticks_from_when_it_was_set():
    timing = ScheduleTiming.from_request({"interval_seconds": 90})
    assert timing.first_tick_after(T0 + datetime.timedelta(microseconds=500)) == at(90)
    assert timing.next_after(at(90)) == at(180)


@pytest.mark.parametrize(("body", "field"), [
    ({}, "cron"), ({"cron": "61 * * * *"}, "cron"), ({"cron": "* * *"}, "cron"), ({"cron": 5}, "cron"),
    ({"cron": "0 0 30 2 *"}, "cron"), ({"cron": "0 6 * * *", "timezone": "Nowhere/City"}, "timezone"),
    ({"interval_seconds": 0}, "interval_seconds"), ({"interval_seconds": True}, "interval_seconds"),
    ({"interval_seconds": 1.5}, "interval_seconds"),
    ({"interval_seconds": 10, "cron": "* * * * *"}, "interval_seconds"),
    ({"interval_seconds": 10, "timezone": "UTC"}, "timezone"),
])  # fmt: skip
def test_invalid_schedules_name_the_field(body, field):
    with pytest.raises(ScheduleError) as error:
        ScheduleTiming.from_request(body)
    assert error.value.field == field


def test_a_deleted_workflow_no_longer_ticks(store):
    workflow = publish(store)
    schedule(store, workflow, interval=10)
    store.delete_workflow(workflow["id"])
    assert record_due_ticks(store, at(100)).run_ids == []
    assert scheduler.MISSED_POLICIES == ("run_once", "skip")
