"""JupyterHub services that ship with DESP Hub.

- `profiles_service`: the `profiles` service, a REST API over the profile store for admins (and a read-only,
  entitlement-filtered view for everyone else), installed into a hub configuration by
  `install.install_profiles_service`.
"""
