"""The `metering` hub service: debits every running server's DCUs, interval by interval, with the accounting service.

    python -m desp_hub.services.metering_service --accounting-url=http://127.0.0.1:8004 --interval=300 \\
        --token-url=https://iam.example/realms/desp/protocol/openid-connect/token \\
        --db-url=sqlite:////srv/hub/profiles.sqlite

Run by the hub as a managed service (`desp_hub.services.install.install_metering_service`), which gives it
`JUPYTERHUB_API_URL`, `JUPYTERHUB_API_TOKEN` (role `metering-service`: list users, read their servers, nothing
else) and `DESP_METERING_CLIENT_SECRET`. Every `poll` seconds (default a fifth of the interval, at least 1 s) it:

1. lists the ready servers through the hub REST API and records each session at first sight with its price
   (`user_options["dcu_per_hour"]`, set by the spawner; for a server started without one, the price of its
   `user_options["profile"]` in the profile store);
2. queues every complete interval elapsed since the server's `started` that is not in the outbox yet (so a hub
   restart, during which no pass ran, leaves no gap);
3. delivers the pending rows to the accounting service, oldest first, each under its idempotency key (so nothing
   is debited twice). While the accounting service (or the identity provider) is unreachable, the rows stay
   pending; the outage is logged once when it starts and once when it ends.

The final partial interval of a server is queued by the spawner when the server stops (`DespMeteringMixin`, local
and Kubernetes spawners alike); this service delivers it like any other row. See `desp_hub.metering` for the
arithmetic and the keys.
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Mapping
from typing import Any

from traitlets import Instance, Integer

from desp_hub.metering import DespMetering, MeteringOutbox, deliver_pending, parse_time, session_id
from desp_hub.profile_store import ProfileStore
from desp_hub.services.hub_service_app import HubServiceApp


def running_session(username: str, server: Mapping[str, Any]) -> dict[str, Any] | None:
    """What metering needs of a hub API server model: None unless it is ready and has a `started` time."""
    started = parse_time(server.get("started"))
    if not server.get("ready") or started is None:
        return None
    options = server.get("user_options") or {}
    return {
        "username": username,
        "server_name": server.get("name") or "",
        "started": started,
        "profile": options.get("profile") or None,
        "dcu_per_hour": options.get("dcu_per_hour"),
    }


class MeteringApp(HubServiceApp):
    """Meter the running servers in DCUs and deliver the debits to the accounting service."""

    name = "desp-hub-metering"
    description = __doc__
    stop_message = "Metering stopping; what is queued stays in the outbox for the next start"
    classes = [DespMetering]
    aliases = {
        "accounting-url": "DespMetering.accounting_url",
        "interval": "DespMetering.interval_seconds",
        "poll": "DespMetering.poll_seconds",
        "token-url": "DespMetering.token_url",
        "client-id": "DespMetering.client_id",
        "db-url": "DespMetering.db_url",
        "batch": "MeteringApp.batch",
        "log-level": "Application.log_level",
    }

    batch = Integer(100, config=True, help="Rows delivered at most per pass (the rest wait for the next pass).")

    metering = Instance(DespMetering)

    def initialize(self, argv=None):
        super().initialize(argv)
        self.metering = DespMetering(parent=self)
        if not self.metering.accounting_url:
            raise SystemExit("desp-hub-metering: --accounting-url is required")
        self.require_api_token()
        self.outbox = MeteringOutbox(self.metering.db_url)
        self.token = self.metering.token_source()
        self.accounting = self.metering.accounting(token=self.token)
        self.outage = ""  # why the accounting service is unreachable, while it is
        self.seen: set[str] = set()  # sessions known to be recorded (their price then stays that of first sight)

    # -- the hub ---------------------------------------------------------------------------------------------------

    async def running_sessions(self) -> list[dict[str, Any]]:
        """The ready servers (see `running_session`)."""
        sessions = []
        async for username, server in self.ready_servers():
            session = running_session(username, server)
            if session is not None:
                sessions.append(session)
        return sessions

    # -- one pass --------------------------------------------------------------------------------------------------

    def _price_of(self, session: dict[str, Any], prices: dict[str, float] | None) -> Any:
        if session["dcu_per_hour"] is not None:
            return session["dcu_per_hour"]
        if prices is not None and session["profile"] in prices:
            return prices[session["profile"]]
        self.log.warning(
            "No price for %s/%s (profile %s): metered at 0 DCU per hour",
            session["username"], session["server_name"], session["profile"] or "-",
        )
        return 0

    def _store_prices(self) -> dict[str, float]:
        store = ProfileStore(self.metering.db_url)
        try:
            return {profile.slug: profile.dcu_per_hour for profile in store.profiles()}
        finally:
            store.close()

    def queue_elapsed(self, sessions: list[dict[str, Any]]) -> int:
        """Record unseen sessions, then queue their complete intervals; returns how many rows were queued."""
        prices = None
        queued = 0
        for session in sessions:
            sid = session_id(session["username"], session["server_name"], session["started"])
            if sid not in self.seen and self.outbox.session(sid) is None:
                if session["dcu_per_hour"] is None and prices is None:
                    prices = self._store_prices()
                recorded = self.outbox.open_session(
                    session["username"], session["server_name"], session["started"], session["profile"],
                    self._price_of(session, prices), self.metering.interval_seconds,
                )
                self.log.info(
                    "Metering %s: profile %s at %s DCU per hour, every %d s", sid, recorded.profile or "-",
                    recorded.dcu_per_hour, recorded.interval_seconds,
                )
            self.seen.add(sid)
            queued += self.outbox.enqueue_elapsed(sid)
        self.seen &= {session_id(s["username"], s["server_name"], s["started"]) for s in sessions}
        return queued

    def deliver(self) -> int:
        """Deliver pending rows; log an outage once when it starts and once when it ends. Returns rows delivered."""
        result = deliver_pending(self.outbox, self.accounting, limit=self.batch)
        if result.outage and not self.outage:
            self.log.warning(
                "Accounting is not reachable (%s); debits stay queued in the outbox and are retried every %g s",
                result.outage, self.metering.effective_poll_seconds,
            )
        elif not result.outage and self.outage:
            self.log.info("Accounting is reachable again; delivering the queued debits")
        self.outage = result.outage
        if result.outage:
            self.token.forget()  # a refused token is not reused: the next pass asks for a new one
        if result.delivered:
            self.log.info("Delivered %d debit(s) to accounting", result.delivered)
        return result.delivered

    async def meter_once(self) -> None:
        """One pass: list, queue, deliver (each step goes on when the one before fails)."""
        try:
            sessions = await self.running_sessions()
        except Exception as error:
            self.log.error("Cannot list the running servers (%s); delivering what is queued", error)
            sessions = []
        try:
            await asyncio.to_thread(self.queue_elapsed, sessions)
        except Exception:
            self.log.exception("Cannot queue the elapsed intervals")
        while await asyncio.to_thread(self.deliver) >= self.batch:
            pass  # a long outage left a backlog: keep going while whole batches go through

    async def run(self) -> None:
        poll = self.metering.effective_poll_seconds
        self.log.info(
            "Metering every %d s (checked every %g s) to %s, outbox %r", self.metering.interval_seconds, poll,
            self.metering.accounting_url, self.outbox,
        )
        while True:
            started = datetime.datetime.now(datetime.UTC)
            try:
                await self.meter_once()
            except Exception:
                self.log.exception("Metering pass failed")
            spent = (datetime.datetime.now(datetime.UTC) - started).total_seconds()
            await asyncio.sleep(max(0.0, poll - spent))


main = MeteringApp.launch_instance

if __name__ == "__main__":
    main()
