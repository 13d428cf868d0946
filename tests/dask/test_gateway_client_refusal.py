"""The upstream client hang after a refused `new_cluster`, pinned down (dask-gateway 2026.3, distributed 2026.8).

A refused `Gateway.new_cluster(...)` (the DESP gateway answers 422 with the reason, the client raises ValueError)
leaves the `GatewayCluster` it was building in a reference cycle (its start task holds the exception, whose traceback
holds the task's frame, which holds the cluster). The cyclic garbage collector frees it, with the internal `Gateway`
it owns, on whichever thread allocates at the time. When that is the client's event-loop thread,
`Gateway.__del__` -> `close()` -> `sync()` submits work to that very loop and waits for it: the loop thread blocks
forever and every later Dask call of the kernel hangs. The fix belongs upstream (`Gateway.__del__` must not wait on
its own loop); nothing in DESP's code creates or closes these objects (users call `dask_gateway` directly), so the
workaround stays documented: `gc.collect()` on the kernel's main thread after catching the refusal.

Each case runs in a fresh Python (a blocked loop must not leak into other tests), against a stand-in that refuses as
the DESP gateway does (422, `{"error": ...}`: see DespGatewayMixin and tests/e2e/test_dask_gateway.py, where the real
gateway refuses). The first test fails on purpose while the upstream bug is there (strict xfail): when an upgrade
fixes it, it passes, and the README's note and the e2e test's gc.collect() can go.
"""

import subprocess
import sys

import pytest

CLIENT = """
import asyncio, gc, sys, threading
from aiohttp import web
from dask_gateway import Gateway

async def refuse(request):  # as DespGatewayMixin refuses beyond the limits
    return web.json_response({"error": "at most 1 core per worker for role stack-dask-low (asked for 4)"}, status=422)

def serve(port, ready):
    async def main():
        app = web.Application()
        app.router.add_post("/api/v1/clusters/", refuse)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port.append(site._server.sockets[0].getsockname()[1])
        ready.set()
        await asyncio.Event().wait()
    asyncio.run(main())

port, ready = [], threading.Event()
threading.Thread(target=serve, args=(port, ready), daemon=True).start()
ready.wait()
gc.disable()  # the collection happens where the case says, not at random
gateway = Gateway(f"http://127.0.0.1:{port[0]}", auth="basic")
try:
    gateway.new_cluster(worker_cores=4)
except ValueError as refusal:
    print("refused:", refusal, flush=True)

async def collect():
    gc.collect()

if sys.argv[1] == "on-the-loop-thread":  # as the cyclic collector may run at any allocation there
    asyncio.run_coroutine_threadsafe(collect(), gateway.loop.asyncio_loop).result(20)
else:  # the documented workaround: collect on the main thread right after the refusal
    gc.collect()
print("the loop still answers:", gateway.sync(asyncio.sleep, 0, result=True), flush=True)
gateway.close()
"""


def run_client(case):
    return subprocess.run([sys.executable, "-c", CLIENT, case], capture_output=True, text=True, timeout=120)


@pytest.mark.xfail(strict=True, reason="upstream: Gateway.__del__ waits on its own event loop when collected there")
def test_a_refused_new_cluster_collected_on_the_loop_thread_does_not_hang_the_client():
    out = run_client("on-the-loop-thread")
    assert "refused: at most 1 core per worker" in out.stdout, out.stderr
    assert "the loop still answers: True" in out.stdout, out.stderr[-2000:]


def test_collecting_on_the_main_thread_after_the_refusal_keeps_the_client_working():
    out = run_client("on-the-main-thread")
    assert "refused: at most 1 core per worker for role stack-dask-low (asked for 4)" in out.stdout, out.stderr
    assert "the loop still answers: True" in out.stdout, out.stderr[-2000:]
    assert out.returncode == 0
