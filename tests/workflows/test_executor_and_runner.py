"""The local executor and the runner with real papermill and the venv's python3 kernel: exact typed values, a
clean environment (no service secret reaches the notebook), kill stops the kernel too, a stopped service's run
is queued again and run by the next one. Plus the pure helpers (failing cell, outputs)."""

import asyncio
import json
import time

import psutil
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook, new_output

from desp_hub.workflows.executors import LocalProcessExecutor, RunSpec
from desp_hub.workflows.notebook import content_hash
from desp_hub.workflows.runner import WorkflowRunner, collect_outputs, failing_cell
from desp_hub.workflows.store import WorkflowStore

pytestmark = pytest.mark.timeout(600)

TRICKY = ["\"; import os; os.system('touch hacked')", "a\nb\\n\\\"c'''\"\"\"", "é€ \U0001f30d {x} %s", "\\", ""]


def notebook(*sources, parameters=None):
    cells = [new_code_cell(parameters, metadata={"tags": ["parameters"]})] if parameters is not None else []
    nb = new_notebook(cells=cells + [new_code_cell(source) for source in sources])
    nb.metadata.kernelspec = {"name": "python3", "display_name": "Python 3", "language": "python"}
    return nb


def spec(tmp_path, nb, parameters=None, **fields):
    run_dir = tmp_path / "run"
    run_dir.mkdir(exist_ok=True)
    (run_dir / "input.ipynb").write_text(json.dumps(nb))
    return RunSpec(run_id=1, workflow_id=1, user="alice", notebook=nb, parameters=parameters or {}, run_dir=run_dir,
                   **fields)  # fmt: skip


def test_papermill_gets_the_exact_values_and_no_service_secret(tmp_path, monkeypatch):
    monkeypatch.setenv("JUPYTERHUB_API_TOKEN", "hub-token-of-the-service")
    monkeypatch.setenv("DESP_METERING_CLIENT_SECRET", "client-secret")
    nb = notebook(
        "import json, os\n"
        "json.dump({'values': [texts, number, ratio, flag, table], 'types': [type(v).__name__ for v in "
        "(texts, number, ratio, flag, table)], 'env': dict(os.environ)}, open('seen.json', 'w'))",
        parameters="texts = []\nnumber = 0\nratio = 0.0\nflag = False\ntable = {}",
    )
    values = {"texts": TRICKY, "number": 2**40, "ratio": 0.1, "flag": True, "table": {"k'\"": TRICKY}}
    run = spec(tmp_path, nb, values, env={"DESP_CATALOGUE_URL": "http://catalogue/stac"}, access_token="users-token")
    assert "users-token" not in repr(run)
    executor = LocalProcessExecutor()
    handle = executor.start(run)
    assert executor.wait(handle, 300) == 0, (run.run_dir / "run.log").read_text()
    seen = json.loads((run.run_dir / "seen.json").read_text())
    assert seen["values"] == [TRICKY, 2**40, 0.1, True, {"k'\"": TRICKY}]
    assert seen["types"] == ["list", "int", "float", "bool", "dict"]
    assert not (run.run_dir / "hacked").exists()
    env = seen["env"]
    assert "JUPYTERHUB_API_TOKEN" not in env and "DESP_METERING_CLIENT_SECRET" not in env
    assert "client-secret" not in json.dumps(env) and "hub-token-of-the-service" not in json.dumps(env)
    assert env["DESP_CATALOGUE_URL"] == "http://catalogue/stac" and env["DESP_RUN_USER"] == "alice"
    assert env["HOME"] == str(run.run_dir / ".home")
    assert env["DESP_ACCESS_TOKEN"] == "users-token"  # the run's user's token, for data access as them
    assert "users-token" not in (run.run_dir / "parameters.yaml").read_text()


def test_kill_stops_papermill_and_its_kernel(tmp_path):
    nb = notebook("import os, time\nopen('kernel.pid', 'w').write(str(os.getpid()))\ntime.sleep(600)")
    run = spec(tmp_path, nb)
    executor = LocalProcessExecutor(kill_grace_seconds=2)
    handle = executor.start(run)
    pid_file = run.run_dir / "kernel.pid"
    deadline = time.monotonic() + 300
    while not pid_file.exists() or not pid_file.read_text():
        assert time.monotonic() < deadline and executor.poll(handle) is None, (run.run_dir / "run.log").read_text()
        time.sleep(0.2)
    kernel = psutil.Process(int(pid_file.read_text()))
    executor.kill(handle)
    assert executor.poll(handle) is not None
    kernel.wait(timeout=30)  # raises if the kernel outlived the kill
    assert not psutil.pid_exists(handle.process.pid) or psutil.Process(handle.process.pid).status() == "zombie"


