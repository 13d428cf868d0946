"""Login-to-JupyterLab-ready time: the full DESP stack against a bare JupyterHub, in the same run.

DESP: `desp-hub up` (sandbox IdP login form, Keycloak-style code flow with PKCE, profile form, entitlement
check, profile resources). Baseline: JupyterHub with the DummyAuthenticator and SimpleLocalProcessSpawner, the
same proxy and the same single-user server. For each, N users log in and start a server one after the other,
then N users at once; each time runs from the first login request until `/user/<name>/lab` answers 200.

    .venv/bin/python benchmarks/spawn.py [--users 10]

Prints medians, p95 and the DESP/baseline ratios. Target: ratio <= 1.25 and no failed spawn.
"""

import argparse
import concurrent.futures
import json
import os
import signal
import statistics
import sys
import tempfile
import time

import requests

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from desp_hub.cli import REALM_FILE  # noqa: E402
from tests.e2e.hubclient import HubSession, forms_of  # noqa: E402
from tests.e2e.stack import start_hub  # noqa: E402
from tests.support import ManagedProcess, free_port, wait_for_http  # noqa: E402

BARE_CONFIG = """
import os, sys
bin_dir = os.path.dirname(sys.executable)
c.JupyterHub.authenticator_class = "dummy"
c.DummyAuthenticator.password = "bench"
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = os.path.join(os.getcwd(), "users", "{{username}}")
c.ConfigurableHTTPProxy.command = [os.path.join(bin_dir, "configurable-http-proxy")]
c.Spawner.cmd = [os.path.join(bin_dir, "jupyterhub-singleuser")]
c.Spawner.default_url = "/lab"
c.Spawner.http_timeout = 60
c.Spawner.start_timeout = 120
c.JupyterHub.bind_url = "http://127.0.0.1:{port}/"
c.JupyterHub.hub_bind_url = "http://127.0.0.1:{hub_port}/"
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_port}"
c.JupyterHub.cleanup_servers = True
if os.geteuid() == 0:
    c.Spawner.args = ["--allow-root"]
"""


def bench_realm(path, users):
    """The demo realm plus `users` benchmark accounts in desp-users."""
    with open(REALM_FILE) as realm_file:
        realm = json.load(realm_file)
    template = next(user for user in realm["users"] if user["username"] == "researcher")
    for index in range(users):
        name = f"bench{index:02d}"
        realm["users"].append(dict(template, id=f"00000000-0000-4000-8000-{index:012d}", username=name,
                                   email=f"{name}@desp.example",
                                   credentials=[{"type": "password", "value": "bench", "temporary": False}]))
    with open(path, "w") as realm_file:
        json.dump(realm, realm_file)


def desp_user_ready(hub_url, username):
    """Login through the IdP form, submit the profile form, wait for JupyterLab. Seconds."""
    started = time.perf_counter()
    session = HubSession(hub_url, username, "bench")
    session.login()
    session.post_spawn_form("standard")
    session.wait_ready()
    lab = session.http.get(f"{hub_url}/user/{username}/lab", timeout=60)
    lab.raise_for_status()
    elapsed = time.perf_counter() - started
    session.stop_server()
    return elapsed


def bare_user_ready(hub_url, username):
    """Login on the hub's own form, spawn (no options), wait for JupyterLab. Seconds."""
    started = time.perf_counter()
    session = HubSession(hub_url, username, "bench")
    page = session.http.get(f"{hub_url}/hub/login", timeout=30)
    form = next(f for f in forms_of(page.text) if "password" in f["inputs"])
    response = session.http.post(f"{hub_url}/hub/login?next=", timeout=120,
                                 data=dict(form["inputs"], username=username, password="bench"))
    response.raise_for_status()
    session.http.post(f"{hub_url}/hub/spawn/{username}", data={"_xsrf": session.xsrf}, timeout=120)
    session.wait_ready()
    session.http.get(f"{hub_url}/user/{username}/lab", timeout=60).raise_for_status()
    elapsed = time.perf_counter() - started
    session.stop_server()
    return elapsed


def measure(user_ready, hub_url, users, prefix):
    """(sequential times, concurrent times, failures)."""
    names = [f"{prefix}{index:02d}" for index in range(users)]
    failures = 0
    sequential = []
    for name in names:
        try:
            sequential.append(user_ready(hub_url, name))
        except Exception as error:  # a failed spawn is counted and reported, not hidden
            failures += 1
            print(f"  failed ({name}): {error}", file=sys.stderr)
    with concurrent.futures.ThreadPoolExecutor(users) as pool:
        futures = [pool.submit(user_ready, hub_url, name) for name in names]
        concurrent_times = []
        for future in futures:
            try:
                concurrent_times.append(future.result())
            except Exception as error:
                failures += 1
                print(f"  failed: {error}", file=sys.stderr)
    return sequential, concurrent_times, failures


def p95(values):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]


def start_bare_hub(workdir):
    port, hub_port, proxy_port = free_port(), free_port(), free_port()
    config = os.path.join(workdir, "bare_config.py")
    with open(config, "w") as config_file:
        config_file.write(BARE_CONFIG.format(port=port, hub_port=hub_port, proxy_port=proxy_port))
    env = {key: value for key, value in os.environ.items() if not key.startswith("JUPYTERHUB_")}
    process = ManagedProcess("bare jupyterhub", [sys.executable, "-m", "jupyterhub", "-f", config],
                             os.path.join(workdir, "bare.log"), env=env, cwd=workdir)
    url = f"http://127.0.0.1:{port}"
    wait_for_http(url + "/hub/api/", timeout=120, process=process, ok_only=True)
    return url, process


def main():
    # SIGTERM ends the run like Ctrl-C, so the hubs started here are stopped by the `finally` blocks
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--users", type=int, default=10)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="desp-bench-") as workdir:
        realm_path = os.path.join(workdir, "bench-realm.json")
        bench_realm(realm_path, args.users)
        bare_url, bare = start_bare_hub(workdir)
        try:
            print(f"bare JupyterHub: {args.users} users sequential, then concurrent ...", flush=True)
            bare_results = measure(bare_user_ready, bare_url, args.users, "bench")
        finally:
            bare.stop()
        desp = start_hub(os.path.join(workdir, "desp"), extra_args=["--realm-file", realm_path], extra_config="")
        try:
            print(f"DESP Hub: {args.users} users sequential, then concurrent ...", flush=True)
            desp_results = measure(desp_user_ready, desp.url, args.users, "bench")
        finally:
            desp.stop()
    print()
    print(f"{'run':<12}{'stack':<10}{'median s':>10}{'p95 s':>10}")
    ratios = {}
    for index, run in enumerate(("sequential", "concurrent")):
        bare_times, desp_times = bare_results[index], desp_results[index]
        for stack, times in (("bare", bare_times), ("desp", desp_times)):
            print(f"{run:<12}{stack:<10}{statistics.median(times):>10.2f}{p95(times):>10.2f}")
        ratios[run] = statistics.median(desp_times) / statistics.median(bare_times)
    failures = bare_results[2] + desp_results[2]
    print()
    for run, ratio in ratios.items():
        print(f"ratio desp/bare ({run}, median): {ratio:.2f}  (target <= 1.25)")
    print(f"failed spawns: {failures}")
    return 0 if failures == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
