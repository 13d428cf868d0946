"""DESP Hub: everything that runs beside JupyterHub (authenticator, profiles, spawner glue, launcher)."""
