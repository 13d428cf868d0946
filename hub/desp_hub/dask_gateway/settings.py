"""DESP's gateway settings, from the environment into traitlets configuration: one place for every backend.

The local gateway (`gateway_config.py`, started by the hub with `install_dask_gateway_service`'s environment) and
the chart's gateway (`chart_config.configure_gateway`, with the environment the chart gives the gateway's pod from
its ConfigMap and Secret) both hand the same variables to `apply_settings`:

    DESP_DASK_ROLE_LIMITS, DESP_DASK_PROFILE_LIMITS   JSON: DespDaskLimits.role_limits / profile_limits
    DESP_DASK_DCU_PER_CORE_HOUR                       price of a worker core hour (every cluster's configuration)
    DESP_DASK_METERING_INTERVAL                       seconds per metered interval of a worker
    DESP_DASK_USAGE_DB_URL                            the worker debits' outbox (DespGatewayMixin.usage_db_url)
    DESP_ACCOUNTING_URL, DESP_METERING_TOKEN_URL, DESP_METERING_CLIENT_ID
                                                      where worker debits go, as the hub's metering client (its
                                                      secret only from DESP_METERING_CLIENT_SECRET, read by
                                                      DespMetering itself, never put into configuration)

An unset or empty variable leaves the setting at its default. A malformed one fails the gateway's start with the
variable's name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from typing import Any


def _json(environ: Mapping[str, str], name: str) -> Any:
    try:
        return json.loads(environ[name])
    except ValueError as error:
        raise ValueError(f"${name} is not valid JSON: {error}") from None


def _number(environ: Mapping[str, str], name: str, kind: type) -> Any:
    try:
        return kind(environ[name])
    except ValueError:
        raise ValueError(f"${name} must be a {'whole ' if kind is int else ''}number, got {environ[name]!r}") from None


def apply_settings(c: Any, environ: Mapping[str, str] | None = None) -> None:
    """Set DESP's gateway settings found in `environ` (default: os.environ) on the configuration `c`."""
    environ = os.environ if environ is None else environ

    def given(name: str) -> bool:
        return bool(environ.get(name))

    if given("DESP_DASK_ROLE_LIMITS"):
        c.DespDaskLimits.role_limits = _json(environ, "DESP_DASK_ROLE_LIMITS")
    if given("DESP_DASK_PROFILE_LIMITS"):
        c.DespDaskLimits.profile_limits = _json(environ, "DESP_DASK_PROFILE_LIMITS")
    # the mixin's sections reach every backend's cluster configuration (local and Kubernetes) and every backend
    if given("DESP_DASK_DCU_PER_CORE_HOUR"):
        c.DespClusterConfigMixin.dcu_per_core_hour = _number(environ, "DESP_DASK_DCU_PER_CORE_HOUR", float)
    if given("DESP_DASK_METERING_INTERVAL"):
        c.DespClusterConfigMixin.metering_interval_seconds = _number(environ, "DESP_DASK_METERING_INTERVAL", int)
    if given("DESP_DASK_USAGE_DB_URL"):
        c.DespGatewayMixin.usage_db_url = environ["DESP_DASK_USAGE_DB_URL"]
    c.DespMetering.accounting_url = environ.get("DESP_ACCOUNTING_URL", "")
    c.DespMetering.token_url = environ.get("DESP_METERING_TOKEN_URL", "")
    c.DespMetering.client_id = environ.get("DESP_METERING_CLIENT_ID") or "desp-metering"
