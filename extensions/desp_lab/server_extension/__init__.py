"""The desp_lab Jupyter server extension: REST API under `{base_url}desp/api/` for the "DESP Data" panel, the
status bar's DCU balance, the "DESP Traces" panel and "Publish as workflow".

Enabled in every user server by `extensions/jupyter-config/desp_lab.json` (installed into
`etc/jupyter/jupyter_server_config.d/`). Configuration is on `DespLabExtension` (traitlets), each setting
defaulting to the environment variable the hub sets (`DESP_CATALOGUE_URL`, `DESP_CACHE_URL`,
`DESP_CACHE_STORAGE_OPTIONS`, `DESP_CACHE_QUOTA_BYTES`; for the status bar and the Traces panel
`DESP_ACCOUNTING_URL`, `DESP_TRACE_URL`, `DESP_SESSION_ID`, `DESP_PROFILE`, `DESP_DCU_PER_HOUR`; for publishing
`DESP_WORKFLOWS_URL`). The SDK clients
are made on first use (so a catalogue that is down when the server starts does not stop the server) and reused.
Expired cache copies are evicted at each listing and every `eviction_interval` seconds.
"""

from __future__ import annotations

import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor

from jupyter_server.extension.application import ExtensionApp
from tornado.ioloop import PeriodicCallback
from traitlets import Dict, Float, Integer, Unicode, default

from desp_lab.server_extension.handlers import handlers
from desp_lab.server_extension.jobs import CacheRequestJobs
from desp_lab.server_extension.platform import platform_handlers
from desp_lab.server_extension.workflows import workflows_handlers


def _data_token() -> str | None:
    """The bearer token for catalogue downloads and the HTTP cache, or None when there is none (discovery
    stays open without one). Imported late: credentials reads the environment on each call."""
    from desp_lab import credentials

    try:
        return credentials.data_token()
    except credentials.CredentialsError:
        return None


def _access_token() -> str:
    """The user's DESP access token for the accounting service (asked for at each request); 401 when there is none."""
    from desp_lab import credentials
    from desp_lab.errors import DespError

    try:
        return credentials.access_token()
    except credentials.CredentialsError as error:
        raise DespError(str(error), status=401) from None


