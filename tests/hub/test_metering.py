"""Hub metering: interval arithmetic, keys and amounts (pure), the durable outbox (SQLite and PostgreSQL), delivery
to the real sandbox accounting service (including while it is down, then back), the client-credentials token, the
settings, and how the service is installed."""

import datetime
import logging
import threading
import uuid
from decimal import Decimal
from types import SimpleNamespace

import pytest
from alembic import command
from jupyterhub.app import JupyterHub
from tornado import web
from traitlets.config import Config

from desp_hub.metering import (
    DespMetering,
    ClientCredentials,
    MeteringOutbox,
    amount_milli,
    complete_intervals,
    deliver_pending,
    format_dcu,
    hub_metering,
    interval_bounds,
    interval_key,
    parse_time,
    session_id,
    spawn_refusal,
)
from desp_hub.profile_store import ProfileStore, alembic_config
from desp_hub.profiles import Profile
from desp_hub.services.install import METERING_SCOPES, install_culler_service, install_metering_service
from desp_hub.services.metering_service import MeteringApp, running_session
from desp_hub.spawner import DespLocalSpawner
from desp_lab.accounting import Accounting
from tests.conftest_accounting import AccountingProcess
from tests.conftest_idp import METERING_CLIENT, METERING_SECRET
from tests.support import free_port

UTC = datetime.UTC
STARTED = datetime.datetime(2026, 11, 26, 10, 0, 0, 750000, tzinfo=UTC)  # the hub's started, with microseconds
EPOCH = int(datetime.datetime(2026, 11, 26, 10, 0, 0, tzinfo=UTC).timestamp())


def at(seconds):
    """STARTED's second plus `seconds`."""
    return STARTED.replace(microsecond=0) + datetime.timedelta(seconds=seconds)


# -- pure arithmetic ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "elapsed, expected",
    [
        pytest.param(-5, 0, id="before-start"),
        pytest.param(0, 0, id="at-start"),
        pytest.param(299.999, 0, id="just-before-the-first-end"),
        pytest.param(300, 1, id="first-interval-complete"),
        pytest.param(899, 2, id="two-and-most-of-a-third"),
        pytest.param(86400, 288, id="a-day"),
    ],
)
def test_complete_intervals_count_from_the_started_second(elapsed, expected):
    assert complete_intervals(STARTED, 300, at(0) + datetime.timedelta(seconds=elapsed)) == expected


def test_interval_bounds_and_keys():
    assert interval_bounds(STARTED, 300, 0) == (at(0), at(300))
    assert interval_bounds(STARTED, 300, 2) == (at(600), at(900))
    assert session_id("alice", "", STARTED) == "alice//2026-11-26T10:00:00Z"
    assert session_id("alice", "gpu", STARTED.replace(tzinfo=None)) == "alice/gpu/2026-11-26T10:00:00Z"  # naive=UTC
    assert interval_key("alice", "", STARTED, 0) == f"jupyterhub:alice::{EPOCH}:0"
    assert interval_key("alice", "gpu", STARTED, 41) == f"jupyterhub:alice:gpu:{EPOCH}:41"
    assert interval_key("alice", "", STARTED, None) == f"jupyterhub:alice::{EPOCH}:final"
    # another zone, same instant: same keys
    cet = STARTED.astimezone(datetime.timezone(datetime.timedelta(hours=1)))
    assert interval_key("alice", "", cet, 3) == interval_key("alice", "", STARTED, 3)


@pytest.mark.parametrize(
    "price, seconds, milli",
    [
        pytest.param(1, 300, 83, id="1-per-hour-5-min"),  # 83.33
        pytest.param(2, 300, 167, id="2-per-hour-5-min"),  # 166.67
        pytest.param("2.5", 300, 208, id="2.5-per-hour"),  # 208.33
        pytest.param(1, 1.8, 1, id="half-rounds-up"),  # 0.5
        pytest.param(1, 1.7, 0, id="below-half-is-zero"),
        pytest.param(0, 300, 0, id="free"),
        pytest.param(12, 3600, 12000, id="an-hour"),
        pytest.param(0.1, 3, Decimal(0), id="float-price-exact"),  # 0.0833 -> 0
        pytest.param(0.3, 6, 1, id="float-price-by-repr"),  # 0.3*1000*6/3600 = 0.5 exactly -> 1
    ],
)
def test_amount_in_milli_dcu(price, seconds, milli):
    assert amount_milli(price, seconds) == milli


