"""DESP's Dask Gateway: dask-gateway-server run by the hub as the `dask-gateway` service.

- `limits`: what a user may ask for (workers, cores and memory per worker, idle timeout), by Keycloak realm role
  (`stack-dask-low|medium|high`) and by the profile of the user's running server; the cluster options users see.
- `auth`: the hub authenticates every request (dask-gateway-server's JupyterHubAuthenticator) and also hands over
  the user's realm roles, which the DESP authenticator publishes in the user's `user_info`.
- `backend`: the local backend (processes on 127.0.0.1, under the hub's account) with clear refusals beyond the
  limits and worker-hours metered as DCU debits (`metering`); `DespGatewayMixin` holds what every backend shares.
- `kube_backend`: the Kubernetes backend of the Helm chart's gateway, metering workers from heartbeats, cluster
  updates and worker pods (`sightings`: the workers it has seen, kept in the outbox's database).
- `settings`: DESP's gateway settings (limits, price, interval, outbox, accounting) from the environment, for both.
- `gateway_config`: the file `dask-gateway-server -f` loads; `desp_hub.services.install.install_dask_gateway_service`
  adds the service to the hub's configuration. `chart_config.configure_gateway`: the chart's one extraConfig call.
"""
