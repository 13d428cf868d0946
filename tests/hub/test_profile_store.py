"""The profiles store on SQLite and on a real PostgreSQL: migrations, seed, versioned writes, audit, YAML."""

import threading
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory

from desp_hub import profile_store
from desp_hub.profile_store import (
    ALEMBIC_VERSION_TABLE,
    AuditEntry,
    ProfileNotFound,
    ProfileStore,
    StoredProfile,
    VersionConflict,
    alembic_config,
    metadata,
)
from desp_hub.profiles import Profile, ProfileError, load_profiles

import desp_hub.culls  # noqa: F401,E402  (its table is part of the store's head schema)
import desp_hub.metering  # noqa: F401,E402  (so are the metering sessions and outbox)

HEAD = ScriptDirectory.from_config(alembic_config("sqlite://")).get_current_head()

SEED = Path(__file__).resolve().parents[2] / "hub" / "desp_hub" / "profiles.yaml"


def new_profile(**changes):
    data = {
        "slug": "small",
        "display_name": "Small",
        "image": "ghcr.io/desp-hub/singleuser:0.1.0",
        "cpu_guarantee": 0.25,
        "cpu_limit": 1,
        "mem_guarantee": "512M",
        "mem_limit": "2G",
        "order": 5,
    }
    data.update(changes)
    return data


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'profiles.sqlite'}"
    return request.getfixturevalue("postgres_server").create_database()


@pytest.fixture
def empty_store(database_url):
    """A store on a database without any table."""
    store = ProfileStore(database_url)
    yield store
    store.close()


@pytest.fixture
def store(empty_store):
    """An upgraded store holding the seed profiles (standard, power, ai)."""
    empty_store.upgrade()
    assert empty_store.seed_if_empty(SEED) == 3
    return empty_store


def test_upgrade_empty_database_to_head(empty_store):
    assert empty_store.schema_revision() is None
    empty_store.upgrade()
    empty_store.upgrade()  # idempotent
    assert empty_store.schema_revision() == HEAD
    with empty_store.engine.connect() as connection:
        tables = set(sa.inspect(connection).get_table_names())
        # The migrations build exactly the schema the store's queries are written against.
        context = MigrationContext.configure(connection, opts={"version_table": ALEMBIC_VERSION_TABLE})
        assert compare_metadata(context, metadata) == []
    assert {"profiles", "profile_audit", ALEMBIC_VERSION_TABLE} <= tables
    assert "alembic_version" not in tables  # JupyterHub's own history table stays untouched
    assert empty_store.list_profiles() == []
    assert empty_store.audit() == []


def test_upgrade_from_0001_keeps_data(empty_store):
    empty_store.upgrade("0001")
    assert empty_store.schema_revision() == "0001"
    power = Profile.from_dict(new_profile(slug="power", display_name="Power")).to_dict()
    small = Profile.from_dict(new_profile()).to_dict()
    at = "2026-01-02 03:04:05"
    # The 0001 schema, as a client of that revision wrote it: no updated_by column.
    old_profiles = sa.table(
        "profiles", sa.column("slug"), sa.column("data", sa.JSON), sa.column("version"), sa.column("updated_at")
    )
    old_audit = sa.table(
        "profile_audit", sa.column("at"), sa.column("actor"), sa.column("action"), sa.column("slug"),
        sa.column("before", sa.JSON), sa.column("after", sa.JSON),
    )  # fmt: skip
    with empty_store.engine.begin() as connection:
        connection.execute(sa.insert(old_profiles).values(slug="small", data=small, version=1, updated_at=at))
        connection.execute(sa.insert(old_profiles).values(slug="power", data=power, version=3, updated_at=at))
        connection.execute(
            sa.insert(old_audit).values(at=at, actor="alice", action="create", slug="small", before=None, after=small)
        )

    empty_store.upgrade()

    assert empty_store.schema_revision() == HEAD
    stored = {s.slug: s for s in empty_store.list_profiles()}
    assert stored["small"].profile.to_dict() == small
    assert (stored["small"].version, stored["small"].updated_by) == (1, "alice")  # backfilled from the audit
    assert stored["power"].profile.to_dict() == power
    assert (stored["power"].version, stored["power"].updated_by) == (3, "unknown")
    assert stored["power"].to_dict()["updated_at"] == "2026-01-02T03:04:05Z"
    updated = empty_store.update("power", {**power, "cpu_limit": 4}, 3, "bob")
    assert (updated.version, updated.updated_by) == (4, "bob")