def test_amount_rejects_nonsense():
    with pytest.raises(ValueError):
        amount_milli(-1, 300)
    with pytest.raises(ValueError):
        amount_milli("x", 300)


@pytest.mark.parametrize("milli, text", [(0, "0.000"), (83, "0.083"), (1250, "1.250"), (100000, "100.000")])
def test_format_dcu(milli, text):
    assert format_dcu(milli) == text


@pytest.mark.parametrize(
    "available, mode, price, expected",
    [
        pytest.param("0.100", "advance", 2, (
            "Your available DCU balance is 0.100 DCU, and the Power profile costs 2 DCU per hour: 0.167 DCU for "
            "its first 5-minute interval. Choose a cheaper profile, or ask your DESP administrator for more credit."
        ), id="advance-short"),
        pytest.param(Decimal("-3.5"), "arrears", "0.5", (
            "What is left of your monthly DCU quota is -3.500 DCU, and the Power profile costs 0.5 DCU per hour: "
            "0.042 DCU for its first 5-minute interval. Choose a cheaper profile, or ask your DESP administrator "
            "for more credit."
        ), id="arrears-overdrawn"),
        pytest.param("0.167", "advance", 2, None, id="exactly-enough"),
        pytest.param("0", "advance", 0, None, id="free-profile"),
    ],
)
def test_spawn_refusal_message(available, mode, price, expected):
    assert spawn_refusal(available=available, mode=mode, profile_name="Power", dcu_per_hour=price,
                         interval_seconds=300) == expected


def test_spawn_refusal_names_other_interval_lengths():
    message = spawn_refusal(available=0, mode="advance", profile_name="AI", dcu_per_hour=6, interval_seconds=90)
    assert "0.150 DCU for its first 90-second interval" in message
    message = spawn_refusal(available=0, mode="advance", profile_name="AI", dcu_per_hour=6, interval_seconds=3600)
    assert "6.000 DCU for its first 1-hour interval" in message


def test_running_session_from_a_server_model():
    model = {"name": "", "ready": True, "started": "2026-11-26T10:00:00.750000Z",
             "user_options": {"profile": "power", "dcu_per_hour": 2.0}}  # fmt: skip
    assert running_session("alice", model) == {
        "username": "alice", "server_name": "", "started": STARTED, "profile": "power", "dcu_per_hour": 2.0,
    }  # fmt: skip
    assert running_session("alice", {**model, "ready": False}) is None
    assert running_session("alice", {**model, "started": None}) is None
    assert running_session("alice", {**model, "user_options": {}})["dcu_per_hour"] is None


# -- settings and installation -----------------------------------------------------------------------------------


def test_settings_defaults_and_validation(monkeypatch):
    monkeypatch.delenv("DESP_ACCOUNTING_URL", raising=False)
    monkeypatch.delenv("DESP_PROFILES_DB_URL", raising=False)
    monkeypatch.setenv("DESP_METERING_CLIENT_SECRET", "s3cret")
    metering = DespMetering()
    assert not metering.enabled
    assert (metering.interval_seconds, metering.client_id, metering.when_accounting_down) == (
        300, "desp-metering", "refuse")
    assert metering.effective_poll_seconds == 60
    assert metering.client_secret == "s3cret"
    assert "client_secret" not in DespMetering.class_traits(config=True)  # never on a command line
    assert metering.db_url.startswith("sqlite:///") and metering.db_url.endswith("profiles.sqlite")
    monkeypatch.setenv("DESP_ACCOUNTING_URL", "http://127.0.0.1:9")
    monkeypatch.setenv("DESP_PROFILES_DB_URL", "sqlite:////srv/p.sqlite")
    metering = DespMetering(interval_seconds=3)
    assert metering.enabled and metering.effective_poll_seconds == 1  # a fifth, at least 1 s
    assert metering.db_url == "sqlite:////srv/p.sqlite"
    with pytest.raises(Exception, match="interval_seconds must be at least 1"):
        metering.interval_seconds = 0
    with pytest.raises(Exception, match="refuse"):
        metering.when_accounting_down = "maybe"
    assert "s3cret" not in repr(metering.token_source())


