"""The `culler` hub service: stops servers idle longer than their profile's `idle_timeout`, or running longer
than its `max_runtime`, and records each cull (`desp_hub.culls`) so that the owner can be told why.

    python -m desp_hub.services.culler --db-url=sqlite:////srv/hub/profiles.sqlite --interval=60

Run by the hub as a managed service (`desp_hub.services.install.install_culler_service`), which gives it
`JUPYTERHUB_API_URL` and `JUPYTERHUB_API_TOKEN`. Every `interval` seconds it lists the users with ready servers
through the hub REST API, reads the profiles from the store (so an edited limit applies at the next pass) and
stops the servers `decide` picks. Unlike jupyterhub-idle-culler, whose timeout is global, each server gets the
limits of the profile it was started with (`user_options["profile"]`, recorded by the spawner).
"""

from __future__ import annotations

import asyncio
import datetime
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

from tornado.httpclient import HTTPClientError
from traitlets import Integer, Unicode, validate

from desp_hub.culls import record_cull
from desp_hub.profile_store import ProfileStore
from desp_hub.profiles import Profile
from desp_hub.services.hub_service_app import HubServiceApp


def _parse_time(value: str | None) -> datetime.datetime | None:
    if not value:
        return None
    parsed = datetime.datetime.fromisoformat(value)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=datetime.UTC)


def server_profile(server: Mapping[str, Any], profiles_by_slug: Mapping[str, Profile]) -> Profile | None:
    """The profile a server model was started with (`user_options.profile`), or None when the store has none."""
    slug = (server.get("user_options") or {}).get("profile")
    return profiles_by_slug.get(slug) if slug else None


def decide(
    server: Mapping[str, Any],
    profiles_by_slug: Mapping[str, Profile],
    now: datetime.datetime,
    fallback_idle: int,
) -> tuple[str, int] | None:
    """Whether to stop a server (a hub API server model): `("max_runtime" | "idle", limit seconds)`, or None.

    A server still starting or stopping (not ready, or pending) is left alone. The maximum runtime (when the
    profile has one, > 0) counts from `started`, activity or not. The idle limit counts from `last_activity`
    (else `started`) and is the profile's `idle_timeout`, or `fallback_idle` when the server's profile is not in
    the store (deleted since, or no profile recorded).
    """
    if not server.get("ready") or server.get("pending"):
        return None
    profile = server_profile(server, profiles_by_slug)
    started = _parse_time(server.get("started"))
    if profile is not None and profile.max_runtime > 0 and started is not None:
        if (now - started).total_seconds() > profile.max_runtime:
            return ("max_runtime", profile.max_runtime)
    limit = profile.idle_timeout if profile is not None else fallback_idle
    last_activity = _parse_time(server.get("last_activity")) or started
    if last_activity is not None and (now - last_activity).total_seconds() > limit:
        return ("idle", limit)
    return None


class CullerApp(HubServiceApp):
    """Stop servers past their profile's idle or runtime limit, and record why."""

    name = "desp-hub-culler"
    description = __doc__
    stop_message = "Culler stopping"
    aliases = {
        "db-url": "CullerApp.db_url",
        "interval": "CullerApp.interval",
        "fallback-idle-timeout": "CullerApp.fallback_idle_timeout",
        "log-level": "Application.log_level",
    }

    db_url = Unicode(
        config=True,
        help="""
        SQLAlchemy URL of the profile store (`desp_hub.profile_store`): the profiles' limits are read from it at
        every pass, and each cull is recorded in it (`desp_hub.culls`). For PostgreSQL give the password in
        PGPASSWORD, not in the URL.
        """,
    )

    interval = Integer(
        60,
        config=True,
        help="""
        Seconds between two passes. A server is stopped at most this long after it went past its limit.
        """,
    )

    fallback_idle_timeout = Integer(
        3600,
        config=True,
        help="""
        Idle limit, in seconds, of a server whose profile is not in the store (deleted after the server started,
        or no profile recorded). Such a server has no maximum runtime.
        """,
    )

    @validate("interval", "fallback_idle_timeout")
    def _positive(self, proposal):
        if proposal.value <= 0:
            raise ValueError(f"{proposal.trait.name} must be a positive number of seconds, got {proposal.value}")
        return proposal.value

    def initialize(self, argv=None):
        super().initialize(argv)
        if not self.db_url:
            raise SystemExit("desp-hub-culler: --db-url (the profile store) is required")
        self.require_api_token()
        self.store = ProfileStore(self.db_url)

    async def cull_once(self) -> int:
        """One pass: stop (and record) every server past its limit; returns how many were stopped."""
        try:
            profiles = await asyncio.to_thread(self.store.profiles)
        except Exception as error:
            # Without the profiles every server would get the fallback limit: skip the pass rather than guess.
            self.log.error("Cannot read the profile store (%s); no server is culled this pass", error)
            return 0
        by_slug = {profile.slug: profile for profile in profiles}
        now = datetime.datetime.now(datetime.UTC)
        stops = []
        async for username, server in self.ready_servers():
            decision = decide(server, by_slug, now, self.fallback_idle_timeout)
            if decision is not None:
                stops.append(self.stop(username, server, server_profile(server, by_slug), *decision))
        results = await asyncio.gather(*stops)
        return sum(results)

    async def stop(self, username: str, server: Mapping[str, Any], profile: Profile | None, reason: str,
                   limit: int) -> bool:
        name = server.get("name") or ""
        path = f"/users/{quote(username, safe='')}/" + (f"servers/{quote(name, safe='')}" if name else "server")
        at = datetime.datetime.now(datetime.UTC)  # before the stop: the hub stamps the stop after it
        try:
            await self.api("DELETE", path)
        except HTTPClientError as error:
            self.log.error("Could not stop %s/%s (HTTP %s)", username, name, error.code)
            return False
        except OSError as error:
            self.log.error("Could not stop %s/%s (%s)", username, name, error)
            return False
        slug = profile.slug if profile else (server.get("user_options") or {}).get("profile")
        self.log.info(
            "Culled %s/%s (profile %s): %s limit of %d s reached (started %s, last activity %s)",
            username, name, slug or "-", reason, limit, server.get("started"), server.get("last_activity"),
        )
        try:
            await asyncio.to_thread(
                record_cull,
                self.db_url,
                username=username,
                server=name,
                profile=profile.slug if profile else None,
                profile_name=profile.display_name if profile else None,
                reason=reason,
                limit=limit,
                at=at,
            )
        except Exception as error:
            self.log.error("Could not record the cull of %s/%s: %s", username, name, error)
        return True

    async def run(self) -> None:
        self.log.info(
            "Culling every %d s by profile limits (fallback idle limit %d s), store %r",
            self.interval, self.fallback_idle_timeout, self.store,
        )
        while True:
            try:
                await self.cull_once()
            except Exception:
                self.log.exception("Cull pass failed")
            await asyncio.sleep(self.interval)


main = CullerApp.launch_instance

if __name__ == "__main__":
    main()