class DespLabExtension(ExtensionApp):
    """DESP catalogue, cache, traces and DCU balance for JupyterLab (REST under `/desp/api/`); read by user servers."""

    name = "desp_lab"

    catalogue_url = Unicode(
        help="STAC API root of the DESP catalogue (HDA shape, e.g. https://hda.data.destination-earth.eu/stac/v2). "
        "Default: the DESP_CATALOGUE_URL environment variable."
    ).tag(config=True)

    @default("catalogue_url")
    def _default_catalogue_url(self):
        return os.environ.get("DESP_CATALOGUE_URL", "")

    cache_url = Unicode(
        help="fsspec URL of this user's cache area (a local folder, s3://bucket/users/name, ...). "
        "Default: the DESP_CACHE_URL environment variable."
    ).tag(config=True)

    @default("cache_url")
    def _default_cache_url(self):
        return os.environ.get("DESP_CACHE_URL", "")

    cache_storage_options = Dict(
        help="fsspec storage options of the cache area (e.g. {'endpoint_url': ...} for S3; keys come from the "
        "usual AWS_* variables). Default: the JSON in DESP_CACHE_STORAGE_OPTIONS."
    ).tag(config=True)

    @default("cache_storage_options")
    def _default_cache_storage_options(self):
        raw = os.environ.get("DESP_CACHE_STORAGE_OPTIONS", "")
        return json.loads(raw) if raw.strip() else {}

    cache_quota_bytes = Integer(
        help="Quota of the user's cache area in bytes (0: the SDK's default, 10 GiB). "
        "Default: the DESP_CACHE_QUOTA_BYTES environment variable."
    ).tag(config=True)

    @default("cache_quota_bytes")
    def _default_cache_quota_bytes(self):
        raw = os.environ.get("DESP_CACHE_QUOTA_BYTES", "").strip()
        return int(raw) if raw else 0

    eviction_interval = Float(
        600.0,
        help="Seconds between evictions of expired copies from the cache area (they are also evicted whenever "
        "the cache is listed). 0 turns the periodic eviction off.",
    ).tag(config=True)

    default_retention_days = Float(7.0, help="Retention of a cache request that names none, in days.").tag(config=True)

    max_retention_days = Float(90.0, help="Longest retention a cache request may ask for, in days.").tag(config=True)

    accounting_url = Unicode(
        help="Root URL of the DESP accounting service (the DCU ledger). Empty: no accounting, the status bar's "
        "balance stays hidden. Default: the DESP_ACCOUNTING_URL environment variable."
    ).tag(config=True)

    @default("accounting_url")
    def _default_accounting_url(self):
        return os.environ.get("DESP_ACCOUNTING_URL", "")

    accounting_user = Unicode(
        help="The account whose balance the status bar shows. Empty: the owner of the access token. "
        "Default: the JUPYTERHUB_USER environment variable."
    ).tag(config=True)

    @default("accounting_user")
    def _default_accounting_user(self):
        return os.environ.get("JUPYTERHUB_USER", "")

    trace_url = Unicode(
        help="Root URL of the DESP trace service (traceability API). Empty: the SDK's default. "
        "Default: the DESP_TRACE_URL environment variable."
    ).tag(config=True)

    @default("trace_url")
    def _default_trace_url(self):
        return os.environ.get("DESP_TRACE_URL", "")

    session_id = Unicode(
        help="This server's metering session (the `session` of its DCU transactions), whose cost so far the status "
        "bar shows. Default: the DESP_SESSION_ID environment variable the hub sets."
    ).tag(config=True)

    @default("session_id")
    def _default_session_id(self):
        return os.environ.get("DESP_SESSION_ID", "")

    profile = Unicode(
        help="The profile this server runs (shown in the status bar's tooltip). Default: the DESP_PROFILE "
        "environment variable."
    ).tag(config=True)

    @default("profile")
    def _default_profile(self):
        return os.environ.get("DESP_PROFILE", "")

    dcu_per_hour = Unicode(
        help="The profile's price in DCU per hour (shown in the status bar's tooltip). Default: the "
        "DESP_DCU_PER_HOUR environment variable."
    ).tag(config=True)

    @default("dcu_per_hour")
    def _default_dcu_per_hour(self):
        return os.environ.get("DESP_DCU_PER_HOUR", "")

    workflows_url = Unicode(
        help="URL of the hub's workflows service as this server reaches it (ends in /services/workflows/), for "
        "\"Publish as workflow\". Empty: publishing is not offered. Default: the DESP_WORKFLOWS_URL environment "
        "variable the hub sets."
    ).tag(config=True)

    @default("workflows_url")
    def _default_workflows_url(self):
        return os.environ.get("DESP_WORKFLOWS_URL", "")

    workflows_page_url = Unicode(
        help="Where a browser finds the workflows pages (a published workflow links to <this>/w/<id>). Default: the "
        "path of workflows_url (/services/workflows/), which is the same behind the hub's proxy."
    ).tag(config=True)

    @default("workflows_page_url")
    def _default_workflows_page_url(self):
        from urllib.parse import urlsplit

        return urlsplit(self.workflows_url).path or "/services/workflows/"

    workflows_user = Unicode(
        help="The hub user publishing (an existing workflow of that owner and name gets a new version). Default: the "
        "JUPYTERHUB_USER environment variable."
    ).tag(config=True)

    @default("workflows_user")
    def _default_workflows_user(self):
        return os.environ.get("JUPYTERHUB_USER", "")

    status_refresh_seconds = Float(
        30.0,
        help="Seconds between two refreshes of the status bar's balance and session cost (given to the front end "
        "in the accounting/status answer).",
    ).tag(config=True)

    max_workers = Integer(
        8, help="Threads that run blocking SDK calls (catalogue HTTP, cache I/O, background copies)."
    ).tag(config=True)

    def initialize_settings(self):
        """Thread pool, cache request jobs and (lazily) the SDK clients."""
        self.executor = ThreadPoolExecutor(max_workers=self.max_workers, thread_name_prefix="desp-lab")
        self.jobs = CacheRequestJobs(self.executor, log=self.log)
        self._clients_lock = threading.Lock()
        self._catalogue = None
        self._cache = None
        self._eviction = None
        self._accounting = None
        self.log.info(
            "DESP API: catalogue %s, cache %s, eviction every %ss",
            self.catalogue_url or "(DESP_CATALOGUE_URL unset)",
            self.cache_url.split("?", 1)[0] or "(DESP_CACHE_URL unset)",
            self.eviction_interval,
        )

    def initialize_handlers(self):
        # The platform endpoints come first: handlers() ends with the catch-all 404 of desp/api/.
        self.handlers.extend(platform_handlers() + workflows_handlers() + handlers())
        if self.eviction_interval > 0 and self.cache_url:
            self._eviction = PeriodicCallback(self._evict_expired, self.eviction_interval * 1000)
            self._eviction.start()

    def catalogue(self):
        """The SDK Catalogue (made on first use, in a worker thread: it may contact the catalogue)."""
        with self._clients_lock:
            if self._catalogue is None:
                from desp_lab.catalogue import Catalogue

                self._catalogue = Catalogue(url=self.catalogue_url or None, token=_data_token)
            return self._catalogue

    def cache(self):
        """The SDK Cache of this user's area (made on first use)."""
        with self._clients_lock:
            if self._cache is None:
                from desp_lab.cache import Cache

                self._cache = Cache(
                    url=self.cache_url or None,
                    storage_options=self.cache_storage_options or None,
                    quota_bytes=self.cache_quota_bytes or None,
                    token=_data_token,
                )
            return self._cache

    def accounting(self):
        """The SDK Accounting client of the configured service (made on first use); the token is read from the
        environment (or asked of the hub) at each request, so a refreshed token is used."""
        with self._clients_lock:
            if self._accounting is None:
                from desp_lab.accounting import Accounting

                # One retry only: the status bar asks again at its next refresh anyway.
                self._accounting = Accounting(url=self.accounting_url or None, token=_access_token, retries=1)
            return self._accounting

    async def _evict_expired(self):
        """Periodic: evict expired copies from the cache area, off the event loop; failures are logged only."""
        import asyncio

        loop = asyncio.get_running_loop()
        try:
            evicted = await loop.run_in_executor(self.executor, lambda: self.cache().evict_expired())
        except Exception as error:  # the next round tries again
            self.log.warning("DESP cache eviction failed: %s", error)
            return
        if evicted:
            self.log.info("DESP cache: evicted %s expired cop%s", len(evicted), "y" if len(evicted) == 1 else "ies")

    async def stop_extension(self):
        if self._eviction is not None:
            self._eviction.stop()
        self.executor.shutdown(wait=False, cancel_futures=True)


def _jupyter_server_extension_points():
    return [{"module": "desp_lab.server_extension", "app": DespLabExtension}]
