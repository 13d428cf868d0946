"""The culler's decision (a pure function of the server model, the profiles and the time), the cull records and
their notice, the 0003 migration, and how the service is installed."""

import datetime

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from traitlets.config import Config

import desp_hub.metering  # noqa: F401  (its tables are part of the store's head schema too)
from desp_hub import culls
from desp_hub.culls import cull_notice, format_duration, last_cull, record_cull
from desp_hub.profile_store import ALEMBIC_VERSION_TABLE, ProfileStore, alembic_config, metadata
from desp_hub.profiles import Profile
from desp_hub.services.culler import CullerApp, decide
from desp_hub.services.install import CULLER_SCOPES, install_culler_service, install_profiles_service

NOW = datetime.datetime(2026, 11, 25, 12, 0, tzinfo=datetime.UTC)


def profile(slug, idle_timeout, max_runtime=0):
    return Profile.from_dict({
        "slug": slug, "display_name": slug.title(), "image": "img", "cpu_guarantee": 1, "cpu_limit": 1,
        "mem_guarantee": "1G", "mem_limit": "1G", "idle_timeout": idle_timeout, "max_runtime": max_runtime,
    })  # fmt: skip


PROFILES = {p.slug: p for p in (profile("standard", 3600), profile("power", 7200, max_runtime=86400))}
FALLBACK = 600


def server(profile_slug="standard", idle=0, running=0, ready=True, pending=None, options=None):
    """A hub API server model started `running` seconds before NOW, last active `idle` seconds before NOW."""
    return {
        "name": "",
        "ready": ready,
        "pending": pending,
        "started": (NOW - datetime.timedelta(seconds=running)).isoformat().replace("+00:00", "Z"),
        "last_activity": (NOW - datetime.timedelta(seconds=idle)).isoformat().replace("+00:00", "Z"),
        "user_options": options if options is not None else {"profile": profile_slug},
    }


@pytest.mark.parametrize(
    "model, expected",
    [
        pytest.param(server(idle=60, running=600), None, id="active-within-limits"),
        pytest.param(server(idle=3600, running=7200), None, id="idle-exactly-at-limit"),
        pytest.param(server(idle=3601, running=7200), ("idle", 3600), id="idle-past-profile-limit"),
        pytest.param(server("power", idle=3601, running=7200), None, id="power-has-a-longer-idle-limit"),
        pytest.param(server("power", idle=7201, running=8000), ("idle", 7200), id="power-idle"),
        pytest.param(server("power", idle=0, running=86401), ("max_runtime", 86400), id="over-time-while-active"),
        pytest.param(server("power", idle=9000, running=90000), ("max_runtime", 86400), id="over-time-wins-over-idle"),
        pytest.param(server(idle=0, running=10**7), None, id="no-max-runtime-means-unlimited"),
        pytest.param(server("deleted", idle=601, running=700), ("idle", FALLBACK), id="unknown-profile-fallback"),
        pytest.param(server("deleted", idle=599, running=10**7), None, id="unknown-profile-no-max-runtime"),
        pytest.param(server(options={}, idle=601, running=700), ("idle", FALLBACK), id="no-profile-recorded"),
        pytest.param(server(idle=10**6, running=10**6, ready=False), None, id="not-ready"),
        pytest.param(server(idle=10**6, running=10**6, pending="stop"), None, id="stopping"),
        pytest.param({**server(running=4000), "last_activity": None}, ("idle", 3600), id="no-activity-since-start"),
    ],
)
def test_decide(model, expected):
    assert decide(model, PROFILES, NOW, FALLBACK) == expected


@pytest.fixture(params=["sqlite", "postgresql"])
def url(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'profiles.sqlite'}"
    return request.getfixturevalue("postgres_server").create_database()


def test_migration_0003_builds_the_culls_table(url):
    store = ProfileStore(url)
    store.upgrade()
    assert store.schema_revision() >= "0003"
    with store.engine.connect() as connection:
        context = MigrationContext.configure(connection, opts={"version_table": ALEMBIC_VERSION_TABLE})
        assert culls.culls_table.name in metadata.tables
        assert compare_metadata(context, metadata) == []
    store.close()
    command.downgrade(alembic_config(url), "0002")
    assert store.schema_revision() == "0002"
    with store.engine.connect() as connection:
        assert "server_culls" not in sa.inspect(connection).get_table_names()
    store.upgrade("0003")
    assert store.schema_revision() == "0003"
    store.close()


