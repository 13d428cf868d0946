"""DESP Lab: what user servers load: platform clients (SDK), server extension, JupyterLab front end."""
