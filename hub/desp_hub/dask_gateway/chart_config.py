"""The Helm chart's gateway: what its one line of `gateway.extraConfig` calls.

The upstream dask-gateway chart writes the gateway's configuration file from its values: the Kubernetes backend,
the authenticator of `gateway.auth` (here `type: custom`, class `DespJupyterHubAuthenticator`, its settings as
data), the images and resources of schedulers and workers. Then it appends `gateway.extraConfig`, which in
helm/desp-hub/values.yaml is only

    from desp_hub.dask_gateway.chart_config import configure_gateway; configure_gateway(c)

(the gateway's image is the hub image, which holds desp_hub). `configure_gateway` puts DESP's backend and
authenticator in place and reads DESP's settings from the pod's environment (`settings.apply_settings`: limits,
price, metering interval, accounting), which the chart fills from the ConfigMap `desp-dask-gateway-config`
(helm/desp-hub/templates/dask-gateway/configmap.yaml, rendered from `desp` values) and the Secret
`desp-hub-secrets` (the metering client's secret, the outbox database's password), and the hub's API token from
z2jh's `hub` Secret. No other Python is in the chart's values.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from .settings import apply_settings

BACKEND_CLASS = "desp_hub.dask_gateway.kube_backend.DespKubeBackend"
AUTHENTICATOR_CLASS = "desp_hub.dask_gateway.auth.DespJupyterHubAuthenticator"


def configure_gateway(c: Any, environ: Mapping[str, str] | None = None) -> None:
    """Make the chart's gateway DESP's: DespKubeBackend, DespJupyterHubAuthenticator (the chart's `auth.type:
    custom` names it too; set here as well so the gateway never runs without the realm roles), and DESP's settings
    from `environ` (default: os.environ)."""
    c.DaskGateway.backend_class = BACKEND_CLASS
    c.DaskGateway.authenticator_class = AUTHENTICATOR_CLASS
    apply_settings(c, environ)
