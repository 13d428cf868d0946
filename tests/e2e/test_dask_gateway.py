"""Dask Gateway through the real hub (`desp-hub up`), its sandbox IdP and accounting service.

A user's kernel, on a server spawned by the hub, calls `Gateway()` with no argument (the server's environment
names the gateway and its token may access it), creates a cluster, scales it to the limit of the user's realm role
(researcher: stack-dask-low, 2 workers; its server's profile `standard` allows 1 GiB per worker), computes on
sample data and shuts down; asking for more is refused with the reason. A user without a Dask role is refused.
Each worker's intervals are debited once in the ledger.
"""

import json
import time

import pytest
import requests

from desp_hub.dask_gateway.metering import SERVICE, UsageOutbox
from desp_lab.accounting import Accounting
from tests.e2e.hubclient import HubSession, run_in_kernel
from tests.e2e.stack import start_hub
from tests.support import wait_for

pytestmark = pytest.mark.timeout(900)

INTERVAL = 4  # seconds per metered interval (servers and Dask workers)

# gc.collect() after each refusal: a refused new_cluster leaves dask-gateway's internal Gateway to the garbage
# collector, and if that runs on the client's event-loop thread, Gateway.__del__ waits on that very loop (an
# upstream bug of dask-gateway 2026.3 with distributed 2026.8: the kernel hangs). Collected here, on the kernel's
# main thread, it closes cleanly.
KERNEL_CODE = """
import gc
import dask.array as da
from dask_gateway import Gateway

gateway = Gateway()
try:
    gateway.new_cluster(worker_cores=4)
    too_many_cores = ""
except ValueError as refusal:
    too_many_cores = str(refusal)
gc.collect()
try:
    gateway.new_cluster(worker_memory=1.5)
    too_much_memory = ""
except ValueError as refusal:
    too_much_memory = str(refusal)
gc.collect()
cluster = gateway.new_cluster()
cluster.scale(2)
client = cluster.get_client()
client.wait_for_workers(2, timeout=180)
total = int(da.arange(1_000_000, chunks=100_000).sum().compute())
try:
    cluster.scale(3)
    too_many_workers = ""
except ValueError as refusal:
    too_many_workers = str(refusal)
workers = len(client.scheduler_info()["workers"])
name = cluster.name
client.close()
cluster.shutdown()
(name, total, workers, too_many_cores, too_much_memory, too_many_workers, [c.name for c in gateway.list_clusters()])
"""


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    # the standard profile narrows the memory per worker of every role (DespDaskLimits.profile_limits)
    profile_limits = json.dumps({"standard": {"max_worker_memory_gib": 1}})
    running = start_hub(str(tmp_path_factory.mktemp("dask-gateway")), with_accounting=True,
                        metering_interval=INTERVAL, extra_env={"DESP_DASK_PROFILE_LIMITS": profile_limits})  # fmt: skip
    try:
        yield running
    finally:
        running.stop()