def test_record_and_last_cull(url):
    assert last_cull(url, "alice") is None  # migrates on first use
    earlier = NOW - datetime.timedelta(hours=2)
    record_cull(url, username="alice", server="", profile="standard", profile_name="Standard", reason="idle",
                limit=3600, at=earlier)
    latest = record_cull(url, username="alice", server="gpu", profile="ai", profile_name="AI (GPU)",
                         reason="max_runtime", limit=43200, at=NOW)
    record_cull(url, username="bob", server="", profile=None, reason="idle", limit=600)

    assert last_cull(url, "alice") == latest
    assert latest["at"] == NOW and latest["limit"] == 43200 and latest["reason"] == "max_runtime"
    assert last_cull(url, "alice", server="")["at"] == earlier
    assert last_cull(url, "alice", since=NOW + datetime.timedelta(seconds=1)) is None
    assert last_cull(url, "carol") is None
    with pytest.raises(ValueError, match="reason"):
        record_cull(url, username="alice", server="", profile=None, reason="bored", limit=1)


@pytest.mark.parametrize(
    "cull, text",
    [
        pytest.param(
            {"server": "", "profile": "standard", "profile_name": "Standard", "reason": "idle", "limit": 3600},
            "Your last server (Standard) was stopped after 1 hour without activity, the profile&#x27;s idle limit.",
            id="idle",
        ),
        pytest.param(
            {"server": "", "profile": "power", "profile_name": "Power", "reason": "max_runtime", "limit": 86400},
            "Your last server (Power) was stopped after running for 1 day, the profile&#x27;s maximum runtime.",
            id="max-runtime",
        ),
        pytest.param(
            {"server": "", "profile": None, "profile_name": None, "reason": "idle", "limit": 5400},
            "Your last server was stopped after 1 hour 30 minutes without activity, the hub&#x27;s idle limit.",
            id="unknown-profile",
        ),
        pytest.param(
            {"server": "<b>x</b>", "profile": "s", "profile_name": "A & B", "reason": "idle", "limit": 45},
            "Your server “&lt;b&gt;x&lt;/b&gt;” (A &amp; B) was stopped after 45 seconds without activity, "
            "the profile&#x27;s idle limit.",
            id="named-server-escaped",
        ),
    ],
)
def test_cull_notice(cull, text):
    assert cull_notice(cull) == text


@pytest.mark.parametrize(
    "seconds, text",
    [(1, "1 second"), (3, "3 seconds"), (60, "1 minute"), (3600, "1 hour"), (7260, "2 hours 1 minute"),
     (90061, "1 day 1 hour"), (0, "0 seconds")],
)
def test_format_duration(seconds, text):
    assert format_duration(seconds) == text


def test_culler_options_are_validated():
    app = CullerApp()
    app.interval = 5
    with pytest.raises(Exception, match="interval must be a positive"):
        app.interval = 0
    with pytest.raises(Exception, match="fallback_idle_timeout must be a positive"):
        app.fallback_idle_timeout = -1


def test_install_adds_service_and_least_privilege_role():
    c = Config()
    c.JupyterHub.load_roles = [{"name": "user", "scopes": ["self"]}]
    c.JupyterHub.services = []
    install_profiles_service(c, db_url="sqlite:////srv/p.sqlite", port=9999)
    install_culler_service(c, db_url="sqlite:////srv/p.sqlite", interval=5, fallback_idle_timeout=900)
    install_culler_service(c, db_url="sqlite:////srv/p.sqlite", interval=5, fallback_idle_timeout=900)

    culler = [s for s in c.JupyterHub.services if s["name"] == "culler"]
    assert len(culler) == 1 and "url" not in culler[0]
    assert culler[0]["command"][1:] == [
        "-m", "desp_hub.services.culler", "--db-url=sqlite:////srv/p.sqlite", "--interval=5",
        "--fallback-idle-timeout=900",
    ]  # fmt: skip
    assert {s["name"] for s in c.JupyterHub.services} == {"profiles", "culler"}
    roles = {role["name"]: role for role in c.JupyterHub.load_roles}
    assert roles["culler-service"] == {
        "name": "culler-service",
        "description": roles["culler-service"]["description"],
        "scopes": ["list:users", "read:servers", "delete:servers"],
        "services": ["culler"],
    }
    assert CULLER_SCOPES == ["list:users", "read:servers", "delete:servers"]
    assert roles["user"]["scopes"] == ["self", "access:services!service=profiles"]  # untouched by the culler


def test_install_from_a_subconfig_extends_lazily():
    c = Config()
    install_culler_service(c, db_url="sqlite:////srv/p.sqlite")
    main = Config()
    main.JupyterHub.services = [{"name": "profiles"}]
    main.JupyterHub.load_roles = [{"name": "user", "scopes": ["self"]}]
    main.merge(c)
    assert [s["name"] for s in main.JupyterHub.services] == ["profiles", "culler"]
    assert [r["name"] for r in main.JupyterHub.load_roles] == ["user", "culler-service"]
