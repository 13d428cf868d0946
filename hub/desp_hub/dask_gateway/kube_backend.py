"""The gateway's backend in the cluster: dask-gateway-server's Kubernetes backend with DESP's limits.

For the Helm chart's gateway (the upstream dask-gateway chart, image with desp_hub installed):

    c.DaskGateway.authenticator_class = "desp_hub.dask_gateway.auth.DespJupyterHubAuthenticator"
    c.DaskGateway.backend_class = "desp_hub.dask_gateway.kube_backend.DespKubeBackend"

Users get the same options, limits per realm role and profile, and refusals as on one machine
(`backend.DespGatewayMixin`). Worker-hours are not metered by this backend yet: the Kubernetes controller, not
this process, sees workers stop (see the README's Dask Gateway section).
"""

from dask_gateway_server.backends.kubernetes.backend import KubeBackend, KubeClusterConfig
from traitlets import default

from .backend import DespGatewayMixin
from .options import DespClusterConfigMixin


class DespKubeClusterConfig(DespClusterConfigMixin, KubeClusterConfig):
    """A cluster's configuration on Kubernetes (pods), with what DESP records with it."""


class DespKubeBackend(DespGatewayMixin, KubeBackend):
    """KubeBackend with per-role and per-profile limits and clear refusals."""

    @default("cluster_config_class")
    def _desp_cluster_config_class(self):
        return "desp_hub.dask_gateway.kube_backend.DespKubeClusterConfig"