def test_a_run_interrupted_by_a_stop_is_run_again_by_the_next_service(tmp_path):
    store = WorkflowStore(f"sqlite:///{tmp_path / 'w.sqlite'}")
    store.upgrade()
    nb = notebook(
        "import os, time\n"
        "first = not os.path.exists('started')\n"
        "open('started', 'a').write('x')\n"
        "if first:\n"
        "    time.sleep(600)",
        "open('result.csv', 'w').write('done')",
    )
    workflow = store.create_workflow("alice", {
        "name": "w", "description": "", "visibility": "private", "group_name": None, "allow_run_by_others": False,
        "profile": "standard", "timeout_seconds": 600, "retries": 0, "outputs": ["*.csv"],
    }, nb, content_hash(nb), [])  # fmt: skip
    run_id = store.create_run(workflow["id"], None, "alice", {})["id"]

    async def first_service():
        runner = WorkflowRunner(store=store, data_dir=str(tmp_path / "data"), poll_seconds=0.1)
        await runner.start()
        started = runner.files(run_id).directory / "started"
        deadline = time.monotonic() + 300
        while not started.exists():
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        await runner.stop()

    asyncio.run(first_service())
    assert store.get_run(run_id)["status"] == "running"  # the service stopped mid-run

    async def second_service():
        runner = WorkflowRunner(store=store, data_dir=str(tmp_path / "data"), poll_seconds=0.1)
        await runner.start()
        deadline = time.monotonic() + 300
        while store.get_run(run_id)["status"] not in ("succeeded", "failed", "timed_out"):
            assert time.monotonic() < deadline
            await asyncio.sleep(0.2)
        await runner.stop()

    asyncio.run(second_service())
    run = store.get_run(run_id)
    assert run["status"] == "succeeded" and run["attempt"] == 1, run
    assert run["outputs"] == [{"name": "result.csv", "size": 4}]
    assert (tmp_path / "data" / "runs" / str(run_id) / "output.html").exists()
    store.close()


def test_the_failing_cell_is_counted_in_the_published_notebook():
    executed = new_notebook(cells=[
        new_markdown_cell("An Exception was encountered", metadata={"tags": ["papermill-error-cell-tag"]}),
        new_code_cell("x = 1", metadata={"tags": ["parameters"]}),
        new_code_cell("x = 2", metadata={"tags": ["injected-parameters"]}),
        new_markdown_cell("# Title"),
        new_code_cell("1 / 0", outputs=[new_output("error", ename="ZeroDivisionError", evalue="division by zero",
                                                   traceback=[])]),
        new_code_cell("print('after')"),
    ])  # fmt: skip
    assert failing_cell(executed) == {"cell_index": 2, "output_cell_index": 4, "ename": "ZeroDivisionError",
                                      "evalue": "division by zero"}  # fmt: skip
    running = {"papermill": {"status": "running"}}
    timed_out = new_notebook(cells=[new_code_cell("a"), new_code_cell("b", metadata=running)])
    assert failing_cell(timed_out) == {"cell_index": 1, "output_cell_index": 1}
    assert failing_cell(new_notebook(cells=[new_code_cell("a")])) is None


def test_outputs_are_the_declared_files_inside_the_run_directory(tmp_path):
    run_dir = tmp_path / "run"
    (run_dir / "sub").mkdir(parents=True)
    (run_dir / ".home").mkdir()
    for name in ("a.csv", "sub/b.csv", "map.png", "notes.txt", "output.html", "run.log", ".home/c.csv", ".hidden.csv"):
        (run_dir / name).write_text("x" * 3)
    (tmp_path / "secret.csv").write_text("s")
    (run_dir / "link.csv").symlink_to(tmp_path / "secret.csv")
    found = collect_outputs(run_dir, ["*.csv", "**/*.csv", "*.png", "*.html", "*.log", "../*.csv"])
    assert found == [{"name": "a.csv", "size": 3}, {"name": "map.png", "size": 3}, {"name": "sub/b.csv", "size": 3}]
