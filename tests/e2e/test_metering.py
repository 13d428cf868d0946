"""Metering through the real hub (`desp-hub up`) and a real accounting service, with 4-second intervals.

One stack per module: an accounting service of the test's own (so the test can stop it and start it again on the
same ledger) and the hub, told to use it with `--accounting-url`. The tests check what was debited, not when.
"""

import os
import time
from decimal import Decimal

import pytest

from desp_hub.metering import MeteringOutbox, amount_milli, parse_time, seconds_between, session_id
from desp_lab.accounting import Accounting
from tests.conftest_accounting import AccountingProcess
from tests.e2e.hubclient import HubSession, run_in_kernel
from tests.e2e.stack import start_hub
from tests.support import free_port, wait_for

pytestmark = pytest.mark.timeout(600)

INTERVAL = 4  # seconds per metered interval
PRICE = 36  # DCU per hour: 0.010 DCU a second, 0.040 DCU an interval
PER_INTERVAL = Decimal("0.040")

SEED = f"""
profiles:
  - {{slug: standard, display_name: Standard, image: img, cpu_guarantee: 0.5, cpu_limit: 1, mem_guarantee: 1G,
     mem_limit: 2G, allowed_groups: [desp-users], dcu_per_hour: {PRICE}, default: true, order: 10}}
  - {{slug: power, display_name: Power, image: img, cpu_guarantee: 0.5, cpu_limit: 1, mem_guarantee: 1G,
     mem_limit: 2G, allowed_groups: [power-users], dcu_per_hour: {PRICE}, order: 20}}
"""


class Stack:
    """The hub and its accounting service on fixed ports, each restartable on its own state."""

    def __init__(self, data_dir):
        self.data_dir = data_dir
        self.port, self.idp_port, self.accounting_port = free_port(), free_port(), free_port()
        realm = f"http://127.0.0.1:{self.idp_port}/realms/desp"
        self.accounting = AccountingProcess(data_dir / "accounting", f"{realm}/protocol/openid-connect/certs", realm)
        self.accounting.port = self.accounting_port
        self.hub = None
        self.db_url = f"sqlite:///{data_dir / 'hub' / 'hub' / 'profiles.sqlite'}"

    @property
    def accounting_url(self):
        return f"http://127.0.0.1:{self.accounting_port}"

    def start_hub(self, keep_servers=False):
        seed = self.data_dir / "profiles.yaml"
        seed.write_text(SEED)
        args = ["--profiles", str(seed), "--accounting-url", self.accounting_url, "--no-traces"]
        self.hub = start_hub(str(self.data_dir / "hub"), port=self.port, idp_port=self.idp_port,
                             extra_args=args + (["--keep-servers"] if keep_servers else []),
                             with_accounting=True, metering_interval=INTERVAL)  # fmt: skip
        return self.hub

    def hub_log(self):
        with open(os.path.join(self.hub.data_dir, "logs", "hub.log"), errors="replace") as log:
            return log.read()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    running = Stack(tmp_path_factory.mktemp("metering"))
    running.accounting.start()
    try:
        running.start_hub(keep_servers=True)
        yield running
    finally:
        if running.hub is not None:
            running.hub.stop()
        running.accounting.stop()


def admin_accounting(stack):
    """The accounting API as the demo user `admin` (dcu-admin), with its access token from the hub's auth_state."""
    admin = HubSession(stack.hub.url, "admin", "admin-demo")
    admin.login()

    def token():
        return admin.api("GET", "/users/admin").json()["auth_state"]["access_token"]

    return Accounting(stack.accounting_url, token=token, retries=0)


def session_debits(accounting, user, session):
    return accounting.transactions(user, session=session, limit=1000)["transactions"]


def interval_of(transaction):
    return transaction["idempotency_key"].rsplit(":", 1)[1]


def test_a_spawn_the_balance_cannot_cover_is_refused_with_the_reason(stack):
    admin = admin_accounting(stack)
    available = admin.account("poweruser")["available"]
    if available > 0:  # spend the whole balance, as a long session would have
        admin.record("poweruser", "debit", available, f"test-metering:spend-all:{time.time_ns()}",
                     service="tests", description="spend the balance before a spawn")  # fmt: skip
    poweruser = HubSession(stack.hub.url, "poweruser", "poweruser-demo")
    poweruser.login()

    refused = poweruser.post_spawn_form("power")
    assert refused.status_code == 402, refused.text
    assert (
        "Your available DCU balance is 0.000 DCU, and the Power profile costs 36 DCU per hour: 0.040 DCU for its "
        "first 4-second interval. Choose a cheaper profile, or ask your DESP administrator for more credit."
    ) in refused.text
    assert not poweruser.api("GET", "/users/poweruser").json()["servers"]

    admin.record("poweruser", "credit", "1", f"test-metering:credit:{time.time_ns()}", service="tests",
                 description="credit for the next spawn")  # fmt: skip
    started = poweruser.post_spawn_form("power")
    assert started.status_code == 200, started.text
    poweruser.wait_ready()
    poweruser.stop_server()


