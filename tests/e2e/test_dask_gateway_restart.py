"""The local Dask Gateway keeps its clusters, and bills their workers once, across its own death and the hub's restart.

Through the real hub (`desp-hub up`), its sandbox IdP and accounting service: a user's kernel creates a cluster of 2
workers and leaves it running (`shutdown_on_close=False`). Then

1. the gateway service's process is SIGKILLed (found by PID among the hub's child processes): the hub restarts it,
   the new gateway finds the cluster in its database (`dask-gateway.sqlite`), the same scheduler and worker
   processes serve a new kernel;
2. the hub is stopped gracefully while it keeps users' servers (`--keep-servers`): the gateway leaves the cluster
   running; the hub is started again (this time without keeping servers) and the cluster is still there and usable;
3. that hub is stopped: it does not keep servers, so the gateway stops the cluster with it (nothing left behind).

Each worker is billed from its start to its stop with no gap and no overlap, the intervals that fell while the
gateway or the hub was down included, each interval once in the ledger (read from the accounting service's own
ledger file once the stack is down).
"""

import datetime
import os
import signal
import time

import psutil
import pytest
import requests

from desp_hub.dask_gateway.metering import SERVICE, UsageOutbox
from desp_sandbox.accounting.ledger import Ledger
from tests.e2e.hubclient import HubSession, run_in_kernel
from tests.e2e.stack import start_hub
from tests.support import free_port, wait_for

pytestmark = pytest.mark.timeout(1500)

INTERVAL = 4  # seconds per metered interval (servers and Dask workers)
# 1 DCU per worker second: even a final partial interval of a millisecond is debited (one that rounds to 0 milli-DCU
# is not), so each worker's stop shows in the ledger
PRICE = {"DESP_DASK_DCU_PER_CORE_HOUR": "3600"}

CREATE_CLUSTER = """
from dask_gateway import Gateway

gateway = Gateway()
cluster = gateway.new_cluster(shutdown_on_close=False)  # it outlives this kernel
cluster.scale(2)
client = cluster.get_client()
client.wait_for_workers(2, timeout=240)
total = client.submit(sum, range(1000)).result()
workers = sorted(info["name"] for info in client.scheduler_info()["workers"].values())
name = cluster.name
client.close()
cluster.close()
gateway.close()
(name, total, workers)
"""

USE_CLUSTER = """
from dask_gateway import Gateway

gateway = Gateway()
listed = {{c.name: c.status.name for c in gateway.list_clusters()}}
cluster = gateway.connect({name!r}, shutdown_on_close=False)
client = cluster.get_client()
client.wait_for_workers(2, timeout=240)
total = client.submit(sum, range(1000)).result()
workers = sorted(info["name"] for info in client.scheduler_info()["workers"].values())
client.close()
cluster.close()
gateway.close()
(listed, total, workers)
"""


def now():
    return datetime.datetime.now(datetime.UTC)


def command(process):
    try:
        return process.cmdline()
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return []


def gateway_process(hub):
    """The hub's `dask-gateway` service process (a child of the hub, which is a child of `desp-hub up`)."""
    for child in psutil.Process(hub.process.pid).children(recursive=True):
        if "dask_gateway_server" in command(child):
            return child
    return None


def cluster_processes(gateway):
    """The scheduler and worker processes the gateway started (`dask scheduler`, `dask worker`)."""
    def runs(cmd, subcommand):  # `python .../dask scheduler ...` (the console script's interpreter comes first)
        return any(os.path.basename(a) == "dask" and b == subcommand for a, b in zip(cmd, cmd[1:]))

    children = [(child, command(child)) for child in gateway.children()]
    schedulers = [child for child, cmd in children if runs(cmd, "scheduler")]
    workers = [child for child, cmd in children if runs(cmd, "worker")]
    return schedulers, workers


def stop_leftovers(data_dir):
    """SIGKILL, by PID, whatever still runs in `data_dir` once the test is over (kept servers, clusters left by a
    failed run): processes outliving the hub are what this test is about, so a failure must not leave them."""
    for process in psutil.process_iter():
        try:
            if process.cwd().startswith(os.path.realpath(data_dir) + os.sep):
                process.kill()
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            pass


def cluster_status(hub, token, name):
    """The cluster's status as the gateway's REST API reports it through the hub's proxy ("" when unreachable)."""
    try:
        response = requests.get(f"{hub.url}/services/dask-gateway/api/v1/clusters/{name}",
                                headers={"Authorization": f"jupyterhub {token}"}, timeout=30)  # fmt: skip
    except requests.RequestException:
        return ""
    return response.json().get("status", "") if response.status_code == 200 else ""


def use_cluster(hub, token, name):
    result = run_in_kernel(hub.url, "researcher", token, USE_CLUSTER.format(name=name), timeout=400)
    return eval(result)  # noqa: S307 (a tuple's repr)


def alive(processes):
    def running(process):
        try:
            return process.is_running() and process.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    return [process for process in processes if running(process)]