def test_a_kernel_scales_a_cluster_to_its_role_limit_computes_and_is_metered_once(hub):
    researcher = HubSession(hub.url, "researcher", "researcher-demo")
    researcher.login()
    assert researcher.post_spawn_form("standard").status_code == 200
    researcher.wait_ready(timeout=240)
    token = researcher.new_token()
    # the DESP kernels are offered too (desp_hub.kernels, on the server's JUPYTER_PATH)
    kernelspecs = requests.get(f"{hub.url}/user/researcher/api/kernelspecs",
                               headers={"Authorization": f"token {token}"}, timeout=60).json()["kernelspecs"]
    assert {"desp-python", "desp-python-dask"} <= set(kernelspecs)

    result = run_in_kernel(hub.url, "researcher", token, KERNEL_CODE, timeout=400)
    outcome = eval(result)  # noqa: S307 (a tuple's repr)
    name, total, workers, too_many_cores, too_much_memory, too_many_workers, left = outcome
    assert total == 499999500000
    assert workers == 2
    assert too_many_cores == "at most 1 core per worker for role stack-dask-low (asked for 4)"
    assert too_much_memory == "at most 1 GiB of memory per worker for profile standard (asked for 1.5 GiB)"
    assert too_many_workers == "at most 2 workers for role stack-dask-low (asked for 3)"
    assert left == []

    # Each worker's intervals (4 s here) and its final partial one, each debited once (keys fixed per worker and
    # interval; the outbox is unique on the key).
    outbox = UsageOutbox(f"sqlite:///{hub.data_dir}/hub/dask-usage.sqlite")

    def cluster_rows():
        return [row for row in outbox.rows(username="researcher") if row.cluster == name]

    def delivered_and_settled():
        """The cluster's rows once all delivered and unchanged for longer than a delivery pass (the final partial
        intervals are queued as the workers stop; one that rounds to 0 milli-DCU is not debited at all)."""
        rows = cluster_rows()
        if not rows or any(row.status != "delivered" for row in rows):
            return None
        time.sleep(12)
        return rows if cluster_rows() == rows else None

    rows = wait_for(delivered_and_settled, 180, "the workers' debits to be delivered")
    assert len({row.worker for row in rows}) == 2
    assert len(rows) > 2  # the workers ran longer than one 4-second interval
    for worker in {row.worker for row in rows}:
        indexes = sorted(row.interval_index for row in rows if row.worker == worker and row.interval_index is not None)
        assert indexes == list(range(len(indexes)))  # each complete interval once, none missing

    admin = HubSession(hub.url, "admin", "admin-demo")
    admin.login()
    accounting = Accounting(
        hub.accounting_url,
        token=lambda: admin.api("GET", "/users/admin").json()["auth_state"]["access_token"],
        retries=0,
    )

    def ledger():
        return accounting.transactions("researcher", session=f"{SERVICE}/{name}", limit=1000)["transactions"]

    wait_for(lambda: len(ledger()) >= len(rows), 60, "the debits in the ledger")
    time.sleep(INTERVAL + 2)  # more metering and delivery passes run: nothing is recorded twice
    debits = ledger()
    assert sorted(d["idempotency_key"] for d in debits) == sorted(r.idempotency_key for r in cluster_rows())
    assert len({d["idempotency_key"] for d in debits}) == len(debits)
    for debit in debits:
        assert (debit["kind"], debit["service"]) == ("debit", SERVICE)
        assert debit["amount"] > 0
        assert debit["metadata"]["cluster"] == name
    researcher.stop_server()


def gateway_api(hub, token, method, path, **kwargs):
    """The gateway's REST API through the hub's proxy, as `dask_gateway.Gateway` calls it with JupyterHubAuth."""
    return requests.request(method, f"{hub.url}/services/dask-gateway/api/v1{path}",
                            headers={"Authorization": f"jupyterhub {token}"}, timeout=60, **kwargs)  # fmt: skip


def test_a_user_without_a_dask_role_is_refused(hub):
    executive = HubSession(hub.url, "executive", "executive-demo")
    executive.login()
    token = executive.new_token()
    refused = gateway_api(hub, token, "POST", "/clusters/", json={"cluster_options": {}})
    # 422 + {"error"}: what `Gateway().new_cluster()` raises as ValueError(error)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"] == (
        "executive may not create Dask clusters: that takes one of the realm roles stack-dask-high, "
        "stack-dask-low, stack-dask-medium; ask your DESP administrator"
    )
    assert gateway_api(hub, token, "GET", "/clusters/").json() == {}


def test_a_token_without_access_to_the_gateway_is_refused(hub):
    researcher = HubSession(hub.url, "researcher", "researcher-demo")
    researcher.login()
    response = researcher.api("POST", "/users/researcher/tokens",
                              json={"note": "no dask", "scopes": ["read:users:name!user"]})  # fmt: skip
    response.raise_for_status()
    assert gateway_api(hub, response.json()["token"], "GET", "/clusters/").status_code == 401
    assert gateway_api(hub, researcher.new_token(), "GET", "/clusters/").status_code == 200
