"""The dashboards service's statistics account (client `desp-statistics`, realm role `executive-statistics`):
its client credentials tokens from the sandbox IdP read platform-wide usage from the sandbox accounting service, so
an ordinary user's public executive views show DCU aggregates, still without a user name; restricted views stay
refused; a source read with it is cached once for every viewer."""

import datetime as dt
import json

import pytest

from desp_dashboards.context import DashboardContext
from desp_dashboards.executive import sources
from desp_dashboards.executive.sources import AccountingUsage, Filters, SourceUnavailable
from desp_dashboards.executive.store import ExecutiveStore
from desp_dashboards.executive.views import VIEWS, view_data
from desp_dashboards.service import ServiceSettings, build_context
from desp_dashboards.service_account import ClientCredentials, ServiceAccountUnavailable, from_environ
from desp_lab.accounting import Accounting
from tests.conftest_accounting import unique_user
from tests.conftest_idp import STATISTICS_CLIENT, STATISTICS_SECRET

pytestmark = pytest.mark.timeout(300)
# the public views of the ledger alone (those joining the hub's users are tested through the hub, in the browser)
PUBLIC_DCU_VIEWS = ["dcu_by_profile", "dcu_by_service", "usage_table", "dcu_per_day", "spawns_per_day",
                    "run_durations", "runs_by_profile"]


@pytest.fixture(autouse=True)
def fresh_cache():
    sources.clear_cache()
    yield
    sources.clear_cache()


def test_settings_read_the_account_from_the_environment_and_hide_its_secret():
    environ = {"DESP_STATISTICS_TOKEN_URL": "http://idp/token", "DESP_STATISTICS_CLIENT_ID": "desp-statistics",
               "DESP_STATISTICS_CLIENT_SECRET": "s3cret"}  # fmt: skip
    settings = ServiceSettings.from_environ(environ)
    account = settings.statistics_token
    assert isinstance(account, ClientCredentials) and account.client_id == "desp-statistics"
    assert "s3cret" not in repr(settings) and "s3cret" not in repr(account)
    context = build_context(settings, {"name": "researcher", "groups": ["desp-users"]}, lambda: "user")
    assert context.statistics_token is account and not context.may_see_restricted
    assert "s3cret" not in repr(context)
    assert from_environ({"DESP_STATISTICS_TOKEN_URL": "http://idp/token"}) is None  # no secret: no account
    assert ServiceSettings.from_environ({}).statistics_token is None


def test_a_refusing_or_absent_idp_is_a_short_reason_not_a_crash(sandbox_idp):
    wrong = ClientCredentials(sandbox_idp.token_url, STATISTICS_CLIENT, "not-the-secret")
    with pytest.raises(ServiceAccountUnavailable, match="refused client 'desp-statistics'") as refused:
        wrong()
    assert "not-the-secret" not in str(refused.value)
    with pytest.raises(ServiceAccountUnavailable, match="did not answer"):
        ClientCredentials("http://127.0.0.1:9/token", STATISTICS_CLIENT, "x", timeout=2)()
    context = DashboardContext(user="researcher", groups={"desp-users"}, accounting_url="http://127.0.0.1:9",
                               user_token=lambda: "user", statistics_token=wrong)  # fmt: skip
    with pytest.raises(SourceUnavailable, match="DCU statistics are unavailable now"):
        AccountingUsage(context).load(Filters.default())


def test_tokens_are_reused_until_shortly_before_they_expire(sandbox_idp):
    now = [0.0]
    account = ClientCredentials(sandbox_idp.token_url, STATISTICS_CLIENT, STATISTICS_SECRET, clock=lambda: now[0])
    first = account()
    claims = json.loads(_b64(first.split(".")[1]))
    assert "executive-statistics" in claims["realm_access"]["roles"]
    assert "dcu-admin" not in claims["realm_access"]["roles"] and "dcu-meter" not in claims["realm_access"]["roles"]
    now[0] = 10.0
    assert account() == first
    assert account._expires < 10_000.0
    now[0] = 10_000.0
    account()  # past its lifetime: a new token is fetched
    assert account._expires > 10_000.0