def test_migrations_by_url_down_and_up(empty_store):
    """The Alembic environment also runs from a URL (what `alembic` commands and offline SQL use)."""
    empty_store.upgrade()
    created = empty_store.create(new_profile(), actor="alice")
    config = alembic_config(empty_store.engine.url.render_as_string(hide_password=False))
    empty_store.close()
    command.downgrade(config, "0001")
    assert empty_store.schema_revision() == "0001"
    command.upgrade(config, "head")
    assert empty_store.schema_revision() == HEAD
    assert empty_store.get("small") == created


def test_seed_fills_only_an_empty_store(empty_store):
    empty_store.upgrade()
    empty_store.create(new_profile(), actor="alice")
    assert empty_store.seed_if_empty(SEED) == 0
    assert [p.slug for p in empty_store.profiles()] == ["small"]


def test_seed(store):
    assert store.profiles() == load_profiles(SEED)
    assert store.seed_if_empty(SEED) == 0
    entries = store.audit()
    assert len(entries) == 3
    assert {(e.actor, e.action, e.before is None) for e in entries} == {("seed", "import", True)}
    assert all(s.version == 1 and s.updated_by == "seed" for s in store.list_profiles())


def test_create_update_disable_enable_delete(store):
    created = store.create(new_profile(), actor="alice")
    assert isinstance(created, StoredProfile)
    assert (created.version, created.updated_by) == (1, "alice")
    assert [p.slug for p in store.profiles()] == ["small", "standard", "power", "ai"]  # by order

    updated = store.update("small", new_profile(slug=None, cpu_limit=2), expected_version=1, actor="bob")
    assert (updated.version, updated.updated_by, updated.profile.cpu_limit) == (2, "bob", 2.0)
    assert store.get("small") == updated

    disabled = store.set_enabled("small", False, expected_version=2, actor="carol")
    assert (disabled.version, disabled.profile.enabled) == (3, False)
    enabled = store.set_enabled("small", True, expected_version=3, actor="carol")
    assert (enabled.version, enabled.profile.enabled) == (4, True)

    store.delete("small", expected_version=4, actor="dave")
    with pytest.raises(ProfileNotFound):
        store.get("small")

    entries = store.audit(slug="small")
    assert all(isinstance(e, AuditEntry) for e in entries)
    assert [(e.action, e.actor) for e in entries] == [
        ("delete", "dave"), ("enable", "carol"), ("disable", "carol"), ("update", "bob"), ("create", "alice"),
    ]  # fmt: skip
    delete, enable, disable, update, create = entries
    assert create.before is None and create.after == created.profile.to_dict()
    assert (update.before["cpu_limit"], update.after["cpu_limit"]) == (1.0, 2.0)
    assert (disable.before["enabled"], disable.after["enabled"]) == (True, False)
    assert (enable.before["enabled"], enable.after["enabled"]) == (False, True)
    assert delete.before == enabled.profile.to_dict() and delete.after is None
    assert delete.at >= create.at and delete.at.tzinfo is not None
    assert delete.to_dict()["at"].endswith("Z")
    assert len(store.audit()) == 3 + 5
    assert [e.slug for e in store.audit(limit=2)] == ["small", "small"]

    as_dict = updated.to_dict()
    assert as_dict["version"] == 2 and as_dict["updated_by"] == "bob" and as_dict["updated_at"].endswith("Z")
    assert {k: v for k, v in as_dict.items() if k not in ("version", "updated_at", "updated_by")} == (
        updated.profile.to_dict()
    )