def test_hub_metering_sees_the_hub_command_line(monkeypatch):
    """The configuration file decides whether to install the service, and the launcher sets it on the command line."""
    monkeypatch.delenv("DESP_ACCOUNTING_URL", raising=False)
    file_config = Config()
    file_config.DespMetering.db_url = "sqlite:////srv/p.sqlite"
    assert not hub_metering(file_config).enabled
    app = JupyterHub.instance()
    try:
        app.parse_command_line(["--DespMetering.accounting_url=http://127.0.0.1:9004",
                                "--DespMetering.interval_seconds=5"])  # fmt: skip
        metering = hub_metering(file_config)
        assert (metering.accounting_url, metering.interval_seconds, metering.db_url) == (
            "http://127.0.0.1:9004", 5, "sqlite:////srv/p.sqlite")
    finally:
        JupyterHub.clear_instance()


def test_install_metering_service_with_a_read_only_role():
    c = Config()
    c.JupyterHub.services = []
    c.JupyterHub.load_roles = [{"name": "user", "scopes": ["self"]}]
    install_culler_service(c, db_url="sqlite:////srv/p.sqlite")
    for _ in range(2):  # twice: one service, one role
        install_metering_service(c, accounting_url="http://127.0.0.1:9004", db_url="sqlite:////srv/p.sqlite",
                                 interval_seconds=5, token_url="http://idp/token")  # fmt: skip
    metering = [s for s in c.JupyterHub.services if s["name"] == "metering"]
    assert len(metering) == 1 and "url" not in metering[0]
    assert metering[0]["command"][1:] == [
        "-m", "desp_hub.services.metering_service", "--accounting-url=http://127.0.0.1:9004",
        "--db-url=sqlite:////srv/p.sqlite", "--interval=5", "--poll=0", "--token-url=http://idp/token",
        "--client-id=desp-metering",
    ]  # fmt: skip
    assert "DESP_METERING_CLIENT_SECRET" in metering[0]["environment"]  # read from the hub's environment at start
    assert not any("secret" in part.lower() for part in metering[0]["command"])
    roles = {role["name"]: role for role in c.JupyterHub.load_roles}
    assert roles["metering-service"]["scopes"] == METERING_SCOPES == ["list:users", "read:servers"]
    assert roles["metering-service"]["services"] == ["metering"]
    assert roles["user"]["scopes"] == ["self"] and "culler-service" in roles


def test_service_options_map_to_the_settings(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "t")
    app = MeteringApp()
    app.initialize(["--accounting-url=http://127.0.0.1:9", f"--db-url=sqlite:///{tmp_path / 'p.sqlite'}",
                    "--interval=7", "--poll=2", "--token-url=http://idp/token"])  # fmt: skip
    assert (app.metering.interval_seconds, app.metering.effective_poll_seconds, app.metering.token_url) == (
        7, 2, "http://idp/token")
    assert app.outbox.sessions() == []  # migrated on first use


# -- the outbox --------------------------------------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def outbox(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'profiles.sqlite'}"
    else:
        url = request.getfixturevalue("postgres_server").create_database()
    return MeteringOutbox(url)


def keys(rows):
    return [row.idempotency_key.rsplit(":", 1)[1] for row in rows]


