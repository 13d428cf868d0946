"""DESP Lab: what user servers load: platform clients (SDK), server extension, JupyterLab front end."""


def _jupyter_server_extension_points():
    """The Jupyter server extension (REST under `{base_url}desp/api/`), enabled by `jpserver_extensions:
    {desp_lab: true}` in the installed jupyter-config. Imported here only when a server loads it, so
    `import desp_lab` stays light."""
    from desp_lab.server_extension import DespLabExtension

    return [{"module": "desp_lab.server_extension", "app": DespLabExtension}]
