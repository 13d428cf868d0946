"""Workflow runs: the workflows service's overhead per run, and its throughput on a queue, against papermill and
nbclient called directly, in the same run.

Per-run overhead: a trivial parameterised notebook (a parameters cell, one print), run N times by each method, the
methods taking turns (so the load of a shared machine weighs on all alike):

* by the service: `desp-hub up` on free ports, the researcher's hub token, POST api/workflows/<id>/runs then GET
  api/runs/<id> every 50 ms until it has finished (so the service's time includes its queue pass, papermill in a
  child process, the HTML rendering and the status update);
* by papermill's command line (`python -m papermill in.ipynb out.ipynb -p ... -k python3`: what the service's local
  executor starts), and by `papermill.execute_notebook` and `nbclient.NotebookClient` in this process (warm imports:
  the kernel start and the execution alone).

Throughput: `--queue` (default 100) short runs submitted at once to a service limited to 2 concurrent runs, each
with its own parameter value; all must succeed exactly once (one attempt each, distinct ids, and each executed
notebook carries its own value), against the time papermill's command line would take at concurrency 2.

    .venv/bin/python benchmarks/workflows.py [--repeat 5] [--queue 100]

Prints medians and ratios. Target: service overhead <= 1.5 s over papermill's command line, no run lost or
duplicated.
"""

import argparse
import concurrent.futures
import os
import statistics
import subprocess
import sys
import tempfile
import time

import nbformat
import requests
from nbformat.v4 import new_code_cell, new_notebook

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from tests.e2e.hubclient import HubSession  # noqa: E402
from tests.e2e.stack import start_hub  # noqa: E402
from tests.support import wait_for_http  # noqa: E402

CONCURRENCY = 2
POLL_SECONDS = 0.05
FINISHED = ("succeeded", "failed", "timed_out")


def trivial_notebook():
    parameters = new_code_cell("index = 0", metadata={"tags": ["parameters"]})
    nb = new_notebook(cells=[parameters, new_code_cell("print('run', index)")])
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


# --- baselines ---------------------------------------------------------------------------------------------------


def papermill_cli(path, directory, index):
    """What the local executor runs, timed from process start to exit."""
    output = os.path.join(directory, f"out-{index}.ipynb")
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "papermill", path, output, "-p", "index", str(index), "-k", "python3",
                    "--cwd", directory, "--no-progress-bar"], check=True, capture_output=True)  # fmt: skip
    return time.perf_counter() - started


def papermill_api(path, directory, index):
    import papermill

    started = time.perf_counter()
    papermill.execute_notebook(path, os.path.join(directory, f"api-{index}.ipynb"), parameters={"index": index},
                               kernel_name="python3", progress_bar=False, cwd=directory)  # fmt: skip
    return time.perf_counter() - started


def nbclient_run(path, directory, index):
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    nb.cells[0].source = f"index = {index}"
    started = time.perf_counter()
    NotebookClient(nb, kernel_name="python3", resources={"metadata": {"path": directory}}).execute()
    return time.perf_counter() - started


# --- the service -------------------------------------------------------------------------------------------------


class Service:
    def __init__(self, hub_url, token):
        self.base = f"{hub_url}/services/workflows/"
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"token {token}"

    def call(self, method, path, body=None):
        response = self.http.request(method, self.base + path, json=body, timeout=120)
        response.raise_for_status()
        return response.json() if response.content else None

    def submit(self, workflow_id, index):
        return self.call("POST", f"api/workflows/{workflow_id}/runs", {"parameters": {"index": index}})

    def wait(self, run_id, timeout=600):
        deadline = time.monotonic() + timeout
        while True:
            run = self.call("GET", f"api/runs/{run_id}")
            if run["status"] in FINISHED:
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} still {run['status']}")
            time.sleep(POLL_SECONDS)


def one_service_run(service, workflow_id, index):
    started = time.perf_counter()
    run = service.submit(workflow_id, index)
    run = service.wait(run["id"])
    elapsed = time.perf_counter() - started
    assert run["status"] == "succeeded", run
    return elapsed, run["id"]