def test_migration_0004_up_and_down(tmp_path):
    url = f"sqlite:///{tmp_path / 'profiles.sqlite'}"
    store = ProfileStore(url)
    store.upgrade()
    assert store.schema_revision() == "0004"
    command.downgrade(alembic_config(url), "0003")
    assert store.schema_revision() == "0003"
    store.upgrade()
    assert store.schema_revision() == "0004"
    store.close()


def test_session_price_and_interval_are_those_of_first_sight(outbox):
    first = outbox.open_session("alice", "", STARTED, "power", 2.0, 300, now=at(1))
    again = outbox.open_session("alice", "", STARTED, "power", 99, 60, now=at(50))  # repriced profile, new interval
    assert first == again
    assert (again.dcu_per_hour, again.interval_seconds, again.first_seen, again.stopped_at) == ("2", 300, at(1), None)
    assert again.session == "alice//2026-11-26T10:00:00Z" and again.started == at(0)


def test_elapsed_intervals_are_queued_once(outbox):
    session = outbox.open_session("alice", "", STARTED, "power", 2, 300).session
    assert outbox.enqueue_elapsed(session, now=at(299)) == 0
    assert outbox.enqueue_elapsed(session, now=at(900)) == 3
    assert outbox.enqueue_elapsed(session, now=at(900)) == 0  # again: nothing new
    assert outbox.enqueue_elapsed(session, now=at(1000)) == 0
    assert outbox.enqueue_elapsed(session, now=at(1200)) == 1
    rows = outbox.rows(session)
    assert keys(rows) == ["0", "1", "2", "3"]
    assert [(row.period_start, row.period_end) for row in rows] == [(at(300 * i), at(300 * (i + 1))) for i in range(4)]
    assert {(row.amount_milli, row.status, row.profile, row.username) for row in rows} == {
        (167, "pending", "power", "alice")}
    assert rows[0].transaction() == {
        "service": "jupyterhub", "profile": "power", "session": session,
        "description": "JupyterLab server (power), interval 0",
        "period_start": "2026-11-26T10:00:00Z", "period_end": "2026-11-26T10:05:00Z",
        "metadata": {"server_name": "", "interval": 0, "seconds": "300", "dcu_per_hour": "2"},
    }  # fmt: skip


def test_stop_queues_missing_intervals_and_the_final_partial_one(outbox):
    session = outbox.open_session("alice", "", STARTED, "power", 2, 300).session
    outbox.enqueue_elapsed(session, now=at(310))  # the service saw interval 0 complete
    closed = outbox.close_sessions("alice", "", stopped_at=at(750.5))  # hub down meanwhile: interval 1 missing
    assert [c.session for c in closed] == [session] and closed[0].stopped_at == at(750.5)
    rows = outbox.rows(session)
    assert keys(rows) == ["0", "1", "final"]
    final = rows[-1]
    assert (final.interval_index, final.period_start, final.period_end) == (None, at(600), at(750.5))
    assert final.amount_milli == amount_milli(2, "150.5") == 84
    assert final.transaction()["metadata"]["seconds"] == "150.5"
    # after the stop, nothing more: neither a late pass of the service nor a second stop
    assert outbox.enqueue_elapsed(session, now=at(2000)) == 0
    assert outbox.close_sessions("alice", "", stopped_at=at(3000)) == []
    assert keys(outbox.rows(session)) == ["0", "1", "final"]
    assert outbox.session(session).stopped_at == at(750.5)


def test_stop_after_a_pass_that_saw_a_later_boundary_adds_no_overlap(outbox):
    """A pass that read its clock just after the stop's clock but committed first: the final starts after it."""
    session = outbox.open_session("alice", "", STARTED, "power", 2, 300).session
    outbox.enqueue_elapsed(session, now=at(600.2))  # intervals 0 and 1
    outbox.close_sessions("alice", "", stopped_at=at(599.9))
    assert keys(outbox.rows(session)) == ["0", "1"]  # the final would start at 600 > stop: none


