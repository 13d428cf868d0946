"""The hub's proxy: the Python configurable-http-proxy, answering websocket subprotocols as its target chose.

configurable-http-proxy 0.4 (Python) forwards the browser's `Sec-WebSocket-Protocol` request header to the target,
which picks one, but its own handshake with the browser names none. Chromium then drops the connection ("Sent
non-empty 'Sec-WebSocket-Protocol' header but no response was received"): Bokeh/Panel sessions (which ask for
`["bokeh", <token>]`) and any other websocket that asks for a subprotocol fail through the hub. Here the proxy's
handler answers the browser with the subprotocol the target accepted (tornado's `select_subprotocol` hook, called
after the proxy has connected to the target), and otherwise runs the proxy unchanged.

Run as `python -m desp_hub.proxy` with configurable-http-proxy's own options (`ConfigurableHTTPProxy.command`).
"""

import sys

from configurable_http_proxy import handlers
from configurable_http_proxy.cli import main


def select_subprotocol(self, subprotocols):
    """The subprotocol the target accepted (None when it accepted none, or no target connection exists)."""
    target = self.ws_client
    return target.selected_subprotocol if target is not None else None


def patch() -> None:
    handlers.ProxyHandler.select_subprotocol = select_subprotocol


if __name__ == "__main__":
    patch()
    sys.exit(main())
