"""Dask Gateway: time from `Gateway().new_cluster()` to a first result with 2 workers, against a plain
`distributed.LocalCluster` with 2 worker processes, in the same run.

The gateway is the real one of `desp-hub up` (started here on free ports with its sandbox IdP): the benchmark logs
in as the demo user `researcher` (realm role stack-dask-low: at most 2 workers), takes a hub API token, and calls
the gateway through the hub's proxy at /services/dask-gateway/ as a kernel would (`Gateway(address,
auth=JupyterHubAuth(token))`; in a server, `Gateway()` reads the same from its environment). Each round:

- gateway: `new_cluster()` (returns once the scheduler runs: the "cluster start"), `scale(2)`, a client through
  the gateway's TLS proxy, wait for 2 workers, `submit(sum, [1, 2])`; then shut the cluster down (not timed).
- local: `LocalCluster(n_workers=2, threads_per_worker=1)` (with its dashboard, as the gateway's scheduler) and a
  client, wait for 2 workers, the same task.

Targets: ratio gateway/local <= 2 and cluster start <= 5 s (medians over --rounds).

Run: `.venv/bin/python benchmarks/dask.py [--rounds N]`.
"""

import argparse
import os
import statistics
import sys
import tempfile
import time
import urllib.parse
import warnings
from pathlib import Path

# This file is named dask.py: its own directory (sys.path[0] when run as a script) must not shadow the dask package.
HERE = Path(__file__).resolve().parent
sys.path[:] = [entry for entry in sys.path if Path(entry or ".").resolve() != HERE]
sys.path.insert(0, str(HERE.parent))

TARGET_RATIO = 2.0
TARGET_START_SECONDS = 5.0


def gateway_round(gateway):
    started = time.perf_counter()
    cluster = gateway.new_cluster()
    cluster_started = time.perf_counter() - started
    try:
        cluster.scale(2)
        client = cluster.get_client(set_as_default=False)
        client.wait_for_workers(2, timeout=120)
        assert client.submit(sum, [1, 2]).result() == 3
        first_result = time.perf_counter() - started
        client.close()
    finally:
        cluster.shutdown()
    return cluster_started, first_result


def local_round():
    from distributed import Client, LocalCluster

    started = time.perf_counter()
    with LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address="127.0.0.1:0") as cluster:
        with Client(cluster, set_as_default=False) as client:
            client.wait_for_workers(2, timeout=120)
            assert client.submit(sum, [1, 2]).result() == 3
            return time.perf_counter() - started


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="rounds of each (default %(default)s); medians shown")
    args = parser.parse_args()

    from dask_gateway import Gateway, JupyterHubAuth

    from tests.e2e.hubclient import HubSession
    from tests.e2e.stack import start_hub

    warnings.simplefilter("ignore")  # dask's "port in use, using a random one" and similar chatter
    with tempfile.TemporaryDirectory(prefix="desp-dask-bench-") as data_dir:
        print("Starting desp-hub up (sandbox IdP, no accounting) ...", flush=True)
        hub = start_hub(os.path.join(data_dir, "hub"))
        try:
            researcher = HubSession(hub.url, "researcher", "researcher-demo")
            researcher.login()
            token = researcher.new_token()
            # a server finds the schedulers' TLS proxy in DASK_GATEWAY__PROXY_ADDRESS; here, ask the hub (as admin)
            admin = HubSession(hub.url, "admin", "admin-demo")
            admin.login()
            service_url = urllib.parse.urlsplit(admin.api("GET", "/services/dask-gateway").json()["url"])
            gateway = Gateway(f"{hub.url}/services/dask-gateway", proxy_address=f"gateway://{service_url.netloc}",
                              auth=JupyterHubAuth(api_token=token))  # fmt: skip
            gateway.list_clusters()  # the gateway is up (the hub starts its services in the background)
            starts, gateway_times, local_times = [], [], []
            for round_number in range(1, args.rounds + 1):
                cluster_started, first_result = gateway_round(gateway)
                local = local_round()
                starts.append(cluster_started)
                gateway_times.append(first_result)
                local_times.append(local)
                print(f"round {round_number}: gateway cluster start {cluster_started:.2f} s, first result with 2 "
                      f"workers {first_result:.2f} s; LocalCluster first result {local:.2f} s", flush=True)  # fmt: skip
            gateway.close()
        finally:
            hub.stop()

    start, through_gateway, local = (statistics.median(times) for times in (starts, gateway_times, local_times))
    ratio = through_gateway / local
    print()
    print(f"Cluster start (new_cluster() returns): {start:.2f} s (target <= {TARGET_START_SECONDS:g} s): "
          f"{'met' if start <= TARGET_START_SECONDS else 'MISSED'}")  # fmt: skip
    verdict = "met" if ratio <= TARGET_RATIO else "MISSED"
    print(f"First result with 2 workers: gateway {through_gateway:.2f} s, LocalCluster {local:.2f} s, "
          f"ratio {ratio:.2f} (target <= {TARGET_RATIO:g}): {verdict}")  # fmt: skip


if __name__ == "__main__":
    main()
