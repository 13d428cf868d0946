"""The hub's proxy (`python -m desp_hub.proxy`) answers websocket subprotocols as its target chose them."""

import asyncio
import sys

import pytest
import tornado.web
import tornado.websocket
from tornado.httpserver import HTTPServer
from tornado.netutil import bind_sockets

from tests.support import ManagedProcess, free_port, wait_for_http


class EchoWithSubprotocol(tornado.websocket.WebSocketHandler):
    """Accepts the `bokeh` subprotocol when asked for it (as a Bokeh server does) and echoes messages."""

    def select_subprotocol(self, subprotocols):
        return "bokeh" if "bokeh" in subprotocols else None

    def on_message(self, message):
        self.write_message(message)


class Ping(tornado.web.RequestHandler):
    def get(self):
        self.write("ok")


@pytest.fixture
async def target():
    sockets = bind_sockets(0, "127.0.0.1")
    server = HTTPServer(tornado.web.Application([(r"/ws", EchoWithSubprotocol), (r"/", Ping)]))
    server.add_sockets(sockets)
    yield f"http://127.0.0.1:{sockets[0].getsockname()[1]}"
    server.stop()


@pytest.fixture
async def proxy(target, tmp_path):
    port = free_port()
    args = [sys.executable, "-m", "desp_hub.proxy", "--ip", "127.0.0.1", "--port", str(port),
            "--api-ip", "127.0.0.1", "--api-port", str(free_port()), "--default-target", target]  # fmt: skip
    process = ManagedProcess("desp-hub proxy", args, tmp_path / "proxy.log")
    try:
        await asyncio.to_thread(wait_for_http, f"http://127.0.0.1:{port}/", timeout=30, process=process)
        yield f"ws://127.0.0.1:{port}"
    finally:
        process.stop()


async def test_the_browser_gets_the_subprotocol_the_target_chose(proxy):
    connection = await tornado.websocket.websocket_connect(f"{proxy}/ws", subprotocols=["bokeh", "session-token"])
    try:
        assert connection.selected_subprotocol == "bokeh"
        await connection.write_message("hello")
        assert await connection.read_message() == "hello"
    finally:
        connection.close()


async def test_no_subprotocol_asked_none_answered(proxy):
    connection = await tornado.websocket.websocket_connect(f"{proxy}/ws")
    try:
        assert connection.selected_subprotocol is None
        await connection.write_message("plain")
        assert await connection.read_message() == "plain"
    finally:
        connection.close()