def test_zero_amounts_are_not_queued(outbox):
    free = outbox.open_session("bob", "", STARTED, "standard", 0, 300).session
    outbox.enqueue_elapsed(free, now=at(900))
    outbox.close_sessions("bob", "", stopped_at=at(1000))
    assert outbox.rows(free) == []
    paid = outbox.open_session("carol", "", STARTED, "power", 2, 300).session
    outbox.close_sessions("carol", "", stopped_at=at(300.0005))  # 0.5 ms past the boundary: 0 milli-DCU
    assert keys(outbox.rows(paid)) == ["0"]


def test_concurrent_writers_queue_each_interval_once(outbox):
    """Service passes and a stop racing on one session (as the hub process and the service process do)."""
    session = outbox.open_session("dave", "", STARTED, "power", 2, 10).session
    errors = []

    def passes(offset):
        try:
            for step in range(40):
                outbox.enqueue_elapsed(session, now=at(offset + step * 5))
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=passes, args=(offset,)) for offset in (0, 1, 2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    outbox.close_sessions("dave", "", stopped_at=at(1000))
    assert errors == []
    rows = outbox.rows(session)
    assert keys(rows) == [str(i) for i in range(100)]  # 1000 s / 10 s, no final (stop on a boundary)
    assert len({row.idempotency_key for row in rows}) == len(rows)


def test_a_restarted_server_is_a_new_session(outbox):
    first = outbox.open_session("erin", "", STARTED, "power", 2, 300).session
    outbox.close_sessions("erin", "", stopped_at=at(400))
    second = outbox.open_session("erin", "", at(500), "power", 2, 300).session
    assert first != second
    outbox.enqueue_elapsed(second, now=at(800))
    assert keys(outbox.rows(second)) == ["0"] and outbox.rows(second)[0].period_start == at(500)


# -- delivery to the real sandbox accounting service -------------------------------------------------------------


def meter_token(sandbox_accounting):
    return ClientCredentials(sandbox_accounting.idp.token_url, METERING_CLIENT, METERING_SECRET)


def user_transactions(sandbox_accounting, user, session=None):
    admin = Accounting(sandbox_accounting.url, token=sandbox_accounting.admin_token)
    return admin.transactions(user, session=session, limit=1000)["transactions"]


def test_client_credentials_token_is_cached(sandbox_accounting):
    token = meter_token(sandbox_accounting)
    first = token()
    assert token() == first  # cached
    token.forget()
    assert token()  # fetched again
    bad = ClientCredentials(sandbox_accounting.idp.token_url, METERING_CLIENT, "wrong")
    from desp_lab.errors import ServiceUnavailable

    with pytest.raises(ServiceUnavailable) as refused:
        bad()
    assert "wrong" not in str(refused.value)


def test_delivery_debits_each_interval_once(sandbox_accounting, tmp_path):
    user = f"m-{uuid.uuid4().hex[:8]}"
    outbox = MeteringOutbox(f"sqlite:///{tmp_path / 'profiles.sqlite'}")
    accounting = Accounting(sandbox_accounting.url, token=meter_token(sandbox_accounting), retries=0)
    session = outbox.open_session(user, "", STARTED, "power", 2, 300).session
    outbox.enqueue_elapsed(session, now=at(900))
    outbox.close_sessions(user, "", stopped_at=at(1000))

    result = deliver_pending(outbox, accounting)
    assert (result.delivered, result.rejected, result.outage) == (4, 0, "")
    rows = outbox.rows(session)
    assert {row.status for row in rows} == {"delivered"} and all(row.transaction_id for row in rows)
    transactions = user_transactions(sandbox_accounting, user, session)
    assert sorted(t["idempotency_key"] for t in transactions) == sorted(row.idempotency_key for row in rows)
    assert sum(t["amount"] for t in transactions) == Decimal("0.167") * 3 + Decimal("0.056")  # 100 s at 2/h
    final = next(t for t in transactions if t["idempotency_key"].endswith(":final"))
    assert (final["service"], final["profile"], final["session"], final["kind"]) == (
        "jupyterhub", "power", session, "debit")
    assert (parse_time(final["period_start"]), parse_time(final["period_end"])) == (at(900), at(1000))

    # a crash after the accounting answered but before the outbox noted it: the row is sent again, debited once
    with outbox.engine.begin() as connection:
        from desp_hub.metering import outbox_table

        connection.execute(outbox_table.update().values(status="pending"))
    assert deliver_pending(outbox, accounting).delivered == 4
    assert len(user_transactions(sandbox_accounting, user, session)) == 4
    assert deliver_pending(outbox, accounting).delivered == 0


def test_accounting_down_then_back_delivers_everything_once(sandbox_accounting, tmp_path):
    """Usage queued while the service is down is delivered when it returns, each interval once."""
    idp = sandbox_accounting.idp
    process = AccountingProcess(tmp_path / "accounting", idp.jwks_url, idp.issuer).start()
    user = f"m-{uuid.uuid4().hex[:8]}"
    outbox = MeteringOutbox(f"sqlite:///{tmp_path / 'profiles.sqlite'}")
    accounting = Accounting(process.url, token=meter_token(sandbox_accounting), retries=0, timeout=5)
    session = outbox.open_session(user, "", STARTED, "standard", 1, 60).session
    try:
        outbox.enqueue_elapsed(session, now=at(120))
        assert deliver_pending(outbox, accounting).delivered == 2

        process.stop()
        outbox.enqueue_elapsed(session, now=at(300))
        down = deliver_pending(outbox, accounting)
        assert down.delivered == 0 and "accounting service" in down.outage
        assert deliver_pending(outbox, accounting).outage  # still down: still pending, nothing lost
        outbox.close_sessions(user, "", stopped_at=at(330))
        pending = outbox.rows(session, status="pending")
        assert keys(pending) == ["2", "3", "4", "final"] and pending[0].attempts == 2 and pending[0].last_error

        process.start()  # same data dir, same port
        assert deliver_pending(outbox, accounting).delivered == 4
        admin = Accounting(process.url, token=sandbox_accounting.admin_token)
        transactions = admin.transactions(user, session=session)["transactions"]
        assert sorted(t["idempotency_key"].rsplit(":", 1)[1] for t in transactions) == sorted(
            ["0", "1", "2", "3", "4", "final"])
        assert sum(t["amount"] for t in transactions) == Decimal("0.017") * 5 + Decimal("0.008")
    finally:
        process.stop()


def test_a_refused_row_is_set_aside_and_the_rest_delivered(sandbox_accounting, tmp_path):
    user = f"m-{uuid.uuid4().hex[:8]}"
    outbox = MeteringOutbox(f"sqlite:///{tmp_path / 'profiles.sqlite'}")
    accounting = Accounting(sandbox_accounting.url, token=meter_token(sandbox_accounting), retries=0)
    session = outbox.open_session(user, "", STARTED, "power", 2, 300).session
    outbox.enqueue_elapsed(session, now=at(600))
    first = outbox.rows(session)[0]
    # the key already holds another transaction (a different body): the service answers 409 for good
    accounting.record(user, "debit", "9.999", first.idempotency_key, service="jupyterhub")
    result = deliver_pending(outbox, accounting)
    assert (result.delivered, result.rejected, result.outage) == (1, 1, "")
    assert [row.status for row in outbox.rows(session)] == ["rejected", "delivered"]


# -- the service's pass and the spawner's check ------------------------------------------------------------------


def test_service_records_a_session_at_first_sight_with_its_price(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "t")
    url = f"sqlite:///{tmp_path / 'profiles.sqlite'}"
    store = ProfileStore(url)
    store.upgrade()
    store.create(Profile.from_dict({**PROFILE, "slug": "power", "dcu_per_hour": 8}).to_dict(), actor="alice")
    store.close()
    app = MeteringApp()
    app.initialize(["--accounting-url=http://127.0.0.1:9", f"--db-url={url}", "--interval=3"])
    now = datetime.datetime.now(UTC)
    old = {"username": "alice", "server_name": "", "started": now - datetime.timedelta(seconds=10),
           "profile": "power", "dcu_per_hour": None}  # started before the spawner recorded prices
    new = {"username": "bob", "server_name": "gpu", "started": now - datetime.timedelta(seconds=4),
           "profile": "power", "dcu_per_hour": 2.5}  # fmt: skip
    assert app.queue_elapsed([old, new]) == 3 + 1
    recorded = {s.username: s for s in app.outbox.sessions()}
    assert (recorded["alice"].dcu_per_hour, recorded["alice"].interval_seconds) == ("8", 3)  # the store's price
    assert recorded["bob"].dcu_per_hour == "2.5"  # the server's own
    assert app.queue_elapsed([old, {**new, "dcu_per_hour": 99}]) == 0  # nothing new; the price stays
    assert app.outbox.session(recorded["bob"].session).dcu_per_hour == "2.5"


PROFILE = {"slug": "standard", "display_name": "Standard", "image": "img", "cpu_guarantee": 1, "cpu_limit": 1,
           "mem_guarantee": "1G", "mem_limit": "1G", "dcu_per_hour": 36}  # fmt: skip


def spawner(accounting_url, token_url, **settings):
    config = Config()
    config.DespMetering.accounting_url = accounting_url
    config.DespMetering.token_url = token_url
    config.DespMetering.interval_seconds = 300  # 3 DCU for the first interval at 36 DCU/h
    for name, value in settings.items():
        setattr(config.DespMetering, name, value)
    return DespLocalSpawner(user=SimpleNamespace(name=f"s-{uuid.uuid4().hex[:8]}"), config=config)


async def test_spawn_check_refuses_what_the_balance_cannot_cover(sandbox_accounting, monkeypatch):
    monkeypatch.setenv("DESP_METERING_CLIENT_SECRET", METERING_SECRET)
    checking = spawner(sandbox_accounting.url, sandbox_accounting.idp.token_url)
    profile = Profile.from_dict(PROFILE)
    await checking.check_dcu_balance(profile)  # 100 DCU, the default plan
    admin = Accounting(sandbox_accounting.url, token=sandbox_accounting.admin_token)
    admin.record(checking.user.name, "debit", "97", f"spend:{uuid.uuid4()}", service="tests")
    await checking.check_dcu_balance(profile)  # 3 DCU left: just enough
    with pytest.raises(web.HTTPError) as refused:
        await checking.check_dcu_balance(Profile.from_dict({**PROFILE, "dcu_per_hour": 36.5}))  # 3.042 DCU
    assert refused.value.status_code == 402
    assert refused.value.log_message.startswith("Your available DCU balance is 3.000 DCU, and the Standard profile "
                                                "costs 36.5 DCU per hour: 3.042 DCU for its first 5-minute interval")
    await checking.check_dcu_balance(Profile.from_dict({**PROFILE, "dcu_per_hour": 0}))  # free: no question asked


@pytest.mark.parametrize("policy", ["refuse", "allow"])
async def test_spawn_check_when_accounting_is_down_follows_the_policy(policy, sandbox_accounting, monkeypatch,
                                                                      caplog):  # fmt: skip
    monkeypatch.setenv("DESP_METERING_CLIENT_SECRET", METERING_SECRET)
    nobody = f"http://127.0.0.1:{free_port()}"
    checking = spawner(nobody, sandbox_accounting.idp.token_url, when_accounting_down=policy)
    caplog.set_level(logging.WARNING)
    if policy == "refuse":
        with pytest.raises(web.HTTPError) as refused:
            await checking.check_dcu_balance(Profile.from_dict(PROFILE))
        assert refused.value.status_code == 503
        assert "cannot be checked right now" in refused.value.log_message
    else:
        await checking.check_dcu_balance(Profile.from_dict(PROFILE))
    assert f"Cannot check the DCU balance of {checking.user.name}" in caplog.text
    assert f"when_accounting_down={policy}" in caplog.text
    assert METERING_SECRET not in caplog.text