def check_queue(service, hub, workflow_id, submitted, earlier_ids):
    """Every submitted run succeeded once, with its own parameter: nothing lost, nothing duplicated."""
    runs = service.call("GET", f"api/workflows/{workflow_id}/runs?limit=1000")["runs"]
    by_id = {run["id"]: run for run in runs}
    problems = []
    ids = [run["id"] for run in submitted]
    if len(set(ids)) != len(ids):
        problems.append("duplicate run ids")
    for run in submitted:
        final = by_id.get(run["id"])
        if final is None:
            problems.append(f"run {run['id']} lost")
            continue
        if final["status"] != "succeeded" or final["attempt"] != 1:
            problems.append(f"run {run['id']}: {final['status']}, attempt {final['attempt']}")
        log = os.path.join(hub.data_dir, "hub", "workflows", "runs", str(run["id"]), "run.log")
        with open(log, errors="replace") as text:
            attempts = text.read().count("--- attempt ")
        if attempts != 1:
            problems.append(f"run {run['id']} executed {attempts} times")
        executed = nbformat.read(os.path.join(os.path.dirname(log), "output.ipynb"), as_version=4)
        printed = "".join(o.get("text", "") for c in executed.cells for o in c.get("outputs", []))
        if printed.strip() != f"run {run['parameters']['index']}":
            problems.append(f"run {run['id']} printed {printed!r}")
    extra = set(by_id) - set(ids) - set(earlier_ids)
    if extra:
        problems.append(f"unexpected runs {sorted(extra)[:5]}")
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5, help="sequential runs per method (median)")
    parser.add_argument("--queue", type=int, default=100, help="runs submitted at once for the throughput")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-workflows-") as directory:
        path = os.path.join(directory, "trivial.ipynb")
        nbformat.write(trivial_notebook(), path)

        hub = start_hub(os.path.join(directory, "hub"), extra_args=[],
                        extra_env={"DESP_WORKFLOWS_MAX_RUNS": str(CONCURRENCY),
                                   "DESP_WORKFLOWS_MAX_RUNS_PER_USER": str(CONCURRENCY)})  # fmt: skip
        try:
            wait_for_http(f"{hub.url}/services/workflows/api/workflows", timeout=120)
            session = HubSession(hub.url, "researcher", "researcher-demo")
            session.login()
            service = Service(hub.url, session.new_token())
            workflow = service.call("POST", "api/workflows", {"name": "trivial", "notebook": trivial_notebook()})
            methods = {
                "papermill CLI": lambda index: papermill_cli(path, directory, index),
                "papermill API": lambda index: papermill_api(path, directory, index),
                "nbclient": lambda index: nbclient_run(path, directory, index),
                "service (submit → finished)": lambda index: one_service_run(service, workflow["id"], index)[0],
            }
            # one warm-up each (imports, kernel spec lookup, page cache), then the methods take turns, so that the
            # load of a shared machine weighs on all of them alike
            timings = {name: [] for name in methods}
            for index in range(-1, options.repeat):
                for name, method in methods.items():
                    elapsed = method(index)
                    if index >= 0:
                        timings[name].append(elapsed)
            earlier = [run["id"] for run in service.call("GET", f"api/workflows/{workflow['id']}/runs")["runs"]]

            started = time.perf_counter()
            with concurrent.futures.ThreadPoolExecutor(8) as pool:
                submitted = list(pool.map(lambda index: service.submit(workflow["id"], index), range(options.queue)))
            for run in submitted:
                service.wait(run["id"], timeout=3600)
            queue_seconds = time.perf_counter() - started
            problems = check_queue(service, hub, workflow["id"], submitted, earlier)
        finally:
            hub.stop()

    print(f"per run, {options.repeat} sequential runs of a trivial notebook (median, min-max):")
    medians = {}
    for name, times in timings.items():
        medians[name] = statistics.median(times)
        print(f"  {name:28s} {medians[name]:6.2f} s  ({min(times):.2f}–{max(times):.2f})")
    overhead = medians["service (submit → finished)"] - medians["papermill CLI"]
    print(f"service overhead over papermill CLI: {overhead:+.2f} s  (target <= 1.5 s: "
          f"{'PASS' if overhead <= 1.5 else 'FAIL'})")  # fmt: skip
    for name in ("papermill CLI", "papermill API", "nbclient"):
        print(f"ratio service / {name}: {medians['service (submit → finished)'] / medians[name]:.2f}")
    expected = options.queue * medians["papermill CLI"] / CONCURRENCY
    print(f"queue: {options.queue} runs at concurrency {CONCURRENCY} in {queue_seconds:.1f} s "
          f"({options.queue / queue_seconds:.2f} runs/s); papermill CLI at concurrency {CONCURRENCY} would take "
          f"~{expected:.1f} s: ratio {queue_seconds / expected:.2f}")  # fmt: skip
    print(f"lost or duplicated runs: {'none (PASS)' if not problems else '; '.join(problems[:10]) + ' (FAIL)'}")
    return 0 if overhead <= 1.5 and not problems else 1


if __name__ == "__main__":
    sys.exit(main())