def test_missing_profile(store):
    with pytest.raises(ProfileNotFound):
        store.update("nope", new_profile(slug="nope"), 1, "alice")
    with pytest.raises(ProfileNotFound):
        store.delete("nope", 1, "alice")
    with pytest.raises(ProfileNotFound):
        store.set_enabled("nope", False, 1, "alice")


INVALID_WRITES = [
    pytest.param(lambda s: s.create(new_profile(cpu_guarantee=2, cpu_limit=1), "a"), "cpu_guarantee", id="cpu"),
    pytest.param(lambda s: s.create(new_profile(mem_guarantee="4G"), "a"), "mem_guarantee", id="memory"),
    pytest.param(lambda s: s.create(new_profile(default=True), "a"), "default", id="second-default"),
    pytest.param(lambda s: s.create(new_profile(slug="power"), "a"), "slug", id="duplicate-slug"),
    pytest.param(lambda s: s.create(new_profile(slug="Not OK"), "a"), "slug", id="bad-slug"),
    pytest.param(lambda s: s.create(new_profile(gpu_count=1), "a"), "gpu_count", id="unknown-key"),
    pytest.param(
        lambda s: s.update("power", {**s.get("power").profile.to_dict(), "default": True}, 1, "a"),
        "default",
        id="update-to-second-default",
    ),
    pytest.param(
        lambda s: s.update("power", {**s.get("power").profile.to_dict(), "slug": "turbo"}, 1, "a"),
        "slug",
        id="update-renames",
    ),
    pytest.param(
        lambda s: s.update("power", {**s.get("power").profile.to_dict(), "cpu_limit": 1}, 1, "a"),
        "cpu_guarantee",
        id="update-limit-below-guarantee",
    ),
]


@pytest.mark.parametrize("write, field", INVALID_WRITES)
def test_invalid_writes_name_the_field_and_change_nothing(store, write, field):
    before = (store.list_profiles(), store.audit())
    with pytest.raises(ProfileError) as error:
        write(store)
    assert error.value.field == field
    assert (store.list_profiles(), store.audit()) == before


def test_stale_version_conflicts_and_changes_nothing(store):
    power = store.get("power")
    store.set_enabled("power", False, power.version, actor="alice")
    before = (store.list_profiles(), store.audit())
    for stale_write in (
        lambda: store.update("power", power.profile.to_dict(), power.version, "bob"),
        lambda: store.set_enabled("power", True, power.version, "bob"),
        lambda: store.delete("power", power.version, "bob"),
    ):
        with pytest.raises(VersionConflict) as conflict:
            stale_write()
        assert conflict.value.current_version == 2
        assert "alice" in str(conflict.value) and "version 2" in str(conflict.value)
    assert (store.list_profiles(), store.audit()) == before


