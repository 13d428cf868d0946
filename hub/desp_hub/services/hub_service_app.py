"""What the hub's background services (`culler`, `metering_service`) share: a traitlets `Application` that logs
like the hub, reads the hub REST API with the token the hub gave it, and stops quietly on SIGINT.

The hub starts each as a managed service (`desp_hub.services.install`), which sets `JUPYTERHUB_API_URL` and
`JUPYTERHUB_API_TOKEN`; a subclass implements `run()`, its endless loop of passes.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import signal
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import urlencode

from tornado.httpclient import AsyncHTTPClient, HTTPRequest
from traitlets import Unicode, default
from traitlets.config import Application

PAGINATION_MEDIA_TYPE = "application/jupyterhub-pagination+json"


class HubServiceApp(Application):
    """A long-running hub service: hub-style log lines, the hub REST API, a quiet stop on SIGINT."""

    api_url = Unicode(config=True, help="The hub REST API. Default: $JUPYTERHUB_API_URL, set by the hub.")
    api_token = Unicode(config=True, help="The service's token. Default: $JUPYTERHUB_API_TOKEN, set by the hub.")

    stop_message = "Stopping"  # logged when the hub stops the service

    @default("log_level")
    def _log_level_default(self):
        return logging.INFO  # a line per action (cull, debit) is the point

    @default("log_format")
    def _log_format_default(self):
        return "[%(levelname)1.1s %(asctime)s.%(msecs).03d %(name)s] %(message)s"  # as the hub's own lines

    @default("log_datefmt")
    def _log_datefmt_default(self):
        return "%Y-%m-%d %H:%M:%S"

    @default("api_url")
    def _api_url_default(self):
        return os.environ.get("JUPYTERHUB_API_URL", "http://127.0.0.1:8081/hub/api")

    @default("api_token")
    def _api_token_default(self):
        return os.environ.get("JUPYTERHUB_API_TOKEN", "")

    def require_api_token(self) -> None:
        """Exit with a message unless the service has a hub API token (it is not meant to run on its own)."""
        if not self.api_token:
            raise SystemExit(f"{self.name}: no hub API token (JUPYTERHUB_API_TOKEN); run it as a hub service")

    async def api(self, method: str, path: str, **params) -> Any:
        """Call the hub REST API; returns the decoded JSON body (None when empty)."""
        url = self.api_url.rstrip("/") + path + (f"?{urlencode(params)}" if params else "")
        request = HTTPRequest(
            url,
            method=method,
            headers={"Authorization": f"token {self.api_token}", "Accept": PAGINATION_MEDIA_TYPE},
            request_timeout=60,
        )
        response = await AsyncHTTPClient().fetch(request)
        return json.loads(response.body) if response.body else None

    async def ready_servers(self) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """(username, server model) of every ready server, page by page."""
        offset = 0
        while True:
            page = await self.api("GET", "/users", state="ready", offset=offset)
            for user in page["items"]:
                for server in (user.get("servers") or {}).values():
                    yield user["name"], server
            next_page = (page.get("_pagination") or {}).get("next")
            if not next_page:
                return
            offset = next_page["offset"]

    async def run(self) -> None:
        raise NotImplementedError

    def start(self) -> None:
        # The hub stops its services with SIGINT (then SIGTERM). A process started in the background by a shell
        # inherits SIGINT ignored, so restore the default handler, and let SIGTERM stop it the same way.
        signal.signal(signal.SIGINT, signal.default_int_handler)
        signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            asyncio.run(self.run())
        except KeyboardInterrupt:
            self.log.info(self.stop_message)