def test_a_cluster_survives_the_gateways_sigkill_and_the_hubs_restart_and_is_billed_once(tmp_path):
    data_dir = str(tmp_path / "data")
    port, idp_port, accounting_port = free_port(), free_port(), free_port()

    def hub_start(extra_args):
        return start_hub(data_dir, port=port, idp_port=idp_port, with_accounting=True, accounting_port=accounting_port,
                         metering_interval=INTERVAL, extra_args=extra_args, extra_env=PRICE)  # fmt: skip

    try:
        run_the_scenario(data_dir, hub_start)
    finally:
        stop_leftovers(data_dir)


def run_the_scenario(data_dir, hub_start):
    hub = hub_start(["--keep-servers"])
    try:
        researcher = HubSession(hub.url, "researcher", "researcher-demo")
        researcher.login()
        assert researcher.post_spawn_form("standard").status_code == 200
        researcher.wait_ready(timeout=240)
        token = researcher.new_token()

        created = run_in_kernel(hub.url, "researcher", token, CREATE_CLUSTER, timeout=400)
        name, total, workers = eval(created)  # noqa: S307 (a tuple's repr)
        created = now()
        assert total == 499500 and len(workers) == 2
        gateway = gateway_process(hub)
        schedulers, worker_processes = cluster_processes(gateway)
        assert len(schedulers) == 1 and len(worker_processes) == 2
        cluster = schedulers + worker_processes

        # 1. The gateway dies hard. Its clusters run in sessions of their own and outlive it; the hub sees its
        # service exit and starts it again, and the new gateway takes the cluster over from its database.
        # (the dead gateway stays a zombie until the hub's next poll of its services reaps it: every 30 s or so)
        os.kill(gateway.pid, signal.SIGKILL)
        assert alive(cluster) == cluster
        wait_for(lambda: (gateway_process(hub) or gateway).pid != gateway.pid, 240, "the hub to restart the gateway")
        wait_for(lambda: cluster_status(hub, token, name) == "RUNNING", 240, "the restarted gateway's cluster")
        listed, total, again = use_cluster(hub, token, name)
        assert listed == {name: "RUNNING"} and total == 499500
        assert again == workers  # the same workers, not new ones
        assert alive(cluster) == cluster  # the same processes
    finally:
        hub.stop()  # graceful, and the hub keeps servers: the gateway leaves the cluster running

    # 2. The hub restarted: the cluster was left running and the next gateway takes it over.
    assert alive(cluster) == cluster
    time.sleep(2 * INTERVAL)  # intervals fall while no gateway runs: they are billed when it is back
    hub = hub_start([])
    try:
        wait_for(lambda: cluster_status(hub, token, name) == "RUNNING", 240, "the cluster after the hub's restart")
        listed, total, again = use_cluster(hub, token, name)
        assert listed == {name: "RUNNING"} and total == 499500 and again == workers
        assert alive(cluster) == cluster
        restarted = now()
        outbox = UsageOutbox(f"sqlite:///{data_dir}/hub/dask-usage.sqlite")

        def caught_up():
            """Every worker billed, without gap, past the restart (the downtimes' intervals too), all delivered."""
            rows = [row for row in outbox.rows(username="researcher") if row.cluster == name]
            ends = {worker: max((r.period_end for r in rows if r.worker == worker), default=None) for worker in workers}
            done = all(end and end > restarted for end in ends.values())
            return done and all(row.status == "delivered" for row in rows)

        wait_for(caught_up, 180, "the workers' intervals up to now to be delivered")
    finally:
        hub.stop()  # graceful, and this hub does not keep servers: the gateway stops the cluster
    stopped = now()

    # 3. Nothing is left behind, and each worker's time from its start to its stop is billed once.
    wait_for(lambda: not alive(cluster), 120, "the cluster's processes to be gone")
    rows = [row for row in outbox.rows(username="researcher") if row.cluster == name]
    assert {row.worker for row in rows} == set(workers)
    assert all(row.status == "delivered" for row in rows), [(r.idempotency_key, r.last_error) for r in rows]
    for worker in workers:
        of_worker = [row for row in rows if row.worker == worker]
        complete = sorted((row for row in of_worker if row.interval_index is not None), key=lambda r: r.interval_index)
        finals = [row for row in of_worker if row.interval_index is None]
        assert [row.interval_index for row in complete] == list(range(len(complete)))
        assert len(finals) == 1  # stopped with the hub: the final partial interval
        periods = [*complete, *finals]
        assert periods[0].period_start < created  # from the worker's start
        for before, after in zip(periods, periods[1:]):
            assert before.period_end == after.period_start  # no gap, no overlap
        assert restarted < finals[0].period_end < stopped  # to its stop

    ledger = Ledger(os.path.join(data_dir, "accounting", "ledger.sqlite"))
    try:
        debits = ledger.transactions("researcher", session=f"{SERVICE}/{name}", limit=10_000)["transactions"]
    finally:
        ledger.close()
    assert sorted(debit["idempotency_key"] for debit in debits) == sorted(row.idempotency_key for row in rows)
    assert {debit["kind"] for debit in debits} == {"debit"}
