"""Where a user's server finds the platform's services: catalogue, cache, token exchange, traces, accounting.

The spawner turns this configuration into the environment the `desp_lab` SDK reads (`DESP_CATALOGUE_URL`,
`DESP_CACHE_URL`, ...), so the same notebook code works on one machine (sandbox endpoints) and in the cluster
(the platform's), and switching is configuration only.
"""

import json
import os

from traitlets import Dict, Integer, Unicode
from traitlets.config import Configurable

GIB = 1024**3


class DespPlatformEndpoints(Configurable):
    """The DESP data endpoints given to every user server."""

    catalogue_url = Unicode(
        "",
        config=True,
        help="STAC API root of the catalogue (the Data Lake's HDA: https://hda.data.destination-earth.eu/stac/v2). "
        "Empty: the SDK has no default catalogue.",
    )

    user_cache_url = Unicode(
        "",
        config=True,
        help="fsspec URL of a user's own cache area, with {username} in it, e.g. s3://desp-cache/users/{username} "
        "or /srv/desp/user-cache/{username}. A local directory is created at spawn. Empty: no user cache.",
    )

    cache_storage_options = Dict(
        config=True,
        help="fsspec storage options for user_cache_url (e.g. {'endpoint_url': 'https://s3.example'}); "
        "credentials belong in the servers' environment (AWS_ACCESS_KEY_ID ...), not here.",
    )

    cache_quota_bytes = Integer(
        10 * GIB, config=True, help="Per-user quota of the cache area, in bytes (the SDK refuses copies beyond it)."
    )

    token_exchange_url = Unicode(
        "",
        config=True,
        help="Token endpoint for an RFC 8693 exchange of the DESP token before data downloads (the Data Lake: "
        "https://identity.data.destination-earth.eu/auth/realms/dedl/protocol/openid-connect/token). "
        "Empty: data services take the DESP token itself.",
    )

    token_exchange_client_id = Unicode("hda-public", config=True, help="client_id of the token exchange.")

    token_exchange_audience = Unicode("", config=True, help="audience of the token exchange (default: the client id).")

    token_exchange_subject_issuer = Unicode(
        "", config=True, help="subject_issuer of the token exchange (the Data Lake names DESP `desp-oidc`)."
    )

    trace_url = Unicode(
        "",
        config=True,
        help="Root URL of the traceability service (API under /api/v1/traces, shaped like the Copernicus "
        "traceability API). Empty: the SDK has no default trace service.",
    )

    accounting_url = Unicode(
        "",
        config=True,
        help="Root URL of the accounting service (DCU balances, quotas, transactions; API under /api/v1). "
        "Empty: servers show no balance.",
    )

    def user_cache(self, username: str) -> str:
        """The user's cache area URL ("" when none is configured)."""
        return self.user_cache_url.format(username=username) if self.user_cache_url else ""

    def environment(self, username: str) -> dict[str, str]:
        """Environment variables for `username`'s server (only those with a value)."""
        environment = {
            "DESP_CATALOGUE_URL": self.catalogue_url,
            "DESP_CACHE_URL": self.user_cache(username),
            "DESP_CACHE_STORAGE_OPTIONS": json.dumps(self.cache_storage_options) if self.cache_storage_options else "",
            "DESP_CACHE_QUOTA_BYTES": str(self.cache_quota_bytes),
            "DESP_TOKEN_EXCHANGE_URL": self.token_exchange_url,
            "DESP_TOKEN_EXCHANGE_CLIENT_ID": self.token_exchange_client_id if self.token_exchange_url else "",
            "DESP_TOKEN_EXCHANGE_AUDIENCE": self.token_exchange_audience if self.token_exchange_url else "",
            "DESP_TOKEN_EXCHANGE_SUBJECT_ISSUER": self.token_exchange_subject_issuer if self.token_exchange_url else "",
            "DESP_TRACE_URL": self.trace_url,
            "DESP_ACCOUNTING_URL": self.accounting_url,
        }
        return {name: value for name, value in environment.items() if value}

    def local_cache_directory(self, username: str) -> str:
        """The user's cache area when it is a local directory (plain path or file:// URL), else ""."""
        url = self.user_cache(username)
        if url.startswith("file://"):
            return url[len("file://"):]
        return url if url.startswith(os.sep) else ""