def race_updates(store, slug, writers):
    """`writers` threads update `slug` at once from the same version; returns {actor: StoredProfile or conflict}."""
    start = store.get(slug)
    barrier = threading.Barrier(writers)
    outcomes = {}

    def edit(actor):
        barrier.wait(timeout=30)
        try:
            data = {**start.profile.to_dict(), "display_name": f"Edited by {actor}"}
            outcomes[actor] = store.update(slug, data, start.version, actor)
        except VersionConflict as conflict:
            outcomes[actor] = conflict

    threads = [threading.Thread(target=edit, args=(f"admin{i}",)) for i in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return start, outcomes


def assert_one_winner(store, slug, start, outcomes, writers):
    winners = [v for v in outcomes.values() if isinstance(v, StoredProfile)]
    losers = [v for v in outcomes.values() if isinstance(v, VersionConflict)]
    assert (len(winners), len(losers)) == (1, writers - 1), outcomes
    assert all(loser.current_version == start.version + 1 for loser in losers)
    stored = store.get(slug)
    assert stored == winners[0]  # the winner's change is what is stored, at version + 1
    assert stored.profile.display_name == f"Edited by {stored.updated_by}"
    updates = [e for e in store.audit(slug=slug) if e.action == "update"]
    assert [e.actor for e in updates] == [stored.updated_by]


@pytest.mark.parametrize("writers", [2, 4])
def test_concurrent_updates_one_wins(store, writers):
    start, outcomes = race_updates(store, "standard", writers)
    assert_one_winner(store, "standard", start, outcomes, writers)


def test_conditional_update_alone_stops_a_lost_update_on_postgresql(store, monkeypatch):
    """Without the writers' table lock, both writers read version 1 and validate; the version check in the UPDATE
    still lets exactly one through (PostgreSQL re-checks the WHERE clause once the first writer commits)."""
    if store.engine.dialect.name != "postgresql":
        pytest.skip("SQLite has no row locks: its writers are serialised by BEGIN IMMEDIATE instead")
    monkeypatch.setattr(ProfileStore, "_lock_writers", staticmethod(lambda connection: None))
    both_validated = threading.Barrier(2)
    real_validate = profile_store.validate_profiles

    def validate_then_wait(profiles):
        result = real_validate(profiles)
        both_validated.wait(timeout=30)  # both transactions have read version 1 before either writes
        return result

    monkeypatch.setattr(profile_store, "validate_profiles", validate_then_wait)
    start, outcomes = race_updates(store, "power", 2)
    assert_one_winner(store, "power", start, outcomes, 2)


def test_export_import_round_trip(store, tmp_path):
    store.set_enabled("power", False, 1, actor="alice")
    exported = store.export_yaml()
    (tmp_path / "exported.yaml").write_text(exported)
    assert load_profiles(tmp_path / "exported.yaml") == store.profiles()

    before = (store.list_profiles(), store.audit())
    assert store.import_yaml(exported, actor="bob") == before[0]  # same set: no change, no new version
    assert (store.list_profiles(), store.audit()) == before

    changed = exported.replace("display_name: Power", "display_name: Power Plus")
    changed = changed.replace("- slug: ai\n", "- slug: gpu\n")  # ai goes, gpu comes
    result = store.import_yaml(changed, actor="bob")
    assert [s.slug for s in result] == ["standard", "power", "gpu"]
    assert store.list_profiles() == result
    versions = {s.slug: s.version for s in result}
    assert versions == {"standard": 1, "power": 3, "gpu": 1}
    assert store.get("power").profile.display_name == "Power Plus"
    imported = store.audit(limit=3)
    assert {(e.slug, e.before is None, e.after is None) for e in imported} == {
        ("power", False, False), ("gpu", True, False), ("ai", False, True),
    }  # fmt: skip
    assert {(e.actor, e.action) for e in imported} == {("bob", "import")}


@pytest.mark.parametrize(
    "text, field",
    [
        pytest.param("profiles: [\n", None, id="not-yaml"),
        pytest.param("profile: []\n", None, id="wrong-top-key"),
        pytest.param(
            "profiles:\n"
            "- {slug: a, display_name: A, image: i, cpu_guarantee: 1, cpu_limit: 1, mem_guarantee: 1G,"
            " mem_limit: 1G, default: true}\n"
            "- {slug: b, display_name: B, image: i, cpu_guarantee: 1, cpu_limit: 1, mem_guarantee: 1G,"
            " mem_limit: 1G, default: true}\n",
            "default",
            id="two-defaults",
        ),
        pytest.param(
            "profiles:\n- {slug: a, display_name: A, image: i, cpu_guarantee: 1, cpu_limit: 1, mem_guarantee: 2G,"
            " mem_limit: 1G}\n",
            "mem_guarantee",
            id="limit-below-guarantee",
        ),
    ],
)
def test_import_of_an_invalid_set_changes_nothing(store, text, field):
    before = (store.list_profiles(), store.audit())
    with pytest.raises(ProfileError) as error:
        store.import_yaml(text, actor="bob")
    assert error.value.field == field
    assert (store.list_profiles(), store.audit()) == before
