"""A run asked for in person gets the caller's DESP access token even when the runner takes it at once.

`BaseHandler.queue_run` (the API's and the run page's way to queue a run) is driven with the real store and a
real runner polling every 10 ms; only the hub's answer is slowed, as on a loaded hub. Queued before the token was in
hand, the run would start without it (as it once did in CI: the example notebook read data with no token)."""

import asyncio
import time
import types

import pytest

from desp_hub.services.workflows_service import BaseHandler
from desp_hub.workflows.notebook import content_hash
from desp_hub.workflows.runner import WorkflowRunner
from desp_hub.workflows.store import WorkflowStore
from tests.workflows.test_executor_and_runner import notebook

pytestmark = pytest.mark.timeout(600)


def test_the_run_has_the_callers_token_though_the_runner_takes_it_at_once(tmp_path):
    store = WorkflowStore(f"sqlite:///{tmp_path / 'w.sqlite'}")
    store.upgrade()
    nb = notebook("import os\nopen('token.txt', 'w').write(os.environ.get('DESP_ACCESS_TOKEN', ''))")
    workflow = store.create_workflow("alice", {
        "name": "w", "description": "", "visibility": "private", "group_name": None, "allow_run_by_others": False,
        "profile": "standard", "timeout_seconds": 600, "retries": 0, "outputs": [],
    }, nb, content_hash(nb), [])  # fmt: skip
    version = store.latest_version(workflow["id"])

    async def scenario():
        runner = WorkflowRunner(store=store, data_dir=str(tmp_path / "data"), poll_seconds=0.01)
        await runner.start()

        async def slow_hub_answer():
            await asyncio.sleep(1)  # the hub answering the token request slowly
            return "token-of-alice"

        async def call(function, *args):
            return await asyncio.to_thread(function, *args)

        handler = types.SimpleNamespace(caller={"name": "alice"}, store=store, runner=runner, call=call,
                                        caller_access_token=slow_hub_answer)  # fmt: skip
        try:
            run = await BaseHandler.queue_run(handler, workflow, version, {})
            deadline = time.monotonic() + 300
            while store.get_run(run["id"])["status"] not in ("succeeded", "failed"):
                assert time.monotonic() < deadline, "the run did not finish"
                await asyncio.sleep(0.2)
            return run["id"]
        finally:
            await runner.stop()

    run_id = asyncio.run(scenario())
    assert store.get_run(run_id)["status"] == "succeeded"
    assert (WorkflowRunner(store=store, data_dir=str(tmp_path / "data")).files(run_id).directory / "token.txt"
            ).read_text() == "token-of-alice"  # fmt: skip