def _b64(text):
    import base64

    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@pytest.fixture
def debits(sandbox_accounting):
    """Two users' debits today, recorded as the metering service does."""
    meter = Accounting(sandbox_accounting.url, token=sandbox_accounting.meter_token)
    alice, bob = unique_user("sta"), unique_user("stb")
    start = dt.datetime.now(dt.UTC).replace(microsecond=0, tzinfo=None) - dt.timedelta(hours=1)
    for user, profile, amount in ((alice, "power", "0.500"), (bob, "standard", "0.250")):
        session = f"{user}//{start:%Y-%m-%dT%H:%M:%SZ}"
        meter.record(user, "debit", amount, f"jupyterhub:{session}:0", service="jupyterhub", profile=profile,
                     session=session, period_start=start, period_end=start + dt.timedelta(minutes=10))  # fmt: skip
    return alice, bob


def test_an_ordinary_users_public_views_show_platform_dcu_without_names(sandbox_idp, sandbox_accounting, debits):
    alice, bob = debits
    account = ClientCredentials(sandbox_idp.token_url, STATISTICS_CLIENT, STATISTICS_SECRET)
    researcher = DashboardContext(user="researcher", groups={"desp-users"}, accounting_url=sandbox_accounting.url,
                                  user_token=lambda: sandbox_accounting.token_for("researcher"),
                                  statistics_token=account, hub_api_url="http://127.0.0.1:9/hub/api")  # fmt: skip
    now = dt.datetime.now(dt.UTC).replace(tzinfo=None)
    period = Filters(now - dt.timedelta(days=1), now + dt.timedelta(days=1))

    # without the account the researcher's own token is refused platform-wide figures (as before)
    alone = DashboardContext(user="researcher", groups={"desp-users"}, accounting_url=sandbox_accounting.url,
                             user_token=lambda: sandbox_accounting.token_for("researcher"))  # fmt: skip
    with pytest.raises(SourceUnavailable, match="executive-statistics"):
        AccountingUsage(alone).load(period)

    by_profile = view_data("dcu_by_profile", researcher, period).set_index("profile")["dcu"]
    assert by_profile["power"] >= 0.5 and by_profile["standard"] >= 0.25  # everyone's debits, not the researcher's
    report = Accounting(sandbox_accounting.url, token=sandbox_accounting.admin_token).usage(
        group_by="", start=period.start, end=period.end)
    assert by_profile.sum() == pytest.approx(float(report["total"]))
    for name in PUBLIC_DCU_VIEWS:
        frame = view_data(name, researcher, period)
        assert not frame.empty, name
        text = frame.to_csv(index=False) + frame.to_json(orient="records", date_format="iso")
        assert alice not in text and bob not in text, name
    for restricted in [spec.name for spec in VIEWS if spec.restricted]:
        with pytest.raises(PermissionError):
            view_data(restricted, researcher, period)


def test_a_frame_read_with_the_account_is_shared_by_viewers_one_read_with_a_users_token_is_not(
        sandbox_idp, sandbox_accounting, debits):
    account = ClientCredentials(sandbox_idp.token_url, STATISTICS_CLIENT, STATISTICS_SECRET)
    calls = []

    class Counting(AccountingUsage):
        def load(self, filters):
            calls.append(filters)
            return super().load(filters)

    def store_for(user, statistics):
        context = DashboardContext(user=user, groups={"desp-users"}, accounting_url=sandbox_accounting.url,
                                   user_token=lambda: sandbox_accounting.token_for("executive"),
                                   statistics_token=account if statistics else None)  # fmt: skip
        return ExecutiveStore(context, sources=[Counting(context)])

    store_for("researcher", True).frame("dcu_debits")
    store_for("poweruser", True).frame("dcu_debits")
    assert len(calls) == 1  # the second viewer reused the service account's frame
    store_for("executive", False).frame("dcu_debits")
    store_for("admin", False).frame("dcu_debits")
    assert len(calls) == 3  # frames read with a viewer's own token are that viewer's only