def test_every_interval_is_debited_once_across_a_hub_restart_and_an_accounting_outage(stack):
    admin = admin_accounting(stack)
    researcher = HubSession(stack.hub.url, "researcher", "researcher-demo")
    researcher.login()
    assert researcher.post_spawn_form("standard").status_code == 200
    model = researcher.wait_ready()
    server = model["servers"][""]
    assert server["user_options"] == {"profile": "standard", "dcu_per_hour": PRICE}  # the price goes with the server
    started = parse_time(server["started"])
    session = session_id("researcher", "", started)
    token = researcher.new_token()
    assert run_in_kernel(stack.hub.url, "researcher", token,
                         "import os; os.environ['DESP_SESSION_ID']") == repr(session)  # fmt: skip

    # Metered while it runs: one debit per complete interval.
    wait_for(lambda: len(session_debits(admin, "researcher", session)) >= 2, 60, "two debits")

    # The hub stops (the server keeps running), and the accounting service goes down while it is away.
    stack.hub.stop()
    stack.accounting.stop()
    time.sleep(INTERVAL)  # at least one interval ends while nobody meters
    outage_mark = len(stack.hub_log())
    stack.start_hub()
    outbox = MeteringOutbox(stack.db_url)
    # the server outlived the hub (the restarted hub may take a moment to check it)
    wait_for(lambda: researcher.api("GET", "/users/researcher").json()["servers"][""]["ready"], 60,
             "the restarted hub to find the server running")  # fmt: skip

    # Spawns cannot be checked while accounting is down: refused (the default policy) with a clear message.
    poweruser = HubSession(stack.hub.url, "poweruser", "poweruser-demo")
    poweruser.login()
    refused = poweruser.post_spawn_form("power")
    assert refused.status_code == 503, refused.text
    assert "Your DCU balance cannot be checked right now" in refused.text

    # The restarted service queues what elapsed meanwhile (no gap) and keeps it while accounting is down.
    delivered = {str(row.interval_index) for row in outbox.rows(session, status="delivered")}
    wait_for(lambda: any(row.attempts >= 2 for row in outbox.rows(session, status="pending")), 90,
             "queued intervals retried at least twice while accounting is down")  # fmt: skip
    pending = outbox.rows(session, status="pending")
    assert pending and {str(row.interval_index) for row in pending}.isdisjoint(delivered)

    stack.accounting.start()  # same port, same ledger
    wait_for(lambda: not outbox.rows(session, status="pending"), 90, "the queued debits to be delivered")
    wait_for(lambda: "Accounting is reachable again" in stack.hub_log()[outage_mark:], 30,
             "the service to log that accounting is back")  # fmt: skip
    log = stack.hub_log()[outage_mark:]
    assert log.count("Accounting is not reachable") == 1, log  # once per outage, not per row or per pass
    assert log.count("Accounting is reachable again") == 1

    # At stop, the partial interval since the last complete one.
    researcher.stop_server()
    final = wait_for(
        lambda: [t for t in session_debits(admin, "researcher", session) if interval_of(t) == "final"], 60,
        "the final partial interval",
    )[0]

    debits = sorted(session_debits(admin, "researcher", session), key=lambda t: parse_time(t["period_start"]))
    complete = [t for t in debits if interval_of(t) != "final"]
    assert debits[-1]["idempotency_key"] == final["idempotency_key"]  # the last period, after every complete one
    assert len(complete) >= 3
    assert [interval_of(t) for t in complete] == [str(i) for i in range(len(complete))]  # each once, none missing
    assert all((t["kind"], t["amount"], t["service"], t["profile"]) == ("debit", PER_INTERVAL, "jupyterhub",
                                                                          "standard") for t in complete)  # fmt: skip
    # The periods tile the session from its start to its stop: no gap, no overlap.
    assert parse_time(debits[0]["period_start"]) == started.replace(microsecond=0)
    for before, after in zip(debits, debits[1:]):
        assert before["period_end"] == after["period_start"]
    final_seconds = (parse_time(final["period_end"]) - parse_time(final["period_start"])).total_seconds()
    assert 0 < final_seconds < INTERVAL
    final_period = (parse_time(final["period_start"]), parse_time(final["period_end"]))
    assert final["amount"] == Decimal(amount_milli(PRICE, seconds_between(*final_period))) / 1000
    assert {row.status for row in outbox.rows(session)} == {"delivered"}
    assert outbox.session(session).stopped_at is not None
